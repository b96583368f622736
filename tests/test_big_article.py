"""Memory of one big article (issue 12 item 9): how much indexing it, and asking about it, grow the process beyond
what it holds after loading the model, in times the file's size. Measured in a subprocess (psutil sampling its own
RSS), with the static embedder so it stays fast; the article is generated prose with an emoji now and then, as
scraped news has (one widens Python's whole text to 4 bytes a character: the text alone is 4 times the file).

The issue asks for under 10 times for both; the bounds here are what the fixes reached, and what the code before
them exceeded. Indexing built the embed texts and vectors of all of an article's chunks at once, and its BM25
segments from token lists of every passage and of the whole article; both now go a bounded slice at a time (the
fast tests below check the slicing). Then: the file is decoded and normalised in small slices; the chunks wait
for embedding as spans with the text in 32K-character slices (only the slices holding an emoji are 4 bytes a
character), its JSON is hashed a slice at a time, and the whole text is made again for the commit only after
Chroma has given back its in-memory vectors. Measured (growth over the loaded model, static embedder): 16 MB,
index 267 -> 196 MB (16.7x -> 12.2x), 50 MB 752 -> 468 MB (15.0x -> 9.4x).
Asking held the article's whole text (4x) from the search on; the search now gives a long article's text as a
`StoredText` read from the catalogue in slices (its passages, their sentences and lines), and the names check
reads its words and names a bounded piece at a time (the fast tests below). In SQLite it is measured and
sliced from its bytes as stored (SQLite's `length` and `substr` load the whole value, 1x, at every call).
Asking, 16 MB: 183 -> 126 MB (11.5x -> 7.8x), 50 MB: 554 -> 350 MB (11.1x -> 7.0x). What is left at 16 MB
is the lexical phase of indexing (the article read back from the catalogue, 4x, while its passages are
tokenized) and, when asking, Chroma's vectors (~4.5x), the retriever's tables and the names check's terms.
16 MB: big enough that fixed overheads (~50 MB) do not dominate, small enough for the slow tier."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.api import Assistant
from rag.lexical import SegmentBuilder
from rag.store import Store

STATIC = "model2vec:all-MiniLM-L6-v2"
SIZE = 16_000_000
NEEDLE = ("The Kestrelmouth harbour bridge was reopened on Tuesday by the engineer Talia Brennvik, after 212 days "
          "of repairs paid for by the county council.")
QUESTION = "Who reopened the Kestrelmouth harbour bridge?"
INDEX_TIMES, ASK_TIMES = 13, 9  # reached at 16 MB: 11.9-12.2x (was 16.7x) and 7.8x (was 13.4x, then 11.5x)

# runs in the child: load the model, note the RSS, then index or ask while a thread samples the peak
CHILD = r"""
import json, sys, threading, time
import psutil
from rag.api import Assistant
from rag.config import Settings

mode, index_dir, arg = sys.argv[1:4]
me = psutil.Process()
assistant = Assistant.open(index_dir, Settings(_env_file=None, index_dir=index_dir, embedder=sys.argv[4]))
assistant.embedder.embed(["load the model"])
assistant.embedder.token_counts(["load the tokenizer"])
assistant.chunker.count(["load the encoding"])
base = me.memory_info().rss
peak = [base]
done = threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], me.memory_info().rss)
        time.sleep(0.005)

thread = threading.Thread(target=sample)
thread.start()
try:
    if mode == "index":
        out = {"summary": assistant.index([arg]).summary()}
    else:
        answer = assistant.ask(arg)
        out = {"answer": answer.text, "quotes": [c.quote for c in answer.citations]}
finally:
    done.set()
    thread.join()
out["growth"] = max(peak[0], me.memory_info().rss) - base
print(json.dumps(out))
"""

_SYLLABLES = "ka lo ren ti mar sol vek an dur bel os it pra ne gor la mi fen tu rask ol ve da cor".split()


def _prose(size: int, needle: str, seed: int = 5) -> str:
    """News-like paragraphs of varied words (tens of thousands of distinct ones, some capitalised names and
    figures, an emoji now and then as scraped news has), with `needle` in the middle."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(60_000)})
    common = "the of and to in a that for on was with said by at from is has".split()
    paragraphs: list[str] = []
    total, placed = 0, False
    while total < size:
        sentences = []
        for _ in range(rng.randint(2, 6)):
            n = rng.randint(8, 28)
            body = [rng.choice(common) if rng.random() < 0.35 else rng.choice(words) for _ in range(n)]
            body[0] = body[0].capitalize()
            if rng.random() < 0.3:
                body[rng.randrange(1, n)] = rng.choice(words).capitalize()
            if rng.random() < 0.2:
                body[rng.randrange(1, n)] = f"{rng.randint(2, 9999):,}"
            sentences.append(" ".join(body) + rng.choice(".....?!"))
        if rng.random() < 0.002:
            sentences.append("\U0001f4f8")
        paragraphs.append(" ".join(sentences))
        total += len(paragraphs[-1]) + 2
        if not placed and total > size // 2:
            paragraphs.append(needle)
            placed = True
    return "Harbour report\n\n" + "\n\n".join(paragraphs) + "\n"


