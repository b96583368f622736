"""Filtered dense search (issue 13): sources and dates are applied against the reader's snapshot, never by
Chroma's `where` (its metadata filtering took 178 of a dated question's 190 ms on the 55,000-chunk bench index),
and the nearest chunks in range are the same as Chroma's own filtered search finds.

The index is small, so the dense side's candidate count is made small (3) for the tests: the unfiltered
neighbours then fill with January's flood articles and leave March's out, as a week's range is left out of
the unfiltered neighbours of a big collection.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from rag import retrieve
from rag.api import Assistant
from rag.config import Settings
from rag.embed import make_embedder
from rag.types import Filters
from tests.conftest import write_jsonl

STATIC = "model2vec:all-MiniLM-L6-v2"
STREETS = ["Mill Lane", "Quay Road", "Church Street", "the market square", "Station Road", "Bridge Row",
           "Orchard Way", "the school yard"]
QUESTION = "river floods in Dovrin"


def _articles() -> list[dict]:
    """40 January articles on Dovrin's floods, 4 March ones on its council (far from the question), 2 undated."""
    january = [{"title": f"Flood day {i} in Dovrin", "source": "River Times", "published": f"2022-01-{i % 28 + 1:02d}",
                "url": f"https://river.example/flood-{i}",
                "text": f"Floodwater covered {STREETS[i % 8]} in Dovrin as the river rose {i + 2} centimetres "
                        f"overnight. {i * 7 + 3} households left for the sports hall, and volunteers filled "
                        f"{i * 40 + 100} sandbags. Report number {i} of the winter floods."} for i in range(40)]
    march = [{"title": f"Dovrin council budget {i}", "source": "Valley Post", "published": f"2022-03-{i + 10}",
              "url": f"https://valley.example/budget-{i}",
              "text": f"The Dovrin council approved {i + 3} million euros for schools, libraries and roads in "
                      f"session {i}; councillor {['Mara', 'Ivo', 'Lena', 'Pavel'][i]} praised the new library "
                      "opening hours."} for i in range(4)]
    undated = [{"title": f"Dovrin weather note {i}", "source": "River Times", "url": f"https://river.example/n{i}",
                "text": f"Rain fell on the hills above Dovrin for the {['second', 'third'][i]} day; the river "
                        "was watched by the dam keepers at night."} for i in range(2)]
    return january + march + undated


@pytest.fixture(scope="module")
def assistant(tmp_path_factory: pytest.TempPathFactory, settings: Settings):
    folder = tmp_path_factory.mktemp("filtered")
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    opened = Assistant.open(folder / "index", settings.model_copy(update={"embedder": STATIC}), embedder=static)
    opened.index([write_jsonl(folder / "dovrin.jsonl", _articles())])
    assert opened.store.catalogue.counts() == (46, 46)  # one chunk an article
    yield opened
    opened.close()


@pytest.fixture
def few(monkeypatch: pytest.MonkeyPatch) -> int:
    """A candidate count small enough for this index (the unfiltered search reaches 30 of its 46 chunks)."""
    monkeypatch.setattr(retrieve, "CANDIDATES", 3)
    return 3


