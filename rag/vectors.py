"""Vectors: one per chunk (per stage), in Chroma, embedded in the index folder or on a Chroma server.

`ChromaVectors` opens the collections of an index (`<name>` for the first stage, `<name>-full` for the full
stage of a two-stage index) on one client: a PersistentClient in `chroma/` in the index folder, or an
HttpClient to a `ChromaServer`. Each vector carries `article_id`, `source` and `published_ord` metadata
for filtered search. It does not know which chunks are indexed (the catalogue does, and is the commit
point), does not embed, and does not lock: the writer lock is `rag.lock`.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from rag.catalogue import date_ord
from rag.errors import IndexError_, SearchFailed, VectorsUnreadable, storage_cause, storage_error
from rag.types import Article, Chunk, Filters

T = TypeVar("T")
DEFAULT_COLLECTION = "chunks"
FULL = "full"  # the stage whose vectors live in the `<collection>-full` collection
LOCAL_FOLDER = "chroma"


@dataclass(frozen=True)
class ChromaServer:
    """Where a Chroma server is (`chroma run`); headers carry auth for a proxy in front of it."""

    host: str
    port: int = 8000
    ssl: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


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


class ChromaVectors:
    """The Chroma collections of one index; thread-safe. Searches share the client; reopening it (to see
    another process's writes) waits for them, and they for it."""

    def __init__(self, folder: Path, server: ChromaServer | None = None,
                 collection_name: str = DEFAULT_COLLECTION) -> None:
        self.folder = Path(folder) / LOCAL_FOLDER
        self.server = server
        self.collection_name = collection_name or DEFAULT_COLLECTION
        self.where = str(server) if server is not None else str(self.folder)
        self._lock = threading.RLock()
        self._collections: dict[str | None, object] = {}  # stage (None: the first) -> chromadb Collection
        self._client = None
        self._max_batch = 1000
        self._cond = threading.Condition()
        self._users = 0
        self._reopening = False

    def collection(self, stage: str | None = None):  # chromadb Collection; typed loosely to keep chromadb here
        """The collection of a stage's vectors: None the first (fast or only) stage, FULL the full stage."""
        with self._lock:
            if stage not in self._collections:
                self._collections[stage] = self._open(stage_collection_name(self.collection_name, stage))
            return self._collections[stage]

    def _open(self, name: str):
        import chromadb

        settings = chromadb.Settings(anonymized_telemetry=False, allow_reset=False)
        try:
            if self._client is not None:  # one client for every stage's collection
                client = self._client
            elif self.server is None:
                client = chromadb.PersistentClient(path=str(self.folder), settings=settings)
            else:
                client = chromadb.HttpClient(host=self.server.host, port=self.server.port, ssl=self.server.ssl,
                                             headers=dict(self.server.headers) or None, settings=settings)
            self._max_batch = client.get_max_batch_size()
            collection = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
        except Exception as exc:  # chromadb raises many types (ValueError, its own errors, Rust panics)
            if self.server is not None:
                raise IndexError_(f"cannot use the Chroma server at {self.server} (collection {name!r}): "
                                  f"{exc}. Is `chroma run` up, and are RAG_CHROMA_HOST/PORT right?") from None
            raise storage_error(exc, self.folder) from None
        self._client = client
        return collection

    def count(self, stage: str | None = None) -> int:
        return self.collection(stage).count()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._collections = {}
        if client is not None and hasattr(client, "close"):
            try:
                client.close()
            except Exception:  # closing is best effort
                pass

    def reset_local(self) -> None:
        """Delete the embedded collections' folder (leftovers of an interrupted rebuild); a server is left alone."""
        if self.server is None:
            self.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def reopen(self, stage: str | None, dim: int) -> None:
        """See vectors written by other processes: an embedded client only sees its own writes until it is
        reopened (a server needs nothing). Waits for running searches; loads the vector index of `stage` (the
        one searched, of dimension `dim`) now."""
        if self.server is not None:
            return
        with self._cond:
            self._reopening = True
            self._cond.wait_for(lambda: self._users == 0)
        try:
            with self._lock:
                self.close()
                collection = self.collection(stage)
            if dim and collection.count():  # load the vector index now, while no writer runs
                collection.query(query_embeddings=[[1.0] + [0.0] * (dim - 1)], n_results=1, include=[])
        finally:
            with self._cond:
                self._reopening = False
                self._cond.notify_all()

    @contextmanager
    def _searching(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._reopening)
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    def add(self, chunks: list[Chunk], vectors: np.ndarray, article: dict[str, Article],
            stage: str | None = None) -> None:
        collection = self.collection(stage)
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

    def delete(self, chunk_ids: list[str], stage: str | None = None) -> None:
        for i in range(0, len(chunk_ids), 5000):
            self.collection(stage).delete(ids=chunk_ids[i:i + 5000])

    def ids(self, page: int = 10_000, stage: str | None = None) -> set[str]:
        """Every chunk id held for a stage (for reconciling with the catalogue); raises VectorsUnreadable as
        `check` does."""
        return self._reading(lambda: self._ids(page, stage))

    def check(self, stage: str | None = None) -> int:
        """How many vectors a stage holds, read as a search would read them.

        Raises VectorsUnreadable when an embedded collection cannot be read, again after reopening the client,
        for no reason but its own files (not a full disk, no permission, no lock): they are damaged (a process
        killed while Chroma wrote them can leave them so; every read then fails, even `count()`). A server's
        failures, and the others, are raised as they come."""
        return self._reading(lambda: self.collection(stage).count())

    def _reading(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except IndexError_:
            raise  # opening the collection failed, and says why
        except Exception as exc:  # chromadb raises many types (its InternalError, ValueError, Rust panics)
            if self.server is not None or not self._damage(exc):
                raise
            first = exc
        self.close()  # a stale client can fail where a fresh one reads
        time.sleep(0.5)
        try:
            return read()
        except IndexError_:
            raise
        except Exception as exc:
            if not self._damage(exc):
                raise
            raise VectorsUnreadable(f"the vectors in {self.folder} could not be read ({type(exc).__name__}: "
                                    f"{str(exc)[:160]})") from first

    def _damage(self, exc: Exception) -> bool:
        """Whether a failed read tells of nothing but the collection's own files (no full disk, permission, lock)."""
        return storage_cause(exc, self.folder) in ("", "corrupt")

    def _ids(self, page: int, stage: str | None) -> set[str]:
        collection = self.collection(stage)
        ids: set[str] = set()
        offset = 0
        while True:
            got = collection.get(include=[], limit=page, offset=offset)["ids"]
            ids.update(got)
            if len(got) < page:
                return ids
            offset += page

    def dense_search(self, vector: np.ndarray, n: int, filters: Filters | None = None, stage: str | None = None,
                     ids: list[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity) of the `n` nearest chunks passing the filters, or of the `n` nearest of
        `ids` (Chroma's search restricted to them: the same neighbours as a `where` search at a tenth of its
        cost). `n` must not exceed the chunks searched: the caller's snapshot knows how many there are, and a
        `count()` per search cost three times the search itself on 55,000 chunks.

        Raises SearchFailed when Chroma cannot search: an embedded client's filtered search fails while
        another process writes (Chroma's metadata already holds the writer's new chunks, this client's
        vector index does not: "Error finding id"), a server may be down. The caller decides what to do."""
        where = chroma_where(filters) if filters else None
        restrict = {**({"ids": ids} if ids is not None else {}), **({"where": where} if where else {})}
        with self._searching():
            try:
                result = self.collection(stage).query(query_embeddings=[vector.tolist()], n_results=max(1, n),
                                                      include=["distances"], **restrict)
            except Exception as exc:  # chromadb raises many types (its InternalError, ValueError, Rust panics)
                raise SearchFailed(f"{type(exc).__name__}: {exc}") from None
        return [(cid, 1.0 - float(d)) for cid, d in zip(result["ids"][0], result["distances"][0])]


def delete_server_collections(server: ChromaServer, collection_name: str) -> None:
    """Delete every stage's collection of an index on a server (for `rag index --rebuild`)."""
    import chromadb

    client = None
    for stage in (None, FULL):
        name = stage_collection_name(collection_name, stage)
        try:
            client = client or chromadb.HttpClient(host=server.host, port=server.port, ssl=server.ssl,
                                                   headers=dict(server.headers) or None,
                                                   settings=chromadb.Settings(anonymized_telemetry=False))
            client.delete_collection(name)
        except Exception as exc:  # a missing collection is fine; an unreachable server is not
            if "does not exist" not in str(exc).lower() and "not found" not in str(exc).lower():
                raise IndexError_(f"cannot delete collection {name!r} on {server}: {exc}") from None
