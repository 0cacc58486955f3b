"""The background task that hands the store's outbox to the webhook URLs.

It never runs on a request's path: requests only write their event (and,
through the store's trigger, its outbox rows) and return. Here, rows are
claimed a few at a time (each by one process: ``Outbox.claim_deliveries``),
POSTed concurrently up to ``CONCURRENCY``, then removed, or put back with
their next time (``schedule.py``). The log gets one line when a URL starts
failing and one when it recovers, never one per try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

from tokengrpc.metrics import Metrics
from tokengrpc.store import Outbox, Outgoing
from tokengrpc.webhooks import payload
from tokengrpc.webhooks.schedule import Timing
from tokengrpc.webhooks.signing import key_of, signed_headers

log = logging.getLogger(__name__)
# httpx logs each request with its whole URL (a receiver's own secret may be
# in its path or query), and one line per try would flood the log anyway.
logging.getLogger("httpx").setLevel(logging.WARNING)

T = TypeVar("T")

#: Deliveries in flight per process, and connections open for them.
CONCURRENCY = 8
#: Seconds between two log lines saying one URL fails.
_SAY_EVERY = 60.0
#: Seconds an in-flight delivery may finish in at shutdown; then its row is
#: put back, due at once, for the next start (or another instance).
_LAST_SECONDS = 1.0


def origin(url: str) -> str:
    """What the log names a URL by: scheme, host and port only (a path or a
    query may hold a receiver's own secret, a user part a password)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class WebhookSender:
    """Delivers every queued event at least once per URL, in order per token and URL."""

    def __init__(
        self,
        outbox: Outbox,
        secret: str,
        *,
        clock: Callable[[], int],
        metrics: Metrics | None = None,
        timing: Timing | None = None,
        max_secret_age: int | None = None,
    ) -> None:
        self._outbox = outbox
        #: The payload's token reports its effective expiry (``lifetime``), as /v1 does.
        self._max_secret_age = max_secret_age
        self._key = key_of(secret)
        self._clock = clock
        self._metrics = metrics
        self._timing = timing or Timing.from_environment()
        self._stopping = asyncio.Event()
        #: Set when a delivery ends: its slot is free and its token's next row may be due.
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], Outgoing] = {}
        #: The origins whose last try failed; those whose failure the log was
        #: told of (their recovery is told too), and when it last was.
        self._failing: set[str] = set()
        self._said_failing: set[str] = set()
        self._said_at: dict[str, float] = {}
        self._gave_up: set[str] = set()
        self._store_failing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        """Stop claiming; let deliveries in flight end briefly, put back the rest."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        timeout = httpx.Timeout(self._timing.timeout)
        limits = httpx.Limits(max_connections=CONCURRENCY)
        # No proxy variables: where events go is the operator's --webhook-url alone.
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            while not self._stopping.is_set():
                self._wake.clear()
                await self._claim(client)
                await self._observe()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._timing.poll)
            await self._finish_in_flight()

    async def _claim(self, client: httpx.AsyncClient) -> None:
        free = CONCURRENCY - len(self._in_flight)
        if free <= 0:
            return
        now = self._clock()
        lease_until = now + self._timing.micros(self._timing.lease)
        rows = await self._store(self._outbox.claim_deliveries(now, lease_until, free))
        for row in rows or ():
            task = asyncio.create_task(self._deliver(client, row), name="webhook")
            self._in_flight[task] = row
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            # Its row comes back when its lease ends.
            log.error("a webhook delivery failed unexpectedly", exc_info=task.exception())

    async def _observe(self) -> None:
        if self._metrics is None:
            return
        oldest = await self._store(self._outbox.oldest_undelivered())
        self._metrics.webhook_oldest(oldest)

    async def _deliver(self, client: httpx.AsyncClient, row: Outgoing) -> None:
        failure = await self._post(client, row)
        now = self._clock()
        where = origin(row.url)
        if failure is None:
            await self._store(self._outbox.finish_delivery(row.id))
            self._count("delivered")
            self._failing.discard(where)
            self._gave_up.discard(where)
            if where in self._said_failing:
                self._said_failing.discard(where)
                log.info("webhook deliveries to %s succeed again", where)
            return
        if where not in self._failing:
            self._failing.add(where)
            # A URL that fails some events and takes others must not flood the
            # log either: a failure is told at most once a minute per URL.
            said = self._said_at.get(where)
            if said is None or time.monotonic() - said >= _SAY_EVERY:
                self._said_at[where] = time.monotonic()
                self._said_failing.add(where)
                log.warning(
                    "webhook deliveries to %s fail (%s); retrying with backoff", where, failure
                )
        if self._timing.gives_up(row.event.event_time, now):
            await self._store(self._outbox.finish_delivery(row.id))
            self._count("abandoned")
            if where not in self._gave_up:
                self._gave_up.add(where)
                log.warning(
                    "webhook events for %s failed for %d hours and are given up"
                    ' (tokengrpc_webhook_deliveries_total{result="abandoned"} counts them)',
                    where,
                    round(self._timing.give_up_after / 3600),
                )
            return
        attempts = row.attempts + 1
        due = now + self._timing.pause(attempts)
        await self._store(self._outbox.retry_delivery(row.id, attempts, due))
        self._count("failed")

    async def _post(self, client: httpx.AsyncClient, row: Outgoing) -> str | None:
        """None when the URL took it (2xx), else why not, in words of our own."""
        body = payload.body(row, self._max_secret_age)
        headers = signed_headers(self._key, payload.message_id(row), int(time.time()), body)
        try:
            # httpx's timeouts are per step; this bounds the whole exchange.
            async with asyncio.timeout(self._timing.timeout):
                response = await client.post(row.url, content=body, headers=headers)
        except TimeoutError:
            return "no answer in time"
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError):
            return "no connection"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _store(self, work: Awaitable[T]) -> T | None:
        """``work`` (an outbox call); a store that fails is logged once, and the
        row it concerned comes back when its lease ends."""
        try:
            result = await work
        except Exception:
            if not self._store_failing:
                self._store_failing = True
                log.warning("the webhook outbox cannot be read or written; trying again")
            return None
        if self._store_failing:
            self._store_failing = False
            log.info("the webhook outbox answers again")
        return result

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_delivered(result)

    async def _finish_in_flight(self) -> None:
        """At stop: deliveries still running get a moment, then are cancelled and
        their rows put back due at once (else they would wait out their lease)."""
        if not self._in_flight:
            return
        pending = dict(self._in_flight)
        _, unfinished = await asyncio.wait(pending, timeout=_LAST_SECONDS)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        now = self._clock()
        for task in unfinished:
            row = pending[task]
            await self._store(self._outbox.retry_delivery(row.id, row.attempts, now))
