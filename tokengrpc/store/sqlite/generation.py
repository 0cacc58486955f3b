"""SQLite's change announcement: a counter shared by every process on a data dir.

Why not ask SQLite whether anything changed? Every SQLite call drops the GIL,
and under gRPC load the poller thread takes it each time, so the server's
thread waits its turn again: a five-microsecond primary-key read costs
tens of microseconds of throughput (see docs/performance.md). Comparing
eight bytes of shared memory drops nothing.

Every write through the store commits, then bumps the counter, and only then
returns; bumps are serialised with ``flock``, so the counter only ever grows
and no value repeats. A write made behind tokengrpc's back (the ``sqlite3``
shell) does not bump it; ``docs/decisions.md`` says so.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

_SIZE = 8


class Generation:
    """A 64-bit counter in a small shared, memory-mapped file (a ``Changes``)."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # only ever grows a new file: racing openers agree
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def current(self) -> int:
        return int.from_bytes(self._map[:_SIZE], "little")

    def bump(self) -> int:
        """Announce a committed write to every process on this data dir; return the old value."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            before = self.current()
            self._map[:_SIZE] = (before + 1).to_bytes(_SIZE, "little")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return before

    async def announce(self) -> int:
        return self.bump()

    def close_now(self) -> None:
        if not self._map.closed:
            self._map.close()
            os.close(self._fd)

    async def close(self) -> None:
        self.close_now()
