"""Store: the persisted index folder.

Layout of the index folder:
- `articles.sqlite`: articles (full text, metadata, content hash), chunk
  offsets, seen files, index metadata (embedder name and dimension), and the
  syndicated-story groups with the sampled shingle marks they are found by.
- `chroma/`: a Chroma PersistentClient holding one vector per chunk, with
  `article_id`, `source` and `published_ord` metadata for filtered search.
- `bm25/`: the bm25s lexical index over chunk texts, rebuilt after changes.

A two-stage index (meta `full_embedder` set) keeps a second vector per chunk,
by the full-stage model, in the collection `<collection>-full`; the chunks
that have one are listed in `full_chunks` (their commit point). The first
collection holds the fast stage's vectors (or the only stage's).

With a Chroma server (`ChromaServer`, from RAG_CHROMA_HOST/PORT) the vectors
live in a server collection instead of `chroma/`; SQLite and bm25s stay here.

Writes go vectors first, then the SQLite row that marks an article indexed,
so an interrupted run leaves work to redo, never an article without vectors.
A writer sets the `dirty` meta flag before its first write and clears it when
the run is complete, so the next writer knows to reconcile vectors with
SQLite (see `rag.index`). Each completed run bumps `generation`, which readers
in other processes poll to reload. Storage failures (corrupt database, read-
only folder, full disk) surface as `IndexError_` with a message saying what
to do. It does not chunk, embed, rank or fuse: that is the indexer's and the
retriever's job. One writer at a time (a lock file); readers may be many.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from rag.news import marks as story_marks
from rag.types import Article, Chunk, Filters

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, title TEXT, source TEXT,
    published TEXT, published_ord INTEGER, url TEXT, path TEXT, authors TEXT, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS articles_hash ON articles(content_hash);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, article_id TEXT NOT NULL, seq INTEGER, start INTEGER, "end" INTEGER);
CREATE INDEX IF NOT EXISTS chunks_article ON chunks(article_id);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, article_ids TEXT);
CREATE TABLE IF NOT EXISTS marks (article_id TEXT NOT NULL, hash INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS marks_article ON marks(article_id);
CREATE TABLE IF NOT EXISTS stories (article_id TEXT PRIMARY KEY, story TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removed (article_id TEXT PRIMARY KEY, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS full_chunks (id TEXT PRIMARY KEY);
"""


DEFAULT_COLLECTION = "chunks"
FULL = "full"  # the stage whose vectors live in the `<collection>-full` collection
MARKS_VERSION = "1"  # bump when `rag.news.marks` changes: the next index run recomputes them all
WRITER_WAIT = 5.0  # seconds a writer waits for a reader that is briefly reopening the index


class IndexError_(Exception):
    """The index folder cannot be used as asked (wrong embedder, busy, broken)."""


class SearchFailed(IndexError_):
    """A vector search failed (the lexical side can still answer)."""


@dataclass(frozen=True)
class ChromaServer:
    """Where a Chroma server is (`chroma run`); headers carry auth for a proxy in front of it."""

    host: str
    port: int = 8000
    ssl: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


