"""Readers while another process writes, and the embedder an index records.

The readers test runs a real `rag index` of 600 articles of the shared rtqa2022 corpus (a slice written into
the test's temporary folder) while threads ask an `Assistant` in this process and the web chat of a real
`rag web` (gradio's HTTP API on 127.0.0.1): every question must be answered, from the last complete state.
Both use the static model2vec embedder (distilled from MiniLM once, cached under ~/.cache/rag-news), so the
writer has 600 articles done in seconds, not minutes.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from rag import Assistant, Filters
from rag.embed import make_embedder
from tests.conftest import CORPUS, MARIUPOL_SEED, ROOT, write_collection

STATIC = "model2vec:all-MiniLM-L6-v2"
N_ARTICLES = 600
# (question, sources, since, what the answer says): filtered and dated questions are the ones Chroma failed
QUESTIONS = [
    ("How many homes were flooded when the Brightwater dam failed?", (), "", "412 homes"),
    ("How many passengers does the ferry Aurelia carry?", ("Orrin Gazette",), "", "240 passengers"),
    ("What does the Kestrel drone cost?", (), "2022-01-01", "899 euros"),
    ("Who won the Fenwick marathon in 2022?", (), "", "Tomas Reyes"),
    ("How many people were injured in Mariupol?", (), "", "128"),
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", **extra})
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_slice(path: Path, n: int) -> list[dict]:
    """The first `n` articles of the shared corpus, as a .jsonl.gz of their own (never copied into the project)."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = list(itertools.islice(f, n))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return [json.loads(line) for line in lines]


