"""Lexical: BM25 indexes that an update extends instead of rebuilding.

Scores are exactly those of a bm25s index (its default "lucene" BM25, float32) built from scratch over the
same token lists, but they are computed at query time from term frequencies, so documents can be added and
removed without touching the others:

- a folder holds `manifest.json` and the segments it names. A segment is one batch of documents, written
  once and never changed: term-major postings (CSR: each term's documents and term frequencies), document
  lengths, ids and tags (what the caller compares to see that a document changed), memory-mapped when read;
- an update writes one new segment with the added documents, and a new manifest whose `dead` list holds the
  removed ones (a changed document is removed and added again). So adding N documents costs work on N;
- the document count, average length and document frequencies are counted over the live documents of all
  segments, so every score equals a rebuild's. When the later segments and dead documents outgrow
  MERGE_FRACTION of the index, all segments are merged into one (vectorised over the postings, no
  re-tokenizing): the only step that costs in proportion to the collection, and only now and then.

The manifest names the tokenizer's version (TOKENS) too: an index is queried by the rules that tokenized it,
and one of an earlier version (`outdated`) is built whole when opened with its writer lock free, else by the
next `rag index`.

Writes are atomic: a segment is written aside and renamed in, then the manifest is replaced by a rename; a
crash leaves the old manifest, and files it does not name are deleted by the next write. A reader that loses
a race with a merge (its segments deleted meanwhile) reads the manifest again.

It does not know articles or chunks beyond `sync_lexical` (what to index comes from the catalogue), and does not
rank hits (see `rag.retrieve`).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import Stemmer

from rag.stopwords import STOPWORDS_EN
from rag.types import Article

LOAD_TRIES = 20  # a manifest replaced while it is read (its segments deleted by a merge) is read again, 0.1 s apart
MERGE_FRACTION = 0.25  # later segments plus dead documents beyond this share of the index: merge all into one
MAX_SEGMENTS = 16  # more than this many segments: merge (each costs a little per query term)
MANIFEST = "manifest.json"
CACHE_LOCK = ".lexical.lock"  # in the index folder: one process of a host writes its lexical index at a time
CACHE_STAMP = ".lexical.stamp"  # in the index folder (team mode): the catalogue state the cache was synced to
PASSAGES, ARTICLES = "bm25", "bm25_articles"  # the two indexes' folders in an index
PASSAGE_K1, ARTICLE_K1 = 1.2, 1.5

# the tokenizer's version, kept in each index's manifest: an index is tokenized, and so queried, by its own version's
# rules, and built whole again (when opened, or by the next `rag index`) when they are not the current ones
TOKENS = 2
# version 1: words of 2+ characters ("2.9" was no term, "2,532" was "532"); 2: a number keeps its decimal point
# and thousands separators ("2.9 million", "2,532 bans": one term each)
_WORD = {1: re.compile(r"(?u)\b\w\w+\b"), 2: re.compile(r"(?u)\b\d+(?:[.,]\d+)+\b|\b\w\w+\b")}
FLUSH_TOKENS = 1 << 20  # tokens a segment build holds before it counts their postings
STOP = frozenset(STOPWORDS_EN)
SLICE_CHARS = 1 << 16  # a longer text is tokenized in slices of about this many characters
_SPACE = re.compile(r"\s")


def slices(text: str) -> Iterator[str]:
    """`text` in slices of about SLICE_CHARS, each ending at a space, so no word (nor its case) is cut."""
    start = 0
    while start < len(text):
        space = _SPACE.search(text, start + SLICE_CHARS)
        end = space.end() if space else len(text)
        yield text[start:end]
        start = end


class Words:
    """The BM25 vocabulary: lower-cased words of 2+ characters, no stop words, stemmed; numbers whole (`_number`).

    One tokenizer for indexing, queries and answer scoring, so they agree (`version`: an index's own, see TOKENS);
    stems are cached because news reuses its words.
    """

    def __init__(self, version: int | None = None) -> None:
        self.version = TOKENS if version is None else version
        self.stemmer = Stemmer.Stemmer("english")
        self.stop = STOP
        self._stems: dict[str, str] = {}
        self._lock = threading.Lock()  # a Stemmer is not safe to share between threads

    def tokens(self, texts: list[str]) -> list[list[str]]:
        if any(len(text) > SLICE_CHARS for text in texts):
            # a long text a slice at a time: what is kept of it is its stems (shared strings), never all its words
            # as new strings at once (a 50 MB article's took ~6 times its size)
            return [[s for part in slices(text) for s in self._tokens([part])[0]] for text in texts]
        return self._tokens(texts)

    def pieces(self, text: str) -> Iterator[list[str]]:
        """The tokens of `text` a slice at a time (together, `tokens([text])[0]`)."""
        for part in slices(text):
            yield self._tokens([part])[0]

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        if self.version == 1:
            found = [[w for w in _WORD[1].findall(text.lower()) if w not in self.stop] for text in texts]
        else:
            stop = self.stop  # most words are no number: no call for them (a third of the tokenizing time)
            found = [[t for w in _WORD[2].findall(text.lower()) for t in (_number(w) if w[0].isdigit() else (w,))
                      if len(t) > 1 and t not in stop] for text in texts]
        with self._lock:
            new = list({w for words in found for w in words if w not in self._stems})
            if new:
                self._stems.update(zip(new, self.stemmer.stemWords(new)))
            stems = self._stems
            return [[stems[w] for w in words] for words in found]


def _number(word: str) -> tuple[str, ...]:
    """The terms of a number: without its thousands separators ("2,532": "2532"); a decimal also as its whole part
    ("13.1": "13.1", "13": "more than 13%" is)."""
    number = word.replace(",", "")
    whole = number.partition(".")[0]
    return (number, whole) if whole != number else (number,)


@dataclass
class Segment:
    """One batch of documents: postings of term i are docs[indptr[i]:indptr[i + 1]] (local doc numbers)."""

    terms: list[str]
    indptr: np.ndarray  # int64
    docs: np.ndarray  # int32
    tf: np.ndarray  # int32
    lens: np.ndarray  # int64, tokens per document
    ids: list[str]
    tags: list[str]

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.terms)}

    @classmethod
    def of_tokens(cls, ids: list[str], tokens: Iterable[list[str]], tags: list[str]) -> Segment:
        builder = SegmentBuilder()
        for doc_id, doc, tag in zip(ids, tokens, tags, strict=True):
            builder.add(doc_id, [doc], tag)
        return builder.segment()

    @classmethod
    def load(cls, folder: Path) -> Segment:
        meta = json.loads((folder / "docs.json").read_text(encoding="utf-8"))
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("indptr", "docs", "tf", "lens")}
        segment = cls(meta["terms"], ids=meta["ids"], tags=meta["tags"], **arrays)
        if len(segment.lens) != len(segment.ids) or len(segment.indptr) != len(segment.terms) + 1 \
                or segment.indptr[-1] != len(segment.docs):
            raise ValueError(f"{folder}: the segment's parts disagree")
        return segment

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        for name in ("indptr", "docs", "tf", "lens"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        (folder / "docs.json").write_text(json.dumps({"ids": self.ids, "tags": self.tags, "terms": self.terms}),
                                          encoding="utf-8")
        for path in folder.iterdir():  # on disk before the manifest names it
            _fsync(path)

    def term_of_posting(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.terms), dtype=np.int64), np.diff(self.indptr))


class SegmentBuilder:
    """A segment built a document at a time, the same as `Segment.of_tokens` would build over all of them, in
    memory that follows its postings (a document's distinct terms), not its tokens: tokens are counted a
    bounded number at a time, and a long document (its tokens given piece by piece, see `slices`) is held as
    its term counts, never as all its tokens (a 50 MB article's passages took ~950 MB as token lists)."""

    def __init__(self, flush_tokens: int = FLUSH_TOKENS) -> None:
        self.flush_tokens = flush_tokens
        self.vocab: dict[str, int] = {}
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.lens: list[int] = []
        self._pending: list[np.ndarray] = []  # term numbers of each document not counted yet
        self._pending_tokens = 0
        self._first = 0  # the number of the first of them
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (term, doc, tf), by term then doc

    def add(self, doc_id: str, pieces: Iterable[list[str]], tag: str = "") -> None:
        """One document, its tokens in pieces (a long text's slices)."""
        vocab = self.vocab
        self.ids.append(doc_id)
        self.tags.append(tag)
        held: list[np.ndarray] = []
        counts: np.ndarray | None = None  # a long document's term frequencies so far
        length = 0
        for piece in pieces:
            held.append(np.fromiter((vocab.setdefault(t, len(vocab)) for t in piece), dtype=np.int64,
                                    count=len(piece)))
            length += len(piece)
            if length > self.flush_tokens:
                counts, held = _count(counts, held, len(vocab)), []
        self.lens.append(length)
        if counts is None:
            self._pending.append(held[0] if len(held) == 1 else np.concatenate(held or [np.zeros(0, np.int64)]))
            self._pending_tokens += length
            if self._pending_tokens >= self.flush_tokens:
                self._flush()
            return
        counts = _count(counts, held, len(vocab))
        self._flush()  # the documents before this one
        terms = np.flatnonzero(counts)
        self._parts.append((terms.astype(np.int32), np.full(len(terms), self._first, dtype=np.int32),
                            counts[terms].astype(np.int32)))
        self._first += 1

    def _flush(self) -> None:
        """Count the pending documents' postings (sorted by term, then document) and let their tokens go."""
        if not self._pending:
            return
        n = len(self._pending)
        lens = np.fromiter(map(len, self._pending), dtype=np.int64, count=n)
        flat = np.concatenate(self._pending)
        self._pending, self._pending_tokens = [], 0
        key = flat * n + np.repeat(np.arange(n, dtype=np.int64), lens)
        del flat
        pairs, tf = np.unique(key, return_counts=True)
        del key
        self._parts.append(((pairs // n).astype(np.int32), (pairs % n + self._first).astype(np.int32),
                            tf.astype(np.int32)))
        self._first += n

    def segment(self) -> Segment:
        """The segment of the documents added: each part's postings placed at its terms' next free places,
        parts in document order, so each term's documents ascend."""
        self._flush()
        n_terms = len(self.vocab)
        per_part = [np.bincount(term, minlength=n_terms) for term, _, _ in self._parts]
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(sum(per_part, np.zeros(n_terms, dtype=np.int64)), out=indptr[1:])
        docs = np.empty(int(indptr[-1]), dtype=np.int32)
        tfs = np.empty(int(indptr[-1]), dtype=np.int32)
        cursor = indptr[:-1].copy()
        parts, self._parts = self._parts, []
        parts.reverse()
        for counts in per_part:
            term, doc, tf = parts.pop()
            first_of_term = np.cumsum(counts) - counts  # where each term's run starts in this part
            where = cursor[term] + (np.arange(len(term), dtype=np.int64) - first_of_term[term])
            docs[where], tfs[where] = doc, tf
            cursor += counts
        return Segment(list(self.vocab), indptr, docs, tfs, np.array(self.lens, dtype=np.int64), self.ids,
                       self.tags)


def _count(counts: np.ndarray | None, held: list[np.ndarray], n_terms: int) -> np.ndarray:
    """`counts` (term frequencies, grown to `n_terms`) plus the tokens `held`."""
    added = np.bincount(np.concatenate(held), minlength=n_terms) if held else np.zeros(n_terms, dtype=np.int64)
    if counts is not None:
        added[:len(counts)] += counts
    return added


def _indptr(terms: np.ndarray, n_terms: int) -> np.ndarray:
    out = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=n_terms), out=out[1:])
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _merge(segments: list[Segment], alive: np.ndarray) -> Segment:
    """One segment holding the live documents of `segments` (in their order), with their postings."""
    vocab: dict[str, int] = {}
    terms, docs, tfs = [], [], []
    new_pos = np.cumsum(alive) - 1
    offset = 0
    for seg in segments:
        local = np.fromiter((vocab.setdefault(t, len(vocab)) for t in seg.terms), dtype=np.int64,
                            count=len(seg.terms))
        global_docs = np.asarray(seg.docs, dtype=np.int64) + offset
        keep = alive[global_docs]
        terms.append(local[seg.term_of_posting()][keep])
        docs.append(new_pos[global_docs[keep]])
        tfs.append(np.asarray(seg.tf)[keep])
        offset += len(seg.ids)
    term, doc, tf = np.concatenate(terms), np.concatenate(docs), np.concatenate(tfs)
    used = np.bincount(term, minlength=len(vocab)) > 0  # terms only dead documents had are dropped
    renumber = np.cumsum(used) - 1
    term = renumber[term]
    order = np.lexsort((doc, term))
    names = [t for t, u in zip(vocab, used) if u]
    live = np.flatnonzero(alive)
    lens = np.concatenate([np.asarray(s.lens) for s in segments])[live]
    ids = [i for s in segments for i in s.ids]
    tags = [t for s in segments for t in s.tags]
    return Segment(names, _indptr(term, len(names)), doc[order].astype(np.int32), tf[order].astype(np.int32),
                   lens.astype(np.int64), [ids[i] for i in live], [tags[i] for i in live])


class Lexical:
    """A saved BM25 index whose document i has id `ids[i]` (and `tags[i]`), scored like bm25s.

    `build` replaces it, `update` removes and adds documents; both swap a new manifest in by a rename,
    so a reader never reads half-written files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.words = Words()
        for attempt in range(LOAD_TRIES):
            seen = self._manifest_text()
            try:
                self._load(seen)
                return
            except (OSError, ValueError, KeyError):  # replaced meanwhile (a merge): read again; damaged: say so
                if attempt == LOAD_TRIES - 1 or (self._manifest_text() == seen and not _swapping(folder)):
                    raise
                time.sleep(0.1)

    # ---------- reading ----------
    def _manifest_text(self) -> str | None:
        try:
            return (self.folder / MANIFEST).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _load(self, text: str | None) -> None:
        if text is None and _swapping(self.folder):
            raise FileNotFoundError(self.folder / MANIFEST)
        manifest = json.loads(text) if text is not None else {}
        self.manifest = manifest
        version = int(manifest.get("tokens", 1 if manifest.get("segments") else TOKENS))
        if version != self.words.version:
            self.words = Words(version)
        self.k1, self.b = float(manifest.get("k1", PASSAGE_K1)), float(manifest.get("b", 0.75))
        self.segments = [Segment.load(self.folder / name) for name in manifest.get("segments", [])]
        self.offsets = np.cumsum([0] + [len(s.ids) for s in self.segments])
        size = int(self.offsets[-1])
        self.alive = np.ones(size, dtype=bool)
        if manifest.get("dead"):
            self.alive[np.load(self.folder / manifest["dead"])] = False
        self.live = np.flatnonzero(self.alive)
        all_ids = [i for s in self.segments for i in s.ids]
        all_tags = [t for s in self.segments for t in s.tags]
        self.ids = [all_ids[i] for i in self.live]
        self.tags = [all_tags[i] for i in self.live]
        self._rows = self.live  # scores() are of these documents, in this order (see `align`)
        lens = np.concatenate([np.asarray(s.lens) for s in self.segments]) if self.segments else np.zeros(0)
        n = len(self.live)
        # bm25s: avgdl is numpy's mean of the lengths (a float64); the length norm is computed in float64
        avgdl = np.float64(lens[self.live].sum(dtype=np.float64)) / n if n else np.float64(1.0)
        self._norm = self.k1 * ((1 - self.b) + self.b * lens.astype(np.float64) / avgdl)
        self._df: dict[str, int] = {}
        self._vocabulary: dict[str, int] | None = None

    def _postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """Global document positions (dead ones included) and term frequencies of a term."""
        docs, tfs = [], []
        for seg, offset in zip(self.segments, self.offsets):
            i = seg.index.get(term)
            if i is not None:
                a, b = seg.indptr[i], seg.indptr[i + 1]
                docs.append(seg.docs[a:b] + np.int32(offset) if offset else seg.docs[a:b])
                tfs.append(seg.tf[a:b])
        if not docs:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
        return (docs[0], tfs[0]) if len(docs) == 1 else (np.concatenate(docs), np.concatenate(tfs))

    def _doc_freq(self, term: str, docs: np.ndarray) -> int:
        if term not in self._df:
            self._df[term] = int(np.count_nonzero(self.alive[docs]))
        return self._df[term]

    def holding(self, term: str) -> np.ndarray:
        """Whether each document (in `scores()` order) holds the index term `term`."""
        has = np.zeros(len(self.alive), dtype=bool)
        has[self._postings(term)[0]] = True
        return has[self._rows]

    def align(self, ids: list[str]) -> bool:
        """When the live documents are exactly `ids`, make `ids` and `scores()` follow that order; whether
        they are. An index updated in place keeps its added documents last, the caller's order may differ."""
        if ids == self.ids:
            return True
        if len(ids) != len(self.ids):
            return False
        position = dict(zip(self.ids, self.live.tolist()))
        rows = np.fromiter((position.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        if (rows < 0).any() or np.unique(rows).size != rows.size:
            return False
        order = {i: n for n, i in enumerate(self.ids)}
        self.tags = [self.tags[order[i]] for i in ids]
        self.ids, self._rows = list(ids), rows
        return True

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for the query (zeros when nothing matches), as bm25s computes it:
        per query word (repeats count again) idf * tf / (tf + norm) in float64, rounded to float32, summed
        in float32 in the query's order."""
        n = len(self.ids)
        docs, tfs, idfs = [], [], []
        for term in self.words.tokens([query])[0]:
            found, tf = self._postings(term)
            df = self._doc_freq(term, found)
            if df:
                docs.append(found)
                tfs.append(tf)
                idfs.append(np.float32(math.log(1 + (n - df + 0.5) / (df + 0.5))))
        total = np.zeros(len(self.alive), dtype=np.float32)
        if docs:  # all query words at once; np.add.at adds in order, so each sum is bm25s's, word by word
            doc = np.concatenate(docs)
            tf = np.concatenate(tfs).astype(np.float64)
            idf = np.repeat(np.array(idfs, dtype=np.float64), [len(d) for d in docs])
            np.add.at(total, doc, (idf * (tf / (self._norm[doc] + tf))).astype(np.float32))
        return total[self._rows]

    def idf(self, terms: list[str]) -> dict[str, float]:
        """Inverse document frequency of stemmed terms (an unseen term gets the highest)."""
        n = len(self.ids)
        if not n:
            return {t: 1.0 for t in terms}
        return {t: float(np.log(1 + (n + 0.5) / (self._doc_freq(t, self._postings(t)[0]) + 0.5))) for t in terms}

    def vocabulary(self) -> dict[str, int]:
        """{term: document frequency} of the terms live documents hold (for "did you mean")."""
        if self._vocabulary is None:
            vocabulary: dict[str, int] = {}
            for seg, offset in zip(self.segments, self.offsets):
                live = self.alive[np.asarray(seg.docs, dtype=np.int64) + offset]
                counts = np.bincount(seg.term_of_posting(), weights=live, minlength=len(seg.terms))
                for term, count in zip(seg.terms, counts.tolist()):
                    if count:
                        vocabulary[term] = vocabulary.get(term, 0) + int(count)
            self._vocabulary = vocabulary
        return self._vocabulary

    # ---------- writing (one writer at a time: the index's writer lock) ----------
    def build(self, ids: list[str], tokens: list[list[str]], k1: float = PASSAGE_K1, b: float = 0.75,
              tags: list[str] | None = None, scratch: Path | None = None) -> None:
        """Replace the index by these documents (token lists, see `Words`)."""
        self.build_segment(Segment.of_tokens(ids, tokens, tags or [""] * len(ids)), k1, b, scratch)

    def build_segment(self, segment: Segment, k1: float = PASSAGE_K1, b: float = 0.75,
                      scratch: Path | None = None) -> None:
        """Replace the index by the documents of `segment` (see `SegmentBuilder`)."""
        self._commit([self._write(segment, scratch)], None, k1, b)

    def update(self, remove: Iterable[str], ids: list[str], tokens: list[list[str]], tags: list[str] | None = None,
               scratch: Path | None = None) -> None:
        """Remove the documents `remove` names and add these; merges the segments when they have grown."""
        self.update_segment(remove, Segment.of_tokens(ids, tokens, tags or [""] * len(ids)), scratch)

    def update_segment(self, remove: Iterable[str], added: Segment, scratch: Path | None = None) -> None:
        """Remove the documents `remove` names and add those of `added`; merges the segments when they have
        grown."""
        ids = added.ids
        position = dict(zip(self.ids, self.live.tolist()))
        dead = self.alive.copy()
        gone = [position[i] for i in remove if i in position]
        dead[gone] = False
        if not gone and not ids:
            return
        names = list(self.manifest.get("segments", []))
        segments = list(self.segments)
        if ids:
            segments.append(added)
            dead = np.concatenate([dead, np.ones(len(ids), dtype=bool)])
        alive = dead
        main = len(segments[0].ids) if segments else 0
        later = len(alive) - main + np.count_nonzero(~alive)
        if later > MERGE_FRACTION * max(np.count_nonzero(alive), 1) or len(segments) > MAX_SEGMENTS:
            self._commit([self._write(_merge(segments, alive), scratch)], None, self.k1, self.b)
            return
        if ids:
            names.append(self._write(segments[-1], scratch))
        self._commit(names, np.flatnonzero(~alive), self.k1, self.b)

    def _next_name(self, prefix: str) -> str:
        number = int(self.manifest.get("next", 1))
        self.manifest["next"] = number + 1
        return f"{prefix}{number:06d}"

    def _write(self, segment: Segment, scratch: Path | None) -> str:
        """Write a segment aside, then rename it into the folder; its name."""
        self._collect()
        name = self._next_name("seg-")
        aside = (scratch or self.folder) / f".{name}.tmp"
        shutil.rmtree(aside, ignore_errors=True)
        segment.save(aside)
        os.replace(aside, self.folder / name)
        return name

    def _commit(self, names: list[str], dead: np.ndarray | None, k1: float, b: float) -> None:
        """Swap in a manifest naming these segments and dead documents, then reload."""
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {"version": 1, "tokens": TOKENS, "k1": k1, "b": b, "segments": names,
                    "next": int(self.manifest.get("next", 1))}
        if dead is not None and dead.size:
            manifest["dead"] = self._next_name("dead-") + ".npy"
            manifest["next"] = self.manifest["next"]
            np.save(self.folder / manifest["dead"], dead.astype(np.int64))
            _fsync(self.folder / manifest["dead"])
        aside = self.folder / f".{MANIFEST}.tmp"
        aside.write_text(json.dumps(manifest), encoding="utf-8")
        _fsync(aside)
        os.replace(aside, self.folder / MANIFEST)
        _fsync(self.folder)
        self._load(json.dumps(manifest))
        self._collect()

    def _collect(self) -> None:
        """Delete what the manifest does not name: leftovers of a crash, segments a merge replaced."""
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            return
        keep = {MANIFEST, *self.manifest.get("segments", []), self.manifest.get("dead")}
        for path in self.folder.iterdir():
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def _swapping(folder: Path) -> bool:
    """A writer of the earlier layout is between the renames of a swap (or wrote an index and died before it)."""
    return folder.with_name(folder.name + ".old").exists() or folder.with_name(folder.name + ".new").exists()


class _Table(Protocol):
    ids: list[str]
    article_ids: list[str]
    starts: np.ndarray
    ends: np.ndarray


def open_for_update(folder: Path, k1: float) -> Lexical | None:
    """The index in `folder`, or None when it must be built whole (missing, unreadable, other parameters, another
    tokenizer's)."""
    try:
        lexical = Lexical(folder)
    except (OSError, ValueError, KeyError):
        return None
    current = lexical.manifest.get("segments") and lexical.words.version == TOKENS
    return lexical if current and lexical.k1 == k1 else None


def outdated(folder: Path) -> bool:
    """Whether either BM25 index of the index `folder` is missing or was tokenized by other rules than today's
    (then the next `rag index` builds both whole)."""
    for name in (PASSAGES, ARTICLES):
        try:
            manifest = json.loads((folder / name / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return True
        if manifest.get("tokens", 1) != TOKENS:
            return True
    return False


def _fresh(folder: Path) -> Lexical:
    """An index to build whole in `folder`: the one there (its manifest swapped out only by the build), or,
    when it cannot be read, an empty one in its place."""
    try:
        return Lexical(folder)
    except (OSError, ValueError, KeyError):
        for leftover in (folder.with_name(folder.name + ".old"), folder.with_name(folder.name + ".new")):
            shutil.rmtree(leftover, ignore_errors=True)
        (folder / MANIFEST).unlink(missing_ok=True)
        return Lexical(folder)


def sync_lexical(folder: Path, article_of: Callable[[str], Article | None], table: _Table,
                 scratch: Path | None = None, rebuild: bool = False) -> tuple[int, int]:
    """Bring both BM25 indexes (passages, whole articles) in `folder` to the chunks in `table` (their
    articles from `article_of`, the catalogue's), doing work only for what differs from what they hold;
    returns (passages, articles) tokenized.

    A passage is its article's title and its text; an article its title and text. A changed article has new
    chunk ids (they carry its content version), and the article-level document's tag is its first chunk id,
    so both levels see the change. With `rebuild`, both are built whole. An article `article_of` no longer
    finds (deleted meanwhile: a reader following a catalogue another host writes) is left out.

    Processes on one host take turns (a lock file in `folder`): in team mode readers bring their local cache
    up to date too (see `sync_cache`)."""
    with _folder_lock(folder):
        return _sync(folder, article_of, table, scratch, rebuild)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """flock on `folder`/CACHE_LOCK, waiting for another process of this host that writes the lexical index."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / CACHE_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sync_articles(folder: Path, article_of: Callable[[str], Article | None], table: _Table, changed: set[str],
                  scratch: Path | None = None) -> tuple[int, int]:
    """`sync_lexical` after a run that changed only the articles `changed` (added, replaced or removed) of indexes
    that were up to date before it: `table` holds the chunks of those articles alone (the whole chunk table took
    a third of a second to read for an add of ten articles to 55,000 chunks). The same indexes as `sync_lexical`
    with the whole table gives; a missing or unreadable index is built whole by `sync_lexical`, not here."""
    with _folder_lock(folder):
        return _sync(folder, article_of, table, scratch, False, changed)


def _chunks_of_version(tag: str, have: set[str]) -> list[str]:
    """The passage ids of the article version whose first chunk id is `tag` (`ARTICLE:VERSION:0`, then 1, 2...)."""
    prefix, _, first = tag.rpartition(":")
    if first != "0":
        return []
    ids = []
    while f"{prefix}:{len(ids)}" in have:
        ids.append(f"{prefix}:{len(ids)}")
    return ids


def _sync(folder: Path, article_of: Callable[[str], Article | None], table: _Table, scratch: Path | None,
          rebuild: bool, scope: set[str] | None = None) -> tuple[int, int]:
    first_chunk: dict[str, str] = {}
    for cid, article_id in zip(table.ids, table.article_ids):
        first_chunk.setdefault(article_id, cid)
    words = Words()
    passages = None if rebuild else open_for_update(folder / PASSAGES, PASSAGE_K1)
    have = set(passages.ids) if passages is not None else set()
    docs = None if rebuild else open_for_update(folder / ARTICLES, ARTICLE_K1)
    held = dict(zip(docs.ids, docs.tags)) if docs is not None else {}
    # one pass, article by article (the table's order), one article in memory at a time, each document's
    # tokens counted into its segment as they are made
    added, changed = SegmentBuilder(), SegmentBuilder()
    rows: dict[str, list[int]] = {}
    for i, (cid, article_id) in enumerate(zip(table.ids, table.article_ids)):
        if cid not in have:
            rows.setdefault(article_id, []).append(i)
    for article_id, cid in first_chunk.items():
        wanted, fresh = rows.get(article_id, []), held.get(article_id) != cid
        if not (wanted or fresh):
            continue
        a = article_of(article_id)
        if a is None:
            continue
        title = words.tokens([a.title])[0]
        for i in wanted:
            added.add(table.ids[i], [title, words.tokens([a.text[int(table.starts[i]):int(table.ends[i])]])[0]])
        if fresh:
            changed.add(article_id, [title, *words.pieces(a.text)], cid)
        del a
    if scope is not None and (passages is None or docs is None):
        raise ValueError(f"{folder}: a lexical index to update is missing")
    if passages is None:
        _fresh(folder / PASSAGES).build_segment(added.segment(), PASSAGE_K1, scratch=scratch)
    elif scope is None:
        wanted_ids = set(table.ids)
        passages.update_segment([c for c in passages.ids if c not in wanted_ids], added.segment(), scratch)
    else:  # the earlier versions of the changed articles only: the other passages are those of the table
        passages.update_segment([c for a in sorted(scope) if held.get(a, first_chunk.get(a)) != first_chunk.get(a)
                                 for c in _chunks_of_version(held[a], have)], added.segment(), scratch)
    if docs is None:
        _fresh(folder / ARTICLES).build_segment(changed.segment(), ARTICLE_K1, scratch=scratch)
    else:
        stale = [a for a, tag in (held.items() if scope is None else ((a, held[a]) for a in scope if a in held))
                 if first_chunk.get(a) != tag]
        docs.update_segment(stale, changed.segment(), scratch)
    return len(added.ids), len(changed.ids)


def sync_cache(folder: Path, article_of: Callable[[str], Article | None], table_of: Callable[[], _Table],
               stamp: str) -> bool:
    """Team mode: bring the BM25 indexes in `folder` (a local cache of a shared catalogue) up to the catalogue,
    incrementally (`sync_lexical`: the articles it lacks added, those the catalogue no longer has dropped, changed
    ones replaced); whether anything was done. `stamp` names the catalogue's state (its id and generation, read
    before `table_of` is called); a cache stamped with it is left alone, so a poll that finds nothing new costs
    one file read. Readers do this without the writer lock: processes of one host take turns on a lock file, and
    a cache built while another host writes is at least as new as its stamp, so the next generation fixes it."""
    with _folder_lock(folder):
        if _stamp(folder) == stamp and not outdated(folder):
            return False
        missing: list[str] = []

        def lookup(article_id: str) -> Article | None:
            article = article_of(article_id)
            if article is None:
                missing.append(article_id)
            return article

        scratch = folder / ".lexical-cache.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            _sync(folder, lookup, table_of(), scratch, rebuild=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        # an article deleted while it was read is left out: the cache is not stamped, so the next call looks again
        (folder / CACHE_STAMP).write_text("" if missing else stamp, encoding="utf-8")
        return True


def _stamp(folder: Path) -> str:
    try:
        return (folder / CACHE_STAMP).read_text(encoding="utf-8")
    except OSError:
        return ""


def build_lexical(folder: Path, article_of: Callable[[str], Article | None], table: _Table,
                  scratch: Path | None = None) -> None:
    """Rebuild both BM25 indexes in `folder` from the catalogue, whatever they hold."""
    sync_lexical(folder, article_of, table, scratch, rebuild=True)
