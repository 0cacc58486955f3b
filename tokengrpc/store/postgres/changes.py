"""Change announcement between instances: ``LISTEN``/``NOTIFY`` on one channel.

Every write's transaction sends ``NOTIFY`` with this instance's id (the
engine does it, so a write that committed is announced even if its process
dies the next instant). Each notification from another instance moves
``current()`` by one; our own come back too and are skipped, because
``announce()`` already moved it, by exactly one, when our write ended.

While the ``LISTEN`` connection is down, notifications are missed, so
``current()`` returns a new value on every call and the read cache answers
nothing from memory: every read goes to the database until the connection is
back and listening again (then once more a new value, for what was missed).

A connection can also be lost without anybody saying so (a frozen backend, a
dropped route): no error, no end-of-file, just silence. So memory is trusted
only on proof of life: a round trip on the listening connection (a
``SELECT 1`` every ``HEARTBEAT`` seconds) that was *sent* less than
``TRUSTED`` seconds ago and answered. Why that proves enough: a commit's
``NOTIFY`` reaches every listening backend before the committing client hears
back, and a backend sends what it was notified of before it answers the next
query; so an answer to a query sent at ``s`` comes after the notifications
of every write acknowledged before ``s``. A write acknowledged at ``c`` is
therefore seen, or memory distrusted, from ``c + TRUSTED`` on: within the
1 s bound of CONTRACT section 5.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "tokengrpc_changes"
#: ``application_name`` of the pooled connections and of the listening one, so
#: an operator (or a test) can tell them apart in ``pg_stat_activity``.
APPLICATION = "tokengrpc"
#: Followed by the process id: which instance's listener it is.
LISTENER_APPLICATION = "tokengrpc-listen"
#: The contract's bound: a write elsewhere is seen within this many seconds.
BOUND = 1.0
#: Memory is trusted for this long after a round trip that was answered was
#: sent; the rest of ``BOUND`` is a margin for the event loop's lateness.
TRUSTED = BOUND - 0.2
#: Seconds between round trips on the listening connection: several per
#: ``TRUSTED``, so a healthy connection never lets trust lapse.
HEARTBEAT = 0.25
#: Seconds a round trip may take before the connection counts as lost and is
#: replaced (trust has lapsed long before: this only decides when to reconnect).
ANSWER_TIMEOUT = 1.0
#: Seconds between attempts to listen again; the first retry is at once.
RETRY_INTERVAL = 0.2


def new_instance_id() -> str:
    """Tells our own notifications from others' (a payload, not a secret)."""
    return secrets.token_hex(8)


class Notifications:
    """``Changes`` over a dedicated ``LISTEN`` connection that reconnects by itself."""

    def __init__(
        self, connect: Any, instance_id: str, *, answer_timeout: float = ANSWER_TIMEOUT
    ) -> None:
        #: An async function opening a new connection (asyncpg.connect with the URL bound).
        self._connect = connect
        self.instance_id = instance_id
        self._answer_timeout = answer_timeout
        self._value = 0
        #: ``time.monotonic()`` until which memory may be trusted: the send time
        #: of the last answered round trip plus ``TRUSTED``; 0 while down.
        self._trusted_until = 0.0
        self._connection: asyncpg.Connection | None = None
        self._listening = False
        self._closing = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    async def start(self) -> None:
        """Listen before the first request is served, then keep listening."""
        await self._listen()
        self._task = asyncio.create_task(self._keep_listening(), name="pg-listen")

    def current(self) -> int:
        # The hot path: one clock reading and one comparison. Down, or no
        # proof of life recent enough: never the same value twice.
        if time.monotonic() >= self._trusted_until:
            self._value += 1
        return self._value

    async def announce(self) -> int:
        before = self._value
        self._value += 1
        return before

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload != self.instance_id:
            self._value += 1

    def _terminated(self, _connection: Any) -> None:
        self._down()

    def _down(self) -> None:
        if self._listening:
            log.warning("lost the database's change notifications; reading the database until back")
        self._listening = False
        self._trusted_until = 0.0
        self._lost.set()

    async def _listen(self) -> None:
        connection = await self._connect()
        sent = time.monotonic()  # LISTEN is the first round trip of this subscription
        try:
            connection.add_termination_listener(self._terminated)
            await connection.add_listener(CHANNEL, self._notified)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        self._value += 1  # whatever was written while nobody listened
        self._listening = True
        self._trusted_until = sent + TRUSTED
        self._lost.clear()

    async def _keep_listening(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await self._lost.wait()
            if self._closing.is_set():
                return
            if self._listening and not await self._answers():
                self._down()
            if not self._listening:
                await self._relisten()

    async def _answers(self) -> bool:
        """One round trip; answered, it extends the trust from the moment it was sent."""
        connection = self._connection
        if connection is None or connection.is_closed():
            return False
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self._answer_timeout):
                await connection.execute("SELECT 1")
        except (Exception, TimeoutError):
            return False
        if self._listening and self._connection is connection:
            self._trusted_until = sent + TRUSTED
        return True

    async def _relisten(self) -> None:
        old, self._connection = self._connection, None
        if old is not None and not old.is_closed():
            old.terminate()
        try:
            async with asyncio.timeout(5):
                await self._listen()
        except (Exception, TimeoutError):
            await asyncio.sleep(RETRY_INTERVAL)
            return
        log.warning("listening to the database's change notifications again")

    async def close(self) -> None:
        self._closing.set()
        self._lost.set()
        if self._task is not None:
            await self._task
        self._listening = False
        self._trusted_until = 0.0
        if self._connection is not None and not self._connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), 2)