def _web_ask(url: str, question: str, sources: tuple[str, ...] = (), since: str = "", timeout: float = 60) -> str:
    """One question through gradio's HTTP API of the web chat: the final chat view, as text.

    Raises RuntimeError when the app reports an error for it."""
    body = json.dumps({"data": [question, list(sources), since or None, None]}).encode()
    request = urllib.request.Request(url + "gradio_api/call/ask", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        event_id = json.load(response)["event_id"]
    event, data = "", ""
    with urllib.request.urlopen(f"{url}gradio_api/call/ask/{event_id}", timeout=timeout) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line.split(":", 1)[1].strip()
                if event in ("complete", "error"):
                    break
    if event != "complete":
        raise RuntimeError(f"web chat {event or 'no event'}: {data[:300]}")
    return data


def _wait_for_web(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rag web exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("rag web did not start in time")


class Askers:
    """Threads asking until told to stop; counts answers, errors and wrong answers."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.asked = {"api": 0, "web": 0}
        self.errors: dict[str, list[str]] = {"api": [], "web": []}
        self.notices: list[str] = []
        self.threads: list[threading.Thread] = []

    def start(self, kind: str, ask, n: int) -> None:
        for i in range(n):
            thread = threading.Thread(target=self._loop, args=(kind, ask, i), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, kind: str, ask, offset: int) -> None:
        questions = itertools.islice(itertools.cycle(QUESTIONS), offset, None)
        while not self.stop.is_set():
            question, sources, since, expected = next(questions)
            try:
                text, notice = ask(question, sources, since)
                error = "" if expected in text else f"wrong answer to {question!r}: {text[:200]}"
            except Exception as exc:  # noqa: BLE001 - counted and asserted by the test
                error, notice = f"{type(exc).__name__}: {exc}", ""
            with self.lock:
                self.asked[kind] += 1
                if error:
                    self.errors[kind].append(error)
                if notice:
                    self.notices.append(notice)
            time.sleep(0.03)  # leave the writer some of the two CPUs

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


@pytest.mark.skipif(not CORPUS.exists(), reason="shared rtqa2022 corpus not available")
def test_readers_are_answered_while_another_process_indexes(tmp_path, settings):
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    index = tmp_path / "index"
    folder = write_collection(tmp_path / "articles")
    shutil.copy(MARIUPOL_SEED, folder / MARIUPOL_SEED.name)
    settings = settings.model_copy(update={"embedder": STATIC, "index_dir": index})
    assistant = Assistant.open(index, settings, embedder=static)
    assistant.index([folder])
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    web = subprocess.Popen(_cli("web", "--index", str(index), "--port", str(port)), cwd=tmp_path,
                           env=_env(RAG_EMBEDDER=STATIC), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writer = None
    askers = Askers()
    try:
        articles = _write_slice(tmp_path / "slice.jsonl.gz", N_ARTICLES)
        _wait_for_web(web, url)

        def api_ask(question: str, sources: tuple[str, ...], since: str) -> tuple[str, str]:
            filters = Filters(sources, date.fromisoformat(since) if since else None)
            answer = assistant.ask(question, filters)
            return answer.text, answer.notice if answer.notice.startswith("The vector search") else ""

        askers.start("api", api_ask, 2)
        askers.start("web", lambda *q: (_web_ask(url, *q), ""), 3)
        time.sleep(1)
        started = time.monotonic()
        writer = subprocess.Popen(_cli("index", str(tmp_path / "slice.jsonl.gz"), "--index", str(index)),
                                  cwd=tmp_path, env=_env(RAG_EMBEDDER=STATIC, RAG_INDEX_BATCH_CHUNKS="128"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = writer.communicate(timeout=300)
        seconds = time.monotonic() - started
        time.sleep(1)
        askers.join()
        assert writer.returncode == 0, err.decode()[-2000:]
        print(f"indexing {N_ARTICLES} articles took {seconds:.1f} s ({out.decode().strip()}); asked "
              f"{askers.asked}; errors api {len(askers.errors['api'])}, web {len(askers.errors['web'])}; "
              f"{len(askers.notices)} answers with a notice")
        assert not askers.errors["api"] and not askers.errors["web"], (
            askers.errors["api"][:3], askers.errors["web"][:3])
        assert askers.asked["api"] >= 100 and askers.asked["web"] >= 50, askers.asked
        # then the new articles are answerable, in both readers, without a restart
        title = next(a["title"] for a in reversed(articles) if re.fullmatch(r"[A-Za-z ]+", a["title"])
                     and len(a["title"].split()) >= 5)
        assert any(h.article.title == title for h in assistant.search(title))
        assert title in _web_ask(url, title)
    finally:
        askers.join()
        for proc in (writer, web):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        assistant.close()


# ---------- the embedder an index records ----------

def _meta(index: Path, key: str) -> str:
    db = sqlite3.connect(f"file:{index / 'articles.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
    finally:
        db.close()


def test_cli_uses_the_embedder_the_index_records(tmp_path):
    folder = write_collection(tmp_path / "articles")
    index = tmp_path / "index"
    built = subprocess.run(_cli("index", str(folder), "--index", str(index)), cwd=tmp_path,
                           env=_env(RAG_EMBEDDER=STATIC), capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    question = "How many homes were flooded when the Brightwater dam failed?"
    ask = subprocess.run(_cli("ask", question, "--index", str(index)), cwd=tmp_path, env=_env(),
                         capture_output=True, text=True)
    assert ask.returncode == 0, ask.stderr
    assert "412 homes" in ask.stdout
    # an explicit setting that disagrees stays a clear error
    other = "sentence-transformers:all-MiniLM-L6-v2"
    refused = subprocess.run(_cli("ask", question, "--index", str(index)), cwd=tmp_path,
                             env=_env(RAG_EMBEDDER=other), capture_output=True, text=True)
    assert refused.returncode == 2
    assert f"built with embedder {STATIC}" in refused.stderr and "--rebuild" in refused.stderr
    assert "Traceback" not in refused.stderr
    # --rebuild with a newly chosen embedder starts afresh with it
    rebuilt = subprocess.run(_cli("index", str(folder), "--index", str(index), "--rebuild"), cwd=tmp_path,
                             env=_env(RAG_EMBEDDER=other), capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _meta(index, "embedder") == other


def test_assistant_open_uses_the_recorded_embedder_unless_one_is_set(tmp_path, settings):
    from rag.api import open_store
    from rag.config import Settings
    from rag.errors import IndexError_

    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    index = tmp_path / "index"
    builder = Assistant(open_store(index, settings), static, settings)
    builder.index([write_collection(tmp_path / "articles")])
    builder.close()
    unset = Settings(_env_file=None, cache_dir=settings.cache_dir)
    assert "embedder" not in unset.model_fields_set
    opened = Assistant.open(index, unset)
    try:
        assert opened.embedder.name == STATIC and opened.stats()["embedder"] == STATIC
        assert "899 euros" in opened.ask("What does the Kestrel drone cost?").text
    finally:
        opened.close()
    explicit = Settings(_env_file=None, embedder="sentence-transformers:all-MiniLM-L6-v2")
    with pytest.raises(IndexError_, match=f"built with embedder {STATIC}"):
        Assistant.open(index, explicit)


# ---------- a failed vector search, a lexical index caught mid-swap ----------

def test_a_failed_vector_search_is_answered_from_bm25_with_a_notice(tmp_path, settings):
    from chromadb.errors import InternalError

    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    assistant = Assistant.open(tmp_path / "index", settings.model_copy(update={"embedder": STATIC}), embedder=static)
    assistant.index([write_collection(tmp_path / "articles")])
    collection = assistant.store.vectors.collection()

    def broken(*args, **kwargs):  # what Chroma raises while another process writes
        raise InternalError("Error executing plan: Internal error: Error finding id")

    collection.query = broken
    try:
        for filters in (None, Filters(since=date(2022, 1, 1))):
            answer = assistant.ask("What does the Kestrel drone cost?", filters)
            assert "899 euros" in answer.text and answer.citations
            assert "keyword search alone" in answer.notice and "Error finding id" in answer.notice
    finally:
        assistant.close()


def test_a_lexical_index_caught_between_the_renames_of_a_swap_is_read_again(tmp_path):
    from rag.lexical import Lexical, Words

    folder = tmp_path / "bm25"
    words = Words()
    Lexical(folder).build(["a", "b"], words.tokens(["floods in Dovrin", "a bridge collapses"]))
    old = folder.with_name("bm25.old")
    os.replace(folder, old)  # a writer between its two renames
    swap = threading.Timer(0.3, lambda: os.replace(old, folder))
    swap.start()
    try:
        reader = Lexical(folder)
    finally:
        swap.join()
    assert reader.ids == ["a", "b"] and reader.vocabulary()
    assert reader.scores("bridge")[1] > 0
