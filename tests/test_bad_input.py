"""Bad input: every kind of broken or odd file gets a clear message naming the file, line and reason, or is
normalised, and the rest of the batch is indexed; odd questions are refused clearly or answered with citations."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rag import Assistant, QuestionError
from rag.store import Store
from tests.conftest import DRONE_HTML, ROOT

STATIC = "model2vec:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def static(settings):
    from rag.embed import make_embedder

    return make_embedder(STATIC, cache_dir=settings.cache_dir)


def _big_text(size: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "harvest river council budget school market station festival bridge museum rain tram".split()
    paragraphs = []
    total = 0
    while total < size:
        p = " ".join(rng.choice(words) for _ in range(14)).capitalize() + "."
        paragraphs.append(p)
        total += len(p) + 2
    return "\n\n".join(paragraphs)


@pytest.fixture(scope="module")
def messy(tmp_path_factory, settings, static):
    folder = tmp_path_factory.mktemp("messy")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.md").write_text("   \n\n  \t\n")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (folder / "zip-named.json").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 16)
    (folder / "big.txt").write_text("Harvest almanac of Dunmere\n\n" + _big_text(10_000_000)
                                    + "\n\nThe Dunmere almanac ends with the Quarrow bell, rung 77 times.")
    (folder / "oneline.txt").write_text("Oneline chronicle " + "meadow lantern " * 70_000
                                        + "the Velk ferry sank at pier nine")
    (folder / "latin1.txt").write_bytes("Fête à Lyon\n\nLa fête des Lumières à Lyon a attiré 9 000 visiteurs "
                                        "près du Rhône.".encode("latin-1"))
    (folder / "utf16.txt").write_text("Zürich tram\n\nThe Zürich tram line 17 opened on Monday.", encoding="utf-16")
    (folder / "mixed.txt").write_bytes("Mixed bytes\n\nThe Øresund café – opened in ".encode()
                                       + "Malmö by Søren".encode("latin-1") + b" on Friday.")
    lines = [
        json.dumps({"title": "Good one", "text": "The Pellin lighthouse was repainted red in May.",
                    "url": "https://example.com/pellin"}),
        '{"title": "broken", "text": "no closing brace"',
        json.dumps({"title": ["List", "title"], "text": {"body": "The Tarsk mill reopened after 40 years."},
                    "source": None, "published": {"date": "2022-03-04"}, "authors": {"name": "Ana"},
                    "url": 12345}),
        json.dumps({"title": None, "text": None}),
        json.dumps([1, 2, 3]),
        "".join(map(chr, range(1, 9))) + "\x00\x0e\x0f\x10garbage",  # mostly control characters: binary
        json.dumps({"title": "Nested", "content": [{"text": "The Brask dam holds 3 million cubic metres."},
                                                   None, 7], "date": 1650000000}),
    ]
    (folder / "wire.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "page.html").write_text(DRONE_HTML.replace(
        "<article>", "<article><iframe src='https://evil.example'>IFRAME TEXT</iframe>"
                     "<script>alert('SCRIPT TEXT')</script>"))
    assistant = Assistant(Store(folder.parent / f"{folder.name}-index"), static, settings)
    report = assistant.index([folder])
    yield assistant, report, folder
    assistant.close()


def _reasons(report) -> dict:
    return {(Path(s.path).name, s.line): s.reason for s in report.skipped}


def test_bad_files_are_reported_by_file_line_and_reason(messy):
    _, report, _ = messy
    reasons = _reasons(report)
    assert "empty" in reasons[("empty.txt", None)]
    assert "empty" in reasons[("blank.md", None)]
    assert "binary" in reasons[("binary.txt", None)]
    assert "binary" in reasons[("zip-named.json", None)]
    assert "malformed JSON" in reasons[("wire.jsonl", 2)]
    assert "no article text" in reasons[("wire.jsonl", 4)]
    assert "expected a JSON object" in reasons[("wire.jsonl", 5)]
    assert "binary" in reasons[("wire.jsonl", 6)]
    assert len(report.indexed) == 9  # big, oneline, latin1, utf16, mixed, 3 wire lines, page


def test_big_and_one_line_files_are_indexed_whole(messy):
    assistant, _, _ = messy
    answer = assistant.ask("How many times is the Quarrow bell rung?")
    assert "77 times" in answer.text  # the last line of a 10 MB file
    answer = assistant.ask("Where did the Velk ferry sink?")
    assert any("pier nine" in c.quote for c in answer.citations)  # the end of a 1 MB line


def test_encodings_are_decoded(messy):
    assistant, _, _ = messy
    texts = {h.article.title: h.article.text for h in assistant.search("Lyon Zürich Øresund tram fête café", k=20)}
    assert "La fête des Lumières à Lyon a attiré 9 000 visiteurs près du Rhône." in texts["Fête à Lyon"]
    assert "The Zürich tram line 17 opened on Monday." in texts["Zürich tram"]
    mixed = texts["Mixed bytes"]
    assert "Øresund café" in mixed and "Malm" in mixed and "\x00" not in mixed


def test_wrong_metadata_types_are_normalised(messy):
    assistant, _, _ = messy
    mill = assistant.search("Tarsk mill reopened", k=1)[0].article
    assert (mill.title, mill.source, mill.published, mill.url, mill.authors) == ("List, title", "", "2022-03-04",
                                                                                 "", ("Ana",))
    dam = assistant.search("Brask dam cubic metres", k=1)[0].article
    assert "3 million cubic metres" in dam.text and dam.published == "2022-04-15"


def test_html_scripts_and_iframes_are_dropped(messy):
    assistant, _, _ = messy
    drone = assistant.search("Kestrel drone", k=1)[0].article
    assert "899 euros" in drone.text
    assert "SCRIPT TEXT" not in drone.text and "IFRAME TEXT" not in drone.text and "evil" not in drone.text


def test_fact_in_last_paragraph_of_a_long_article_is_found(tmp_path, settings, embedder):
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "long.txt").write_text("Regional council report\n\n" + _big_text(60_000, seed=3)
                                     + "\n\nFinally, the council named Orla Penhallow as harbour warden.")
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    assistant.index([folder])
    answer = assistant.ask("Who did the council name as harbour warden?")
    assert "Orla Penhallow" in answer.text and answer.citations
    assistant.close()


def test_odd_questions(messy):
    assistant, _, _ = messy
    with pytest.raises(QuestionError, match="empty"):
        assistant.ask("")
    with pytest.raises(QuestionError, match="100000 characters long; the limit is 2000"):
        assistant.ask("x" * 100_000)
    for question in ("Что случилось с паромом?", "渡轮在哪里沉没？", "ما الذي حدث في الميناء؟", "🚢❓"):
        answer = assistant.ask(question)
        for c in answer.citations:
            assert assistant.article(c.article_id).text[c.start:c.end] == c.quote


def test_cli_refuses_empty_and_huge_questions(messy):
    _, _, folder = messy
    index = folder.parent / f"{folder.name}-index"
    env = {"PYTHONPATH": str(ROOT), "RAG_EMBEDDER": STATIC, "PATH": "/usr/bin:/bin"}
    for question, expected in (("  ", "empty"), ("y" * 100_000, "the limit is 2000")):
        done = subprocess.run([sys.executable, "-m", "rag.cli", "ask", question, "--index", str(index)],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr


def test_a_bad_setting_or_an_empty_date_range_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from datetime import date

    from rag.cli import main
    from rag.types import Filters

    monkeypatch.setenv("RAG_TOP_K", "abc")
    assert main(["stats", "--index", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rag: RAG_TOP_K='abc': Input should be a valid integer") and "Traceback" not in err
    with pytest.raises(ValueError, match="the date range is empty: 2023-01-01 is after 2022-01-01"):
        Filters(since=date(2023, 1, 1), until=date(2022, 1, 1))
