"""`rag index` says what it does: named phases with totals, lines on a non-terminal, and what Ctrl-C kept.

The runs are real `python -m rag.cli index` subprocesses over the packaged MiniLM, on a slice of the rtqa2022
benchmark articles (real news) when it is there, else the seed articles.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.api import Assistant
from rag.index import Indexer
from rag.progress import ProgressPrinter
from rag.store import Store
from tests.conftest import CORPUS, ROOT, SEEDS, interruptible_cli, write_collection


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"PYTHONPATH": str(ROOT), "RAG_PROGRESS_EVERY": "0.1", **extra})
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", *args]


def _articles(folder: Path, n: int, chars: int = 2000) -> Path:
    """`n` real news articles (their first `chars` characters: a few chunks each) in one .jsonl file."""
    folder.mkdir(parents=True, exist_ok=True)
    if CORPUS.exists():
        with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
            articles = [json.loads(line) for line in itertools.islice(f, n)]
    else:  # the seeds
        articles = [{"title": p.stem, "text": p.read_text(encoding="utf-8")} for p in sorted(SEEDS.glob("*.txt"))[:n]]
    lines = [json.dumps({**a, "text": a["text"][:chars]}) + "\n" for a in articles]
    (folder / "news.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


def test_index_shows_named_phases_with_totals_when_stderr_is_not_a_terminal(tmp_path):
    folder = write_collection(tmp_path / "articles")
    done = subprocess.run(_cli("index", str(folder), "--index", str(tmp_path / "index")), cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    embedded = int(re.search(r"(\d+) chunks embedded", done.stdout).group(1))
    files = len(list(folder.iterdir()))
    err = done.stderr
    assert f"reading: 0 of {files} files" in err and re.search(rf"reading: {files} of {files} files in \d+ s", err)
    assert re.search(r"chunking: 7 of 7 articles in \d+ s", err)
    assert f"embedding: 0 of {embedded} chunks" in err
    assert re.search(rf"embedding: {embedded} of {embedded} chunks in \d+ s", err)
    assert re.search(r"lexical index in \d+ s", err) and re.search(r"story groups in \d+ s", err)
    # the phases come in this order
    order = [err.index(x) for x in ("reading: 0", "embedding: 0", "lexical index", "story groups")]
    assert order == sorted(order)


def test_a_line_every_interval_off_a_terminal_with_rate_and_time_left():
    out = io.StringIO()
    show = ProgressPrinter(out, every=0.05, tty=False)
    show("embedding", 0, 1000)
    for done in range(100, 1000, 100):
        time.sleep(0.03)
        show("embedding", done, 1000)
    show("embedding", 1000, 1000)
    lines = out.getvalue().splitlines()
    assert lines[0] == "embedding: 0 of 1,000 chunks"
    middle = lines[1:-1]
    assert 2 <= len(middle) <= 6  # every 0.05 s, not every call (9 calls over 0.27 s)
    line = r"embedding: \d00 of 1,000 chunks \(\d+%, [\d,.]+/s, about \d+ s left\)"
    assert all(re.fullmatch(line, x) for x in middle), middle
    assert re.fullmatch(r"embedding: 1,000 of 1,000 chunks in \d+ s", lines[-1])


def test_on_a_terminal_one_status_line_is_redrawn():
    out = io.StringIO()
    show = ProgressPrinter(out, tty=True)
    show("reading", 0, 2)
    show("chunking", 3, 0)
    show("reading", 2, 2)
    text = out.getvalue()
    assert "\r\x1b[Kreading: 0 of 2 files" in text and "reading: 0 of 2 files · chunking: 3 articles" in text
    assert text.endswith("\r\x1b[Kreading: 2 of 2 files in 0 s\n")


def test_articles_beyond_the_memory_budget_are_read_again_and_indexed_the_same(tmp_path, settings, embedder,
                                                                                  collection):
    results = []
    for name, hold in (("held", 10**9), ("spilled", 100)):
        assistant = Assistant(Store(tmp_path / name), embedder, settings)
        indexer = Indexer(assistant.store, embedder, assistant.chunker, hold_chars=hold)
        report = indexer.run([collection])
        chunk_ids = assistant.store.catalogue.chunk_id_set()
        assert assistant.store.vectors.ids() == chunk_ids  # every chunk has its vector
        results.append((report, chunk_ids))
        if name == "spilled":
            again = indexer.run([collection])
            assert len(set(again.unchanged)) == 8 and again.chunks_embedded == 0
        assistant.close()
    (held, held_chunks), (spilled, spilled_chunks) = results
    assert sorted(spilled.indexed) == sorted(held.indexed) and len(held.indexed) == 8
    assert spilled.chunks_embedded == held.chunks_embedded and spilled_chunks == held_chunks


@pytest.mark.skipif(not CORPUS.exists(), reason="the shared rtqa2022 corpus is not beside this clone: "
                    "the seeds hold too few articles to stop mid-embedding")
def test_ctrl_c_keeps_what_was_stored_and_the_next_run_continues(tmp_path):
    folder = _articles(tmp_path / "news", 14)
    index = tmp_path / "index"
    # small batches, so Ctrl-C lands between two of them soon and some are stored before it
    # one stage of the torch MiniLM, slow enough to be interrupted mid-embedding (the default's fast stage embeds
    # these 46 chunks in a blink; Ctrl-C during its MiniLM stage is tests/test_stages.py's)
    env = _env(RAG_INDEX_BATCH_CHUNKS="8", RAG_EMBED_BATCH_SIZE="4",
               RAG_EMBEDDER="sentence-transformers:all-MiniLM-L6-v2")
    proc = subprocess.Popen(interruptible_cli("index", str(folder), "--index", str(index)), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:  # interrupt once two batches are embedded (the first one is stored)
            seen.append(line)
            match = re.match(r"embedding: (\d+) of (\d+)", line)
            if match and 16 <= int(match.group(1)) < int(match.group(2)) - 8:
                break
        else:
            pytest.fail("no embedding progress: " + "".join(seen))
        total = int(match.group(2))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    stopped = re.search(r"stopped: (\d+) articles stored; run again to continue", err)
    assert stopped and "Traceback" not in err, err
    stored = int(stopped.group(1))
    assert 1 <= stored < 14

    stats = json.loads(subprocess.run(_cli("stats", "--json", "--index", str(index)), cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=120, check=True).stdout)
    assert stats["articles"] == stored and stats["last_indexed"]
    first = json.loads((folder / "news.jsonl").read_text(encoding="utf-8").splitlines()[0])
    asked = subprocess.run(_cli("ask", first["title"], "--json", "--index", str(index)), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["citations"]  # the stored part answers, from both indexes

    again = subprocess.run(_cli("index", str(folder), "--index", str(index)), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{14 - stored} indexed, 0 replaced, {stored} unchanged" in again.stdout
    assert re.search(r"embedding: 0 of (\d+) chunks", again.stderr).group(1) != str(total)
    stats = json.loads(subprocess.run(_cli("stats", "--json", "--index", str(index)), cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=120, check=True).stdout)
    assert stats["articles"] == 14