def _run(mode: str, index_dir: Path, arg: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(index_dir), arg, STATIC],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_big_article_is_indexed_and_asked_in_memory_proportional_to_it(tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    folder.mkdir()
    article = folder / "big.txt"
    article.write_text(_prose(SIZE, NEEDLE), encoding="utf-8")
    size = article.stat().st_size
    index_dir = tmp_path / "index"

    indexed = _run("index", index_dir, str(folder))
    assert indexed["summary"].startswith("1 indexed")

    asked = _run("ask", index_dir, QUESTION)
    assert any(NEEDLE in quote for quote in asked["quotes"]), asked["answer"]
    assert asked["growth"] < ASK_TIMES * size, f"asking grew by {asked['growth'] / 1e6:.0f} MB for {size / 1e6:.0f} MB"
    assert indexed["growth"] < INDEX_TIMES * size, \
        f"indexing grew by {indexed['growth'] / 1e6:.0f} MB for {size / 1e6:.0f} MB"


# ---------- fast: the slicing that keeps the memory bounded ----------

class _Recorder:
    """The real embedder, noting the largest call and, at each call, whether the article is marked indexed
    and how many texts were embedded but not yet stored."""

    def __init__(self, embedder, store: Store) -> None:
        self.inner, self.store = embedder, store
        self.name, self.dim, self.max_tokens = embedder.name, embedder.dim, embedder.max_tokens
        self.calls: list[tuple[int, int, bool]] = []  # (texts, in flight before the call, article committed)
        self.embedded = 0

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        in_flight = self.embedded - self.store.vectors.count()
        self.calls.append((len(texts), in_flight, bool(self.store.catalogue.article_ids())))
        self.embedded += len(texts)
        return self.inner.embed(texts)

    def token_counts(self, texts: list[str]) -> list[int]:
        return self.inner.token_counts(texts)


def test_a_long_article_is_embedded_and_stored_a_bounded_slice_at_a_time(tmp_path: Path, settings, embedder) -> None:
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "long.txt").write_text(_prose(12_000, NEEDLE), encoding="utf-8")
    store = Store(tmp_path / "index")
    recorder = _Recorder(embedder, store)
    assistant = Assistant(store, recorder, settings.model_copy(update={"index_batch_chunks": 8}))
    report = assistant.index([folder])
    calls = list(recorder.calls)
    assert report.indexed and report.chunks_embedded > 24  # slices of 8
    assert max(n for n, _, _ in calls) <= 8
    assert max(flight for _, flight, _ in calls) <= 8  # each slice is stored before the next is embedded
    assert not any(committed for _, _, committed in calls)  # marked indexed once all its vectors are stored
    assert store.vectors.ids() == store.catalogue.chunk_id_set()
    assert any(NEEDLE in c.quote for c in assistant.ask(QUESTION).citations)
    assistant.close()


def _postings(docs: list[list[str]]) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """The plain definition: terms in order of first use, each with its (document, count) pairs."""
    terms: dict[str, dict[int, int]] = {}
    for n, doc in enumerate(docs):
        for t in doc:
            counts = terms.setdefault(t, {})
            counts[n] = counts.get(n, 0) + 1
    return list(terms), [sorted(c.items()) for c in terms.values()]


@pytest.mark.parametrize("flush", [1, 7, 50, 1 << 20])
def test_a_segment_built_in_slices_equals_the_whole(flush: int) -> None:
    rng = random.Random(flush)
    vocabulary = [f"w{i}" for i in range(300)]
    docs = [[rng.choice(vocabulary[:rng.randint(1, 300)]) for _ in range(rng.choice([0, 1, 5, 40, 120]))]
            for _ in range(60)]
    builder = SegmentBuilder(flush_tokens=flush)
    for n, doc in enumerate(docs):  # long documents in pieces, as a long article's slices come
        builder.add(f"d{n}", [doc[i:i + 13] for i in range(0, len(doc), 13)], tag=f"t{n}")
    segment = builder.segment()
    terms, postings = _postings(docs)
    assert segment.terms == terms and segment.ids == [f"d{n}" for n in range(60)]
    assert segment.tags == [f"t{n}" for n in range(60)]
    assert segment.lens.dtype == np.int64 and segment.lens.tolist() == [len(d) for d in docs]
    assert segment.indptr.dtype == np.int64 and segment.docs.dtype == np.int32 and segment.tf.dtype == np.int32
    got = [list(zip(segment.docs[a:b].tolist(), segment.tf[a:b].tolist()))
           for a, b in zip(segment.indptr[:-1], segment.indptr[1:])]
    assert got == postings


