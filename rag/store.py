"""Store: the parts of a persisted index, put together, and what spans them.

An index is
- a catalogue (`rag.catalogue`): articles, chunk offsets, files seen, story marks and groups, metadata
  (embedders, generation, dirty flag), keys the Slack bot handled. `articles.sqlite` in the index folder
  (`SqliteCatalogue`); in team mode a PostgreSQL database (`PostgresCatalogue`, chosen here from a
  database url).
- vectors (`rag.vectors.ChromaVectors`): `chroma/` in the index folder, or a Chroma server.
- the lexical index (`rag.lexical`): `bm25/` and `bm25_articles/` in the index folder, built from the
  catalogue (in team mode a local cache of it).
- the writer lock (`rag.lock`): flock on `.write.lock` locally; a PostgreSQL advisory lock in team mode.

Call sites use the parts directly (`store.catalogue.article(...)`, `store.vectors.dense_search(...)`,
`store.lock.acquire()`); `Store` itself only holds what spans parts: the embedder check (metadata and
the vector collection), deleting an article (catalogue, then its vectors), deleting a whole index.

Writes go vectors first, then the catalogue row that marks an article indexed, so an interrupted run
leaves work to redo, never an article without vectors. A writer sets the `dirty` flag before its first
write and clears it when the run is complete, so the next writer knows to reconcile vectors with the
catalogue (see `rag.index`). Each completed run bumps `generation`, which readers in other processes poll
to reload. It does not chunk, embed, rank or fuse: that is the indexer's and the retriever's job. Only the
front ends' facade, `rag.api.Assistant`, uses it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydantic import SecretStr

from rag.catalogue import DB_FILE, MARKS_VERSION, Catalogue, SqliteCatalogue
from rag.errors import IndexError_, storage_error
from rag.lock import FileLock, WriterLock
from rag.vectors import DEFAULT_COLLECTION, FULL, ChromaServer, ChromaVectors, delete_server_collections


def _read_only(folder: Path) -> bool:
    """A read-only mount, or a folder this user may not write to."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def _open_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, folder) from None
    if _read_only(folder):
        raise IndexError_(f"the index folder {folder} is read-only: the index needs write access, even to "
                          "answer (SQLite and Chroma keep journals beside their files); copy it to a writable "
                          "folder or fix its permissions")


def _open_catalogue(folder: Path, database_url: str | SecretStr | None,
                    collection_name: str) -> tuple[Catalogue, WriterLock]:
    """The catalogue and the writer lock that go with it: SQLite in the folder and a lock file beside it, or,
    with a database url (team mode), PostgreSQL (the collection's schema) and its advisory lock; psycopg is
    imported only then."""
    if not database_url:
        return SqliteCatalogue(folder), FileLock(folder)
    from rag.catalogue_pg import PostgresCatalogue
    from rag.lock_pg import AdvisoryLock

    catalogue = PostgresCatalogue(database_url, collection_name)
    try:
        return catalogue, AdvisoryLock(database_url, collection_name)
    except BaseException:
        catalogue.close()
        raise


def index_exists(folder: Path, database_url: str | SecretStr | None = None,
                 collection_name: str = DEFAULT_COLLECTION) -> bool:
    """Whether an index was made here (for "run `rag index` first" messages): in the folder, or in team mode in
    the collection's catalogue (an embedder recorded: its first `rag index` began); IndexError_ when the database
    cannot be reached."""
    if not database_url:
        return (Path(folder) / DB_FILE).exists()
    from rag.catalogue_pg import PostgresCatalogue

    catalogue = PostgresCatalogue(database_url, collection_name or DEFAULT_COLLECTION)
    try:
        return catalogue.meta("embedder") is not None
    finally:
        catalogue.close()


