"""Store: the persisted index folder.

Layout of the index folder:
- `articles.sqlite`: articles (full text, metadata, content hash), chunk
  offsets, seen files, and index metadata (embedder name and dimension).
- `chroma/`: a Chroma PersistentClient holding one vector per chunk, with
  `article_id`, `source` and `published_ord` metadata for filtered search.
- `bm25/`: the bm25s lexical index over chunk texts, rebuilt after changes.

Writes go vectors first, then the SQLite row that marks an article indexed,
so an interrupted run leaves work to redo, never an article without vectors.
It does not chunk, embed, rank or fuse: that is the indexer's and the
retriever's job. One writer at a time (a lock file); readers may be many.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

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
"""


class IndexError_(Exception):
    """The index folder cannot be used as asked (wrong embedder, busy, broken)."""


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

    def __init__(self, index_dir: Path) -> None:
        self.dir = Path(index_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.dir / "articles.sqlite", check_same_thread=False)
        self.db.executescript(SCHEMA)
        self._collection = None
        self._writer_fd: int | None = None

    # ---------- metadata ----------
    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def check_embedder(self, name: str, dim: int) -> None:
        """Record the embedder on first use; refuse a different one later."""
        stored = self.meta("embedder")
        if stored is None:
            self.set_meta("embedder", name)
            self.set_meta("dim", str(dim))
        elif stored != name or self.meta("dim") != str(dim):
            raise IndexError_(
                f"the index in {self.dir} was built with embedder {stored} "
                f"(dim {self.meta('dim')}), not {name} (dim {dim}). Re-index: "
                f"`rag index --rebuild --index {self.dir}` or choose another --index folder."
            )

    # ---------- writer lock ----------
    def acquire_writer(self) -> None:
        fd = os.open(self.dir / ".write.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexError_(
                f"another process is writing the index in {self.dir}; try again when it is done") from None
        self._writer_fd = fd

    def release_writer(self) -> None:
        if self._writer_fd is not None:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
            os.close(self._writer_fd)
            self._writer_fd = None

    # ---------- chroma ----------
    @property
    def collection(self):  # chromadb Collection; typed loosely to keep chromadb at this seam
        if self._collection is None:
            import chromadb

            client = chromadb.PersistentClient(
                path=str(self.dir / "chroma"),
                settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False),
            )
            self._max_batch = client.get_max_batch_size()
            self._collection = client.get_or_create_collection("chunks", metadata={"hnsw:space": "cosine"})
        return self._collection

    def add_vectors(self, chunks: list[Chunk], vectors: np.ndarray, article: dict[str, Article]) -> None:
        collection = self.collection
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
        for i in range(0, len(chunk_ids), 5000):
            self.collection.delete(ids=chunk_ids[i:i + 5000])

    def dense_search(self, vector: np.ndarray, n: int, filters: Filters) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity) of the nearest chunks passing the filters."""
        collection = self.collection
        count = collection.count()
        if count == 0:
            return []
        result = collection.query(
            query_embeddings=[vector.tolist()], n_results=min(n, count),
            where=chroma_where(filters), include=["distances"],
        )
        return [(cid, 1.0 - float(d)) for cid, d in zip(result["ids"][0], result["distances"][0])]

    # ---------- articles ----------
    def article_hash(self, article_id: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT content_hash FROM articles WHERE id = ?", (article_id,)).fetchone()
        return row[0] if row else None

    def id_with_hash(self, content_hash: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT id FROM articles WHERE content_hash = ?", (content_hash,)).fetchone()
        return row[0] if row else None

    def chunk_ids_of(self, article_id: str) -> list[str]:
        with self._lock:
            rows = self.db.execute("SELECT id FROM chunks WHERE article_id = ?", (article_id,)).fetchall()
        return [r[0] for r in rows]

    def save_articles(self, items: list[tuple[Article, str, list[Chunk]]]) -> None:
        """Mark articles indexed with these chunks, in one transaction.

        Their vectors must already be stored: this is the commit point.
        """
        with self._lock, self.db:
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

    def delete_article(self, article_id: str) -> None:
        self.delete_vectors(self.chunk_ids_of(article_id))
        with self._lock, self.db:
            self.db.execute("DELETE FROM chunks WHERE article_id = ?", (article_id,))
            self.db.execute("DELETE FROM articles WHERE id = ?", (article_id,))

    def article(self, article_id: str) -> Article | None:
        with self._lock:
            row = self.db.execute(
                "SELECT id, title, text, source, published, url, path, authors FROM articles WHERE id = ?",
                (article_id,),
            ).fetchone()
        if row is None:
            return None
        return Article(*row[:7], authors=tuple(json.loads(row[7] or "[]")))

    def article_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT id FROM articles ORDER BY id")]

    def counts(self) -> tuple[int, int]:
        with self._lock:
            articles = self.db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
            chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return articles, chunks

    def sources(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.db.execute(
                "SELECT source FROM articles WHERE source != '' GROUP BY source ORDER BY COUNT(*) DESC")]

    # ---------- files ----------
    def file_record(self, path: str) -> tuple[int, int, list[str]] | None:
        with self._lock:
            row = self.db.execute("SELECT size, mtime_ns, article_ids FROM files WHERE path = ?", (path,)).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def save_file(self, path: str, size: int, mtime_ns: int, article_ids: list[str]) -> None:
        with self._lock, self.db:
            self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                            (path, size, mtime_ns, json.dumps(article_ids)))

    def files(self) -> dict[str, list[str]]:
        with self._lock:
            return {p: json.loads(ids) for p, ids in self.db.execute("SELECT path, article_ids FROM files")}

    def forget_file(self, path: str) -> None:
        with self._lock, self.db:
            self.db.execute("DELETE FROM files WHERE path = ?", (path,))

    # ---------- whole-table reads for retrieval ----------
    def chunk_table(self) -> ChunkTable:
        with self._lock:
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

    def iter_articles(self) -> Iterable[Article]:
        with self._lock:
            ids = self.article_ids()
        for article_id in ids:
            article = self.article(article_id)
            if article is not None:
                yield article

    def touch(self) -> None:
        self.set_meta("last_indexed", datetime.now(UTC).isoformat(timespec="seconds"))

    def close(self) -> None:
        self.release_writer()
        with self._lock:
            self.db.close()


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
