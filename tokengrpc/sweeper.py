"""The policies that act with time rather than a request (CONTRACT section 12):
unused tokens revoked, expiry reminders.

One ``Sweeper`` per process that runs them: ``serve``'s first process (its
``--workers`` leave it to that one) on SQLite, every instance on PostgreSQL.
The store makes running it in several processes safe: each reminder step is
written with its event, conditionally, once (``TokenStore.advance_reminders``),
and an unused-token sweep runs on one instance at a time (an advisory lock)
and revokes on the store's own condition.

It sleeps until the next moment something is due, and looks again at least
every ``LOOK`` seconds: a write by another process may have set an earlier
one, and reminders under a minute must come within 2 s of their time. A look
is one indexed read.

The unused-token invariant: a token is revoked only when the store shows no
activity for the limit plus ``usage.unwritten_bound`` (the margin). A token
that authenticated at ``u`` was, at ``u``, active within the limit as the
authenticating process saw it; every use that process saw is in the store
within the margin, so the store shows activity after ``u - limit`` from
``u + margin`` on, which is as long as ``u`` itself is not yet written:
a use counted in memory and not yet written never gets its token revoked.
Authentication itself (``auth.py``) refuses at the limit, with no margin.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from tokengrpc.errors import Unavailable
from tokengrpc.reminders import Reminders
from tokengrpc.store import TokenStore
from tokengrpc.usage import wait_or_timeout

log = logging.getLogger(__name__)

#: The longest sleep, in seconds (see the module's docstring).
LOOK = 1.0
#: The sweep runs at least this often (microseconds), and every half limit.
SWEEP_AT_LEAST_EVERY = 3600 * 1_000_000
#: Tokens stepped per transaction.
BATCH = 500


class Sweeper:
    def __init__(
        self,
        store: TokenStore,
        clock: Callable[[], int],
        *,
        reminders: Reminders | None,
        revoke_unused_after: int | None,
        unused_margin: int,
    ) -> None:
        self._store = store
        #: The service's clock (a test moves it); microseconds.
        self._clock = clock
        #: None: no reminders (``--expiry-reminders`` empty and no event wanted).
        self._reminders = reminders
        self._unused_after = revoke_unused_after
        self._unused_margin = unused_margin
        self._next_sweep = 0
        self._planned = False
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: A pass failed and none has succeeded since: said once, not every look.
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sweeper")

    async def stop(self) -> None:
        """End the loop (a flag, never a cancel mid-write)."""
        self._closing.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                delay = await self.run_due()
                self._failing = False
            except Unavailable as error:
                delay = LOOK
                if not self._failing:
                    log.warning("the policy sweep could not run (%s); trying again", error.message)
                self._failing = True
            except Exception:
                delay = LOOK
                if not self._failing:
                    log.exception("the policy sweep failed; trying again")
                self._failing = True
            await wait_or_timeout(self._closing, delay)

    async def run_due(self) -> float:
        """Do what is due now; return how many seconds until the next look."""
        now = self._clock()
        wake = now + round(LOOK * 1_000_000)
        if self._unused_after is not None:
            if now >= self._next_sweep:
                await self.sweep_unused(now)
                every = min(SWEEP_AT_LEAST_EVERY, self._unused_after // 2)
                self._next_sweep = now + every
            wake = min(wake, self._next_sweep)
        if self._reminders is not None:
            due = await self._store.next_reminder_wake()
            if not self._planned or (due is not None and due <= now):
                await self.remind(now)  # a write: only when something is due
                due = await self._store.next_reminder_wake()
            if due is not None:
                wake = min(wake, due)
        return max(0.0, (wake - now) / 1_000_000)

    async def sweep_unused(self, now: int) -> int:
        """Revoke (and record) the tokens unused past the limit and the margin."""
        assert self._unused_after is not None
        cutoff = now - self._unused_after - self._unused_margin
        revoked = await self._store.revoke_unused(cutoff, now)
        if revoked:
            log.info("revoked %d tokens unused for too long", len(revoked))
        return len(revoked)

    async def remind(self, now: int) -> int:
        """Record every reminder due at ``now``; how many tokens were stepped."""
        reminders = self._reminders
        assert reminders is not None
        if not self._planned:
            await self._store.plan_reminders(reminders.max_secret_age, now)
            self._planned = True
        step = functools.partial(reminders.step, now=now)
        only_own = reminders.max_secret_age is None
        stepped = 0
        # A token many steps behind (after a stop) takes one step per round.
        while moved := await self._store.advance_reminders(
            now, step, BATCH, only_own_expiries=only_own
        ):
            stepped += moved
        return stepped
