"""Index: files in, stored chunks out, doing only the work that changed.

A file whose size and mtime match the last run is not even parsed. An article
whose content hash matches is left alone; a changed one is chunked, embedded
and stored under new chunk ids before its old chunks are removed; the same
text under a second id is stored once. `prune` drops articles whose files are
gone. The lexical indexes are brought up to date in place when anything changed
(`rag.lexical.sync_lexical`: work in proportion to what changed), and so are the
groups of syndicated copies (`rag.news.update_story_groups`: the changed articles
compared with their candidates only).

Crash safety: vectors are stored before the SQLite commit that marks their
article indexed, old vectors are removed after it, and the run sets the
store's `dirty` flag before its first write. A run that finds the flag set
(the last one was killed or failed) first reconciles: vectors SQLite does not
list are deleted, chunks SQLite lists without a vector are embedded again from
the stored text, and when Chroma can no longer read its files (a kill while it
wrote them) every vector is embedded again; a run with nothing to store checks
that too. Lexical segments are written aside and named by a manifest swapped in
by a rename. So a run killed at any point, run again, ends exactly where a clean
build would.

An article whose embedding fails is skipped with a reason and not marked
indexed (the next run tries it again); a storage failure stops the run with
an `IndexError_` saying what was kept. Either way, what was committed stays
answerable, including the old version of an article whose update failed.

Two-stage indexes (`run_full_stage`): after the fast pass, which makes every
article answerable, each chunk gets a second vector from the full-stage model,
in batches embedded without the writer lock and committed under it (vectors
first, then the `full_chunks` rows), so other writers wait for one commit, not
the stage. Ctrl-C keeps the committed batches; the next run embeds the rest.

It does not rank or answer, and it holds the writer lock only while it writes.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
import socket
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np

from rag.catalogue import MARKS_VERSION, Catalogue
from rag.chunk import Chunker, chunk_prefix
from rag.embed import Embedder
from rag.errors import IndexError_, VectorsUnreadable, storage_error
from rag.ingest import DEFAULT_LIMITS, Limits, display_path, failure_reason, file_key, find_files, read_file
from rag.lexical import outdated, sync_articles, sync_lexical
from rag.news import MarkLookup, story_groups, update_story_groups
from rag.progress import ProgressPrinter
from rag.store import Store
from rag.types import Article, Chunk, IndexReport, Skipped
from rag.vectors import FULL

BATCH_CHUNKS = 512  # chunks embedded and stored together
EMBED_SLICE = 128  # chunks embedded between two progress reports
# article text kept in memory between reading and embedding; articles beyond it are read again
HOLD_CHARS = 32_000_000
# a batch holding more text than this releases Chroma's in-memory vectors before its text is committed
RELEASE_CHARS = 4_000_000
PIECE_CHARS = 1 << 15  # held text is kept in slices of this many characters
FULL_PHASE = "MiniLM vectors"  # the progress phase of the full stage
# up to this many changed articles (or a quarter of the collection) are grouped with their candidates only
INCREMENTAL_GROUPING = 200
STAGE_WAIT = 120.0  # seconds a full-stage commit waits for another writer before the stage is left for later
# a run adding up to this many chunks to an index whose full stage is complete embeds them by the full-stage model
# while it stores them by the fast one (`_Ahead`)
AHEAD_CHUNKS = 2000
# (stage, done, total): stages "repairing", "reading" (files), "chunking" (articles, total 0 until the end),
# "embedding" (chunks), "lexical index", "story groups"; a stage ends with done == total > 0
Progress = Callable[[str, int, int], None]


class Stopped(KeyboardInterrupt):
    """Ctrl-C during a run: `report` says what was stored before it (answerable; the next run continues)."""

    def __init__(self, report: IndexReport) -> None:
        super().__init__("indexing stopped")
        self.report = report


def content_hash(article: Article) -> str:
    """What decides re-indexing: the text and the metadata that is shown (the sha1 of
    `json.dumps([title, source, published, url, text])`)."""
    digest = hashlib.sha1(json.dumps([article.title, article.source, article.published, article.url])[:-1].encode())
    digest.update(b', "')
    text = article.text
    # the text's JSON a slice at a time (escaping is per character): a whole copy of a 50 MB text's was 100 MB more
    for i in range(0, len(text), PIECE_CHARS):
        digest.update(json.dumps(text[i:i + PIECE_CHARS])[1:-1].encode())
    digest.update(b'"]')
    return digest.hexdigest()


def embed_text(article: Article, chunk: Chunk) -> str:
    """What the embedder reads: the title gives a passage its topic."""
    return f"{article.title}\n{chunk.text}"


def host_key(path: Path, shared: bool = False) -> str:
    """The files table's key of `path`: `file_key`, and in team mode (`shared`) this host's name before it, so a
    host neither takes another's file of the same name for its own nor prunes it."""
    return f"{socket.gethostname()}:{file_key(path)}" if shared else file_key(path)


