"""Catalogue: what the index knows besides its vectors, behind one small interface.

The catalogue holds the articles (metadata and full text, content hash), their chunks' offsets, the files
seen, the story marks and groups, the articles removed by `rag remove`, which chunks have a full-stage
vector, the index metadata (embedders, generation counter, dirty flag, last run) and the keys the Slack
bot has handled. Two implementations share this interface: `SqliteCatalogue` (a file in the index
folder, the default) and `PostgresCatalogue` (`rag.catalogue_pg`, team mode: `RAG_DATABASE_URL`).

It does not hold vectors (`rag.vectors`), the lexical index (`rag.lexical`, built from the catalogue) or
the writer lock (`rag.lock`), and it does not chunk, embed or rank. Storage failures surface as
`IndexError_` saying what to do. Schema changes go through numbered migrations, applied on open.
"""

from __future__ import annotations

import codecs
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import IndexError_, storage_error
from rag.news import marks as story_marks
from rag.types import Article, Chunk, StoredText

WHOLE_CHARS = 1 << 20  # a longer text is read in slices when the search reads an article (`Catalogue.article`)
PIECE_BYTES = 1 << 18  # a long text read whole is read this many bytes at a time (`Catalogue.text_pieces`)
MARKS_VERSION = "1"  # bump when `rag.news.marks` changes: the next index run recomputes them all


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

    @classmethod
    def of_rows(cls, rows: list[tuple]) -> ChunkTable:
        """From (chunk id, article id, start, end, published_ord, source) rows, in the table's order."""
        return cls(
            ids=[r[0] for r in rows], article_ids=[r[1] for r in rows],
            starts=np.array([r[2] for r in rows], dtype=np.int64),
            ends=np.array([r[3] for r in rows], dtype=np.int64),
            published_ord=np.array([r[4] or 0 for r in rows], dtype=np.int64),
            sources=[r[5] or "" for r in rows],
        )


ChunkRow = tuple[str, str, int, int]  # (chunk id, article id, start, end)


def stored_text(catalogue: Catalogue, article_id: str, text: str | None, size: int = 0,
                content_hash: str = "") -> str | StoredText:
    """`text` when read (a short text), else the article's text read in slices from `catalogue`."""
    if text is not None:
        return text

    def read(start: int, end: int) -> str:
        found = catalogue.text_slice(article_id, start, end, content_hash)
        if found is None:
            raise changed(article_id)
        return found
    return StoredText(size, read, partial(catalogue.text_pieces, article_id, content_hash))


def changed(article_id: str) -> IndexError_:
    return IndexError_(f"article {article_id} was indexed again or removed while an answer read it; ask again")


