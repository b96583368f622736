"""End-to-end contracts of the core, with the real model, Chroma and bm25s."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from rag import Assistant, Filters, Message, QuestionError
from rag.errors import IndexError_
from rag.ingest import article_id
from tests.conftest import MARIUPOL_SEED, SEEDS, check_quotes


@pytest.fixture(scope="module")
def built(tmp_path_factory, collection, settings, embedder):
    """An assistant over the fixture collection plus the seed article, and the first report."""
    work = tmp_path_factory.mktemp("work")
    folder = work / "articles"
    shutil.copytree(collection, folder)
    assistant = Assistant(*_parts(work / "index", settings, embedder))
    report = assistant.index([folder])
    yield assistant, report, folder
    assistant.close()


def _parts(index_dir: Path, settings, embedder):
    from rag.store import Store

    return Store(index_dir), embedder, settings


def test_first_index_reports_every_file(built):
    _, report, _ = built
    assert len(report.indexed) == 8  # dam, ferry, drone, 2 wire lines, cafe, comet, the seed
    assert len(report.duplicates) == 1
    reasons = {(Path(s.path).name, s.line): s.reason for s in report.skipped}
    assert "empty file" in reasons[("empty.txt", None)]
    assert "binary" in reasons[("blob.txt", None)]
    assert "malformed JSON" in reasons[("wire.jsonl", 2)]
    assert "expected a JSON object" in reasons[("wire.jsonl", 4)]
    assert any("same text as article" in s.reason for s in report.skipped)
    assert report.chunks_embedded > 0


def test_mariupol_golden_answer(built):
    assistant, _, _ = built
    answer = assistant.ask("what happened in Mariupol?")
    assert not answer.abstained
    text = answer.text
    for fact in ("shelling", "128", "Electricity was also cut", "electricity has been restored", "26 tonnes of bread"):
        assert fact in text, fact
    seed_id = article_id("", f"{_rel(MARIUPOL_SEED, built[2])}")
    assert {c.article_id for c in answer.citations} == {assistant.article(seed_id).id}
    assert all(f"[{c.n}]" in text for c in answer.citations)
    check_quotes(assistant, answer)


def _rel(seed: Path, folder: Path) -> str:
    from rag.ingest import display_path

    return display_path(folder / seed.name)


@pytest.mark.parametrize("question, fact", [
    ("How many homes were flooded when the Brightwater dam failed?", "412 homes"),
    ("How many passengers does the ferry Aurelia carry?", "240 passengers"),
    ("What does the Kestrel drone cost?", "899 euros"),
    ("Who won the Fenwick marathon?", "Tomas Reyes"),
    ("How many visitors did the garlic festival in Saint-Rémy draw?", "15,000 visitors"),
    ("Which comet did the Mount Pellar observatory discover?", "K-77"),
])
def test_known_facts_are_answered_with_exact_quotes(built, question, fact):
    assistant, _, _ = built
    answer = assistant.ask(question)
    assert not answer.abstained
    assert fact in answer.text
    assert any(fact in c.quote for c in answer.citations)
    check_quotes(assistant, answer)


@pytest.mark.parametrize("question", [
    "Who won the 2018 FIFA World Cup?",
    "What is the boiling point of mercury?",
    "How do I bake sourdough bread at home?",
])
def test_unanswerable_questions_abstain(built, question):
    answer = built[0].ask(question)
    assert answer.abstained
    assert answer.citations == ()
    assert "not found in the articles" in answer.text.lower()


@pytest.mark.parametrize("question, missing", [
    # the rest of each question matches an article of the collection well; its name or year does not
    ("How many homes were flooded when the Kettering dam failed?", "Kettering"),
    ("Who won the 1987 Fenwick marathon?", "1987"),
    ("How many people were injured in the shelling of Portvale?", "Portvale"),
])
def test_questions_about_another_place_or_year_abstain_and_say_why(built, question, missing):
    answer = built[0].ask(question)
    assert answer.abstained and answer.citations == ()
    assert answer.text == f"Not found in the articles: none of the articles found mentions {missing}."


def test_names_found_only_in_separate_articles_are_named_together(built):
    answer = built[0].ask("Did Tomas Reyes inspect the Brightwater dam?")
    assert answer.abstained and answer.citations == ()
    assert answer.text == ("Not found in the articles: none of the articles found mentions Tomas, Reyes and "
                           "Brightwater together.")


def test_the_names_check_reads_the_article_index_not_the_texts(built, monkeypatch):
    """Which names each article found holds comes from the article index's postings (an ask read every found
    article's whole text for it: ~10 ms of an ask); the same as the articles' own words."""
    assistant = built[0]
    question = "How many homes were flooded when the Kettering dam failed?"
    hits = list(assistant.search(question, k=8))
    ids = list(dict.fromkeys(h.article.id for h in hits))
    terms = assistant.answerer.tokens(["Kettering Brightwater dam 1987 homes"])[0]
    read = {h.article.id: assistant.answerer._article_terms(h.article.title, h.article.text) & set(terms)
            for h in hits}
    assert assistant.retriever.mentions(ids, terms) == read
    monkeypatch.setattr(assistant.answerer, "_article_terms", lambda *a: pytest.fail("read an article's text"))
    answer = assistant.ask(question)
    assert answer.text == "Not found in the articles: none of the articles found mentions Kettering."


def test_metadata_is_normalised(built):
    assistant, _, _ = built
    hits = assistant.search("Kestrel drone Zentrix", k=1)
    drone = hits[0].article
    assert (drone.title, drone.source, drone.published) == ("Zentrix unveils the Kestrel drone", "Tech Ledger",
                                                            "2022-05-20")
    assert drone.url == "https://techledger.example/kestrel"
    assert "SCRIPT TEXT" not in drone.text and "Cookie settings" not in drone.text and "Home |" not in drone.text
    marathon = assistant.search("Fenwick marathon", k=1)[0].article
    assert (marathon.title, marathon.published, marathon.authors) == ("Fenwick, marathon", "2022-06-05",
                                                                      ("Wire staff",))
    ferry = assistant.search("ferry Aurelia", k=1)[0].article
    assert (ferry.source, ferry.published, ferry.authors) == ("Orrin Gazette", "2022-04-10", ("Mara Quint",))
    cafe = assistant.search("garlic festival", k=1)[0].article
    assert "Café owners in Saint-Rémy" in cafe.text and "–" in cafe.text
    seed = assistant.search("Kharkiv paratroopers", k=1)[0].article
    assert seed.title.startswith("Russia is said to have launched another attack on Kharkiv")
    assert seed.published == ""


def test_filters_restrict_sources_and_dates(built):
    assistant, _, _ = built
    assert {"Orrin Gazette", "Tech Ledger", "quillon.news"} <= set(assistant.sources())
    assert len(assistant.article_ids()) == assistant.stats()["articles"]
    only = assistant.search("library books", k=8, filters=Filters(sources=("Orrin Gazette",)))
    assert only and {h.article.source for h in only} == {"Orrin Gazette"}
    may = assistant.search("new", k=20, filters=Filters(since=date(2022, 5, 1), until=date(2022, 5, 31)))
    assert may and all("2022-05-01" <= h.article.published <= "2022-05-31" for h in may)
    assert {h.article.title for h in may} >= {"Quillon opens its new library"}
    dated = assistant.ask("Who opened the library?", filters=Filters(until=date(2022, 4, 30)))
    assert "Ilse Varga" not in dated.text


def test_hits_are_grouped_by_article(built):
    hits = built[0].search("Mariupol Kharkiv Kherson shelling", k=8)
    order = [h.article.id for h in hits]
    seen: list[str] = []
    for article in order:
        if not seen or seen[-1] != article:
            assert article not in seen, "an article's passages must be adjacent"
            seen.append(article)


def test_chat_follow_up_uses_previous_turn(built):
    assistant, _, _ = built
    first = assistant.ask("what happened in Mariupol?")
    answer = assistant.chat([
        Message("user", "what happened in Mariupol?"),
        Message("assistant", first.text),
        Message("user", "and in Kherson?"),
    ])
    assert not answer.abstained
    assert "Kherson" in answer.text
    assert "river port" in answer.text
    check_quotes(assistant, answer)


def test_bad_questions_are_refused(built):
    assistant, _, _ = built
    with pytest.raises(QuestionError, match="empty"):
        assistant.ask("   ")
    with pytest.raises(QuestionError, match="limit"):
        assistant.ask("why " * 100_000)


def test_reindex_unchanged_embeds_nothing(built):
    assistant, _, folder = built
    before = assistant.stats()
    report = assistant.index([folder])
    assert report.chunks_embedded == 0
    assert report.indexed == () and report.replaced == ()
    assert assistant.stats()["chunks"] == before["chunks"]


def test_changed_file_is_replaced_and_prune_removes_deleted(built):
    assistant, _, folder = built
    ferry = folder / "ferry.md"
    ferry.write_text(ferry.read_text().replace("240 passengers", "310 passengers"), encoding="utf-8")
    report = assistant.index([folder])
    assert len(report.replaced) == 1 and report.indexed == ()
    answer = assistant.ask("How many passengers does the ferry Aurelia carry?")
    assert "310 passengers" in answer.text and "240" not in answer.text
    articles, chunks = assistant.store.catalogue.counts()
    assert assistant.store.vectors.count() == chunks  # old version's vectors are gone

    (folder / "dam.txt").unlink()
    (folder / "dam-copy.txt").unlink()
    report = assistant.index([folder], prune=True)
    assert len(report.pruned) == 1
    assert assistant.ask("How many homes were flooded when the Brightwater dam failed?").abstained
    assert assistant.store.catalogue.counts()[0] == articles - 1


def test_other_embedder_is_a_clear_error(built, settings):
    from rag.store import Store

    class Other:
        name, dim, max_tokens = "sentence-transformers:other-model", 384, 256

    with pytest.raises(IndexError_, match="(?i)re-index"):
        Assistant(Store(built[0].store.dir), Other(), settings)


def test_seeds_collection_answers(tmp_path, settings, embedder):
    from rag.store import Store

    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    report = assistant.index([SEEDS])
    assert report.indexed and not report.skipped
    answer = assistant.ask("what happened in Mariupol?")
    assert "128" in answer.text and answer.citations
    assert assistant.index([SEEDS]).chunks_embedded == 0
    assistant.close()