def run_quietly(stage: str, done: int, total: int) -> None:
    """A Progress that shows nothing."""


@dataclass
class _Pending:
    """What the first pass found to embed: articles held in memory, and the spans of those read again later."""

    held: list[tuple[Article, str, list[Chunk]]] = field(default_factory=list)
    # file -> article id -> (content hash, its chunks without their text)
    spilled: dict[Path, dict[str, tuple[str, _Held]]] = field(default_factory=dict)
    chunks: int = 0


@dataclass
class _Run:
    """Mutable bookkeeping of one index call, frozen into an IndexReport."""

    indexed: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    embedded: int = 0
    failed: set[str] = field(default_factory=set)  # article ids whose embedding failed
    notices: list[str] = field(default_factory=list)  # what the user should know of the run (a repair's cause)
    seen_hashes: dict[str, str] = field(default_factory=dict)
    # every parsed file: the stored ids of its articles, and whether all of it was read
    file_articles: dict[Path, tuple[list[str], bool]] = field(default_factory=dict)
    show: Progress = run_quietly

    def report(self) -> IndexReport:
        return IndexReport(
            tuple(self.indexed), tuple(self.replaced), tuple(self.unchanged),
            tuple(self.duplicates), tuple(self.pruned), tuple(self.skipped), self.embedded, tuple(self.notices),
        )


def _under(key: str, roots: list[str]) -> bool:
    """Whether the file of files-table key `key` is one of `roots` (keys too) or in one of them."""
    return any(key == root or key.startswith(root.rstrip("/") + "/") for root in roots)


class _Held(Sequence):
    """An article's chunks while they wait to be embedded, held compactly: spans and (once `hold` gave it) the
    text in slices of PIECE_CHARS: a slice is as wide as its widest character, so one emoji makes a whole 50 MB
    text 200 MB but only its own slice 4 bytes a character. Each `Chunk` is made, with its text, when taken."""

    def __init__(self, article_id: str, prefix: str, spans: list[tuple[int, int]], whole: str = "") -> None:
        self.article_id, self.prefix = article_id, prefix  # chunk i's id is prefix + i (`chunk_prefix`)
        self.starts = np.fromiter((a for a, _ in spans), dtype=np.int64, count=len(spans))
        self.ends = np.fromiter((b for _, b in spans), dtype=np.int64, count=len(spans))
        self.pieces: list[str] | None = None
        self.whole: str | None = whole or None  # chunks are cut from it until `hold`

    def hold(self, text: str) -> _Held:
        self.pieces, self.whole = [text[i:i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)], None
        return self

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        start, end = int(self.starts[i]), int(self.ends[i])
        return Chunk(f"{self.prefix}{i}", self.article_id, start, end, self._text(start, end))

    def _text(self, start: int, end: int) -> str:
        if self.whole is not None:
            return self.whole[start:end]
        if self.pieces is None:
            raise ValueError("the chunks' text is not held")
        first, last = start // PIECE_CHARS, max(start, end - 1) // PIECE_CHARS
        base = first * PIECE_CHARS
        if first == last:
            return self.pieces[first][start - base:end - base]
        return "".join(self.pieces[first:last + 1])[start - base:end - base]

    def text(self) -> str:
        """The whole text (for the commit): from here chunks are cut from it, and the slices are dropped."""
        if self.whole is None:
            pieces, self.pieces = self.pieces or [], None
            self.whole = "".join(pieces)
        return self.whole


def _held(article: Article, digest: str, chunks: _Held) -> tuple[Article, str, _Held]:
    """The article without its text (title, source and dates are what embedding and storing read), and its chunks
    holding the text compactly (`_Held.text()` gives it back for the commit)."""
    return replace(article, text=""), digest, chunks.hold(article.text)


def _whole(article: Article, chunks: Sequence[Chunk]) -> Article:
    return replace(article, text=chunks.text()) if isinstance(chunks, _Held) else article


def give_back_memory() -> None:
    """Return the freed heap to the system (glibc's malloc_trim), so that a phase's peak does not stand on the
    last one's: glibc keeps freed memory (Chroma's vector index, a long text's slices) mapped, and a new long
    text is mapped anew. Does nothing where there is no malloc_trim (macOS, musl)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _drain(items: list) -> Iterator:
    """The items, each dropped from the list as it is taken: an article stored is not held through the rest of
    the run (a 50 MB one is 200 MB of text once a single emoji widens it)."""
    items.reverse()
    while items:
        yield items.pop()


@dataclass(frozen=True)
class _Chunks:
    """Some articles' chunks, as the chunk table lists them (by article id, then position)."""

    ids: list[str]
    article_ids: list[str]
    starts: np.ndarray
    ends: np.ndarray