class Catalogue(Protocol):
    """The interface both catalogues implement; each method is one transaction."""

    where: str  # for messages: the folder or the database (without its password)

    # ---------- metadata ----------
    def meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def generation(self) -> int:
        """Bumped by every completed index run: a cheap "has anything changed?" for readers."""
    def dirty(self) -> bool:
        """True while a run writes, and after a run that did not finish (crash, failure)."""
    def set_dirty(self) -> None: ...
    def finish_run(self) -> None:
        """Clear the dirty flag, bump the generation and record the time, in one transaction."""
    def bump_generation(self) -> None: ...
    def touch(self) -> None:
        """Record now as the last index run."""

    # ---------- articles and chunks ----------
    def save_articles(self, items: list[tuple[Article, str, list[Chunk]]]) -> None:
        """Mark articles (with their content hash) indexed with these chunks, and store their story marks,
        in one transaction: the commit point (their vectors are stored before)."""
    def delete_article(self, article_id: str) -> list[str]:
        """Forget an article, its chunks and marks; the ids of the chunks it had (their vectors go next)."""
    def article(self, article_id: str, whole: bool = True) -> Article | None:
        """The article; with `whole` False, a text longer than WHOLE_CHARS is a `StoredText` (read in slices
        by `text_slice`, from this version of the article only) instead of a `str`."""
    def text_slice(self, article_id: str, start: int, end: int, content_hash: str) -> str | None:
        """The characters start:end of the article's text; None when it is gone or its content hash is no
        longer `content_hash` (it was indexed again)."""
    def text_pieces(self, article_id: str, content_hash: str) -> Iterator[str]:
        """The article's whole text in order, a bounded piece at a time (never whole in this process); raises
        IndexError_ when it is gone or was indexed again meanwhile."""
    def article_hash(self, article_id: str) -> str | None: ...
    def id_with_hash(self, content_hash: str) -> str | None: ...
    def article_ids(self) -> list[str]:
        """Every article id, sorted."""
    def ids_by_date(self) -> list[str]:
        """Every article id, earliest published first (undated last, then by id)."""
    def counts(self) -> tuple[int, int]:
        """(articles, chunks)."""
    def sources(self) -> list[str]:
        """Sources, the most frequent first."""
    def chunk_ids_of(self, article_id: str) -> list[str]: ...
    def chunks_by_id(self, chunk_ids: list[str]) -> list[ChunkRow]: ...
    def chunk_id_set(self) -> set[str]: ...
    def chunk_table(self) -> ChunkTable:
        """Every chunk, ordered by article id then position (the lexical index's document order)."""

    # ---------- the full stage of a two-stage index ----------
    def full_progress(self) -> tuple[int, int]:
        """(chunks with a full-stage vector, all chunks)."""
    def without_full(self) -> list[ChunkRow]:
        """The chunks without a full-stage vector, article by article."""
    def mark_full(self, chunk_ids: list[str]) -> None: ...
    def forget_full(self, chunk_ids: list[str]) -> None: ...
    def full_ids(self) -> set[str]: ...

    # ---------- syndicated stories ----------
    def mark_all(self) -> None:
        """Recompute every article's story marks (and record MARKS_VERSION)."""
    def marks(self) -> dict[str, list[int]]: ...
    def marks_of(self, article_ids: list[str]) -> dict[str, list[int]]:
        """The story marks of these articles (an article without any is left out)."""
    def mark_postings(self, hashes: Iterable[int]) -> dict[int, list[str]]:
        """{mark: ids of the articles that have it} for these marks (every one given, [] when none has it)."""
    def marks_counted(self, low: int, high: int) -> list[int]:
        """The marks that between `low` and `high` articles have."""
    def save_stories(self, stories: dict[str, str]) -> None:
        """Replace the story groups: {article id: story id}."""
    def stories(self) -> dict[str, str]: ...

    # ---------- removed articles (`rag remove`) ----------
    def mark_removed(self, articles: list[Article]) -> None: ...
    def removed_ids(self) -> set[str]: ...
    def restore_removed(self, path: str) -> list[str]:
        """Let the articles removed from the file at `path` be indexed again (and forget the file's record)."""

    # ---------- files seen ----------
    def file_record(self, path: str) -> tuple[int, int, list[str]] | None:
        """(size, mtime_ns, article ids) of a file as last indexed."""
    def save_file(self, path: str, size: int, mtime_ns: int, article_ids: list[str]) -> None: ...
    def files(self) -> dict[str, list[str]]: ...
    def forget_file(self, path: str) -> None: ...

    # ---------- keys a bot has handled (Slack events, claimed threads) ----------
    def remember(self, kind: str, key: str, until: float, now: float) -> bool:
        """Keep `key` until the time `until`; False when it is already kept and not expired at `now` (the
        first of several replicas to remember a key wins). Expired keys may be pruned."""
    def remembered(self, kind: str, key: str, now: float) -> bool: ...

    # ---------- readers' feedback (the Slack bot's buttons) ----------
    def add_feedback(self, record: dict) -> None:
        """Keep one feedback record (a JSON object: vote, user, question, answer, citations...), so every
        replica's feedback ends up in one place."""
    def feedback(self) -> list[dict]:
        """Every feedback record, oldest first."""

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------- SQLite