@pytest.mark.parametrize("piece", [1, 7, 64, 1 << 15])
def test_held_chunks_are_the_chunkers_chunks(monkeypatch: pytest.MonkeyPatch, piece: int, embedder) -> None:
    """A long article's chunks wait for embedding as spans and text slices (`rag.index._Held`): the chunks
    taken from them, and the text given back for the commit, are exactly the chunker's and the article's."""
    import rag.index
    from rag.chunk import Chunker
    from rag.ingest import make_article

    monkeypatch.setattr(rag.index, "PIECE_CHARS", piece)
    text = _prose(3_000, NEEDLE, seed=2).replace(" the ", " the \U0001f4f8 ").strip()
    article = make_article({"title": "Harbour"}, text, "big.txt", where="big.txt")
    chunker = Chunker(max_tokens=24, overlap=4)
    indexer = rag.index.Indexer(Store.__new__(Store), embedder, chunker)
    digest = rag.index.content_hash(article)
    held = indexer.chunks_for(article, digest)
    want = chunker.chunk(article, version=digest[:8])
    assert list(held) == want and held[-1] == want[-1] and held[2:5] == want[2:5]
    stripped, _, held = rag.index._held(article, digest, held)
    assert stripped.text == "" and held.whole is None and list(held) == want
    assert rag.index._whole(stripped, held) == article and list(held) == want