def _chunks_of(catalogue: Catalogue, article_ids: set[str]) -> _Chunks:
    """The chunks of these articles (those still stored), in the chunk table's order: a chunk's position is the
    number its id ends with (`chunk_prefix` + position)."""
    rows = [row for a in sorted(article_ids) for row in sorted(catalogue.chunks_by_id(catalogue.chunk_ids_of(a)),
                                                              key=lambda r: int(r[0].rpartition(":")[2]))]
    return _Chunks([r[0] for r in rows], [r[1] for r in rows], np.array([r[2] for r in rows], dtype=np.int64),
                   np.array([r[3] for r in rows], dtype=np.int64))


class _Ahead:
    """The full stage's vectors of a small run's chunks, embedded in a thread while the fast pass stores them, lexical
    indexes and groups them (ONNX Runtime releases the GIL: on 2 cores the full stage's model no longer waits for
    that work). `batches` are the texts of the full stage's batches as it will take them (its chunks by article id
    and position, `batch_chunks` at a time), so each batch's vectors are what embedding it then would give (an int8
    model's vectors depend on the batch they are embedded with); `take` gives them only for the same texts."""

    def __init__(self, full: Embedder, batches: list[list[str]]) -> None:
        self.full, self.batches = full, batches
        self.vectors: dict[tuple[str, ...], np.ndarray] = {}
        self.thread = threading.Thread(target=self._embed, name="rag-full-ahead", daemon=True)
        self.thread.start()

    def _embed(self) -> None:
        for texts in self.batches:
            try:
                self.vectors[tuple(texts)] = self.full.embed(texts)
            except Exception:  # the full stage embeds this batch again and reports its failure then
                return

    def take(self, texts: list[str]) -> np.ndarray | None:
        """The vectors of `texts` when they are a batch embedded ahead (once), else None."""
        self.thread.join()
        return self.vectors.pop(tuple(texts), None)


