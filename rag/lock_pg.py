"""AdvisoryLock: the writer lock (`rag.lock.WriterLock`) of team mode, a PostgreSQL advisory lock.

The writer holds `pg_advisory_lock` on a connection of its own, keyed by the collection's schema, and marks
that connection with its pid and host (`application_name`), so another writer is told who has it. The
server releases the lock when that connection ends, so a writer that dies (SIGKILL, a lost machine) leaves
no stale lock behind. Readers reopen their view inside `quiet()`, which holds the lock shared, as the file
lock's readers do. A server restart also ends the writer's connection, and so its lock: `held()` then turns
False, and the writer should stop (see `check`).

It does not know what is written under it, and it does not read settings: the caller passes the URL.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from rag.catalogue_pg import connect, lock_key, password_of, pg_error, public_url, schema_name, secret
from rag.errors import IndexError_
from rag.lock import WRITER_WAIT

log = logging.getLogger(__name__)
APP_PREFIX = "rag writer"  # application_name of the writer's connection: "rag writer pid N on HOST"


class AdvisoryLock:
    """pg_advisory_lock on a dedicated connection: exclusive for the writer, shared while a reader reopens."""

    def __init__(self, url: str | SecretStr, collection: str) -> None:
        self._url = SecretStr(secret(url))
        self.collection = collection
        self.key = lock_key("writer", schema_name(collection))
        self.where = f"{public_url(self._url.get_secret_value())} (collection {collection!r})"
        self._conn = None  # the writer's connection while it holds the lock

    def __repr__(self) -> str:
        return f"AdvisoryLock({self.where})"

    def _connect(self, name: str = "rag"):
        return connect(self._url.get_secret_value(), self.where, application_name=name)

    def _error(self, exc: BaseException) -> IndexError_:
        return pg_error(exc, self.where, password_of(self._url.get_secret_value()))

    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    def acquire(self, wait: float | None = None) -> None:
        """Take the lock, waiting up to `wait` seconds (default WRITER_WAIT); IndexError_ naming the holder."""
        if self.held():
            return
        import psycopg

        conn = self._connect(f"{APP_PREFIX} pid {os.getpid()} on {socket.gethostname()}"[:63])
        deadline = time.monotonic() + (WRITER_WAIT if wait is None else wait)
        try:
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    holder = self._holder(conn)
                    raise IndexError_(f"{holder or 'another process'} is writing the index in {self.where}; only "
                                      "one writer at a time: try again when it is done")
                time.sleep(0.1)
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _holder(self, conn) -> str:
        """Who holds the lock exclusively, from its connection's application_name ("" when unknown)."""
        row = conn.execute(
            "SELECT a.application_name, a.client_addr::TEXT FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.mode = 'ExclusiveLock' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND l.objsubid = 1 "
            "AND l.classid = ((%s::BIGINT >> 32) & 4294967295)::OID AND l.objid = (%s::BIGINT & 4294967295)::OID",
            (self.key, self.key)).fetchone()
        if not row:
            return ""
        name, addr = row
        if name and name.startswith(APP_PREFIX):
            return f"another process ({name[len(APP_PREFIX):].strip()})"
        return f"another process (a connection from {addr})" if addr else ""

    def check(self) -> None:
        """IndexError_ when the lock was lost with its connection (a server restart) while this writer held it."""
        if self._conn is not None and not self.held():
            raise IndexError_(f"the connection holding the writer lock of {self.where} was lost (a server restart?): "
                              "run the same `rag index` again")
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
            except Exception as exc:
                self.release()
                raise IndexError_(f"the connection holding the writer lock of {self.where} was lost "
                                  f"({type(exc).__name__}): run the same `rag index` again") from None

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except Exception as exc:  # closing the connection releases it anyway
            log.debug("unlock of %s failed: %s", self.where, type(exc).__name__)
        finally:
            conn.close()

    @contextmanager
    def quiet(self) -> Iterator[bool]:
        """Hold the lock shared while no writer is active; yields False (holding nothing) when one is, or when
        the server cannot be reached (the reader keeps its view and tries again later)."""
        if self._conn is not None:  # this process is the writer: it knows what it wrote
            yield True
            return
        try:
            conn = self._connect()
        except IndexError_ as exc:
            log.warning("%s", exc)
            yield False
            return
        try:
            try:
                free = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (self.key,)).fetchone()[0]
            except Exception as exc:
                log.warning("%s", self._error(exc))
                free = False
            yield free
        finally:
            conn.close()  # ends the shared hold with the session

    @contextmanager
    def exclusive_now(self) -> Iterator[None]:
        """The lock for a moment, without waiting (for deleting the index): IndexError_ when a writer has it."""
        mine = not self.held()
        if mine:
            self.acquire(wait=0)
        try:
            yield
        finally:
            if mine:
                self.release()

    def close(self) -> None:
        self.release()
