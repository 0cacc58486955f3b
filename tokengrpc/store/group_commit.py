"""Group commit: concurrent creations share one statement and one commit.

A commit costs an fsync and a trip through the writer thread, so creations
that arrive while one is being written wait together and go in the next
write, instead of queueing for the write lock one by one. Each caller still
gets its own outcome: its record, or the error of its own row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from tokengrpc.store.base import NewToken, TokenRecord

#: Writes a batch of rows (the caller holds the write lock) and says what
#: became of each, in order.
WriteBatch = Callable[[Sequence[NewToken]], Awaitable[Sequence[TokenRecord | Exception]]]


class GroupCommit:
    """Creations queued while the writer is busy, written together once it is free."""

    def __init__(self, write_lock: asyncio.Lock, write: WriteBatch) -> None:
        self._write_lock = write_lock
        self._write = write
        #: Rows waiting for the next write, each with its caller's future.
        self._queued: list[tuple[NewToken, asyncio.Future[TokenRecord]]] = []
        self._writing: set[asyncio.Task[None]] = set()

    async def insert(self, new: NewToken) -> TokenRecord:
        """Queue the row; the first row of a queue starts the write that takes them all."""
        landed = asyncio.get_running_loop().create_future()
        self._queued.append((new, landed))
        if len(self._queued) == 1:
            # A task of its own: the write goes on for the others if this caller gives up.
            task = asyncio.create_task(self._write_queued())
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)
        record: TokenRecord = await landed
        return record

    async def _write_queued(self) -> None:
        async with self._write_lock:
            # Taken once the lock is ours: every row queued while we waited for
            # it goes in this write.
            batch, self._queued = self._queued, []
            outcomes = await self._write([new for new, _ in batch])
            for (_, landed), outcome in zip(batch, outcomes, strict=True):
                if landed.done():  # its caller gave up waiting
                    continue
                if isinstance(outcome, TokenRecord):
                    landed.set_result(outcome)
                else:
                    landed.set_exception(outcome)

    async def close(self) -> None:
        """Wait until every queued row has been written (or failed)."""
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