def test_content_hash_of_a_long_text_is_the_json_digest_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash is taken over the text's JSON a slice at a time; stored hashes must not change (every article
    would be indexed again)."""
    import hashlib

    import rag.index
    from rag.types import Article

    monkeypatch.setattr(rag.index, "PIECE_CHARS", 5)
    for text in ["", "a", "é\"\\\n\x00 \U0001f4f8 \u2028 \ud800 tail" * 7]:
        article = Article("id", "Tïtle \"q\"", text, source="S\\", published="2024-01-02", url="https://x.org/a")
        key = json.dumps([article.title, article.source, article.published, article.url, article.text])
        assert rag.index.content_hash(article) == hashlib.sha1(key.encode("utf-8")).hexdigest()


# ---------- fast: asking reads a long article's text a slice at a time ----------

def test_a_stored_text_reads_as_the_str_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """`StoredText` (a long article's text as the search reads it) answers slicing, indexing, `find` and
    `rfind` as the `str` does, reading it in small slices; its words and names, a slice at a time, are the text's."""
    import rag.answer
    from rag import kinds
    from rag.answer import _article_names, text_slices
    from rag.lexical import Words
    from rag.types import Article, Chunk, Hit, StoredText

    monkeypatch.setattr(StoredText, "BLOCK", 16)
    monkeypatch.setattr(StoredText, "SCAN", 64)
    text = _prose(3_000, NEEDLE, seed=3).replace(" the ", " the \U0001f4f8 ").replace(". ", ".\n", 40)
    reads: list[int] = []

    def read(a: int, b: int) -> str:
        reads.append(b - a)
        return text[a:b]

    stored = StoredText(len(text), read)
    rng = random.Random(4)
    bounds = [tuple(sorted(rng.randrange(-10, len(text) + 10) for _ in range(2))) for _ in range(300)]
    assert len(stored) == len(text) and str(stored) == text
    for a, b in bounds:
        assert stored[a:b] == text[a:b] and stored[a - 5:b:3] == text[a - 5:b:3]
        assert stored[a] == text[a] if -len(text) <= a < len(text) else stored[a:b] == text[a:b]
    reads.clear()
    for a, b in bounds:  # read in windows, never the text whole
        for sub in ("\n", ". ", "Kestrelmouth", "\U0001f4f8", "", "zzz"):
            assert stored.find(sub, a, b) == text.find(sub, a, b) and stored.find(sub, a) == text.find(sub, a)
            assert stored.rfind(sub, a, b) == text.rfind(sub, a, b) and stored.rfind(sub, 0, b) == text.rfind(sub, 0, b)
    assert "".join(stored.slices()) == text
    assert max(reads) <= 64 + len("Kestrelmouth")
    pieces = list(text_slices(stored))
    assert "".join(pieces) == text and all(p[-1].isspace() for p in pieces[:-1])
    words = Words()
    assert {t for p in pieces for t in words.tokens([p])[0]} == set(words.tokens([text])[0])
    assert _article_names(stored) == kinds.article_names(text) and len(_article_names(stored)) > 10

    # a "what happened?" answer's opening sentence of an article, looked for in a growing opening
    monkeypatch.setattr(rag.answer, "LEAD_CHARS", 8)
    from rag.chunk import sentence_spans
    from rag.clean import is_junk
    for opening in ["", "PHOTO: Ann Lee/AFP\n\nHarbour report\n", "HARBOUR\n" * 30 + "Credit: AP\n\n"]:
        whole = opening + text
        want = next((a, b) for a, b in sentence_spans(whole)
                    if " ".join(whole[a:b].split()) != "Harbour report" and not is_junk(whole, a, b))
        for body in (whole, StoredText(len(whole), lambda a, b, whole=whole: whole[a:b])):
            hit = Hit(Chunk("c", "a", 0, 5, whole[:5]), Article("a", "Harbour report", body), 1.0)
            assert rag.answer._lead(hit) == want


def test_asking_about_a_long_article_never_reads_its_whole_text(tmp_path: Path, settings, embedder,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The search gives a long article's text as a `StoredText` (issue 12 item 9): answering reads its
    passages, and its words and names for the checks, a bounded slice at a time, and answers as with the
    whole text."""
    import rag.catalogue
    from rag.catalogue import SqliteCatalogue
    from rag.types import StoredText

    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "long.txt").write_text(_prose(20_000, NEEDLE).replace("!", "! \U0001f4f8", 30), encoding="utf-8")
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    assistant.index([folder])
    whole = assistant.ask(QUESTION)
    assistant.close()
    assert any(NEEDLE in c.quote for c in whole.citations), whole.to_dict()

    for name, value in [("WHOLE_CHARS", 2_000), ("PIECE_BYTES", 512)]:
        monkeypatch.setattr(rag.catalogue, name, value)
    monkeypatch.setattr(StoredText, "BLOCK", 256)
    monkeypatch.setattr(StoredText, "SCAN", 1024)
    reads: list[int] = []
    wholes: list[str] = []
    article, text_slice = SqliteCatalogue.article, SqliteCatalogue.text_slice

    def reading(self, article_id: str, whole: bool = True):
        found = article(self, article_id, whole)
        if found is not None and isinstance(found.text, str) and len(found.text) > 2_000:
            wholes.append(article_id)
        return found

    def slicing(self, article_id: str, start: int, end: int, content_hash: str):
        reads.append(end - start)
        return text_slice(self, article_id, start, end, content_hash)

    monkeypatch.setattr(SqliteCatalogue, "article", reading)
    monkeypatch.setattr(SqliteCatalogue, "text_slice", slicing)
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    sliced = assistant.ask(QUESTION)
    assistant.close()
    assert not wholes and reads and max(reads) <= 1024
    assert sliced.to_dict() == whole.to_dict() and sliced.citations == whole.citations


def test_looking_past_the_passages_of_a_long_article_reads_a_window_of_it(tmp_path: Path, settings, embedder,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A "who" question whose passages name nobody looks further in the top articles (`rag.answer._wider`): in a
    long article, a window around its best passage, not its whole text (which would cost memory in proportion
    to the article)."""
    import rag.answer
    import rag.catalogue
    from rag.catalogue import SqliteCatalogue
    from rag.types import StoredText

    nameless = "The Kestrelmouth harbour bridge was reopened on Tuesday after 212 days of repairs."
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "long.txt").write_text(_prose(60_000, nameless), encoding="utf-8")
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    assistant.index([folder])
    assistant.close()
    for name, value in [("WHOLE_CHARS", 2_000), ("PIECE_BYTES", 512)]:
        monkeypatch.setattr(rag.catalogue, name, value)
    monkeypatch.setattr(StoredText, "BLOCK", 256)
    monkeypatch.setattr(StoredText, "SCAN", 1024)
    monkeypatch.setattr(rag.answer, "WIDER_CHARS", 2_000)
    wider: list[int] = []
    looked = rag.answer._wider
    monkeypatch.setattr(rag.answer, "_wider", lambda hits: wider.append(1) or looked(hits))
    reads: list[int] = []
    text_slice = SqliteCatalogue.text_slice

    def slicing(self, article_id: str, start: int, end: int, content_hash: str):
        reads.append(end - start)
        return text_slice(self, article_id, start, end, content_hash)

    monkeypatch.setattr(SqliteCatalogue, "text_slice", slicing)
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    assistant.ask(QUESTION)
    assistant.close()
    assert wider  # the question took the path under test
    assert reads and sum(reads) < 60_000  # less than the article once (its whole text: 363,447 characters read)
