"""The webhook outbox on every engine (``TokenStore.outbox``), and the retry schedule.

Two stores on one database stand for two processes (or instances): a row
claimed by one is not handed to the other until its lease ends.
"""

from __future__ import annotations

import asyncio

from tests.stores import StoreFactory
from tokengrpc.store import Actor, EventAction, NewToken, TokenChanges
from tokengrpc.webhooks.schedule import Timing

HOOK, OTHER = "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"
#: A lease far enough ahead that no test reaches it.
LEASE = 10**15


def _new(name: str, now: int = 1) -> NewToken:
    return NewToken("o", name, b"h" * 32, ("write",), True, None, (), now, sealed_value=b"sealed")


async def test_every_event_is_queued_per_url_with_the_token_as_it_was(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    before = await store.insert(_new("before"))  # no URL yet: not queued
    assert await store.outbox.set_webhook_urls([HOOK, OTHER]) == 0
    made = await store.insert(_new("t", now=10))
    await store.update(made.id, TokenChanges(name="renamed"), 20, Actor(reason="cli"))
    await store.record_value_read(made.id, 30, Actor(token_id=before.id))
    claimed = await store.outbox.claim_deliveries(100, LEASE, 10)
    assert [(c.url, c.event.action) for c in claimed] == [
        (HOOK, EventAction.CREATED), (OTHER, EventAction.CREATED),
    ]  # fmt: skip
    # The next event of each token waits for the one claimed before it.
    assert await store.outbox.claim_deliveries(100, LEASE, 10) == []
    created = claimed[0]
    assert created.token.name == "t"
    assert created.token.secret_hash == b""
    assert created.token.sealed_value is None
    assert created.token.scopes == ("write",)
    assert await store.outbox.oldest_undelivered() == 10

    for row in claimed:
        await store.outbox.finish_delivery(row.id)
    updated = await store.outbox.claim_deliveries(100, LEASE, 1)
    assert [(u.url, u.event.action, u.token.name) for u in updated] == [
        (HOOK, EventAction.UPDATED, "renamed"),
    ]
    assert updated[0].event.reason == "cli"
    assert await store.outbox.oldest_undelivered() == 20


async def test_a_failing_row_holds_back_its_token_only_and_comes_back_when_due(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    await store.outbox.set_webhook_urls([HOOK])
    first = await store.insert(_new("first"))
    await store.revoke(first.id, 5)
    second = await store.insert(_new("second"))
    (row,) = await store.outbox.claim_deliveries(100, LEASE, 1)
    assert row.event.token_id == first.id
    await store.outbox.retry_delivery(row.id, 1, 200)
    # Not due yet: the other token's event goes ahead; the first's revocation waits.
    (other,) = await store.outbox.claim_deliveries(100, LEASE, 10)
    assert other.event.token_id == second.id
    again = await store.outbox.claim_deliveries(200, LEASE, 10)
    assert [(r.id, r.attempts) for r in again] == [(row.id, 1)]
    await store.outbox.finish_delivery(row.id)
    (revoked,) = await store.outbox.claim_deliveries(200, LEASE, 10)
    assert revoked.event.action == EventAction.REVOKED


async def test_a_claimed_row_is_no_other_process_s_until_its_lease_ends(
    open_store: StoreFactory,
) -> None:
    one, other = await open_store(), await open_store()
    await one.outbox.set_webhook_urls([HOOK])
    for n in range(6):
        await one.insert(_new(f"t{n}"))
    # Both at once: each row goes to one of them.
    mine, theirs = await asyncio.gather(
        one.outbox.claim_deliveries(100, 500, 3), other.outbox.claim_deliveries(100, 500, 3)
    )
    ids = [r.id for r in [*mine, *theirs]]
    assert len(ids) == len(set(ids)) == 6
    assert await one.outbox.claim_deliveries(499, 1000, 10) == []
    # A sender that died gives its rows back when the lease ends.
    assert len(await other.outbox.claim_deliveries(500, 1000, 10)) == 6


async def test_urls_set_anew_drop_what_was_queued_for_the_others(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    await store.outbox.set_webhook_urls([HOOK, OTHER])
    await store.insert(_new("t"))
    assert await store.outbox.set_webhook_urls([HOOK, OTHER]) == 0
    assert await store.outbox.set_webhook_urls([HOOK]) == 1
    assert [r.url for r in await store.outbox.claim_deliveries(100, LEASE, 10)] == [HOOK]
    assert await store.outbox.set_webhook_urls([]) == 1
    await store.insert(_new("u"))
    assert await store.outbox.oldest_undelivered() is None


def test_retries_start_within_5_s_grow_to_an_hour_and_last_a_day() -> None:
    timing = Timing()
    pauses = [timing.pause(n) / 1e6 for n in range(1, 40)]
    assert pauses[0] <= 5
    assert pauses == sorted(pauses)
    assert max(pauses) == 3600
    assert not timing.gives_up(0, int(24 * 3600e6) - 1)
    assert timing.gives_up(0, int(24 * 3600e6))
    assert Timing.scaled(0.1).pause(1) == timing.pause(1) // 10