def _nearly_full(folder: Path) -> bool:
    """Less than 2 MB left where the index is: the likely cause of a write that failed for no stated reason."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < 2 << 20
    except OSError:
        return False


def storage_error(exc: BaseException, where: Path | str) -> IndexError_:
    """A storage failure as an IndexError_ that says what happened and what to do."""
    text = str(exc)
    low = text.lower()
    full = IndexError_(f"disk full while writing the index in {where}: free some space and run the same `rag index` "
                       "again (what was not committed is redone, nothing is lost)")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "disk is full" in low or "no space" in low:
        return full
    if (isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)) or "readonly" in low \
            or "read-only" in low:
        return IndexError_(f"the index folder {where} is read-only or not writable ({text}): the index needs "
                           "write access, even to answer; copy it to a writable folder or fix its permissions")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return IndexError_(f"the index in {where} is corrupt ({text}): rebuild it with "
                           f"`rag index --rebuild PATH... --index {where}`")
    if "locked" in low or "busy" in low:
        return IndexError_(f"the index database in {where} stayed locked by another process ({text}); try again")
    if _nearly_full(Path(where)):  # Chroma reports a full disk as a failed compaction, without errno
        return full
    return IndexError_(f"the index in {where} cannot be used: {type(exc).__name__}: {text}")


def date_ord(iso: str) -> int:
    """An ISO date as an ordinal day number; 0 when unknown (filters skip it)."""
    try:
        return date.fromisoformat(iso).toordinal() if iso else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class ChunkTable:
    """All chunk offsets in memory, row i matching BM25 document i."""

    ids: list[str]
    article_ids: list[str]
    starts: np.ndarray
    ends: np.ndarray
    published_ord: np.ndarray
    sources: list[str]


class Store:
    """SQLite + Chroma + bm25s under one folder."""

    def __init__(self, index_dir: Path, server: ChromaServer | None = None,
                 collection_name: str = DEFAULT_COLLECTION) -> None:
        self.dir = Path(index_dir)
        self.server = server
        self.collection_name = collection_name or DEFAULT_COLLECTION
        self._lock = threading.RLock()
        self._collections: dict[str, object] = {}  # stage (None: the first) -> chromadb Collection
        self._client = None
        self._writer_fd: int | None = None
        # dense searches share the Chroma client; reopening it waits for them (and they for it)
        self._vec_cond = threading.Condition()
        self._vec_users = 0
        self._vec_reopening = False
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, self.dir) from None
        if _read_only(self.dir):
            raise IndexError_(f"the index folder {self.dir} is read-only: the index needs write access, even to "
                              "answer (SQLite and Chroma keep journals beside their files); copy it to a writable "
                              "folder or fix its permissions")
        path = self.dir / "articles.sqlite"
        if path.exists() and not os.access(path, os.R_OK):
            raise IndexError_(f"the index database {path} is not readable: fix its permissions")
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.dir) from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")  # readers in other processes never wait for a writer
            self.db.executescript(SCHEMA)
            self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        except sqlite3.Error as exc:
            self.db.close()
            raise storage_error(exc, self.dir) from None

    @contextmanager
    def _locked(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the thread lock (in a transaction when writing); storage errors made clear."""
        with self._lock:
            try:
                if write:
                    with self.db:
                        yield self.db
                else:
                    yield self.db
            except sqlite3.Error as exc:
                raise storage_error(exc, self.dir) from None

    # ---------- metadata ----------
    def meta(self, key: str) -> str | None:
        with self._locked() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._locked(write=True) as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        """Bumped by every completed index run: a cheap "has anything changed?" for readers."""
        return int(self.meta("generation") or 0)

    def dirty(self) -> bool:
        """True while a run writes, and after a run that did not finish (crash, failure)."""
        return self.meta("dirty") == "1"

    def set_dirty(self) -> None:
        if not self.dirty():
            self.set_meta("dirty", "1")

    def finish_run(self) -> None:
        """Mark the index complete and tell readers to reload."""
        with self._locked(write=True) as db:
            db.execute("DELETE FROM meta WHERE key = 'dirty'")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self.generation() + 1),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_indexed', ?)",
                       (datetime.now(UTC).isoformat(timespec="seconds"),))

    def bump_generation(self) -> None:
        """Tell readers to reload without marking the index complete (after a failed run)."""
        self.set_meta("generation", str(self.generation() + 1))

    def check_embedder(self, name: str, dim: int) -> None:
        """Record the embedder on first use; refuse a different one later."""
        stored = self.meta("embedder")
        if stored is None:
            self._check_new_collection()
            self.set_meta("embedder", name)
            self.set_meta("dim", str(dim))
            self.set_meta("marks", MARKS_VERSION)  # a new index keeps story marks from its first article
        elif stored != name or self.meta("dim") != str(dim):
            raise IndexError_(
                f"the index in {self.dir} was built with embedder {stored} "
                f"(dim {self.meta('dim')}), not {name} (dim {dim}). Re-index: "
                f"`rag index --rebuild PATH... --index {self.dir}` (the files and folders it was built from) or "
                "choose another --index folder."
            )
        else:
            self.collection  # noqa: B018 - open the vectors now: a broken store is a start-up error

    def _check_new_collection(self) -> None:
        """A new index must start with no vectors: leftovers of an interrupted `--rebuild` are
        removed; a server collection that holds vectors belongs to another index and is refused."""
        count = self.collection.count()
        if not count:
            return
        if self.server is None:
            self._reset_local_vectors()
            return
        raise IndexError_(
            f"the Chroma collection {self.collection_name!r} on {self.server} already holds {count} vectors, but "
            f"the index folder {self.dir} is new: each index folder needs its own collection. Set "
            "RAG_CHROMA_COLLECTION to another name, or use the folder that collection belongs to")

    def _reset_local_vectors(self) -> None:
        self._close_client()
        shutil.rmtree(self.dir / "chroma", ignore_errors=True)

    # ---------- writer lock ----------
    def acquire_writer(self, wait: float | None = None) -> None:
        """Take the index's writer lock, or raise IndexError_ naming the process that has it.

        Waits up to `wait` seconds, for readers that hold the lock shared while they reopen."""
        try:
            fd = os.open(self.dir / ".write.lock", os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise storage_error(exc, self.dir) from None
        deadline = time.monotonic() + (WRITER_WAIT if wait is None else wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _read_pid(fd)
                os.close(fd)
                who = f"another process (pid {holder})" if holder else "another process"
                raise IndexError_(
                    f"{who} is writing the index in {self.dir}; only one writer at a time: "
                    "try again when it is done") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._writer_fd = fd

    @contextmanager
    def quiet(self) -> Iterator[bool]:
        """Hold the lock shared while no writer is active; yields False (holding nothing) when one is.

        Readers reopen their view of the index inside it, so they never read half-written files."""
        if self._writer_fd is not None:  # this Store is the writer: it knows what it wrote
            yield True
            return
        try:
            fd = os.open(self.dir / ".write.lock", os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:
            yield True  # a read-only folder has no writer
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def release_writer(self) -> None:
        if self._writer_fd is not None:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
            os.close(self._writer_fd)
            self._writer_fd = None

    # ---------- chroma ----------
    @property
    def collection(self):  # chromadb Collection; typed loosely to keep chromadb at this seam
        return self.stage_collection(None)

    def stage_collection(self, stage: str | None):
        """The collection of a stage's vectors: None the first (fast or only) stage, FULL the full stage."""
        with self._lock:
            if stage not in self._collections:
                self._collections[stage] = self._open_collection(stage_collection_name(self.collection_name, stage))
            return self._collections[stage]

    def _open_collection(self, name: str):
        import chromadb

        where = self.server or self.dir / "chroma"
        try:
            if self._client is not None:  # one client for every stage's collection
                client = self._client
            elif self.server is None:
                client = chromadb.PersistentClient(
                    path=str(self.dir / "chroma"),
                    settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False),
                )
            else:
                client = chromadb.HttpClient(
                    host=self.server.host, port=self.server.port, ssl=self.server.ssl,
                    headers=dict(self.server.headers) or None,
                    settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False),
                )
            self._max_batch = client.get_max_batch_size()
            collection = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
        except Exception as exc:  # chromadb raises many types (ValueError, its own errors, Rust panics)
            if self.server is not None:
                raise IndexError_(f"cannot use the Chroma server at {where} (collection {name!r}): "
                                  f"{exc}. Is `chroma run` up, and are RAG_CHROMA_HOST/PORT right?") from None
            raise storage_error(exc, where) from None
        self._client = client
        return collection

    def _close_client(self) -> None:
        client, self._client = self._client, None
        self._collections = {}
        if client is not None and hasattr(client, "close"):
            try:
                client.close()
            except Exception:  # closing is best effort
                pass

    def reopen_vectors(self, stage: str | None = None) -> None:
        """See vectors written by other processes: an embedded Chroma client only sees its own
        writes until it is reopened. A server needs nothing. Waits for running searches; loads the
        vector index of `stage` (the one searched) now."""
        if self.server is not None or self._writer_fd is not None:
            return
        with self._vec_cond:
            self._vec_reopening = True
            self._vec_cond.wait_for(lambda: self._vec_users == 0)
        try:
            with self._lock:
                self._close_client()
                collection = self.stage_collection(stage)
            if collection.count():  # load the vector index now, while no writer runs
                dim = int(self.meta("full_dim" if stage == FULL else "dim") or 0)
                if dim:
                    collection.query(query_embeddings=[[1.0] + [0.0] * (dim - 1)], n_results=1, include=[])
        finally:
            with self._vec_cond:
                self._vec_reopening = False
                self._vec_cond.notify_all()

    @contextmanager
    def _searching(self) -> Iterator[None]:
        with self._vec_cond:
            self._vec_cond.wait_for(lambda: not self._vec_reopening)
            self._vec_users += 1
        try:
            yield
        finally:
            with self._vec_cond:
                self._vec_users -= 1
                self._vec_cond.notify_all()

    def add_vectors(self, chunks: list[Chunk], vectors: np.ndarray, article: dict[str, Article],
                    stage: str | None = None) -> None:
        collection = self.stage_collection(stage)
        for i in range(0, len(chunks), self._max_batch):
            part = chunks[i:i + self._max_batch]
            collection.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[i:i + self._max_batch],
                metadatas=[{
                    "article_id": c.article_id,
                    "source": article[c.article_id].source,
                    "published_ord": date_ord(article[c.article_id].published),
                } for c in part],
            )

    def delete_vectors(self, chunk_ids: list[str]) -> None:
        """Every stage's vectors of these chunks (a full-stage vector's row first: it says the vector exists)."""
        stages: list[str | None] = [None]
        if self.two_stage():
            self.forget_full(chunk_ids)
            stages.append(FULL)
        for stage in stages:
            for i in range(0, len(chunk_ids), 5000):
                self.stage_collection(stage).delete(ids=chunk_ids[i:i + 5000])

    def vector_ids(self, page: int = 10_000, stage: str | None = None) -> set[str]:
        """Every chunk id Chroma holds for a stage (for reconciling with SQLite)."""
        collection = self.stage_collection(stage)
        ids: set[str] = set()
        offset = 0
        while True:
            got = collection.get(include=[], limit=page, offset=offset)["ids"]
            ids.update(got)
            if len(got) < page:
                return ids
            offset += page

    def dense_search(self, vector: np.ndarray, n: int, filters: Filters,
                     stage: str | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity) of the nearest chunks passing the filters.

        Raises SearchFailed when Chroma cannot search: an embedded client's filtered search fails while
        another process writes (Chroma's metadata already holds the writer's new chunks, this client's
        vector index does not: "Error finding id"), a server may be down. The caller decides what to do."""
        with self._searching():
            try:
                collection = self.stage_collection(stage)
                count = collection.count()
                if count == 0:
                    return []
                result = collection.query(
                    query_embeddings=[vector.tolist()], n_results=min(n, count),
                    where=chroma_where(filters), include=["distances"],
                )
            except Exception as exc:  # chromadb raises many types (its InternalError, ValueError, Rust panics)
                raise SearchFailed(f"{type(exc).__name__}: {exc}") from None
        return [(cid, 1.0 - float(d)) for cid, d in zip(result["ids"][0], result["distances"][0])]

    # ---------- the full stage of a two-stage index ----------
    def two_stage(self) -> bool:
        return self.meta("full_embedder") is not None

    def check_full_embedder(self, name: str) -> None:
        """Record the full stage's model of a new index; refuse another one later (like `check_embedder`)."""
        stored = self.meta("full_embedder")
        if stored is None:
            self.set_meta("full_embedder", name)
        elif stored != name:
            raise IndexError_(f"the index in {self.dir} has full-stage vectors by {stored}, not {name}. Re-index: "
                              f"`rag index --rebuild PATH... --index {self.dir}` or choose another --index folder.")

    def full_progress(self) -> tuple[int, int]:
        """(chunks with a full-stage vector, all chunks)."""
        with self._locked() as db:
            done = db.execute("SELECT COUNT(*) FROM chunks c JOIN full_chunks f ON f.id = c.id").fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return done, total

    def full_complete(self) -> bool:
        done, total = self.full_progress()
        return done >= total

    def without_full(self) -> list[tuple[str, str, int, int]]:
        """(chunk id, article id, start, end) of the chunks without a full-stage vector, article by article."""
        with self._locked() as db:
            return db.execute('SELECT c.id, c.article_id, c.start, c."end" FROM chunks c LEFT JOIN full_chunks f '
                              "ON f.id = c.id WHERE f.id IS NULL ORDER BY c.article_id, c.seq").fetchall()

    def mark_full(self, chunk_ids: list[str]) -> None:
        """Their full-stage vectors are stored: the commit point of a full-stage batch."""
        with self._locked(write=True) as db:
            db.executemany("INSERT OR IGNORE INTO full_chunks VALUES (?)", [(c,) for c in chunk_ids])

    def forget_full(self, chunk_ids: list[str]) -> None:
        with self._locked(write=True) as db:
            db.executemany("DELETE FROM full_chunks WHERE id = ?", [(c,) for c in chunk_ids])

    def full_ids(self) -> set[str]:
        with self._locked() as db:
            return {r[0] for r in db.execute("SELECT id FROM full_chunks")}

    # ---------- articles ----------
    def article_hash(self, article_id: str) -> str | None:
        with self._locked():
            row = self.db.execute("SELECT content_hash FROM articles WHERE id = ?", (article_id,)).fetchone()
        return row[0] if row else None

    def id_with_hash(self, content_hash: str) -> str | None:
        with self._locked():
            row = self.db.execute("SELECT id FROM articles WHERE content_hash = ?", (content_hash,)).fetchone()
        return row[0] if row else None

    def chunk_ids_of(self, article_id: str) -> list[str]:
        with self._locked():
            rows = self.db.execute("SELECT id FROM chunks WHERE article_id = ?", (article_id,)).fetchall()
        return [r[0] for r in rows]

    def save_articles(self, items: list[tuple[Article, str, list[Chunk]]]) -> None:
        """Mark articles indexed with these chunks, in one transaction.

        Their vectors must already be stored: this is the commit point.
        """
        with self._locked(write=True):
            for article, content_hash, chunks in items:
                self.db.execute("DELETE FROM chunks WHERE article_id = ?", (article.id,))
                self.db.execute(
                    "INSERT OR REPLACE INTO articles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (article.id, content_hash, article.title, article.source, article.published,
                     date_ord(article.published), article.url, article.path,
                     json.dumps(list(article.authors)), article.text),
                )
                self.db.executemany(
                    'INSERT INTO chunks VALUES (?, ?, ?, ?, ?)',
                    [(c.id, c.article_id, i, c.start, c.end) for i, c in enumerate(chunks)],
                )
                self.db.execute("DELETE FROM marks WHERE article_id = ?", (article.id,))
                self._save_marks(article.id, article.text)

    def _save_marks(self, article_id: str, text: str) -> None:
        self.db.executemany("INSERT INTO marks VALUES (?, ?)", [(article_id, h) for h in story_marks(text)])

    def mark_all(self) -> None:
        """Compute the story marks of every article (an index made before they were kept), one at a time."""
        with self._locked(write=True) as db:
            db.execute("DELETE FROM marks")
            for article_id, text in db.execute("SELECT id, text FROM articles"):
                self._save_marks(article_id, text)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('marks', ?)", (MARKS_VERSION,))

    def marks(self) -> dict[str, list[int]]:
        """{article id: its story marks} (see `rag.news.marks`)."""
        out: dict[str, list[int]] = {}
        with self._locked() as db:
            for article_id, h in db.execute("SELECT article_id, hash FROM marks"):
                out.setdefault(article_id, []).append(h)
        return out

    def save_stories(self, stories: dict[str, str]) -> None:
        """Replace the story groups: {article id: story id} for articles with syndicated copies."""
        with self._locked(write=True) as db:
            db.execute("DELETE FROM stories")
            db.executemany("INSERT INTO stories VALUES (?, ?)", sorted(stories.items()))

    def stories(self) -> dict[str, str]:
        with self._locked() as db:
            return dict(db.execute("SELECT article_id, story FROM stories"))

    def delete_article(self, article_id: str) -> None:
        """SQLite first, then the vectors: a crash in between leaves orphan vectors, which the
        next run's reconciliation removes, never an indexed article without vectors."""
        chunk_ids = self.chunk_ids_of(article_id)
        with self._locked(write=True) as db:
            db.execute("DELETE FROM chunks WHERE article_id = ?", (article_id,))
            db.execute("DELETE FROM articles WHERE id = ?", (article_id,))
            db.execute("DELETE FROM marks WHERE article_id = ?", (article_id,))
        self.delete_vectors(chunk_ids)

    # ---------- removed articles (`rag remove`): kept out of later runs until their file is named again ----------
    def mark_removed(self, articles: list[Article]) -> None:
        with self._locked(write=True) as db:
            db.executemany("INSERT OR REPLACE INTO removed VALUES (?, ?)", [(a.id, a.path) for a in articles])

    def removed_ids(self) -> set[str]:
        with self._locked() as db:
            return {r[0] for r in db.execute("SELECT article_id FROM removed")}

    def restore_removed(self, path: str) -> list[str]:
        """Let the articles removed from the file at `path` (as stored) be indexed again; their ids. The
        file's record is forgotten too, so the next run reads it even when it has not changed."""
        with self._locked(write=True) as db:
            rows = db.execute("SELECT article_id FROM removed WHERE path = ? OR substr(path, 1, ?) = ?",
                              (path, len(path) + 1, f"{path}#")).fetchall()
            ids = [r[0] for r in rows]
            db.executemany("DELETE FROM removed WHERE article_id = ?", [(i,) for i in ids])
            if ids:
                db.execute("DELETE FROM files WHERE path = ?", (path,))
        return ids

    def chunks_by_id(self, chunk_ids: list[str]) -> list[tuple[str, str, int, int]]:
        """(chunk id, article id, start, end) of these chunks."""
        out: list[tuple[str, str, int, int]] = []
        with self._locked() as db:
            for i in range(0, len(chunk_ids), 500):
                part = chunk_ids[i:i + 500]
                out += db.execute(
                    f'SELECT id, article_id, start, "end" FROM chunks WHERE id IN ({",".join("?" * len(part))})',
                    part).fetchall()
        return out

    def chunk_id_set(self) -> set[str]:
        with self._locked() as db:
            return {r[0] for r in db.execute("SELECT id FROM chunks")}

    def article(self, article_id: str) -> Article | None:
        with self._locked():
            row = self.db.execute(
                "SELECT id, title, text, source, published, url, path, authors FROM articles WHERE id = ?",
                (article_id,),
            ).fetchone()
        if row is None:
            return None
        return Article(*row[:7], authors=tuple(json.loads(row[7] or "[]")))

    def article_ids(self) -> list[str]:
        with self._locked():
            return [r[0] for r in self.db.execute("SELECT id FROM articles ORDER BY id")]

    def ids_by_date(self) -> list[str]:
        """Every article id, earliest published first (undated last, then by id)."""
        with self._locked() as db:
            return [r[0] for r in db.execute(
                "SELECT id FROM articles ORDER BY COALESCE(published, '') = '', published, id")]

    def counts(self) -> tuple[int, int]:
        with self._locked():
            articles = self.db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
            chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return articles, chunks

    def sources(self) -> list[str]:
        with self._locked():
            return [r[0] for r in self.db.execute(
                "SELECT source FROM articles WHERE source != '' GROUP BY source ORDER BY COUNT(*) DESC")]

    # ---------- files ----------
    def file_record(self, path: str) -> tuple[int, int, list[str]] | None:
        with self._locked():
            row = self.db.execute("SELECT size, mtime_ns, article_ids FROM files WHERE path = ?", (path,)).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def save_file(self, path: str, size: int, mtime_ns: int, article_ids: list[str]) -> None:
        with self._locked(write=True):
            self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                            (path, size, mtime_ns, json.dumps(article_ids)))

    def files(self) -> dict[str, list[str]]:
        with self._locked():
            return {p: json.loads(ids) for p, ids in self.db.execute("SELECT path, article_ids FROM files")}

    def forget_file(self, path: str) -> None:
        with self._locked(write=True):
            self.db.execute("DELETE FROM files WHERE path = ?", (path,))

    # ---------- whole-table reads for retrieval ----------
    def chunk_table(self) -> ChunkTable:
        with self._locked():
            rows = self.db.execute(
                'SELECT c.id, c.article_id, c.start, c."end", a.published_ord, a.source '
                "FROM chunks c JOIN articles a ON a.id = c.article_id ORDER BY c.article_id, c.seq"
            ).fetchall()
        return ChunkTable(
            ids=[r[0] for r in rows], article_ids=[r[1] for r in rows],
            starts=np.array([r[2] for r in rows], dtype=np.int64),
            ends=np.array([r[3] for r in rows], dtype=np.int64),
            published_ord=np.array([r[4] or 0 for r in rows], dtype=np.int64),
            sources=[r[5] or "" for r in rows],
        )

    def touch(self) -> None:
        self.set_meta("last_indexed", datetime.now(UTC).isoformat(timespec="seconds"))

    def close(self) -> None:
        self.release_writer()
        with self._lock:
            self._close_client()
            self.db.close()


