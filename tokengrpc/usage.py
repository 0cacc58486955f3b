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

    def record(self, token_id: int, when: int, address: str = "") -> None:
        use = self._pending.get(token_id)
        if use is None:
            self._pending[token_id] = Usage(1, when, address)
        else:
            self._pending[token_id] = _later(use, Usage(1, when, address))

    def overlay(self, record: TokenRecord) -> tuple[int, int | None, str]:
        """``usage_count``, ``last_use_time`` and ``last_use_ip`` as they will be
        once pending uses are written."""
        use = self._pending.get(record.id)
        if use is None:
            return record.usage_count, record.last_use_time, record.last_use_ip
        if use.last_use_time >= (record.last_use_time or 0):
            return record.usage_count + use.count, use.last_use_time, use.last_use_ip
        return record.usage_count + use.count, record.last_use_time, record.last_use_ip

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
                use = _later(use, later)
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


def _later(first: Usage, second: Usage) -> Usage:
    """Both counts, and the time and address of the later use (``second`` on a tie)."""
    latest = second if second.last_use_time >= first.last_use_time else first
    return Usage(first.count + second.count, latest.last_use_time, latest.last_use_ip)


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds`` or until ``event`` is set, whichever is first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
