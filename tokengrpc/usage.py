"""The timer that writes counted uses: every ``interval`` seconds and on shutdown.

The counting itself, and adding uses not yet written to what is read, is the
store's (``TokenStore.record_use``, docs/store.md). A failed flush keeps its
counts for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tokengrpc.errors import Unavailable
from tokengrpc.store import TokenStore

log = logging.getLogger(__name__)


def unwritten_bound(interval: float) -> int:
    """How long (microseconds) a counted use may stay unwritten, at most, with a
    flush every ``interval`` seconds: it waits for the next flush, which may
    itself wait behind one under way, and then its write. Two intervals and two
    seconds for the write: what the unused-token rule leaves as its margin
    (``tokengrpc.sweeper``), so that a use not yet in the store never lets the
    token be revoked."""
    return round((2 * interval + 2.0) * 1_000_000)


class UsageRecorder:
    def __init__(self, store: TokenStore, interval: float = 0.5) -> None:
        self._store = store
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        #: A flush failed and nothing has been written since: said once, not every interval.
        self._failing = False

    def record(self, token_id: int, when: int, address: str = "") -> None:
        self._store.record_use(token_id, when, address)

    async def flush(self) -> None:
        try:
            await self._store.flush_usage()
        except Unavailable as error:  # the store said why: no traceback needed
            if not self._failing:
                self._failing = True
                log.warning("writing usage counts failed (%s); keeping them", error.message)
        except Exception:
            if not self._failing:
                self._failing = True
                log.exception("writing usage counts failed; keeping them for the next flush")
        else:
            self._failing = False

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
