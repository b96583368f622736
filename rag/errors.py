"""The project's errors: one base, `RagError`, that every front end can catch, and the storage errors.

`storage_error` turns a failure of SQLite, PostgreSQL, Chroma or the file system into an `IndexError_` that
says what happened and what to do. This module raises nothing itself and imports nothing heavy: front ends
import it to catch errors without loading the index.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class RagError(Exception):
    """Base of the project's errors: a message meant for the user."""


class UserError(RagError):
    """Something the user can fix: printed as one line, exit code 2."""


class IndexError_(RagError):
    """The index cannot be used as asked (wrong embedder, busy, broken)."""


class SearchFailed(IndexError_):
    """A vector search failed (the lexical side can still answer)."""


class VectorsUnreadable(IndexError_):
    """An embedded vector collection's files are damaged: its vectors must be embedded again."""


def _nearly_full(folder: Path) -> bool:
    """Less than 2 MB left where the index is: the likely cause of a write that failed for no stated reason."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < 2 << 20
    except OSError:
        return False


def storage_cause(exc: BaseException, where: Path | str) -> str:
    """Why a storage operation failed, as far as its error tells: "full", "read-only", "corrupt", "locked", or ""
    (nothing known)."""
    low = str(exc).lower()
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "disk is full" in low or "no space" in low:
        return "full"
    if (isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)) or "readonly" in low \
            or "read-only" in low:
        return "read-only"
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return "corrupt"
    if "locked" in low or "busy" in low:
        return "locked"
    if _nearly_full(Path(where)):  # Chroma reports a full disk as a failed compaction, without errno
        return "full"
    return ""


def storage_error(exc: BaseException, where: Path | str) -> IndexError_:
    """A storage failure as an IndexError_ that says what happened and what to do."""
    text = str(exc)
    cause = storage_cause(exc, where)
    if cause == "full":
        return IndexError_(f"disk full while writing the index in {where}: free some space and run the same "
                           "`rag index` again (what was not committed is redone, nothing is lost)")
    if cause == "read-only":
        return IndexError_(f"the index folder {where} is read-only or not writable ({text}): the index needs "
                           "write access, even to answer; copy it to a writable folder or fix its permissions")
    if cause == "corrupt":
        return IndexError_(f"the index in {where} is corrupt ({text}): rebuild it with "
                           f"`rag index --rebuild PATH... --index {where}`")
    if cause == "locked":
        return IndexError_(f"the index database in {where} stayed locked by another process ({text}); try again")
    return IndexError_(f"the index in {where} cannot be used: {type(exc).__name__}: {text}")
