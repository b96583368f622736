"""The incremental BM25 indexes (rag.lexical): updated in place, they score exactly like a rebuild and like
bm25s, and an update's work is the changed articles', not the collection's."""

from __future__ import annotations

import json
import random
from pathlib import Path

import bm25s
import numpy as np

from rag import lexical as lexical_module
from rag.index import content_hash
from rag.lexical import ARTICLES, MANIFEST, PASSAGES, Lexical, Words, build_lexical, outdated, sync_lexical
from rag.store import Store
from rag.types import Article, Chunk

# a Zipf-like vocabulary: a few words in most articles, many in few, so document frequencies vary
VOCABULARY = [f"{a}{b}" for a in ("flood", "bridge", "port", "grain", "vote", "court", "strike", "fire", "drone",
                                  "tariff", "mayor", "rail") for b in ("", "s", "ing", "ed", "er", "ville", "ian")]
NAMES = ["Dovrin", "Kestrel", "Zorvath", "Mariupol", "Oslo", "Quito", "Lagos", "Perth"]


def _text(rng: random.Random, words: int) -> str:
    weights = [1 / (i + 1) for i in range(len(VOCABULARY))]
    paragraphs = []
    for _ in range(rng.randint(1, 4)):
        picked = rng.choices(VOCABULARY, weights, k=words) + rng.sample(NAMES, 2)
        rng.shuffle(picked)
        paragraphs.append(" ".join(picked) + ".")
    return "\n\n".join(paragraphs)


def _article(rng: random.Random, n: int, words: int = 40) -> Article:
    return Article(f"a{n:05d}", f"{rng.choice(NAMES)} {rng.choice(VOCABULARY)} report {n}", _text(rng, words),
                   source="wire", published="2022-05-01")


def _chunks(article: Article) -> list[Chunk]:
    """One chunk per paragraph, under versioned ids as the indexer makes them."""
    version = content_hash(article)[:8]
    out, start = [], 0
    for i, part in enumerate(article.text.split("\n\n")):
        start = article.text.index(part, start)
        out.append(Chunk(f"{article.id}:{version}:{i}", article.id, start, start + len(part), part))
        start += len(part)
    return out


def _save(store: Store, articles: list[Article]) -> None:
    store.catalogue.save_articles([(a, content_hash(a), _chunks(a)) for a in articles])


def _remove(store: Store, article_id: str) -> None:
    with store.catalogue.db as db:  # the catalogue's rows; the vectors are not the subject here
        db.execute("DELETE FROM chunks WHERE article_id = ?", (article_id,))
        db.execute("DELETE FROM articles WHERE id = ?", (article_id,))


def _sync(store: Store) -> tuple[int, int]:
    return sync_lexical(store.dir, store.catalogue.article, store.catalogue.chunk_table())


def _rebuilt(store: Store, folder: Path) -> tuple[Lexical, Lexical]:
    """Both indexes built from scratch from the store's current articles, in another folder."""
    build_lexical(folder, store.catalogue.article, store.catalogue.chunk_table())
    return Lexical(folder / PASSAGES), Lexical(folder / ARTICLES)


def _queries(rng: random.Random) -> list[str]:
    picks = [" ".join(rng.sample(VOCABULARY + NAMES, rng.randint(1, 5))) for _ in range(60)]
    return picks + ["flood flood bridge", "Dovrin", "nothing matches zzzz", "", "ports of Kestrel flooded"]


