"""The writer lock: one process writes an index at a time; readers reopen their view only while none writes.

`WriterLock` is the interface; `FileLock` is the local one (flock on `.write.lock` in the index folder, the
holder's pid written in it for messages). Team mode adds a PostgreSQL advisory lock behind the same interface.
It does not know what is written under it: the indexer and the facade decide when to take it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from rag.errors import IndexError_, storage_error

WRITER_WAIT = 5.0  # seconds a writer waits for a reader that is briefly reopening the index
LOCK_FILE = ".write.lock"


class WriterLock(Protocol):
    """One writer at a time, readers told whether a writer is active."""

    def acquire(self, wait: float | None = None) -> None:
        """Take the lock, waiting up to `wait` seconds (default WRITER_WAIT) for readers that reopen; raise
        IndexError_ naming the holder when another writer has it."""
    def release(self) -> None: ...
    def held(self) -> bool:
        """This process holds it as the writer."""
    def quiet(self) -> AbstractContextManager[bool]:
        """A context yielding True while no writer is active (and keeping one from starting), False when one is."""
    def exclusive_now(self) -> AbstractContextManager[None]:
        """The lock for a moment, without waiting (deleting an index): IndexError_ when a writer has it."""
    def check(self) -> None:
        """IndexError_ when the writer lost the lock it held (a PostgreSQL restart); called between batches."""
    def close(self) -> None:
        """Release, and let go of what the lock holds open."""


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


class FileLock:
    """flock on `.write.lock` in the index folder: exclusive for the writer, shared while a reader reopens."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float | None = None) -> None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise storage_error(exc, self.folder) from None
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
                raise IndexError_(f"{who} is writing the index in {self.folder}; only one writer at a time: "
                                  "try again when it is done") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.release()

    def check(self) -> None:
        """A file lock is held until released: nothing to check."""

    @contextmanager
    def quiet(self) -> Iterator[bool]:
        """Hold the lock shared while no writer is active; yields False (holding nothing) when one is.

        Readers reopen their view of the index inside it, so they never read half-written files."""
        if self._fd is not None:  # this process is the writer: it knows what it wrote
            yield True
            return
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
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

    @contextmanager
    def exclusive_now(self) -> Iterator[None]:
        """The lock for a moment, without waiting (for deleting the index): IndexError_ when a writer has it."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise storage_error(exc, self.folder) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                raise IndexError_(f"another process{f' (pid {holder})' if holder else ''} is writing the index in "
                                  f"{self.folder}; try again when it is done") from None
            yield
        finally:
            os.close(fd)
