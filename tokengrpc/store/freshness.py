"""A change counter shared by every process on a data dir, and the read cache it guards.

Why not ask SQLite whether anything changed? Every SQLite call drops the GIL,
and under gRPC load the poller thread takes it each time, so the server's
thread waits its turn again: a five-microsecond primary-key read costs
tens of microseconds of throughput (see docs/performance.md). Comparing
eight bytes of shared memory drops nothing.

The protocol, which keeps a revocation effective on the very next request in
every process:

- every write through the store commits, then bumps the counter, and only
  then returns; bumps are serialised with ``flock``, so the counter only ever
  grows and no value repeats;
- a reader keeps rows only if the counter was the same before and after it
  read them, and answers from them only while the counter has not moved.

A write made behind tokengrpc's back (the ``sqlite3`` shell) does not bump
the counter; ``docs/decisions.md`` says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path

from tokengrpc.store.base import TokenRecord

_SIZE = 8


class Generation:
    """A 64-bit counter in a small shared, memory-mapped file."""

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

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()
            os.close(self._fd)


class ReadCache:
    """Rows of recent reads, all dropped the moment any process writes.

    Bounded by rows held (an empty answer counts as one), so neither a few
    large pages nor a flood of made-up ids can grow it without end; when full
    it stops adding until the next write empties it.
    """

    def __init__(self, generation: Generation, max_rows: int = 20_000) -> None:
        self._generation = generation
        self._max_rows = max_rows
        self._entries: dict[Hashable, tuple[TokenRecord, ...]] = {}
        self._rows = 0
        self._valid_at = generation.current()
        self._own_writes = 0

    @contextlib.contextmanager
    def own_write(self) -> Iterator[None]:
        """Around this process's writes: rows read meanwhile may hold the write, so
        they are not kept, and ``carry_over`` applies it only to rows read before."""
        self._own_writes += 1
        try:
            yield
        finally:
            self._own_writes -= 1

    def get(self, key: Hashable) -> tuple[TokenRecord, ...] | None:
        now = self._generation.current()
        if now != self._valid_at:
            self._entries.clear()
            self._rows = 0
            self._valid_at = now
            return None
        return self._entries.get(key)

    def mark(self) -> int:
        """Call before reading rows to ``put``; a write in between makes ``put`` a no-op."""
        return self._generation.current()

    def carry_over(self, before: int, change: Callable[[TokenRecord], TokenRecord]) -> None:
        """Keep the entries across this process's own write, which bumped ``before``.

        Only if nothing else was announced since they were read, and only for a
        write that changes rows in place (usage counts), never which rows a
        query returns. Otherwise the next ``get`` drops them as usual.
        """
        if before != self._valid_at:
            return
        for key, records in self._entries.items():
            self._entries[key] = tuple(map(change, records))
        self._valid_at = before + 1

    def put(self, key: Hashable, records: tuple[TokenRecord, ...], mark: int) -> None:
        if self._own_writes or mark != self._valid_at or self._generation.current() != mark:
            return
        cost = len(records) or 1  # "no such token" answers take room too
        if self._rows + cost > self._max_rows:
            return
        self._entries[key] = records
        self._rows += cost