def _assert_same_ranking(updated: Lexical, rebuilt: Lexical, order: list[str], queries: list[str]) -> None:
    assert updated.align(order) and rebuilt.align(order)
    assert updated.ids == rebuilt.ids == order
    for query in queries:
        a, b = updated.scores(query), rebuilt.scores(query)
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b), query  # the same float32 sums, not merely close
        assert np.array_equal(np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")), query
    terms = Words().tokens([" ".join(VOCABULARY + NAMES + ["unseen"])])[0]
    assert updated.idf(terms) == rebuilt.idf(terms)
    assert updated.vocabulary() == rebuilt.vocabulary()


def _check(store: Store, tmp_path: Path, name: str, queries: list[str]) -> None:
    table = store.catalogue.chunk_table()
    passages, articles = _rebuilt(store, tmp_path / name)
    _assert_same_ranking(Lexical(store.dir / PASSAGES), passages, table.ids, queries)
    _assert_same_ranking(Lexical(store.dir / ARTICLES), articles, list(dict.fromkeys(table.article_ids)), queries)


def test_updated_in_place_the_indexes_rank_exactly_like_a_rebuild(tmp_path):
    rng = random.Random(7)
    store = Store(tmp_path / "index")
    try:
        _save(store, [_article(rng, n) for n in range(300)])
        assert _sync(store) == (len(store.catalogue.chunk_table().ids), 300)
        queries = _queries(rng)
        # added, changed (new text and title: new chunk ids) and removed articles, in one update
        changed = store.catalogue.article("a00010")
        _save(store, [_article(rng, n) for n in range(300, 340)]
              + [Article(changed.id, "Kestrel grain court", _text(rng, 30), source="wire")])
        _remove(store, "a00020")
        _sync(store)
        assert len(json.loads((store.dir / PASSAGES / MANIFEST).read_text())["segments"]) == 2  # not merged
        _check(store, tmp_path, "rebuilt1", queries)
        # only a removal (dead documents, no new segment), then enough new articles to merge the segments
        _remove(store, "a00030")
        _sync(store)
        _check(store, tmp_path, "rebuilt2", queries)
        _save(store, [_article(rng, n) for n in range(340, 480)])
        _sync(store)
        manifest = json.loads((store.dir / PASSAGES / MANIFEST).read_text())
        assert len(manifest["segments"]) == 1 and "dead" not in manifest  # merged
        _check(store, tmp_path, "rebuilt3", queries)
    finally:
        store.close()


def test_scores_are_bm25s_scores(tmp_path):
    rng = random.Random(3)
    words = Words()
    texts = [_text(rng, 30) for _ in range(200)] + [""]
    tokens = words.tokens(texts)
    ids = [str(i) for i in range(len(texts))]
    for k1 in (1.2, 1.5):
        ours = Lexical(tmp_path / f"k{k1}")
        ours.build(ids, tokens, k1=k1)
        model = bm25s.BM25(k1=k1, b=0.75)
        model.index(tokens, show_progress=False)
        for query in _queries(rng):
            known = [t for t in words.tokens([query])[0] if t in model.vocab_dict]
            expected = model.get_scores(known) if known else np.zeros(len(ids), dtype=np.float32)
            assert np.array_equal(ours.scores(query), expected), query


def test_adding_ten_articles_leaves_the_main_segment_alone(tmp_path):
    rng = random.Random(11)
    store = Store(tmp_path / "index")
    try:
        _save(store, [_article(rng, n, words=25) for n in range(2000)])
        _sync(store)
        mains = {}
        for name in (PASSAGES, ARTICLES):
            main = store.dir / name / json.loads((store.dir / name / MANIFEST).read_text())["segments"][0]
            mains[name] = {p.name: p.stat().st_mtime_ns for p in main.iterdir()}, main
        new = [_article(rng, n, words=25) for n in range(2000, 2010)]
        _save(store, new)
        done = _sync(store)
        assert done == (sum(len(_chunks(a)) for a in new), 10)  # tokenized: the new articles' passages, and them
        for name, (stamps, main) in mains.items():
            assert json.loads((store.dir / name / MANIFEST).read_text())["segments"][0] == main.name
            assert {p.name: p.stat().st_mtime_ns for p in main.iterdir()} == stamps
        hits = Lexical(store.dir / ARTICLES)
        assert hits.align(list(dict.fromkeys(store.catalogue.chunk_table().article_ids)))
        assert hits.ids[int(np.argmax(hits.scores(new[3].title)))] == new[3].id
    finally:
        store.close()


def test_a_damaged_or_earlier_format_index_is_built_again_whole(tmp_path):
    rng = random.Random(5)
    store = Store(tmp_path / "index")
    try:
        _save(store, [_article(rng, n) for n in range(20)])
        (store.dir / PASSAGES).mkdir()
        (store.dir / PASSAGES / "ids.json").write_text('["half', encoding="utf-8")  # the bm25s layout
        _sync(store)
        (store.dir / ARTICLES / MANIFEST).write_text("{", encoding="utf-8")
        _sync(store)
        assert not (store.dir / PASSAGES / "ids.json").exists()
        _check(store, tmp_path, "rebuilt", _queries(rng))
    finally:
        store.close()


def test_a_reader_that_meets_a_merge_reads_the_manifest_again(tmp_path, monkeypatch):
    from rag import lexical

    folder = tmp_path / "bm25"
    words = Words()
    writer = Lexical(folder)
    writer.build(["a", "b"], words.tokens(["floods in Dovrin", "a bridge collapses"]))
    load, merges = lexical.Segment.load, []

    def merged_meanwhile(segment_folder: Path) -> lexical.Segment:
        if not merges:  # the reader has read the manifest; a writer merges (deleting its segment) before it goes on
            merges.append(segment_folder.name)
            writer.update(["a"], ["c", "d"], words.tokens(["a bridge reopens", "bridge tolls"]))
        return load(segment_folder)

    monkeypatch.setattr(lexical.Segment, "load", staticmethod(merged_meanwhile))
    reader = Lexical(folder)
    assert merges and not (folder / merges[0]).exists()
    assert reader.ids == ["b", "c", "d"] and reader.scores("bridge").min() > 0


def test_an_index_of_the_earlier_bm25s_layout_is_upgraded_when_opened(tmp_path, settings):
    """An index built before the incremental BM25 (a bm25s folder, no manifest) ranks by words again as soon
    as it is opened, not only after the next `rag index`."""
    import shutil

    from rag import Assistant
    from rag.embed import make_embedder

    static = make_embedder("model2vec:all-MiniLM-L6-v2", cache_dir=settings.cache_dir)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Quarrow bell\n\nThe Quarrow bell was rung 77 times on Sunday.")
    (folder / "b.txt").write_text("Tarsk mill\n\nThe Tarsk mill reopened after the floods in May.")
    built = Assistant.open(tmp_path / "index", settings, embedder=static)
    built.index([folder])
    built.close()
    for name in (PASSAGES, ARTICLES):  # what an index of the earlier release holds instead
        shutil.rmtree(tmp_path / "index" / name)
        (tmp_path / "index" / name).mkdir()
        (tmp_path / "index" / name / "ids.json").write_text("[]", encoding="utf-8")
    opened = Assistant.open(tmp_path / "index", settings, embedder=static)
    try:
        assert all((tmp_path / "index" / name / MANIFEST).exists() for name in (PASSAGES, ARTICLES))
        assert opened.retriever.lexical.scores("Quarrow bell").max() > 0
        assert "77 times" in opened.ask("How many times was the Quarrow bell rung?").text
    finally:
        opened.close()


def test_a_run_updates_the_indexes_from_its_own_articles_alone(tmp_path):
    """After a run that added, changed and removed a few articles, the indexes are brought up to date from those
    articles' chunks alone (`sync_articles`; the whole chunk table was read for every add) and rank exactly like
    a rebuild."""
    from rag.index import _chunks_of
    from rag.lexical import sync_articles

    rng = random.Random(11)
    store = Store(tmp_path / "index")
    try:
        _save(store, [_article(rng, n) for n in range(300)])
        _sync(store)
        queries = _queries(rng)
        changed = store.catalogue.article("a00010")
        _save(store, [_article(rng, n) for n in range(300, 310)]
              + [Article(changed.id, "Kestrel grain court", _text(rng, 30), source="wire")])
        _remove(store, "a00020")
        scope = {f"a{n:05d}" for n in range(300, 310)} | {"a00010", "a00020"}
        table = _chunks_of(store.catalogue, scope)
        assert set(table.article_ids) == scope - {"a00020"} and len(table.ids) < 40
        assert sync_articles(store.dir, store.catalogue.article, table, scope) == (len(table.ids), 11)
        _check(store, tmp_path, "rebuilt", queries)
    finally:
        store.close()


def test_adding_articles_does_not_read_the_whole_chunk_table(tmp_path, settings, monkeypatch):
    from rag.api import Assistant
    from rag.config import Settings
    from tests.conftest import write_collection

    docs = write_collection(tmp_path / "docs")
    static = Settings(_env_file=None, embedder="model2vec:all-MiniLM-L6-v2", cache_dir=settings.cache_dir)
    assistant = Assistant.open(tmp_path / "index", static)
    try:
        assistant.index([docs / "dam.txt"])
        monkeypatch.setattr(assistant.store.catalogue, "chunk_table", lambda: 1 / 0)
        report = assistant.index([docs / "ferry.md", docs / "wire.jsonl"])
        assert len(report.indexed) == 3
        monkeypatch.undo()
        _check(assistant.store, tmp_path, "rebuilt", ["ferry", "dam homes flooded", "Brightwater"])
    finally:
        assistant.close()


def test_a_number_is_one_term():
    # "2.9 million vehicles": the number is the question's rarest word, and was no term at all ("2" and "9" are
    # single characters); "2,532" was "532"
    assert Words().tokens(["Ford recalled 2.9 million vehicles, 2,532 bans, up 13.1% in 2022 (7.0-magnitude)"])[0] \
        == ["ford", "recal", "2.9", "million", "vehicl", "2532", "ban", "up", "13.1", "13", "2022", "7.0", "magnitud"]
    assert Words(1).tokens(["Ford recalled 2.9 million vehicles, 2,532 bans"])[0] == \
        ["ford", "recal", "million", "vehicl", "532", "ban"]


def test_an_index_of_an_earlier_tokenizer_is_read_by_its_rules_until_the_next_index_run(tmp_path, monkeypatch,
                                                                                        settings, embedder):
    from rag import Assistant
    from tests.conftest import write_jsonl

    folder = tmp_path / "articles"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [
        {"title": "Ford recall", "source": "Wire", "published": "2022-06-15", "url": "https://w.example/ford",
         "text": "Ford recalled 2.9 million vehicles on Tuesday."},
        {"title": "Toyota recall", "source": "Wire", "published": "2022-06-14", "url": "https://w.example/toyota",
         "text": "Toyota recalled 1.7 million vehicles on Monday."}])
    monkeypatch.setattr(lexical_module, "TOKENS", 1)  # as an earlier version wrote it
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    try:
        assistant.index([folder])
        monkeypatch.undo()
        old = Lexical(tmp_path / "index" / ARTICLES)
        assert outdated(tmp_path / "index") and old.words.version == 1
        assert old.scores("2.9")[0] == 0  # queried by its own rules: no term for "2.9" (nor a wrong one)
        assistant.index([folder])  # nothing new, but the lexical indexes are built again by today's rules
        assert not outdated(tmp_path / "index")
        new = Lexical(tmp_path / "index" / ARTICLES)
        scores = dict(zip(new.ids, new.scores("recalled 2.9 million vehicles")))
        best = max(scores, key=scores.__getitem__)
        assert new.words.version == lexical_module.TOKENS and min(scores.values()) > 0, scores
        assert assistant.store.catalogue.article(best).title == "Ford recall", scores
    finally:
        assistant.close()


