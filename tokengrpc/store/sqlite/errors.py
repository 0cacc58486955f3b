"""What SQLite's failures mean to a client or an operator, in words of our own.

Never SQLite's text: it names files and internals a client has no business
with. A failure of the disk or the file is ``Unavailable``; any other error
is a bug and stays what it is.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from tokengrpc.errors import Unavailable
from tokengrpc.store.health import DISK_FULL, WriteHealth

#: Engine errors that say the disk or the file failed us, not the request.
_UNUSABLE = {
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_READONLY,
}


class StoreUnusable(ValueError):
    """SQLite refused the store at start (a full disk, say): one line for the operator."""


def _disk_full(error: sqlite3.Error) -> bool:
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(error)


def unavailable(error: sqlite3.Error) -> Unavailable | None:
    """The words a client may see for an engine failure, or None if it is not one."""
    if _disk_full(error):
        return Unavailable(DISK_FULL)
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if code in _UNUSABLE or isinstance(error, sqlite3.OperationalError):
        return Unavailable("the store cannot be read or written right now; try again later")
    return None


@contextlib.contextmanager
def mapped(writes: WriteHealth | None = None) -> Iterator[None]:
    """Disk and file failures become ``Unavailable``; given the health of the
    store (a write is running), they also mark it unwritable."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.Error as error:
        found = unavailable(error)
        if found is None:
            raise
        if writes is not None:
            writes.refused(found)
        raise found from None


def cannot_open(data_dir: Path, error: sqlite3.Error) -> StoreUnusable:
    """Why the store in ``data_dir`` cannot be used at start."""
    reason = "its disk is full" if _disk_full(error) else "SQLite cannot read or write it"
    return StoreUnusable(f"cannot open the store in {data_dir}: {reason}")