class Indexer:
    """Runs the ingest → chunk → embed → store pipeline against one Store."""

    def __init__(self, store: Store, embedder: Embedder, chunker: Chunker, batch_chunks: int = BATCH_CHUNKS,
                 hold_chars: int = HOLD_CHARS, limits: Limits = DEFAULT_LIMITS, window: Embedder | None = None,
                 shared: bool = False, full: Embedder | None = None, ahead_chunks: int = AHEAD_CHUNKS) -> None:
        self.store = store
        self.shared = shared  # team mode: file records are this host's, `prune` looks only under the paths given
        self.embedder = embedder
        # whose window chunks must fit: the full stage's model in a two-stage index (the fast one has none)
        self.window = window or embedder
        self.chunker = chunker
        self.batch_chunks = max(1, batch_chunks)
        self.hold_chars = hold_chars
        self.limits = limits  # how much of one file is read (rag.ingest.Limits)
        # a two-stage index's full-stage model: a run of up to `ahead_chunks` chunks embeds them ahead (`_Ahead`)
        self.full, self.ahead_chunks = full, ahead_chunks
        self._ahead: _Ahead | None = None

    def run(self, paths: list[Path], prune: bool = False, progress: bool = False,
            on_progress: Progress | None = None) -> IndexReport:
        """Index `paths`; `on_progress` (or with `progress`, a printer on stderr) hears of each phase.

        Ctrl-C raises `Stopped`: what was stored stays answerable and the next run continues."""
        files = find_files(paths)
        run = _Run(show=on_progress or (ProgressPrinter(sys.stderr) if progress else run_quietly))
        store = self.store
        store.lock.acquire()
        try:
            interrupted = store.catalogue.dirty()
            try:
                if interrupted:
                    self.repair(run)
                pending = self._read_and_chunk(files, run)
                # with nothing to store, look at the vectors (a run that stores fails on damaged ones, flagged)
                if not interrupted and not pending.held and not pending.spilled and self._vectors_damaged(run):
                    interrupted = True
                    self.repair(run)
                self._embed_ahead(pending)
                self._store_all(pending, run)
                give_back_memory()  # the texts held for embedding are gone: the lexical phase reads them again
                if prune:
                    self._prune(run, paths)
                changed = bool(interrupted or run.indexed or run.replaced or run.pruned)
                # what is derived from the articles is rebuilt when they changed, or when it is missing
                # or outdated (then readers must reload too)
                if changed or self._lexical_missing():
                    # an uninterrupted run's lexical indexes were up to date: only its articles are looked at (in
                    # team mode the indexes are this host's cache, which other hosts' runs may have left behind)
                    came = set(run.indexed) | set(run.replaced) | set(run.pruned)
                    whole = interrupted or self.shared or self._lexical_missing()
                    self._build_lexical(run.show, None if whole else came)
                    changed = True
                if changed or store.catalogue.meta("marks") != MARKS_VERSION:
                    run.show("story groups", 0, 1)
                    # after an interrupted run what changed is not known: all articles are grouped again
                    came = None if interrupted else set(run.indexed) | set(run.replaced)
                    self.group_stories(came, set(run.replaced) | set(run.pruned))
                    run.show("story groups", 1, 1)
                    changed = True
            except KeyboardInterrupt:
                self._after_stop(run)
                raise Stopped(run.report()) from None
            except Exception as exc:
                self._after_failure(run)
                raise self._failure(exc, run) from exc
            if changed or store.catalogue.dirty():
                store.catalogue.finish_run()
            else:
                store.catalogue.touch()
        finally:
            store.lock.release()
        return run.report()

    def group_stories(self, came: set[str] | None = None, went: frozenset[str] | set[str] = frozenset()) -> None:
        """Find the syndicated copies among all articles and store their groups (a story's id is its earliest
        copy's). Marks are kept as articles are saved; an index made before that gets them here.

        Given what changed since the stored groups were found (`came`: ids added or changed, `went`: removed or
        changed), only those articles and their candidates are read (`rag.news.update_story_groups`: the same
        groups); with `came` None, or when most of the collection changed, all articles are compared."""
        catalogue = self.store.catalogue
        if catalogue.meta("marks") != MARKS_VERSION:
            catalogue.mark_all()
            came = None
        article = lru_cache(maxsize=256)(catalogue.article)  # marks go with their article: it is always there
        order = catalogue.ids_by_date()
        if came is None or len(came) + len(went) > max(INCREMENTAL_GROUPING, len(order) // 4):
            stories = story_groups(catalogue.marks(), order, article)
        else:
            lookup = MarkLookup(catalogue.mark_postings, catalogue.marks_of, catalogue.marks_counted)
            stories = update_story_groups(catalogue.stories(), came, set(went), order, lookup, article)
        catalogue.save_stories(stories)

    def _vectors_damaged(self, run: _Run) -> bool:
        """Whether Chroma can no longer read this index's embedded vectors, then dropped and flagged for `repair`: a
        finished index's files can be damaged too (a process killed while Chroma wrote them, reader or writer).
        Costs loading each stage's vector index (a fifth of a second each for the shared corpus)."""
        store = self.store
        if store.vectors.server is not None:
            return False
        try:
            store.vectors.check()
            if store.two_stage():
                store.vectors.check(FULL)
        except VectorsUnreadable as exc:
            store.catalogue.set_dirty()
            self._drop_vectors(exc, run)
            return True
        return False

    def _drop_vectors(self, exc: VectorsUnreadable, run: _Run | None) -> None:
        """Delete every stage's unreadable embedded vectors (one Chroma folder holds them all); `repair` then
        embeds every chunk again, and `run` hears why."""
        self.store.vectors.reset_local()
        self.store.catalogue.forget_full(sorted(self.store.catalogue.full_ids()))
        if run is not None:
            run.notices.append(f"{exc}: every chunk was embedded again from the stored articles")

    def repair(self, run: _Run | None = None) -> int:
        """Make the vectors exactly the chunks SQLite lists (after an interrupted run). Vectors Chroma can no
        longer read (its files damaged by a kill while it wrote them) are dropped and every chunk is embedded
        again from the stored text: nothing the catalogue holds is lost, and `run` hears why.

        Returns how many vectors were removed or restored."""
        store = self.store
        show = run.show if run is not None else None
        try:
            vector_ids = store.vectors.ids()
            full_ids = store.vectors.ids(stage=FULL) if store.two_stage() else set()
        except VectorsUnreadable as exc:  # only an embedded collection's files are taken for damaged
            self._drop_vectors(exc, run)
            vector_ids, full_ids = set(), set()
        chunk_ids = store.catalogue.chunk_id_set()
        orphans = sorted(vector_ids - chunk_ids)
        missing = sorted(chunk_ids - vector_ids)
        if orphans:
            store.delete_vectors(orphans)
        by_article: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        for cid, article_id, start, end in store.catalogue.chunks_by_id(missing):
            by_article[article_id].append((cid, start, end))
        chunks: list[Chunk] = []
        articles: dict[str, Article] = {}
        for article_id, rows in by_article.items():
            article = store.catalogue.article(article_id)
            if article is None:
                continue
            articles[article_id] = article
            chunks += [Chunk(cid, article_id, a, b, article.text[a:b]) for cid, a, b in rows]
        for i in range(0, len(chunks), self.batch_chunks):
            part = chunks[i:i + self.batch_chunks]
            vectors = self.embedder.embed([embed_text(articles[c.article_id], c) for c in part])
            store.lock.check()
            store.vectors.add(part, vectors, articles)
            if show:
                show("repairing", i + len(part), len(chunks))
        return len(orphans) + len(chunks) + (self._repair_full(chunk_ids, full_ids) if store.two_stage() else 0)

    def _repair_full(self, chunk_ids: set[str], vector_ids: set[str]) -> int:
        """Full-stage vectors of chunks SQLite no longer lists are removed, and so are `full_chunks` rows
        without their vector (the full stage embeds those again)."""
        store = self.store
        listed = store.catalogue.full_ids()
        orphans = sorted(vector_ids - chunk_ids)
        store.vectors.delete(orphans, FULL)
        stale = sorted((listed - chunk_ids) | (listed - vector_ids))
        store.catalogue.forget_full(stale)
        return len(orphans) + len(stale)

    def full_backlog(self) -> int:
        """Chunks still without a full-stage vector."""
        done, total = self.store.catalogue.full_progress()
        return total - done

    def run_full_stage(self, full: Embedder, show: Progress = run_quietly) -> int:
        """Give every chunk its full-stage vector; returns how many were stored. Bumps the generation when the
        stage completes, so readers switch their dense side to it.

        Each batch is embedded without the writer lock and committed under it; a chunk removed or replaced by
        another writer meanwhile is left out. Ctrl-C (KeyboardInterrupt) keeps the committed batches."""
        store = self.store
        stored = 0
        for _ in range(3):  # chunks another writer added during a round are done in the next
            rows = store.catalogue.without_full()
            if not rows:
                break
            total = len(rows)
            show(FULL_PHASE, 0, total)
            held: dict[str, Article | None] = {}  # this round's article being embedded (rows come article by article)
            for i in range(0, total, self.batch_chunks):
                part = rows[i:i + self.batch_chunks]
                stored += self._full_batch(full, part, held)
                show(FULL_PHASE, i + len(part), total)  # after the commit: the phase ends once all are stored
        self._ahead = None
        if stored and store.full_complete():
            store.lock.acquire(STAGE_WAIT)
            try:
                store.catalogue.bump_generation()
            finally:
                store.lock.release()
        return stored

    def _full_batch(self, full: Embedder, rows: list[tuple[str, str, int, int]],
                    held: dict[str, Article | None]) -> int:
        """Embed these chunks by the full-stage model and commit those still indexed; how many were.

        `held` keeps the last article read across batches: a 50 MB article's 150 batches each read it whole
        before. (Its text may be newer than a row's chunk: such a chunk is no longer indexed, and is left out.)"""
        store = self.store
        articles: dict[str, Article] = {}
        chunks: list[Chunk] = []
        for cid, article_id, start, end in rows:
            if article_id not in held:
                held.clear()
                held[article_id] = store.catalogue.article(article_id)
            article = held[article_id]
            if article is None:
                continue
            articles[article_id] = article
            chunks.append(Chunk(cid, article_id, start, end, article.text[start:end]))
        texts = [embed_text(articles[c.article_id], c) for c in chunks]
        if self._ahead is not None and self._ahead.thread.is_alive():
            # load the full stage's vector index while the model still embeds, not after: the commit needs it
            # (a tenth of a second off adding ten articles)
            store.vectors.count(FULL)
        ahead = self._ahead.take(texts) if self._ahead is not None and self._ahead.full is full else None
        vectors = ahead if ahead is not None else full.embed(texts)
        store.lock.acquire(STAGE_WAIT)
        try:
            live = {r[0] for r in store.catalogue.chunks_by_id([c.id for c in chunks])}
            keep = [i for i, c in enumerate(chunks) if c.id in live]
            if not keep:
                return 0
            if store.catalogue.meta("full_dim") is None:
                store.catalogue.set_meta("full_dim", str(vectors.shape[1]))
            kept = [chunks[i] for i in keep]
            store.vectors.add(kept, vectors[keep], articles, stage=FULL)
            store.catalogue.mark_full([c.id for c in kept])
        finally:
            store.lock.release()
        return len(kept)

    def _failure(self, exc: Exception, run: _Run) -> IndexError_:
        """The error a failed run raises: what went wrong, what was kept, what to do."""
        error = exc if isinstance(exc, IndexError_) else storage_error(exc, self.store.dir)
        kept = len(run.indexed) + len(run.replaced)
        return IndexError_(f"indexing stopped: {error}. {kept} articles were stored before the failure and stay "
                           "answerable; the others were not marked indexed and the next `rag index` picks them up")

    def _after_stop(self, run: _Run) -> None:
        """After Ctrl-C: make what was committed searchable and say when it was (a second Ctrl-C leaves that to
        the next run). The dirty flag stays set, so the next run reconciles the vectors and groups stories."""
        try:
            if run.indexed or run.replaced or run.pruned:
                self._build_lexical(run.show)
                self.store.catalogue.bump_generation()
                self.store.catalogue.touch()
        except KeyboardInterrupt:
            pass

    def _after_failure(self, run: _Run) -> None:
        """Best effort after a failed run: make what was committed searchable. The dirty flag
        stays set, so the next run reconciles the vectors first."""
        if not (run.indexed or run.replaced or run.pruned):
            return
        try:
            self._build_lexical()
            self.store.catalogue.bump_generation()
        except Exception:  # the disk may be full: the next run rebuilds it
            pass

    def _lexical_missing(self) -> bool:
        """Missing, or tokenized by an earlier version's rules."""
        return outdated(self.store.dir)

    def _build_lexical(self, show: Progress | None = None, changed: set[str] | None = None) -> None:
        """Bring both BM25 indexes up to the stored chunks, in place: new segments are written in a scratch
        folder, renamed in, then named by a manifest swapped in by a rename (a crash leaves the old one). Given
        `changed` (the articles a run added, replaced or removed, when the indexes were up to date before it),
        only their chunks are read."""
        if show:
            show("lexical index", 0, 1)
        scratch = self.store.dir / ".lexical.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        catalogue = self.store.catalogue
        if changed is None:
            sync_lexical(self.store.dir, catalogue.article, catalogue.chunk_table(), scratch)
        else:
            sync_articles(self.store.dir, catalogue.article, _chunks_of(catalogue, changed), changed, scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        if show:
            show("lexical index", 1, 1)

    def _changed_articles(self, files: list[Path | Skipped], run: _Run) -> Iterator[tuple[Article, str, Path]]:
        """Articles that need embedding; records unchanged, duplicate and bad ones (and what `find_files`
        refused)."""
        for path in files:
            if isinstance(path, Skipped):
                run.skipped.append(path)
                continue
            shown = display_path(path)
            try:
                stat = path.stat()
            except OSError as exc:  # gone since it was found
                run.skipped.append(Skipped(shown, failure_reason(exc)))
                continue
            record = self.store.catalogue.file_record(host_key(path, self.shared))
            if record and record[:2] == (stat.st_size, stat.st_mtime_ns) and all(
                self.store.catalogue.article_hash(a) for a in record[2]
            ):
                run.unchanged += record[2]
                continue
            yield from self._file_articles(path, run)

    def _file_articles(self, path: Path, run: _Run) -> Iterator[tuple[Article, str, Path]]:
        ids: list[str] = []
        clean = True
        removed = self.store.catalogue.removed_ids()
        twins: dict[str, int] = {}  # duplicates in this file, by twin: one message with a count
        for item in read_file(path, self.limits):
            if isinstance(item, Skipped):
                run.skipped.append(item)
                clean = False
                continue
            if item.id in removed:  # `rag remove`: left out (and of the file's record) until the file is named
                run.skipped.append(Skipped(item.path, f"article {item.id} was removed (rag remove); name the file "
                                                      "itself in `rag index` to add it back"))
                continue
            digest = content_hash(item)
            stored = self.store.catalogue.article_hash(item.id)
            twin = run.seen_hashes.get(digest) or self.store.catalogue.id_with_hash(digest)
            if stored == digest:
                run.unchanged.append(item.id)
                ids.append(item.id)
            elif twin and twin != item.id:
                run.duplicates.append(item.id)
                twins[twin] = twins.get(twin, 0) + 1
                ids.append(twin)
            else:
                run.seen_hashes[digest] = item.id
                ids.append(item.id)
                yield item, digest, path
        shown = display_path(path)
        for twin, count in twins.items():
            times = f" ({count:,} articles)" if count > 1 else ""
            run.skipped.append(Skipped(shown, f"same text as article {twin} (stored once){times}"))
        # a file with bad parts is read again next time, so its problems are reported again
        run.file_articles[path] = (ids, clean)

    def _read_and_chunk(self, files: list[Path], run: _Run) -> _Pending:
        """First pass: find and chunk what needs embedding, so the embedding phase knows its total.

        Articles are kept in memory up to `hold_chars` of text; beyond that only their chunk spans are kept
        and they are read again when embedded, so memory stays bounded however large the collection."""
        pending = _Pending()
        held_chars = articles = 0
        run.show("reading", 0, len(files))
        for done, path in enumerate(files, 1):
            for article, digest, _ in self._changed_articles([path], run):
                if not articles:  # the first one also loads the embedder's tokenizer
                    run.show("chunking", 0, 0)
                chunks = self.chunks_for(article, digest)
                pending.chunks += len(chunks)
                articles += 1
                run.show("chunking", articles, 0)
                if held_chars + len(article.text) <= self.hold_chars:
                    held_chars += len(article.text)
                    pending.held.append(_held(article, digest, chunks))
                else:
                    chunks.whole = None  # spans only: the text is read again when it is embedded
                    pending.spilled.setdefault(path, {})[article.id] = (digest, chunks)
                del chunks, article  # from here only the compact copy: not held while the next one is read
            run.show("reading", done, len(files))
        if articles:
            run.show("chunking", articles, articles)
        return pending

    def _embed_ahead(self, pending: _Pending) -> None:
        """Start embedding this run's chunks by the full-stage model (`_Ahead`) when the full stage is to take
        exactly them: the index's full stage is complete, and they are few and all held in memory."""
        self._ahead = None
        if (self.full is None or not pending.held or pending.spilled or pending.chunks > self.ahead_chunks
                or not self.store.two_stage() or self.full_backlog()):
            return
        # the order of the catalogue's `without_full`: by article id, then position
        order = sorted(((article.id, i, article, chunks) for article, _, chunks in pending.held
                        for i in range(len(chunks))), key=lambda item: item[:2])
        texts = [embed_text(article, chunks[i]) for _, i, article, chunks in order]
        self._ahead = _Ahead(self.full, [texts[i:i + self.batch_chunks]
                                         for i in range(0, len(texts), self.batch_chunks)])

    def _read_again(self, pending: _Pending, run: _Run) -> Iterator[tuple[Article, str, list[Chunk]]]:
        """The articles the first pass did not keep, read again, with the chunks it found."""
        for path, wanted in pending.spilled.items():
            try:
                for item in read_file(path, self.limits):
                    found = wanted.get(item.id) if isinstance(item, Article) else None
                    if found and content_hash(item) == found[0]:
                        del wanted[item.id]
                        held = _held(item, *found)
                        del item, found  # not held through its embedding: only the compact copy is
                        yield held
            except Exception:  # it was read a moment ago: whatever changed, the next run reads it again
                pass
            for article_id in wanted:  # the file changed since the first pass: its record is not saved
                run.failed.add(article_id)
                run.skipped.append(Skipped(display_path(path), f"article {article_id} changed while it was indexed; "
                                                               "the next run indexes it"))

    def _store_all(self, pending: _Pending, run: _Run) -> None:
        total = pending.chunks
        if total:
            run.show("embedding", 0, total)
        batch: list[tuple[Article, str, list[Chunk]]] = []
        size = done = 0
        for item in chain(_drain(pending.held), self._read_again(pending, run)):
            batch.append(item)
            size += len(item[2])
            if size >= self.batch_chunks:
                self._store_batch(batch, run, done, total)
                batch, done, size = [], done + size, 0
        if batch:
            self._store_batch(batch, run, done, total)
        if total:
            run.show("embedding", total, total)
        self._record_files(run)

    def chunks_for(self, article: Article, digest: str) -> _Held:
        """Chunks that fit the embedder's window, title prefix included: their spans, each chunk's text made when
        it is taken (a long article's chunk texts all at once were twice its size)."""
        budget = self.chunker.max_tokens
        prefix = chunk_prefix(article.id, digest[:8])
        while True:
            chunks = _Held(article.id, prefix, self.chunker.spans(article.text, budget), article.text)
            # counted a slice at a time: a tokenizer's encodings of a long article's chunks all at once took GBs
            counts = (n for i in range(0, len(chunks), EMBED_SLICE)
                      for n in self.window.token_counts([embed_text(article, c) for c in chunks[i:i + EMBED_SLICE]]))
            if max(counts, default=0) <= self.window.max_tokens or budget <= 16:
                return chunks
            budget = max(16, int(budget * 0.75))  # word pieces outnumber tiktoken tokens here

    def _slices(self, batch: list[tuple[Article, str, list[Chunk]]]) -> Iterator[list[tuple[Article, Chunk]]]:
        """The batch's chunks, with their article, `batch_chunks` at a time (small articles share a slice)."""
        part: list[tuple[Article, Chunk]] = []
        for article, _, chunks in batch:
            for chunk in chunks:
                part.append((article, chunk))
                if len(part) == self.batch_chunks:
                    yield part
                    part = []
        if part:
            yield part

    def _embed(self, texts: list[str], tick: Callable[[int], None]) -> np.ndarray:
        """Vectors of `texts`, embedded a slice at a time; `tick(n)` after each, n texts done."""
        parts = []
        for i in range(0, len(texts), EMBED_SLICE):
            parts.append(self.embedder.embed(texts[i:i + EMBED_SLICE]))
            tick(len(parts[-1]))
        return np.concatenate(parts) if parts else np.zeros((0, self.embedder.dim), dtype=np.float32)

    def _embed_part(self, part: list[tuple[Article, Chunk]], run: _Run, failed: set[str],
                    tick: Callable[[int], None]) -> tuple[list[tuple[Article, Chunk]], np.ndarray]:
        """The slice's vectors; when embedding fails, the articles that fail are left out, added to `failed`
        and reported."""
        try:
            return part, self._embed([embed_text(a, c) for a, c in part], tick)
        except Exception:  # find the articles that fail; the rest of the slice goes on
            pass
        by_article: dict[str, list[tuple[Article, Chunk]]] = defaultdict(list)
        for item in part:
            by_article[item[0].id].append(item)
        kept: list[tuple[Article, Chunk]] = []
        vectors: list[np.ndarray] = []
        for items in by_article.values():
            article = items[0][0]
            try:
                vectors.append(self.embedder.embed([embed_text(article, c) for _, c in items]))
                kept += items
                tick(len(items))
            except Exception as exc:
                failed.add(article.id)
                run.failed.add(article.id)
                run.skipped.append(Skipped(article.path, f"article {article.id} not indexed, embedding failed "
                                                         f"({type(exc).__name__}: {exc}); the next run retries it"))
        return kept, (np.concatenate(vectors) if vectors else np.zeros((0, self.embedder.dim), dtype=np.float32))

    def _store_batch(self, batch: list[tuple[Article, str, list[Chunk]]], run: _Run, done: int, total: int) -> None:
        """Embed and commit one batch; `done` of `total` chunks were embedded before it.

        Its vectors are embedded and stored `batch_chunks` at a time (a 50 MB article's 77,000 chunks, their
        texts and vectors all at once, took 20 times its size); its articles are marked indexed only once all
        their vectors are stored, and an article whose embedding fails midway has the vectors it got removed."""
        count = [done]

        def tick(n: int) -> None:  # the phase ends once the last batch is stored, not when it is embedded
            count[0] += n
            run.show("embedding", min(count[0], total - 1), total)

        articles = {a.id: a for a, _, _ in batch}
        failed: set[str] = set()
        stored: dict[str, list[str]] = defaultdict(list)  # article id -> its chunks whose vectors are stored
        for part in self._slices(batch):
            kept, vectors = self._embed_part([item for item in part if item[0].id not in failed], run, failed, tick)
            if not kept:
                continue
            self.store.lock.check()  # a writer that lost its lock (team mode: a database restart) stops here
            self.store.catalogue.set_dirty()  # from here until the run finishes, a crash leaves vectors to reconcile
            self.store.vectors.add([c for _, c in kept], vectors, articles)
            for article, chunk in kept:
                stored[article.id].append(chunk.id)
        batch = [item for item in batch if item[0].id not in failed]
        old = {a.id: set(self.store.catalogue.chunk_ids_of(a.id)) for a, _, _ in batch}
        orphans = sorted(cid for a in failed
                         for cid in set(stored.get(a, ())) - set(self.store.catalogue.chunk_ids_of(a)))
        if orphans:  # the vectors of an article that failed midway: not left for a finished run to keep
            self.store.delete_vectors(orphans)
        if not batch:
            return
        existed = {a.id for a, _, _ in batch if old[a.id] or self.store.catalogue.article_hash(a.id) is not None}
        self.store.lock.check()
        if sum(len(p) for _, _, cs in batch if isinstance(cs, _Held) for p in cs.pieces or ()) > RELEASE_CHARS:
            # a big article's whole text is made again to be committed: first Chroma gives back the memory of
            # the vectors it indexed (it loads them again when next used), so the two do not add up
            self.store.vectors.reopen(None, 0)
            give_back_memory()
        self.store.catalogue.save_articles([(_whole(a, cs), digest, cs) for a, digest, cs in batch])
        # the new version is committed; only now are the old version's vectors removed
        stale = sorted(cid for a, _, cs in batch for cid in old[a.id] - {c.id for c in cs})
        if stale:
            self.store.delete_vectors(stale)
        for article, _, _ in batch:
            (run.replaced if article.id in existed else run.indexed).append(article.id)
        run.embedded += sum(len(cs) for _, _, cs in batch)

    def _record_files(self, run: _Run) -> None:
        # recorded only once all its articles are stored, so a crash re-reads the file
        for path, (ids, clean) in run.file_articles.items():
            stat = path.stat()
            # size -1 never matches, so a file with bad parts (or failed articles) is read again
            size = stat.st_size if clean and not run.failed.intersection(ids) else -1
            self.store.catalogue.save_file(host_key(path, self.shared), size, stat.st_mtime_ns, sorted(set(ids)))

    def _prune(self, run: _Run, paths: list[Path]) -> None:
        """Remove the articles of files that are gone (and that no other file holds). In team mode only this
        host's records of files under `paths` are looked at: other hosts' files are not on this disk, not gone."""
        files = self.store.catalogue.files()
        prefix = f"{socket.gethostname()}:" if self.shared else ""
        roots = [file_key(Path(p)) for p in paths]
        looked = {key: key[len(prefix):] for key in files
                  if not self.shared or (key.startswith(prefix) and _under(key[len(prefix):], roots))}
        gone = [key for key, path in looked.items() if not Path(path).exists()]
        live = {i for key, ids in files.items() if key not in gone for i in ids}
        for key in gone:
            for article_id in files[key]:
                if article_id not in live and self.store.catalogue.article_hash(article_id):
                    self.store.catalogue.set_dirty()
                    self.store.delete_article(article_id)
                    run.pruned.append(article_id)
            self.store.catalogue.forget_file(key)