@pytest.fixture
def queries(assistant: Assistant, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keyword arguments of every Chroma query the test makes (the real query still runs)."""
    collection = assistant.store.vectors.collection(assistant.retriever.stage)
    real, seen = collection.query, []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(collection, "query", spy)
    return seen


FILTERS = {
    "march (narrow)": Filters(since=date(2022, 3, 1), until=date(2022, 3, 31)),
    "january (wide)": Filters(since=date(2022, 1, 1), until=date(2022, 1, 31)),
    "dated": Filters(until=date(2022, 12, 31)),
    "since": Filters(since=date(2022, 1, 20)),
    "source": Filters(sources=("Valley Post",)),
    "source and dates": Filters(sources=("River Times",), since=date(2022, 1, 10), until=date(2022, 1, 12)),
    "no such source": Filters(sources=("Nowhere Daily",)),
    "empty range": Filters(since=date(2023, 1, 1)),
}


def _dense(assistant: Assistant, filters: Filters) -> dict[str, float]:
    retriever = assistant.retriever
    snap = retriever._snap
    vector = retriever.embedder.embed([QUESTION])[0]
    dense, notice = retriever._dense(snap, vector, filters, retriever._mask(snap, filters))
    assert notice == ""
    return dense


def _published(assistant: Assistant, chunk_id: str) -> date:
    snap = assistant.retriever._snap
    return date.fromordinal(int(snap.table.published_ord[snap.row[chunk_id]]))


@pytest.mark.parametrize("name", list(FILTERS))
def test_filtered_search_finds_the_nearest_chunks_in_range_as_chromas_filter_does(assistant, few, name) -> None:
    filters = FILTERS[name]
    vector = assistant.retriever.embedder.embed([QUESTION])[0]
    expected = dict(assistant.store.vectors.dense_search(vector, few, filters))  # Chroma's own `where` search
    found = _dense(assistant, filters)
    assert list(found) == list(expected)
    assert list(found.values()) == pytest.approx(list(expected.values()), abs=1e-5)


def test_a_narrow_date_range_gets_its_passages(assistant, few) -> None:
    """March's chunks are far from the question: the unfiltered neighbours hold none of them, yet a search
    limited to March finds them, and so does the answer's search."""
    march = FILTERS["march (narrow)"]
    vector = assistant.retriever.embedder.embed([QUESTION])[0]
    unfiltered = assistant.store.vectors.dense_search(vector, few * retrieve.UNFILTERED, Filters())
    assert len(unfiltered) == 30 and {_published(assistant, cid).month for cid, _ in unfiltered} == {1}
    found = _dense(assistant, march)
    assert len(found) == few and {_published(assistant, cid).month for cid in found} == {3}
    hits = assistant.search(QUESTION, k=4, filters=march)
    assert len(hits) == 4 and all(h.article.published.startswith("2022-03") for h in hits)


def test_filtered_searches_send_no_where_clause_to_chroma(assistant, few, queries) -> None:
    for filters in FILTERS.values():
        assistant.search(QUESTION, filters=filters)
        assistant.ask(QUESTION, filters)
    assert queries and not [q for q in queries if q.get("where")]


def test_a_wide_filter_takes_one_unfiltered_search_and_a_narrow_one_one_search_among_its_ids(
        assistant, few, queries) -> None:
    """A filter keeping most chunks (January: 40 of 46) is served by one unfiltered search for a few more
    neighbours; a narrow one (March: 4 of 46) by one search among its chunks' ids, without a wasted
    unfiltered search first."""
    _dense(assistant, FILTERS["january (wide)"])
    assert len(queries) == 1 and "ids" not in queries[0] and queries[0]["n_results"] > few
    queries.clear()
    _dense(assistant, FILTERS["march (narrow)"])
    assert len(queries) == 1 and len(queries[0]["ids"]) == 4


def test_a_failed_search_among_ids_falls_back_to_the_unfiltered_neighbours(assistant, few, monkeypatch) -> None:
    """A search among ids fails when Chroma lacks one of them (a writer in another process removed it):
    the chunks in range among the unfiltered neighbours answer, without a notice."""
    collection = assistant.store.vectors.collection(assistant.retriever.stage)
    real = collection.query

    def no_ids(*args, **kwargs):
        if "ids" in kwargs:
            raise RuntimeError("Error executing plan: Internal error: Error finding id")
        return real(*args, **kwargs)

    monkeypatch.setattr(collection, "query", no_ids)
    found = _dense(assistant, FILTERS["source and dates"])
    assert found and {_published(assistant, cid).day for cid in found} <= {10, 11, 12}
    hits = assistant.search(QUESTION, filters=FILTERS["source and dates"])
    assert hits and not hits.notice and {h.article.published for h in hits} <= {"2022-01-10", "2022-01-11",
                                                                                 "2022-01-12"}


def test_masks_are_computed_from_the_snapshot(assistant) -> None:
    """The source filter's mask is one array compare over source codes, the same rows as a name compare."""
    snap = assistant.retriever._snap
    for sources in (("Valley Post",), ("River Times", "Valley Post"), ("Nowhere Daily",)):
        mask = assistant.retriever._mask(snap, Filters(sources=sources))
        assert np.array_equal(mask, np.array([s in sources for s in snap.table.sources]))


def test_a_search_does_not_count_the_collection(assistant, monkeypatch) -> None:
    """Chroma's count() cost three times the search itself on the 55,000-chunk bench index (6 ms of CPU against 2):
    the snapshot knows how many chunks there are."""
    collection = assistant.store.vectors.collection(assistant.retriever.stage)
    real, counted = collection.count, []

    def count(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(collection, "count", count)
    for filters in (None, *FILTERS.values()):
        assistant.search(QUESTION, filters=filters)
    assert assistant.search(QUESTION) and counted == []
