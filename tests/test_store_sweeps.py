"""The store's part of the time-driven policies (CONTRACT section 12), on every
engine: unused tokens revoked on the store's condition, reminder steps written
once with their events, however many stores (processes) run them at once."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter

from tests.stores import StoreFactory
from tokengrpc.reminders import Reminders
from tokengrpc.store import (
    REASON_INACTIVE,
    EventAction,
    EventQuery,
    NewToken,
    Rotation,
    TokenChanges,
    TokenStore,
)


def _new(name: str, now: int, expire_time: int | None = None) -> NewToken:
    return NewToken("o", name, b"h" * 32, (), True, expire_time, (), now)


async def _events(store: TokenStore) -> list[tuple[int, EventAction, str]]:
    """(token id, action, reason) of every event but the creations, oldest first."""
    found = await store.list_events(EventQuery(limit=1000))
    return [
        (e.token_id, e.action, e.reason) for e in reversed(found) if e.action != EventAction.CREATED
    ]


async def _advance(store: TokenStore, reminders: Reminders, now: int) -> None:
    step = functools.partial(reminders.step, now=now)
    only_own = reminders.max_secret_age is None
    while await store.advance_reminders(now, step, 7, only_own_expiries=only_own):
        pass


async def test_unused_tokens_are_revoked_on_the_stores_condition(open_store: StoreFactory) -> None:
    store = await open_store()
    idle = await store.insert(_new("idle", now=10))
    used = await store.insert(_new("used", now=10))
    rotated = await store.insert(_new("rotated", now=10))
    gone = await store.insert(_new("gone", now=10))
    store.record_use(used.id, 50)
    await store.flush_usage()
    await store.rotate(rotated.id, Rotation(b"n" * 32, None, None, 60))
    await store.revoke(gone.id, 15)

    # Only the given token, and only past its last activity.
    assert await store.revoke_unused(40, 100, token_id=used.id) == []
    revoked = await store.revoke_unused(40, 100)
    assert [r.id for r in revoked] == [idle.id]
    assert revoked[0].revoke_time == 100
    assert await store.revoke_unused(40, 101) == []  # once
    (one,) = await store.revoke_unused(55, 102, token_id=used.id)
    assert one.id == used.id
    assert await store.revoke_unused(59, 103) == []  # rotated at 60: still wanted

    events = (await store.list_events(EventQuery(limit=10, token_id=idle.id)))[0]
    assert (events.action, events.reason, events.actor_token_id, events.actor_owner) == (
        EventAction.REVOKED,
        REASON_INACTIVE,
        0,
        "",
    )
    assert events.changed_fields == ("revoke_time",)


async def test_two_stores_sweeping_at_once_revoke_each_token_once(
    open_store: StoreFactory,
) -> None:
    first, second = await open_store(), await open_store()
    ids = [(await first.insert(_new(f"t{i}", now=10))).id for i in range(30)]
    await asyncio.gather(
        *(store.revoke_unused(20, 100 + n) for n, store in enumerate((first, second) * 3)),
        *(first.revoke_unused(20, 200, token_id=token_id) for token_id in ids[:5]),
    )
    revocations = Counter(
        t for t, action, _ in await _events(first) if action == EventAction.REVOKED
    )
    assert revocations == dict.fromkeys(ids, 1)


async def test_reminders_come_at_each_offset_ahead_then_at_expiry(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    reminders = Reminders((5000, 500, 100), None)
    token = await store.insert(_new("t", now=10, expire_time=1000))
    lasting = await store.insert(_new("lasting", now=10))
    # Planning at a start wakes every token, each from when its expiry was set.
    assert await store.plan_reminders(None, 600)
    await _advance(store, reminders, 400)  # 5000 before was never ahead; 500 not yet due
    assert await _events(store) == []
    assert await store.next_reminder_wake() == 500
    await _advance(store, reminders, 600)
    await _advance(store, reminders, 600)  # nothing twice
    assert await _events(store) == [(token.id, EventAction.EXPIRING, "")]
    await _advance(store, reminders, 2000)  # late (a stop): each one still, once
    assert await _events(store) == [
        (token.id, EventAction.EXPIRING, ""),
        (token.id, EventAction.EXPIRING, ""),
        (token.id, EventAction.EXPIRED, ""),
    ]
    assert await store.next_reminder_wake() is None
    assert lasting.id not in {t for t, _, _ in await _events(store)}


async def test_a_moved_expiry_starts_over_and_a_revoked_token_gets_none(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    reminders = Reminders((500,), None)
    moved = await store.insert(_new("moved", now=10, expire_time=1000))
    revoked = await store.insert(_new("revoked", now=10, expire_time=1000))
    await _advance(store, reminders, 600)
    await store.update(moved.id, TokenChanges(set_expire_time=True, expire_time=3000), 700)
    await store.revoke(revoked.id, 700)
    await _advance(store, reminders, 1500)  # the old expiry's EXPIRED never comes
    await _advance(store, reminders, 2600)
    await _advance(store, reminders, 3000)
    assert await _events(store) == [
        (moved.id, EventAction.EXPIRING, ""),
        (revoked.id, EventAction.EXPIRING, ""),
        (moved.id, EventAction.UPDATED, ""),
        (revoked.id, EventAction.REVOKED, ""),
        (moved.id, EventAction.EXPIRING, ""),
        (moved.id, EventAction.EXPIRED, ""),
    ]


async def test_a_rotation_under_a_maximum_age_starts_over(open_store: StoreFactory) -> None:
    store = await open_store()
    reminders = Reminders((300,), max_secret_age=1000)
    assert await store.plan_reminders(1000, 5)
    assert not await store.plan_reminders(1000, 6)  # planned under this age already
    token = await store.insert(_new("t", now=10))  # no expiry of its own: the cap's
    await _advance(store, reminders, 800)
    await store.rotate(token.id, Rotation(b"n" * 32, None, None, 900))
    await _advance(store, reminders, 1500)  # the first secret's end brings nothing now
    await _advance(store, reminders, 2000)
    actions = [action for _, action, _ in await _events(store)]
    assert actions == [
        EventAction.EXPIRING,
        EventAction.ROTATED,
        EventAction.EXPIRING,
        EventAction.EXPIRED,
    ]
    assert await store.plan_reminders(None, 2100)  # another age: every token woken


async def test_two_stores_stepping_at_once_record_every_reminder_once(
    open_store: StoreFactory,
) -> None:
    first, second = await open_store(), await open_store()
    reminders = Reminders((300, 200, 100), None)
    ids = [(await first.insert(_new(f"t{i}", now=10, expire_time=1000))).id for i in range(40)]
    for now in (750, 850, 950, 1050):
        await asyncio.gather(*(_advance(s, reminders, now) for s in (first, second) * 2))
    counted = Counter((t, action) for t, action, _ in await _events(first))
    expected = {(t, EventAction.EXPIRING): 3 for t in ids} | {
        (t, EventAction.EXPIRED): 1 for t in ids
    }
    assert counted == expected