def _read_only(folder: Path) -> bool:
    """A read-only mount, or a folder this user may not write to."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def remove_index(folder: Path, server: ChromaServer | None = None, collection_name: str = DEFAULT_COLLECTION) -> None:
    """Delete an index (for `rag index --rebuild`), even a corrupt one, under the writer lock.

    The SQLite database goes first: if this is interrupted, what is left is vectors and
    lexical files without a database, which a new index clears when it starts."""
    folder = Path(folder)
    if not folder.exists():
        return
    try:
        fd = os.open(folder / ".write.lock", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        raise storage_error(exc, folder) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            raise IndexError_(f"another process{f' (pid {holder})' if holder else ''} is writing the index in "
                              f"{folder}; try again when it is done") from None
        for name in ("articles.sqlite", "articles.sqlite-wal", "articles.sqlite-shm"):
            (folder / name).unlink(missing_ok=True)
        lexical = [f"{name}{end}" for name in ("bm25", "bm25_articles") for end in ("", ".new", ".old")]
        for name in ("chroma", *lexical):
            shutil.rmtree(folder / name, ignore_errors=True)
        if server is not None:
            for stage in (None, FULL):
                _delete_collection(server, stage_collection_name(collection_name, stage))
    finally:
        os.close(fd)


def _delete_collection(server: ChromaServer, name: str) -> None:
    import chromadb

    try:
        client = chromadb.HttpClient(host=server.host, port=server.port, ssl=server.ssl,
                                     headers=dict(server.headers) or None,
                                     settings=chromadb.Settings(anonymized_telemetry=False))
        client.delete_collection(name)
    except Exception as exc:  # a missing collection is fine; an unreachable server is not
        if "does not exist" not in str(exc).lower() and "not found" not in str(exc).lower():
            raise IndexError_(f"cannot delete collection {name!r} on {server}: {exc}") from None


def stage_collection_name(collection: str, stage: str | None) -> str:
    """The Chroma collection of a stage: the configured name for the first stage, `<name>-full` for the full one."""
    return collection if stage is None else f"{collection}-{stage}"


def chroma_where(filters: Filters) -> dict | None:
    """Filters as a Chroma `where` clause (None when there is nothing to filter)."""
    clauses: list[dict] = []
    if filters.sources:
        clauses.append({"source": {"$in": list(filters.sources)}})
    if filters.since:
        clauses.append({"published_ord": {"$gte": filters.since.toordinal()}})
    if filters.until:
        clauses.append({"published_ord": {"$lte": filters.until.toordinal()}})
        clauses.append({"published_ord": {"$gt": 0}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