# Each migration is the statements that take the schema from the version before it to its own number (its
# index in this list plus one), applied in one transaction with the new version recorded in PRAGMA
# user_version. Version 1 is the schema of the index folders made before versions were recorded: its
# statements only create what is missing, so such a folder (user_version 0) opens as it is and goes on.
MIGRATIONS: list[list[str]] = [
    [  # 1: the catalogue as it was when migrations began
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS articles (id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, title TEXT, "
        "source TEXT, published TEXT, published_ord INTEGER, url TEXT, path TEXT, authors TEXT, text TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS articles_hash ON articles(content_hash)",
        'CREATE TABLE IF NOT EXISTS chunks (id TEXT PRIMARY KEY, article_id TEXT NOT NULL, seq INTEGER, '
        'start INTEGER, "end" INTEGER)',
        "CREATE INDEX IF NOT EXISTS chunks_article ON chunks(article_id)",
        "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, article_ids TEXT)",
        "CREATE TABLE IF NOT EXISTS marks (article_id TEXT NOT NULL, hash INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS marks_article ON marks(article_id)",
        "CREATE TABLE IF NOT EXISTS stories (article_id TEXT PRIMARY KEY, story TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS removed (article_id TEXT PRIMARY KEY, path TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS full_chunks (id TEXT PRIMARY KEY)",
    ],
    [  # 2: keys the Slack bot has handled, shared by every replica that uses this catalogue
        "CREATE TABLE handled (kind TEXT NOT NULL, key TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (kind, key))",
        "CREATE INDEX handled_until ON handled(until)",
    ],
    [  # 3: readers' feedback (Slack's buttons), shared by every replica (it was a JSON-lines file in the folder)
        "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, "
        "record TEXT NOT NULL)",
        # which catalogue this is: a rebuilt one starts its generations again (see `rag.lexical.sync_cache`)
        "INSERT OR IGNORE INTO meta VALUES ('catalogue_id', lower(hex(randomblob(16))))",
    ],
    [  # 4: marks looked up by value: an index run compares only its new articles with those sharing their marks
        "CREATE INDEX IF NOT EXISTS marks_hash ON marks(hash)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
DB_FILE = "articles.sqlite"


class SqliteCatalogue:
    """The catalogue in `articles.sqlite` in the index folder (WAL: readers in other processes never wait for
    a writer). One connection shared by threads under a lock."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.where = str(self.folder)
        self._lock = threading.RLock()
        path = self.folder / DB_FILE
        if path.exists() and not os.access(path, os.R_OK):
            raise IndexError_(f"the index database {path} is not readable: fix its permissions")
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.where) from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
            self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        except (sqlite3.Error, IndexError_) as exc:
            self.db.close()
            raise exc if isinstance(exc, IndexError_) else storage_error(exc, self.where) from None

    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        """Apply the migrations this database has not had, under SQLite's write lock (another process
        opening it at the same time waits, then finds them applied)."""
        if self.version() == SCHEMA_VERSION:
            return
        self.db.isolation_level = None  # the transaction below is explicit: DDL and the version in one
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                version = self.version()
                if version > SCHEMA_VERSION:
                    raise IndexError_(f"the index in {self.where} has catalogue version {version}, newer than this "
                                      f"rag knows ({SCHEMA_VERSION}): upgrade rag")
                for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in statements:
                        self.db.execute(statement)
                    self.db.execute(f"PRAGMA user_version = {number}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        finally:
            self.db.isolation_level = ""

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
                raise storage_error(exc, self.where) from None

    # ---------- metadata ----------
    def meta(self, key: str) -> str | None:
        with self._locked() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._locked(write=True) as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    def dirty(self) -> bool:
        return self.meta("dirty") == "1"

    def set_dirty(self) -> None:
        if not self.dirty():
            self.set_meta("dirty", "1")

    def finish_run(self) -> None:
        with self._locked(write=True) as db:
            db.execute("DELETE FROM meta WHERE key = 'dirty'")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self.generation() + 1),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_indexed', ?)",
                       (datetime.now(UTC).isoformat(timespec="seconds"),))

    def bump_generation(self) -> None:
        """Tell readers to reload without marking the index complete (after a failed run)."""
        self.set_meta("generation", str(self.generation() + 1))

    def touch(self) -> None:
        self.set_meta("last_indexed", datetime.now(UTC).isoformat(timespec="seconds"))

    # ---------- articles and chunks ----------
    def save_articles(self, items: list[tuple[Article, str, list[Chunk]]]) -> None:
        with self._locked(write=True) as db:
            for article, content_hash, chunks in items:
                db.execute("DELETE FROM chunks WHERE article_id = ?", (article.id,))
                db.execute(
                    "INSERT OR REPLACE INTO articles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (article.id, content_hash, article.title, article.source, article.published,
                     date_ord(article.published), article.url, article.path,
                     json.dumps(list(article.authors)), article.text),
                )
                db.executemany('INSERT INTO chunks VALUES (?, ?, ?, ?, ?)',
                               [(c.id, c.article_id, i, c.start, c.end) for i, c in enumerate(chunks)])
                db.execute("DELETE FROM marks WHERE article_id = ?", (article.id,))
                self._save_marks(article.id, article.text)

    def delete_article(self, article_id: str) -> list[str]:
        with self._locked(write=True) as db:
            chunk_ids = [r[0] for r in db.execute("SELECT id FROM chunks WHERE article_id = ?", (article_id,))]
            db.execute("DELETE FROM chunks WHERE article_id = ?", (article_id,))
            db.execute("DELETE FROM articles WHERE id = ?", (article_id,))
            db.execute("DELETE FROM marks WHERE article_id = ?", (article_id,))
        return chunk_ids

    def article(self, article_id: str, whole: bool = True) -> Article | None:
        # a long text is measured and sliced from its bytes as stored (`text_pieces`), never loaded whole: SQLite
        # loads a whole value for `length` and `substr`
        with self._locked() as db:
            row = db.execute("SELECT id, title, source, published, url, path, authors, rowid, content_hash "
                             "FROM articles WHERE id = ?", (article_id,)).fetchone()
            if row is None:
                return None
            if not whole:
                with db.blobopen("articles", "text", row[7], readonly=True) as blob:
                    whole = len(blob) <= WHOLE_CHARS  # bytes: at least its characters
            text = db.execute("SELECT text FROM articles WHERE rowid = ?", (row[7],)).fetchone()[0] if whole else None
        size = 0 if whole else sum(len(piece) for piece in self.text_pieces(article_id, row[8]))
        if not whole and size <= WHOLE_CHARS:
            return self.article(article_id)
        return Article(row[0], row[1], stored_text(self, article_id, text, size, row[8]), *row[2:6],
                       authors=tuple(json.loads(row[6] or "[]")))

    def text_slice(self, article_id: str, start: int, end: int, content_hash: str) -> str | None:
        found, at = [], 0
        try:
            for piece in self.text_pieces(article_id, content_hash):
                if at < end and at + len(piece) > start:
                    found.append(piece[max(start - at, 0):end - at])
                at += len(piece)
                if at >= end:
                    break
        except IndexError_:  # gone, or indexed again
            return None
        return "".join(found)

    def text_pieces(self, article_id: str, content_hash: str) -> Iterator[str]:
        # read as stored, a range of bytes at a time (`substr` would load the whole value for every piece)
        with self._locked() as db:
            encoding = db.execute("PRAGMA encoding").fetchone()[0]
        decoder = codecs.getincrementaldecoder(encoding.replace("UTF-16", "UTF-16-"))()
        offset = 0
        while True:
            with self._locked() as db:
                row = db.execute("SELECT rowid FROM articles WHERE id = ? AND content_hash = ?",
                                 (article_id, content_hash)).fetchone()
                if row is None:
                    raise changed(article_id)
                with db.blobopen("articles", "text", row[0], readonly=True) as blob:
                    blob.seek(offset)
                    data = blob.read(PIECE_BYTES)
            offset += len(data)
            text = decoder.decode(data, final=not data)
            if text:
                yield text
            if not data:
                return

    def article_hash(self, article_id: str) -> str | None:
        with self._locked() as db:
            row = db.execute("SELECT content_hash FROM articles WHERE id = ?", (article_id,)).fetchone()
        return row[0] if row else None

    def id_with_hash(self, content_hash: str) -> str | None:
        with self._locked() as db:
            row = db.execute("SELECT id FROM articles WHERE content_hash = ?", (content_hash,)).fetchone()
        return row[0] if row else None

    def article_ids(self) -> list[str]:
        with self._locked() as db:
            return [r[0] for r in db.execute("SELECT id FROM articles ORDER BY id")]

    def ids_by_date(self) -> list[str]:
        with self._locked() as db:
            return [r[0] for r in db.execute(
                "SELECT id FROM articles ORDER BY COALESCE(published, '') = '', published, id")]

    def counts(self) -> tuple[int, int]:
        with self._locked() as db:
            articles = db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
            chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return articles, chunks

    def sources(self) -> list[str]:
        with self._locked() as db:
            return [r[0] for r in db.execute(
                "SELECT source FROM articles WHERE source != '' GROUP BY source ORDER BY COUNT(*) DESC")]

    def chunk_ids_of(self, article_id: str) -> list[str]:
        with self._locked() as db:
            return [r[0] for r in db.execute("SELECT id FROM chunks WHERE article_id = ?", (article_id,))]

    def chunks_by_id(self, chunk_ids: list[str]) -> list[ChunkRow]:
        out: list[ChunkRow] = []
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

    def chunk_table(self) -> ChunkTable:
        with self._locked() as db:
            rows = db.execute(
                'SELECT c.id, c.article_id, c.start, c."end", a.published_ord, a.source '
                "FROM chunks c JOIN articles a ON a.id = c.article_id ORDER BY c.article_id, c.seq"
            ).fetchall()
        return ChunkTable.of_rows(rows)

    # ---------- the full stage of a two-stage index ----------
    def full_progress(self) -> tuple[int, int]:
        with self._locked() as db:
            done = db.execute("SELECT COUNT(*) FROM chunks c JOIN full_chunks f ON f.id = c.id").fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return done, total

    def without_full(self) -> list[ChunkRow]:
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

    # ---------- syndicated stories ----------
    def _save_marks(self, article_id: str, text: str) -> None:
        self.db.executemany("INSERT INTO marks VALUES (?, ?)", [(article_id, h) for h in story_marks(text)])

    def mark_all(self) -> None:
        with self._locked(write=True) as db:
            db.execute("DELETE FROM marks")
            for article_id, text in db.execute("SELECT id, text FROM articles"):
                self._save_marks(article_id, text)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('marks', ?)", (MARKS_VERSION,))

    def marks(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        with self._locked() as db:
            for article_id, h in db.execute("SELECT article_id, hash FROM marks"):
                out.setdefault(article_id, []).append(h)
        return out

    def marks_of(self, article_ids: list[str]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        with self._locked() as db:
            for article_id, h in db.execute("SELECT article_id, hash FROM marks WHERE article_id IN "
                                            "(SELECT value FROM json_each(?))", (json.dumps(list(article_ids)),)):
                out.setdefault(article_id, []).append(h)
        return out

    def mark_postings(self, hashes: Iterable[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {h: [] for h in hashes}
        with self._locked() as db:  # one pass over the marks, however many are asked
            for article_id, h in db.execute("SELECT article_id, hash FROM marks WHERE hash IN "
                                            "(SELECT value FROM json_each(?))", (json.dumps(list(out)),)):
                out[h].append(article_id)
        return out

    def marks_counted(self, low: int, high: int) -> list[int]:
        with self._locked() as db:
            return [r[0] for r in db.execute("SELECT hash FROM marks GROUP BY hash HAVING COUNT(*) BETWEEN ? AND ?",
                                             (low, high))]

    def save_stories(self, stories: dict[str, str]) -> None:
        with self._locked(write=True) as db:
            db.execute("DELETE FROM stories")
            db.executemany("INSERT INTO stories VALUES (?, ?)", sorted(stories.items()))

    def stories(self) -> dict[str, str]:
        with self._locked() as db:
            return dict(db.execute("SELECT article_id, story FROM stories"))

    # ---------- removed articles (`rag remove`): kept out of later runs until their file is named again ----------
    def mark_removed(self, articles: list[Article]) -> None:
        with self._locked(write=True) as db:
            db.executemany("INSERT OR REPLACE INTO removed VALUES (?, ?)", [(a.id, a.path) for a in articles])

    def removed_ids(self) -> set[str]:
        with self._locked() as db:
            return {r[0] for r in db.execute("SELECT article_id FROM removed")}

    def restore_removed(self, path: str) -> list[str]:
        with self._locked(write=True) as db:
            rows = db.execute("SELECT article_id FROM removed WHERE path = ? OR substr(path, 1, ?) = ?",
                              (path, len(path) + 1, f"{path}#")).fetchall()
            ids = [r[0] for r in rows]
            db.executemany("DELETE FROM removed WHERE article_id = ?", [(i,) for i in ids])
            if ids:
                db.execute("DELETE FROM files WHERE path = ?", (path,))
        return ids

    # ---------- files seen ----------
    def file_record(self, path: str) -> tuple[int, int, list[str]] | None:
        with self._locked() as db:
            row = db.execute("SELECT size, mtime_ns, article_ids FROM files WHERE path = ?", (path,)).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def save_file(self, path: str, size: int, mtime_ns: int, article_ids: list[str]) -> None:
        with self._locked(write=True) as db:
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                       (path, size, mtime_ns, json.dumps(article_ids)))

    def files(self) -> dict[str, list[str]]:
        with self._locked() as db:
            return {p: json.loads(ids) for p, ids in db.execute("SELECT path, article_ids FROM files")}

    def forget_file(self, path: str) -> None:
        with self._locked(write=True) as db:
            db.execute("DELETE FROM files WHERE path = ?", (path,))

    # ---------- keys a bot has handled ----------
    def remember(self, kind: str, key: str, until: float, now: float) -> bool:
        with self._locked(write=True) as db:  # new, or replacing an expired row; an unexpired row stays as it is
            kept = db.execute("INSERT INTO handled VALUES (?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET "
                              "until = excluded.until WHERE handled.until <= ?", (kind, key, until, now)).rowcount
            db.execute("DELETE FROM handled WHERE until <= ?", (now,))  # cheap: indexed by until
        return kept == 1

    def remembered(self, kind: str, key: str, now: float) -> bool:
        with self._locked() as db:
            row = db.execute("SELECT 1 FROM handled WHERE kind = ? AND key = ? AND until > ?",
                             (kind, key, now)).fetchone()
        return row is not None

    # ---------- readers' feedback ----------
    def add_feedback(self, record: dict) -> None:
        with self._locked(write=True) as db:
            db.execute("INSERT INTO feedback (at, record) VALUES (?, ?)",
                       (datetime.now(UTC).isoformat(timespec="seconds"), json.dumps(record, ensure_ascii=False)))

    def feedback(self) -> list[dict]:
        with self._locked() as db:
            return [json.loads(r[0]) for r in db.execute("SELECT record FROM feedback ORDER BY id")]

    def close(self) -> None:
        with self._lock:
            self.db.close()