class Store:
    """The catalogue, the vectors and the writer lock of one index; `dir` is the local folder (lexical index,
    fetched articles, the embedded Chroma and SQLite files of a local index). `shared`: team mode, where the
    folder is only this host's cache and other hosts write the same catalogue."""

    def __init__(self, index_dir: Path, server: ChromaServer | None = None,
                 collection_name: str = DEFAULT_COLLECTION, database_url: str | SecretStr | None = None) -> None:
        self.dir = Path(index_dir)
        _open_folder(self.dir)
        self.shared = bool(database_url)
        if self.shared and server is None:
            raise IndexError_(TEAM_NEEDS_CHROMA)
        self.catalogue, self.lock = _open_catalogue(self.dir, database_url, collection_name or DEFAULT_COLLECTION)
        try:
            self.vectors = ChromaVectors(self.dir, server, collection_name)
        except BaseException:
            self.catalogue.close()
            raise

    def sync_lexical_cache(self) -> bool:
        """Team mode: bring this host's lexical index (a cache) up to the shared catalogue, incrementally and
        without the writer lock (see `rag.lexical.sync_cache`); whether anything was done."""
        from rag.lexical import sync_cache

        stamp = f"{self.catalogue.meta('catalogue_id') or ''}:{self.catalogue.generation()}"
        return sync_cache(self.dir, self.catalogue.article, self.catalogue.chunk_table, stamp)

    def check_embedder(self, name: str, dim: int) -> None:
        """Record the embedder on first use; refuse a different one later."""
        meta = self.catalogue.meta
        stored = meta("embedder")
        if stored is None:
            self._check_new_collection()
            self.catalogue.set_meta("embedder", name)
            self.catalogue.set_meta("dim", str(dim))
            self.catalogue.set_meta("marks", MARKS_VERSION)  # a new index keeps story marks from its first article
        elif stored != name or meta("dim") != str(dim):
            raise IndexError_(
                f"the index in {self.catalogue.where} was built with embedder {stored} "
                f"(dim {meta('dim')}), not {name} (dim {dim}). Re-index: "
                f"`rag index --rebuild PATH... --index {self.dir}` (the files and folders it was built from) or "
                "choose another --index folder."
            )
        else:
            self.vectors.collection()  # open the vectors now: a broken store is a start-up error

    def _check_new_collection(self) -> None:
        """A new index must start with no vectors: leftovers of an interrupted `--rebuild` are
        removed; a server collection that holds vectors belongs to another index and is refused."""
        count = self.vectors.count()
        if not count:
            return
        if self.vectors.server is None:
            self.vectors.reset_local()
            return
        raise IndexError_(
            f"the Chroma collection {self.vectors.collection_name!r} on {self.vectors.server} already holds "
            f"{count} vectors, but the index folder {self.dir} is new: each index folder needs its own collection. "
            "Set RAG_CHROMA_COLLECTION to another name, or use the folder that collection belongs to")

    def check_full_embedder(self, name: str) -> None:
        """Record the full stage's model of a new index; refuse another one later (like `check_embedder`)."""
        stored = self.catalogue.meta("full_embedder")
        if stored is None:
            self.catalogue.set_meta("full_embedder", name)
        elif stored != name:
            raise IndexError_(f"the index in {self.catalogue.where} has full-stage vectors by {stored}, not {name}. "
                              f"Re-index: `rag index --rebuild PATH... --index {self.dir}` or choose another "
                              "--index folder.")

    def two_stage(self) -> bool:
        return self.catalogue.meta("full_embedder") is not None

    def full_complete(self) -> bool:
        done, total = self.catalogue.full_progress()
        return done >= total

    def reopen_vectors(self, stage: str | None = None) -> None:
        """See vectors written by other processes (the writer itself knows what it wrote)."""
        if not self.lock.held():
            self.vectors.reopen(stage, int(self.catalogue.meta("full_dim" if stage == FULL else "dim") or 0))

    def delete_vectors(self, chunk_ids: list[str]) -> None:
        """Every stage's vectors of these chunks (a full-stage vector's row first: it says the vector exists)."""
        self.vectors.delete(chunk_ids)
        if self.two_stage():
            self.catalogue.forget_full(chunk_ids)
            self.vectors.delete(chunk_ids, FULL)

    def delete_article(self, article_id: str) -> None:
        """The catalogue first, then the vectors: a crash in between leaves orphan vectors, which the
        next run's reconciliation removes, never an indexed article without vectors."""
        self.delete_vectors(self.catalogue.delete_article(article_id))

    def close(self) -> None:
        self.lock.close()
        self.vectors.close()
        self.catalogue.close()


TEAM_NEEDS_CHROMA = ("team mode (RAG_DATABASE_URL) needs a Chroma server for the vectors: set RAG_CHROMA_HOST (and "
                     "RAG_CHROMA_PORT) to a `chroma run` server every process can reach. Vectors embedded in one "
                     "folder would be one machine's; without RAG_DATABASE_URL the index stays local")


def remove_index(folder: Path, server: ChromaServer | None = None, collection_name: str = DEFAULT_COLLECTION,
                 database_url: str | SecretStr | None = None) -> None:
    """Delete an index (for `rag index --rebuild`), even a corrupt one, under the writer lock; in team mode the
    collection's PostgreSQL schema and its Chroma collections, and this host's cache in `folder`.

    The catalogue goes first: if this is interrupted, what is left is vectors and lexical files without
    a catalogue, which a new index clears when it starts."""
    folder = Path(folder)
    if database_url:
        _remove_shared(server, collection_name or DEFAULT_COLLECTION, database_url)
    if not folder.exists():
        return
    lexical = [f"{name}{end}" for name in ("bm25", "bm25_articles") for end in ("", ".new", ".old")]
    with FileLock(folder).exclusive_now():
        if database_url:  # the folder is only this host's cache (a local index kept there is not touched)
            for name in lexical:
                shutil.rmtree(folder / name, ignore_errors=True)
            return
        for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):
            (folder / name).unlink(missing_ok=True)
        for name in ("chroma", *lexical):
            shutil.rmtree(folder / name, ignore_errors=True)
        if server is not None:
            delete_server_collections(server, collection_name)


def _remove_shared(server: ChromaServer | None, collection_name: str, database_url: str | SecretStr) -> None:
    """A shared collection's catalogue (its schema) and vectors, while no writer runs on any host (other hosts'
    caches are rebuilt when they see the new catalogue: its `catalogue_id` differs)."""
    if server is None:
        raise IndexError_(TEAM_NEEDS_CHROMA)
    from rag.catalogue_pg import drop_collection
    from rag.lock_pg import AdvisoryLock

    lock = AdvisoryLock(database_url, collection_name)
    try:
        with lock.exclusive_now():
            drop_collection(database_url, collection_name)
            delete_server_collections(server, collection_name)
    finally:
        lock.close()
