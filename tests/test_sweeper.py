"""Time-driven policies on a live service (CONTRACT section 12): unused tokens
refused and revoked, expiry reminders; every test on both engines.

A clock the test moves stands for long durations (``LiveService.clock``; the
service's sweeper is stopped first and run by hand, so nothing runs behind
the test's back); short durations through the settings run in real time.
``test_policies_end_to_end.py`` runs ``tokengrpc serve`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import ENGINES
from tests.helpers import LiveService, bearer, start_service, stop_service
from tokengrpc.auth import operator
from tokengrpc.store import REASON_INACTIVE, EventAction, EventQuery, EventRecord
from tokengrpc.v1 import tokens_pb2 as pb

SECOND = 1_000_000
HOUR = 3600 * SECOND


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest) -> str:
    """Empty for SQLite in the test's data dir, else a fresh PostgreSQL database."""
    return "" if request.param == "sqlite" else str(request.getfixturevalue("database_url"))


@contextlib.asynccontextmanager
async def running(data_dir: Path, url: str, **settings: Any) -> AsyncIterator[LiveService]:
    live = await start_service(data_dir, url, **settings)
    try:
        yield live
    finally:
        await stop_service(live)


async def by_hand(live: LiveService) -> None:
    """Stop the service's own sweeper: the test runs it (``run_due``) when it wants."""
    assert live.core.sweeper is not None
    await live.core.sweeper.stop()


async def events_of(live: LiveService, token_id: int) -> list[EventRecord]:
    """A token's events, oldest first, straight from the store."""
    found = await live.core.store.list_events(EventQuery(limit=100, token_id=token_id))
    return list(reversed(found))


async def authenticates(live: LiveService, plaintext: str) -> bool:
    try:
        await live.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
        return False
    return True


