"""Shared fixtures: a small article collection with known facts, and one real embedder.

The embedder (the packaged all-MiniLM-L6-v2) is loaded once per test session;
tests that need an index build their own in a temporary folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rag.config import Settings
from rag.embed import make_embedder
from tests.pg_server import pg_server, pg_url  # noqa: F401 - fixtures: a real PostgreSQL for the team-mode tests

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
MARIUPOL_SEED = SEEDS / "000_6deafd6307c91394.txt"
# the shared benchmark corpus, beside the clone (CI's checkout has it; a clone elsewhere does not)
CORPUS = ROOT.parent / "shared" / "bench" / "rtqa2022" / "articles.jsonl.gz"
needs_corpus = pytest.mark.skipif(not CORPUS.exists(), reason="the shared rtqa2022 corpus is not beside this clone")


# news fixtures (tests/test_news.py and the web, Slack and LLM tests): a three-article sequence about one town
DOVRIN = [
    {"title": "Floods reach Dovrin", "source": "River Times", "published": "2022-03-01",
     "url": "https://river.example/dovrin-floods",
     "text": "Floodwater reached the town of Dovrin on Monday, forcing 600 residents from their homes. "
             "The river rose two metres in a day."},
    {"title": "Dovrin bridge collapses", "source": "River Times", "published": "2022-03-03",
     "url": "https://river.example/dovrin-bridge",
     "text": "The old stone bridge in Dovrin collapsed on Wednesday after days of flooding, officials said. "
             "Nobody was on the bridge when it fell."},
    {"title": "Dovrin starts to rebuild", "source": "Valley Post", "published": "2022-03-06",
     "url": "https://valley.example/dovrin-rebuild",
     "text": "Residents of Dovrin began clearing mud from the streets on Saturday as the water receded, "
             "according to Dovrin mayor Lena Ostrova."},
]
# two outlets disagreeing on the injured of one shelling
HARKAVY = [
    {"title": "Shelling hits Harkavy", "source": "Kestrel Wire", "published": "2022-03-04",
     "url": "https://kestrel.example/harkavy",
     "text": "Shelling hit the town of Harkavy overnight. At least 128 people were injured in the shelling "
             "of Harkavy, according to regional governor Oleh Marchuk."},
    {"title": "Harkavy shelled overnight", "source": "Valley Post", "published": "2022-03-05",
     "url": "https://valley.example/harkavy",
     "text": "At least 150 people were injured when shelling struck Harkavy overnight, the health ministry said. "
             "Schools in the town were closed."},
]

DAM = (
    "Brightwater dam fails in Velmora\n\n"
    "The Brightwater dam in Velmora failed early on Tuesday, flooding 412 homes in the valley below. "
    "Engineers had warned in March that the spillway was cracked.\n\n"
    "Rescue teams evacuated 1,300 residents by boat. The regional governor, Anneli Kask, declared an emergency."
)
FERRY_MD = """---
title: Orrin harbour welcomes the ferry Aurelia
date: 2022-04-10
source: Orrin Gazette
url: https://example.com/orrin-ferry
authors: [Mara Quint]
---
The new electric ferry Aurelia entered service on Lake Orrin on Sunday. It carries 240 passengers
and crosses the lake in 35 minutes.

Harbour master Piet Zoller said the old diesel ferry will be sold to a museum.
"""
DRONE_HTML = """<!doctype html><html><head><title>Zentrix unveils the Kestrel drone</title>
<meta property="article:published_time" content="2022-05-20T09:30:00Z">
<meta property="og:site_name" content="Tech Ledger">
<link rel="canonical" href="https://techledger.example/kestrel">
<script>window.leaked = "SCRIPT TEXT SHOULD NOT APPEAR";</script><style>.x{color:red}</style></head>
<body><nav>Home | Sports | Weather</nav>
<article><h1>Zentrix unveils the Kestrel drone</h1>
<p>Zentrix Robotics announced the Kestrel delivery drone on Friday, priced at 899 euros.</p>
<p>The Kestrel can carry parcels of up to 4 kilograms over a range of 30 kilometres.</p></article>
<footer>Cookie settings</footer></body></html>"""
WIRE = [
    {"title": "Quillon opens its new library", "text": "Mayor Ilse Varga opened the Quillon public library "
     "on Monday. The library holds 80,000 books and a rooftop reading garden.", "source": "quillon.news",
     "published": "2022/05/02", "url": "https://quillon.news/library", "authors": "Dana Holt"},
    {"title": ["Fenwick", "marathon"], "body": ["Tomas Reyes won the Fenwick marathon in 2:09:14.",
     "It was his first victory in the race."], "published_at": "June 5, 2022", "source": None,
     "author": {"name": "Wire staff"}},
]
CAFE_CP1252 = ("Festival in Saint-Rémy\n\n"
               "Café owners in Saint-Rémy said the garlic festival drew 15,000 visitors – a record.")
COMET_UTF16 = "Comet discovered\n\nThe observatory on Mount Pellar discovered comet K-77 in January."


def interruptible_cli(*args: str) -> list[str]:
    """The command line of `python -m rag.cli *args` whose process takes SIGINT as Ctrl-C even when the tests run
    in a shell's background job: that leaves SIGINT ignored, a child inherits it, and Python then never raises
    KeyboardInterrupt."""
    restore = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "runpy.run_module('rag.cli', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", restore, *args]


def check_quotes(assistant, answer) -> None:
    """Every citation of `answer` is an exact, non-empty span of its article."""
    for c in answer.citations:
        assert assistant.article(c.article_id).text[c.start:c.end] == c.quote
        assert c.quote.strip()


def write_jsonl(path: Path, articles: list[dict]) -> Path:
    """Write articles as a JSON-lines file, one object a line."""
    path.write_text("".join(json.dumps(a) + "\n" for a in articles), encoding="utf-8")
    return path


@contextmanager
def indexed(work: Path, articles: list[dict], settings: Settings, embedder) -> Iterator:
    """An `Assistant` over `articles` (written to `work/articles/`, indexed in `work/index`), closed after."""
    from rag import Assistant
    from rag.store import Store

    folder = work / "articles"
    folder.mkdir()
    write_jsonl(folder / "articles.jsonl", articles)
    assistant = Assistant(Store(work / "index"), embedder, settings)
    assistant.index([folder])
    try:
        yield assistant
    finally:
        assistant.close()


def write_collection(folder: Path) -> Path:
    """Write the fixture collection (good, duplicate and bad files) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dam.txt").write_text(DAM, encoding="utf-8")
    (folder / "dam-copy.txt").write_text(DAM, encoding="utf-8")  # identical text: stored once
    (folder / "ferry.md").write_text(FERRY_MD, encoding="utf-8")
    (folder / "drone.html").write_text(DRONE_HTML, encoding="utf-8")
    lines = [json.dumps(WIRE[0]), "{not json at all", json.dumps(WIRE[1]), json.dumps(["a", "list"])]
    (folder / "wire.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "cafe.txt").write_bytes(CAFE_CP1252.encode("cp1252"))
    (folder / "comet.txt").write_bytes(COMET_UTF16.encode("utf-16"))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blob.txt").write_bytes(bytes(range(256)) * 8)
    return folder


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture(scope="session")
def embedder(settings: Settings):
    """The real default embedder, loaded once for the whole run."""
    return make_embedder(settings.embedder, settings.precision, settings.embed_batch_size)


@pytest.fixture(scope="session")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_collection(tmp_path_factory.mktemp("collection"))
    shutil.copy(MARIUPOL_SEED, folder / MARIUPOL_SEED.name)
    return folder
