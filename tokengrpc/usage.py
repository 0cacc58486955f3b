"""Usage counting, batched: the hot path adds to a dict, a task writes it out.

An authentication must not cost a database write. Counts are flushed at
least every ``interval`` seconds and on shutdown; a failed flush keeps its
counts for the next one.

Readers add the pending counts to what they read (``overlay``). A batch
handed to the store leaves the pending counts in the same step as the store
starts counting it in its answers (``TokenStore.add_usage``), so every use is
counted exactly once, flush or no flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tokengrpc.store import TokenRecord, TokenStore, Usage

log = logging.getLogger(__name__)


class UsageRecorder:
    def __init__(self, store: TokenStore, interval: float = 0.5) -> None:
        self._store = store
        self._interval = interval
        self._pending: dict[int, Usage] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        #: A flush failed and nothing has been written since: said once, not every interval.
        self._failing = False

    def record(self, token_id: int, when: int) -> None:
        use = self._pending.get(token_id)
        if use is None:
            self._pending[token_id] = Usage(1, when)
        else:
            self._pending[token_id] = Usage(use.count + 1, max(use.last_use_time, when))

    def overlay(self, record: TokenRecord) -> tuple[int, int | None]:
        """``usage_count`` and ``last_use_time`` as they will be once pending uses are written."""
        use = self._pending.get(record.id)
        if use is None:
            return record.usage_count, record.last_use_time
        return record.usage_count + use.count, max(record.last_use_time or 0, use.last_use_time)

    async def flush(self) -> None:
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self._store.add_usage(batch)
            except BaseException as error:
                if isinstance(error, Exception) and not self._failing:
                    self._failing = True
                    log.exception("writing usage counts failed; keeping them for the next flush")
                self._merge_back(batch)
                if not isinstance(error, Exception):
                    raise
            else:
                self._failing = False

    def _merge_back(self, batch: dict[int, Usage]) -> None:
        for token_id, use in batch.items():
            later = self._pending.get(token_id)
            if later is not None:
                use = Usage(use.count + later.count, max(use.last_use_time, later.last_use_time))
            self._pending[token_id] = use

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-flush")

    async def stop(self) -> None:
        """Write what is pending and end the timer (a flag, never a cancel mid-write)."""
        self._closing.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while not self._closing.is_set():
            await wait_or_timeout(self._closing, self._interval)
            await self.flush()


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds`` or until ``event`` is set, whichever is first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
