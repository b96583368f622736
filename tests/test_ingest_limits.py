"""Hostile input to ingestion: decompression bombs, huge or repeated bad lines, deep JSON nesting, FIFOs,
symlinks, odd file names and NUL bytes. Each is refused (or cleaned) with a reason naming the file, memory stays
bounded, and the good files beside them are indexed."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag import Assistant
from rag.ingest import Limits, display_path, find_files, read_file
from rag.store import Store
from rag.types import Skipped
from tests.conftest import ROOT

STATIC = "model2vec:all-MiniLM-L6-v2"
GOOD = {"title": "Pellin lighthouse", "text": "The Pellin lighthouse was repainted red in May.",
        "url": "https://example.com/pellin"}


@pytest.fixture(scope="module")
def static(settings):
    from rag.embed import make_embedder

    return make_embedder(STATIC, cache_dir=settings.cache_dir)


def _zeros_bomb(path: Path, megabytes: int, head: bytes = b"") -> Path:
    with gzip.open(path, "wb", compresslevel=6) as f:
        f.write(head)
        block = b"\x00" * (1 << 20)
        for _ in range(megabytes):
            f.write(block)
    return path


def _peak_growth_mb(path: Path) -> tuple[float, list[str]]:
    """Read one file in a fresh process; the growth of its peak RSS (MB) and the reasons it gave."""
    code = (
        "import json, resource, sys\nfrom pathlib import Path\nfrom rag.ingest import read_file\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "items = [str(i) for i in read_file(Path(sys.argv[1]))]\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps([(after - before) / 1024, items[-5:]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    growth, items = json.loads(done.stdout)
    return growth, items


def test_a_gzip_bomb_is_cut_at_the_cap_with_bounded_memory(tmp_path):
    good = (json.dumps(GOOD) + "\n").encode()
    bomb = _zeros_bomb(tmp_path / "bomb.jsonl.gz", 300, head=good)
    growth, items = _peak_growth_mb(bomb)
    assert growth < 120, f"reading a 300 MB bomb grew the peak RSS by {growth:.0f} MB"
    assert items[0].startswith("Article(") or "Pellin" in items[0]  # the line before the zeros is kept
    assert any("bomb.jsonl.gz" in i and "decompressed" in i and "rest of the file" in i for i in items), items


def test_the_decompressed_cap_and_line_cap_come_from_limits(tmp_path):
    lines = [json.dumps({**GOOD, "url": f"https://example.com/{i}", "text": f"Story {i}. " + "word " * 40})
             for i in range(2000)]
    path = tmp_path / "many.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode(), 9))
    small = Limits(max_decompressed_bytes=50_000, decompression_ratio=1000)
    items = list(read_file(path, small))
    articles = [i for i in items if not isinstance(i, Skipped)]
    assert 0 < len(articles) < 2000
    (skip,) = [i for i in items if isinstance(i, Skipped)]
    assert "50,000 bytes" in skip.reason and "rest of the file" in skip.reason
    long_line = tmp_path / "long.jsonl"
    long_line.write_text(json.dumps({"title": "x", "text": "y " * 100_000}) + "\n" + json.dumps(GOOD) + "\n")
    items = list(read_file(long_line, Limits(max_line_bytes=10_000)))
    assert [i.title for i in items if not isinstance(i, Skipped)] == ["Pellin lighthouse"]
    (skip,) = [i for i in items if isinstance(i, Skipped)]
    assert skip.line == 1 and "longer than 10,000 bytes" in skip.reason


def test_a_repeated_bad_line_is_reported_once_with_a_count(tmp_path):
    path = tmp_path / "junk.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + "not json at all\n" * 30_000 + "[1, 2]\n")
    items = list(read_file(path))
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert len(skipped) == 2
    assert str(skipped[0]).endswith("30,000 lines: malformed JSON: Expecting value (first at line 2)")
    assert skipped[1].line == 30_002 and "expected a JSON object" in skipped[1].reason


def test_deep_nesting_skips_one_file_or_line_and_the_rest_is_indexed(tmp_path, settings, static):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    nested = "[" * 900 + '"The Tarsk mill reopened."' + "]" * 900
    (folder / "deep.jsonl").write_text('{"title": "deep", "text": ' + nested + "}\n" + json.dumps(GOOD))
    (folder / "good.txt").write_text("Quarrow bell\n\nThe Quarrow bell was rung 77 times.")
    assistant = Assistant(Store(tmp_path / "index"), static, settings)
    try:
        report = assistant.index([folder])
        reasons = {(Path(s.path).name, s.line): s.reason for s in report.skipped}
        assert "nested too deeply" in reasons[("deep.json", None)]
        assert "nested too deeply" in reasons[("deep.jsonl", 1)]
        assert len(report.indexed) >= 2  # good.txt and the good line of deep.jsonl
        assert "77 times" in assistant.ask("How many times was the Quarrow bell rung?").text
        again = assistant.index([folder])  # a later run does not stop at the same file either
        assert ("deep.json", None) in {(Path(s.path).name, s.line) for s in again.skipped}
    finally:
        assistant.close()


def test_cli_reports_a_bomb_and_indexes_the_file_beside_it(tmp_path, settings):
    folder = tmp_path / "upload"
    folder.mkdir()
    _zeros_bomb(folder / "zeros.jsonl.gz", 100)
    lines = "\n".join([json.dumps({"title": "Same", "text": "The same story, again and again."})] * 400_000)
    (folder / "repeated.jsonl.gz").write_bytes(gzip.compress(lines.encode(), 9))
    (folder / "good.jsonl").write_text(json.dumps(GOOD) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAG_EMBEDDER": STATIC, "RAG_CACHE_DIR": str(settings.cache_dir)}
    done = subprocess.run([sys.executable, "-m", "rag.cli", "index", str(folder), "--index", str(tmp_path / "ix")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    assert any("zeros.jsonl.gz" in line and "rest of the file" in line for line in err), err
    assert any("repeated.jsonl.gz" in line and "rest of the file" in line for line in err), err
    assert len(err) < 20, err[:20]  # repeated lines are counted, not listed
    assert "indexed" in done.stdout


def test_fifo_symlinks_and_odd_names(tmp_path, settings, static):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("Secret plans\n\nThe Velk ferry sank at pier nine.")
    folder = tmp_path / "docs"
    folder.mkdir()
    os.mkfifo(folder / "pipe.txt")
    (folder / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (folder / "secret.txt").symlink_to(outside / "secret.txt")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    (folder / "evil\n\x1b[31mred.txt").write_text("Odd name\n\nThe Brask dam holds 3 million cubic metres.")
    (folder / "nul.txt").write_bytes(b"Nul byte\n\nThe Tarsk mill\x00 reopened after 40 years.")
    (folder / "real.bin.txt").write_bytes(bytes(range(256)) * 64)
    files = [p for p in find_files([folder]) if isinstance(p, Path)]
    assert sorted(p.name for p in files) == sorted(["evil\n\x1b[31mred.txt", "nul.txt", "real.bin.txt"])
    assistant = Assistant(Store(tmp_path / "index"), static, settings)
    try:
        report = assistant.index([folder])  # would block forever on the FIFO before
        reasons = {Path(s.path).name: s.reason for s in report.skipped}
        assert "not a regular file" in reasons["pipe.txt"]
        assert "dangling symlink" in reasons["gone.txt"]
        assert "outside" in reasons["secret.txt"] and "not followed" in reasons["secret.txt"]
        assert "outside" in reasons["linked"]
        assert "binary" in reasons["real.bin.txt"]
        assert len(report.indexed) == 2
        mill = assistant.search("Tarsk mill reopened", k=1)[0].article
        assert "The Tarsk mill reopened after 40 years." in mill.text
        odd = assistant.search("Brask dam", k=1)[0].article
        assert "\n" not in odd.path and "\x1b" not in odd.path and odd.path.endswith("evil\\n\\x1b[31mred.txt")
        named = assistant.index([folder / "secret.txt"])  # named directly: followed
        assert len(named.indexed) == 1
    finally:
        assistant.close()


def test_display_path_escapes_control_characters(tmp_path):
    shown = display_path(tmp_path / "a\nb\x1b[2J\u202ec\x7f.txt")
    assert shown.endswith("a\\nb\\x1b[2J\\u202ec\\x7f.txt")
    assert display_path(Path("plain name é.txt")) == "plain name é.txt"


def test_a_web_upload_of_a_bomb_says_why_it_was_refused(tmp_path, settings, static):
    from ui.web import report_rows

    bomb = _zeros_bomb(tmp_path / "upload.jsonl.gz", 100, head=(json.dumps(GOOD) + "\n").encode())
    assistant = Assistant(Store(tmp_path / "index"), static, settings)
    try:
        report = assistant.index([bomb])  # what the web chat's upload calls for each file
    finally:
        assistant.close()
    assert len(report.indexed) == 1
    row = report_rows("upload.jsonl.gz", report)
    assert "stopped after 16,777,216 bytes decompressed" in row and "the rest of the file is skipped" in row


def test_a_file_named_with_control_characters_survives_prune_and_reindex(tmp_path, settings, static):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "odd\nname\x1b[31m.txt").write_text("Vessa ferry\n\nThe Vessa ferry carried 212 people on Sunday.")
    assistant = Assistant(Store(tmp_path / "index"), static, settings)
    try:
        first = assistant.index([folder])
        assert len(first.indexed) == 1
        assert all("\n" not in s.path and "\x1b" not in s.path for s in first.skipped)
        again = assistant.index([folder], prune=True)  # the stored name must still be found on disk
        assert again.pruned == () and len(again.unchanged) == 1 and again.indexed == ()
        assert "212 people" in assistant.ask("How many people did the Vessa ferry carry?").text
    finally:
        assistant.close()