async def create(live: LiveService, name: str, **fields: Any) -> tuple[int, str]:
    """A token made as the command line makes one (no caller token needed)."""
    made = await live.core.manager.create_token(
        operator(live.clock()), pb.CreateTokenRequest(name=name, owner="alice", **fields)
    )
    live.plaintexts.append(made.plaintext)
    return made.token.id, made.plaintext


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    """Returns once ``check`` holds; fails after ``within`` seconds (a generous bound)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.05)


def inactive_revocations(events: list[EventRecord]) -> list[EventRecord]:
    return [e for e in events if e.action == EventAction.REVOKED and e.reason == REASON_INACTIVE]


async def test_an_unused_token_is_refused_when_presented_and_its_revocation_recorded(
    tmp_path: Path, store_url: str
) -> None:
    async with running(tmp_path / "data", store_url, revoke_unused_after=HOUR) as live:
        await by_hand(live)
        token_id, plaintext = await create(live, "idle", scopes=["introspect"])
        assert await authenticates(live, plaintext)
        live.clock.advance(3600 + 3600)
        assert not await authenticates(live, plaintext)
        await live.core.authenticator.settle()
        (revoked,) = inactive_revocations(await events_of(live, token_id))
        assert (revoked.actor_token_id, revoked.actor_owner) == (0, "")
        assert revoked.changed_fields == ("revoke_time",)
        # Presented again, revoked: refused with no write (a stranger holding an old
        # secret must not make every request take the write lock).
        writes = _count_unused_writes(live)
        for _ in range(3):
            assert not await authenticates(live, plaintext)
        await live.core.authenticator.settle()
        assert writes == []
        # Presented, not swept: the other unused token (the bootstrap's) is untouched.
        bootstrap_id = int(live.admin_token.partition("|")[0])
        assert inactive_revocations(await events_of(live, bootstrap_id)) == []
        # Nor does introspection call it active, for a caller made just now.
        _, checker = await create(live, "checker", scopes=["introspect"])
        answer = await live.stub.IntrospectToken(
            pb.IntrospectTokenRequest(token=plaintext), metadata=bearer(checker)
        )
        assert not answer.active


async def test_a_token_at_its_limit_is_refused_without_a_write_in_the_way(
    tmp_path: Path, store_url: str
) -> None:
    """Refused at the limit itself, while the revocation waits for the margin
    (uses another process counted may not be written yet)."""
    async with running(tmp_path / "data", store_url, revoke_unused_after=HOUR) as live:
        await by_hand(live)
        token_id, plaintext = await create(live, "edge")
        live.clock.advance(3600 + 0.5)
        writes = _count_unused_writes(live)
        assert not await authenticates(live, plaintext)
        await live.core.authenticator.settle()
        assert inactive_revocations(await events_of(live, token_id)) == []
        assert writes == []  # within the margin no write is even tried
        live.clock.advance(60)
        assert not await authenticates(live, plaintext)
        await live.core.authenticator.settle()
        assert len(inactive_revocations(await events_of(live, token_id))) == 1


async def test_two_processes_presented_the_token_at_once_record_it_once(
    tmp_path: Path, store_url: str
) -> None:
    data = tmp_path / "data"
    async with (
        running(data, store_url, revoke_unused_after=HOUR) as first,
        running(data, store_url, revoke_unused_after=HOUR) as second,
    ):
        for live in (first, second):
            await by_hand(live)
        token_id, plaintext = await create(first, "twice")
        second.plaintexts.append(plaintext)
        for live in (first, second):
            live.clock.advance(3 * 3600)
        tries = [authenticates(live, plaintext) for live in (first, second) * 4]
        assert await asyncio.gather(*tries) == [False] * 8
        await asyncio.gather(first.core.authenticator.settle(), second.core.authenticator.settle())
        assert len(inactive_revocations(await events_of(first, token_id))) == 1


async def test_a_token_in_steady_use_is_never_swept(tmp_path: Path, store_url: str) -> None:
    """Uses wait in memory longer than the limit here (flushes every 0.8 s, a
    0.5 s limit, a sweep every 0.25 s): the sweep's margin keeps the token."""
    settings: dict[str, Any] = {"revoke_unused_after": SECOND // 2, "usage_flush_interval": 0.8}
    async with running(tmp_path / "data", store_url, **settings) as live:
        token_id, plaintext = await create(live, "busy")
        idle_id, _ = await create(live, "idle")
        stop = time.monotonic() + 2.5  # five limits, three flushes, ten sweeps
        while time.monotonic() < stop:
            assert await authenticates(live, plaintext)
            await asyncio.sleep(0.1)
        assert inactive_revocations(await events_of(live, token_id)) == []

        async def swept(token: int) -> bool:
            return bool(inactive_revocations(await events_of(live, token)))

        # The idle one was swept meanwhile (not presented); the busy one, once idle, too.
        await eventually(lambda: swept(idle_id))
        await eventually(lambda: swept(token_id))
        assert not await authenticates(live, plaintext)


async def test_two_instances_sweeping_revoke_once(tmp_path: Path, store_url: str) -> None:
    data = tmp_path / "data"
    async with (
        running(data, store_url, revoke_unused_after=HOUR) as first,
        running(data, store_url, revoke_unused_after=HOUR) as second,
    ):
        for live in (first, second):
            await by_hand(live)
        ids = [(await create(first, f"t{n}"))[0] for n in range(20)]
        for live in (first, second):
            live.clock.advance(2 * 3600)
        sweepers = [live.core.sweeper for live in (first, second)]
        await asyncio.gather(*(s.run_due() for s in sweepers if s is not None))
        await asyncio.gather(*(s.run_due() for s in sweepers if s is not None))
        for token_id in ids:
            assert len(inactive_revocations(await events_of(first, token_id))) == 1


def _expiring_at(live: LiveService, seconds: float) -> dict[str, Any]:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromMicroseconds(live.clock() + round(seconds * SECOND))
    return {"expire_time": stamp}


def _reminders(events: list[EventRecord]) -> list[EventAction]:
    kinds = (EventAction.EXPIRING, EventAction.EXPIRED)
    return [e.action for e in events if e.action in kinds]


async def test_reminders_in_real_time_each_within_two_seconds(
    tmp_path: Path, store_url: str
) -> None:
    settings = {"expiry_reminders": (2 * SECOND, SECOND)}
    async with running(tmp_path / "data", store_url, **settings) as live:
        token_id, _ = await create(live, "soon", **_expiring_at(live, 3))
        record = await live.core.store.get(token_id)
        assert record is not None
        assert record.expire_time is not None
        expiry = record.expire_time

        async def all_in() -> bool:
            return len(_reminders(await events_of(live, token_id))) == 3

        await eventually(all_in)
        found = [e for e in await events_of(live, token_id) if e.action != EventAction.CREATED]
        due = [expiry - 2 * SECOND, expiry - SECOND, expiry]
        assert [e.action for e in found] == [EventAction.EXPIRING] * 2 + [EventAction.EXPIRED]
        for event, at in zip(found, due, strict=True):
            assert at <= event.event_time < at + 2 * SECOND
            assert (event.actor_token_id, event.actor_owner, event.reason) == (0, "", "")


async def test_two_instances_record_every_reminder_once(tmp_path: Path, store_url: str) -> None:
    data = tmp_path / "data"
    settings = {"expiry_reminders": (2 * SECOND, SECOND)}
    async with (
        running(data, store_url, **settings) as first,
        running(data, store_url, **settings) as second,
    ):
        ids = [(await create(first, f"t{n}", **_expiring_at(first, 2.5)))[0] for n in range(10)]

        async def all_in() -> bool:
            every = [_reminders(await events_of(second, token_id)) for token_id in ids]
            return all(len(kinds) >= 3 for kinds in every)

        await eventually(all_in)
        await asyncio.sleep(1.5)  # a second's look more from each: nothing new
        for token_id in ids:
            kinds = _reminders(await events_of(first, token_id))
            assert kinds == [EventAction.EXPIRING, EventAction.EXPIRING, EventAction.EXPIRED]


async def test_long_offsets_with_a_moved_clock_across_a_restart(
    tmp_path: Path, store_url: str
) -> None:
    data = tmp_path / "data"
    day = 24 * 3600
    async with running(data, store_url) as live:  # the default: 30d, 7d, 1d
        await by_hand(live)
        token_id, _ = await create(live, "yearly", **_expiring_at(live, 10 * day))
        revoked_id, _ = await create(live, "revoked", **_expiring_at(live, 10 * day))
        await live.stub.RevokeToken(
            pb.RevokeTokenRequest(id=revoked_id), metadata=bearer(live.admin_token)
        )
        live.clock.advance(3.5 * day)
        assert live.core.sweeper is not None
        await live.core.sweeper.run_due()
        await live.core.sweeper.run_due()
        offset = live.clock.offset_us
    assert _reminders(await _after_restart(data, store_url, offset, token_id)) == [
        EventAction.EXPIRING
    ]
    async with running(data, store_url) as again:
        await by_hand(again)
        again.clock.advance(offset / SECOND + 7 * day)
        assert again.core.sweeper is not None
        await again.core.sweeper.run_due()
        await again.core.sweeper.run_due()
        assert _reminders(await events_of(again, token_id)) == [
            EventAction.EXPIRING,
            EventAction.EXPIRING,
            EventAction.EXPIRED,
        ]
        assert _reminders(await events_of(again, revoked_id)) == []


async def _after_restart(data: Path, url: str, offset: int, token_id: int) -> list[EventRecord]:
    """The token's events seen by a new process whose sweeper ran at the same moment."""
    async with running(data, url) as live:
        await by_hand(live)
        live.clock.offset_us = offset
        assert live.core.sweeper is not None
        await live.core.sweeper.run_due()
        return await events_of(live, token_id)


def _count_unused_writes(live: LiveService) -> list[int | None]:
    """From now on, each ``revoke_unused`` write the service starts (its token id)."""
    store: Any = live.core.store
    write = store.revoke_unused
    started: list[int | None] = []

    async def counted(cutoff: int, now: int, token_id: int | None = None) -> Any:
        started.append(token_id)
        return await write(cutoff, now, token_id)

    store.revoke_unused = counted
    return started