def test_an_index_of_an_earlier_tokenizer_is_rebuilt_when_opened(tmp_path, monkeypatch, settings, embedder):
    """Like the earlier bm25s layout: opened with its writer lock free, it is tokenized again by today's rules."""
    from rag import Assistant
    from tests.conftest import write_jsonl

    folder = tmp_path / "articles"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [
        {"title": "Ford recall", "source": "Wire", "published": "2022-06-15", "url": "https://w.example/ford",
         "text": "Ford recalled 2.9 million vehicles on Tuesday."},
        {"title": "Toyota recall", "source": "Wire", "published": "2022-06-14", "url": "https://w.example/toyota",
         "text": "Toyota recalled 1.7 million vehicles on Monday."}])
    monkeypatch.setattr(lexical_module, "TOKENS", 1)  # as an earlier version wrote it
    built = Assistant.open(tmp_path / "index", settings, embedder=embedder)
    built.index([folder])
    built.close()
    monkeypatch.undo()
    assert outdated(tmp_path / "index")
    opened = Assistant.open(tmp_path / "index", settings, embedder=embedder)
    try:
        assert not outdated(tmp_path / "index")
        assert opened.retriever.lexical.words.version == lexical_module.TOKENS
        assert opened.retriever.lexical.scores("2.9").max() > 0
    finally:
        opened.close()
