"""The store contract, on every engine, through ``TokenStore`` only.

Two stores opened by ``open_store`` stand for two processes (or instances)
on one database. Engine-specific matters (query plans, group commit, the
counter file, a writer held on demand) live in ``test_sqlite_engine.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from tests.stores import StoreFactory
from tokengrpc.store import (
    REASON_CLI,
    REASON_LEAKED,
    Actor,
    EventAction,
    EventQuery,
    ListQuery,
    NameTaken,
    NewToken,
    Rotation,
    TokenChanges,
    TokenRecord,
    TokenStore,
)
from tokengrpc.usage import UsageRecorder


def _new(name: str, owner: str = "o", now: int = 1) -> NewToken:
    return NewToken(owner, name, b"h" * 32, (), True, None, (), now)


async def test_service_names_unique_only_while_live(open_store: StoreFactory) -> None:
    store = await open_store()
    first = await store.insert(_new("svc", owner=""))
    with pytest.raises(NameTaken):
        await store.insert(_new("svc", owner=""))
    await store.insert(_new("svc", owner="a person"))
    assert await store.revoke(first.id, 5) is not None
    assert await store.revoke(first.id, 6) is None
    again = await store.insert(_new("svc", owner=""))
    assert again.id > first.id
    found = await store.get_service_token("svc")
    assert found is not None
    assert found.id == again.id


async def test_list_and_count(open_store: StoreFactory) -> None:
    store = await open_store()
    ids = [(await store.insert(_new(f"t{i}"))).id for i in range(5)]
    await store.revoke(ids[1], 9)
    live = ListQuery(owner="o", include_revoked=False, limit=10)
    assert [r.id for r in await store.list(live)] == [ids[0], *ids[2:]]
    assert await store.count(live) == 4
    every = ListQuery(owner="o", include_revoked=True, limit=2, after_id=ids[1])
    assert [r.id for r in await store.list(every)] == ids[2:4]
    paged = ListQuery(owner="o", include_revoked=True, limit=2, offset=3)
    assert [r.id for r in await store.list(paged)] == ids[3:5]


async def test_service_tokens_page_by_name_in_code_point_order(open_store: StoreFactory) -> None:
    """A (name, id) keyset over service tokens alone: code point order (as
    Python sorts, whatever the database's collation), ties oldest first."""
    store = await open_store()
    names = ["b", "Z", "a b", "é", "Ä", "\U0001f511", "a", "ab", "B", "a\u0301", "10", "9"]
    records = [await store.insert(_new(name, owner="")) for name in names]
    await store.insert_many([_new(name, owner="o") for name in ("0", "A", "zz")])  # personal
    await store.revoke(records[0].id, 5)  # "b" revoked, then made again, and "a" revoked
    records.append(await store.insert(_new("b", owner="")))
    await store.revoke(records[6].id, 5)
    for include_revoked in (False, True):
        every = [
            (r.name, r.id)
            for r in records
            if include_revoked or r.id not in (records[0].id, records[6].id)
        ]
        expected = sorted(every)
        for limit in (1, 2, 5, 20):
            seen: list[tuple[str, int]] = []
            after: tuple[str, int] = ("", 0)
            while True:
                name, after_id = after
                query = ListQuery("", include_revoked, limit, after_id=after_id, after_name=name)
                page = [(r.name, r.id) for r in await store.list(query)]
                assert len(page) <= limit
                seen += page
                if len(page) < limit:
                    break
                after = page[-1]
            assert seen == expected, (include_revoked, limit)


async def test_every_numbered_page_is_the_slice_from_either_end(open_store: StoreFactory) -> None:
    """A deep page is walked back from the last token: the same rows as a slice."""
    store = await open_store()
    await store.insert_many([_new(f"x{i}", owner="x") for i in range(3)])  # another owner
    ids = list(await store.insert_many([_new(f"t{i}") for i in range(23)]))
    await store.insert(_new("late", owner="x"))
    ids.append((await store.insert(_new("t23"))).id)
    for revoked in (ids[0], ids[5], ids[22], ids[23]):
        await store.revoke(revoked, 9)
    live = [i for i in ids if i not in (ids[0], ids[5], ids[22], ids[23])]
    for include_revoked, expected in ((True, ids), (False, live)):
        total = len(expected)
        assert await store.count(ListQuery("o", include_revoked, limit=1)) == total
        for limit in (1, 3, 6):
            for offset in range(1, total + limit + 1):
                query = ListQuery("o", include_revoked, limit=limit, offset=offset)
                got = [record.id for record in await store.list(query)]
                assert got == expected[offset : offset + limit], (include_revoked, limit, offset)


async def test_a_lookup_by_a_name_or_owner_holding_nul_finds_nothing(
    open_store: StoreFactory,
) -> None:
    """PostgreSQL's text cannot hold NUL; a lookup by one is still just a miss."""
    store = await open_store()
    await store.insert(_new("svc", owner=""))
    assert await store.get_service_token("svc\x00") is None
    query = ListQuery(owner="o\x00", include_revoked=True, limit=10)
    assert list(await store.list(query)) == []
    assert await store.count(query) == 0
    assert list(await store.list_events(EventQuery(owner="\x00", limit=10))) == []


async def test_uses_show_at_once_and_are_written_on_shutdown(open_store: StoreFactory) -> None:
    store = await open_store()
    token = await store.insert(_new("used"))
    usage = UsageRecorder(store, interval=3600)
    usage.start()
    for when in (10, 30, 20):
        usage.record(token.id, when, "10.0.0.1")
    pending = await store.get(token.id)
    assert pending is not None
    assert (pending.usage_count, pending.last_use_time) == (3, 30), "pending uses count at once"
    await usage.stop()  # the timer never fired: stop() must flush
    elsewhere = await open_store()
    stored = await elsewhere.get(token.id)
    assert stored is not None
    assert (stored.usage_count, stored.last_use_time, stored.last_use_ip) == (3, 30, "10.0.0.1")


async def test_closing_writes_pending_uses(open_store: StoreFactory) -> None:
    store = await open_store()
    token = await store.insert(_new("used"))
    store.record_use(token.id, 5)
    await store.close()
    stored = await (await open_store()).get(token.id)
    assert stored is not None
    assert stored.usage_count == 1


async def test_bulk_loading_and_counts_above_any_inline_limit(open_store: StoreFactory) -> None:
    store = await open_store()
    ids = await store.insert_many([_new(f"t{i}", owner="big") for i in range(1234)])
    assert len(ids) == 1234
    assert ids.step == 1
    await store.insert_many([_new(f"t{i}", owner="small") for i in range(7)])
    query = ListQuery(owner="big", include_revoked=False, limit=1)
    assert await store.count(query) == 1234
    assert await store.count(query) == 1234  # from the cache
    assert await store.count(ListQuery(owner="small", include_revoked=True, limit=1)) == 7
    await store.insert(_new("one more", owner="big"))
    assert await store.count(query) == 1235
    last = await store.get(ids[-1])
    assert last is not None
    assert last.name == "t1233"


async def test_counts_follow_every_write_in_any_process(open_store: StoreFactory) -> None:
    store, other = await open_store(), await open_store()
    live = ListQuery(owner="o", include_revoked=False, limit=1)
    every = ListQuery(owner="o", include_revoked=True, limit=1)
    first = await store.insert(_new("a"))
    assert (await store.count(live), await store.count(every)) == (1, 1)
    store.record_use(first.id, 7)
    await store.flush_usage()  # usage keeps counts
    assert (await store.count(live), await store.count(every)) == (1, 1)
    await other.insert(_new("b"))

    async def counts() -> tuple[int, int]:
        return await store.count(live), await store.count(every)

    assert await open_store.seen(counts, lambda found: found == (2, 2)) == (2, 2)
    await other.revoke(first.id, 9)
    assert await open_store.seen(counts, lambda found: found == (1, 2)) == (1, 2)


async def test_a_write_in_another_store_is_seen_by_the_very_next_read(
    open_store: StoreFactory,
) -> None:
    """Reads are cached, never stale (PostgreSQL instances: within the contract's 1 s)."""
    here, there = await open_store(), await open_store()
    token = await here.insert(_new("shared"))
    page = ListQuery(owner="o", include_revoked=False, limit=10)
    for _ in range(2):  # the second answer comes from the cache
        assert (await here.get(token.id)) == token
        assert [r.id for r in await here.list(page)] == [token.id]
    added = await there.insert(_new("later"))
    both = [token.id, added.id]
    listed = await open_store.seen(lambda: here.list(page), lambda rows: len(rows) == 2)
    assert [r.id for r in listed] == both
    await there.revoke(token.id, 9)
    seen = await open_store.seen(
        lambda: here.get(token.id), lambda found: found is not None and found.revoke_time == 9
    )
    assert seen is not None
    assert seen.revoke_time == 9
    for _ in range(4):
        there.record_use(added.id, 11)
    await there.flush_usage()
    used = await open_store.seen(
        lambda: here.get(added.id), lambda found: found is not None and found.usage_count == 4
    )
    assert used is not None
    assert (used.usage_count, used.last_use_time) == (4, 11)


async def test_a_large_usage_batch_lands_whole(open_store: StoreFactory) -> None:
    """More tokens than one statement may take: every count lands, last uses only grow."""
    store = await open_store()
    ids = await store.insert_many([_new(f"t{i}") for i in range(1200)])
    for token_id in ids:
        for _ in range(token_id % 7 + 1):
            store.record_use(token_id, 100)
    await store.flush_usage()
    for token_id in ids[::2]:
        store.record_use(token_id, 50)  # older than the last use
    await store.flush_usage()
    elsewhere = await open_store()
    listed = await elsewhere.list(ListQuery(owner="o", include_revoked=True, limit=2000))
    stored = {record.id: (record.usage_count, record.last_use_time) for record in listed}
    for token_id in ids:
        expected = token_id % 7 + 1 + (1 if (token_id - ids[0]) % 2 == 0 else 0)
        assert stored[token_id] == (expected, 100)


async def test_an_insert_whose_caller_gives_up_still_lands(open_store: StoreFactory) -> None:
    """A cancelled caller stops waiting; its write is made and announced all the same."""
    store = await open_store()
    inserts = [asyncio.create_task(store.insert(_new(f"t{i}"))) for i in range(5)]
    await asyncio.sleep(0)  # all five have begun
    inserts[2].cancel()
    done = await asyncio.wait_for(asyncio.gather(*inserts, return_exceptions=True), 5)
    assert isinstance(done[2], asyncio.CancelledError)
    # The cancelled caller's write goes on without it: it may land after the others.
    deadline = time.monotonic() + 5
    while True:
        page = await store.list(ListQuery(owner="o", include_revoked=True, limit=10))
        if len(page) == 5 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert sorted(r.name for r in page) == [f"t{i}" for i in range(5)]


async def test_many_usage_batches_stay_exact_in_the_cache(open_store: StoreFactory) -> None:
    """Batches are folded into cached rows on demand; past a bound the rows are read again."""
    store = await open_store()
    token = await store.insert(_new("counted"))
    page = ListQuery(owner="o", include_revoked=False, limit=10)
    for batch in range(1, 151):
        store.record_use(token.id, batch)
        await store.flush_usage()
        if batch % 7 == 0:  # some batches land on rows cached long before
            got = await store.get(token.id)
            (listed,) = await store.list(page)
            assert got is not None
            assert (got.usage_count, listed.usage_count, got.last_use_time) == (
                batch,
                batch,
                batch,
            )


async def test_writes_return_records_with_pending_uses(open_store: StoreFactory) -> None:
    store = await open_store()
    token = await store.insert(_new("counted"))
    store.record_use(token.id, 40, "192.0.2.1")
    revoked = await store.revoke(token.id, 99)
    assert revoked is not None
    assert (revoked.usage_count, revoked.last_use_time, revoked.last_use_ip) == (
        1,
        40,
        "192.0.2.1",
    )
    quick = await store.get(token.id, usage=False)
    assert quick is not None
    assert quick.usage_count == 0, "usage=False leaves pending uses out"


async def _steady(store: TokenStore, token_id: int) -> TokenRecord:
    """What ``get(usage=False)`` hands out once it answers from memory: the same
    object twice in a row (PostgreSQL's store may not vouch for memory at once)."""
    async with asyncio.timeout(5):
        while True:
            first = await store.get(token_id, usage=False)
            assert first is not None
            if await store.get(token_id, usage=False) is first:
                return first
            await asyncio.sleep(0.01)


async def test_an_unchanged_token_is_the_very_same_record(open_store: StoreFactory) -> None:
    """TokenStore's record identity, on which extauthz keeps its allowing answers."""
    store = await open_store()
    token = await store.insert(_new("kept"))
    other = await store.insert(_new("other"))
    held = await _steady(store, token.id)
    for _ in range(3):
        assert await store.get(token.id, usage=False) is held
    store.record_use(token.id, 5, "192.0.2.1")  # only recorded: nothing held changes
    assert await store.get(token.id, usage=False) is held
    counting = await store.get(token.id)
    assert counting is not None
    assert counting.usage_count == 1
    await store.flush_usage()
    counted = await _steady(store, token.id)
    assert (counted.usage_count, counted.last_use_ip) == (1, "192.0.2.1")
    store.record_use(other.id, 6)
    await store.flush_usage()  # another token's uses written: this one is unchanged
    assert await store.get(token.id, usage=False) is counted
    await store.update(token.id, TokenChanges(name="renamed"), 9)
    renamed = await _steady(store, token.id)
    assert (renamed.name, renamed.usage_count) == ("renamed", 1)
    elsewhere = await open_store()
    await elsewhere.revoke(token.id, 10)
    revoked = await open_store.seen(
        lambda: store.get(token.id, usage=False),
        lambda found: found is not None and found.revoke_time == 10,
    )
    assert revoked is not None
    assert (revoked.revoke_time, revoked.name) == (10, "renamed")


def test_with_usage_changes_only_the_usage_figures() -> None:
    record = TokenRecord(
        1, "o", "n", b"h", ("s",), False, 2, ("10.0.0.0/8",), 3, 4, 5, 6, 7, b"sealed"
    )
    assert record.with_usage(70, 60) == dataclasses.replace(
        record, usage_count=70, last_use_time=60
    )


async def test_end_grace_forgets_only_the_replaced_secret_it_names(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    token = await store.insert(_new("rotated"))
    old_hash = token.secret_hash
    rotation = Rotation(secret_hash=b"n" * 32, sealed_value=None, previous_until=100, now=10)
    assert await store.rotate(token.id, rotation) is not None
    # Another hash, or a grace already over at ``now``: nothing changes.
    assert await store.end_grace(token.id, b"x" * 32, 20) is None
    assert await store.end_grace(token.id, old_hash, 100) is None
    ended = await store.end_grace(token.id, old_hash, 20)
    assert ended is not None
    assert (ended.previous_hash, ended.previous_until) == (None, None)
    assert (ended.secret_hash, ended.revoke_time) == (b"n" * 32, None)
    assert await store.end_grace(token.id, old_hash, 30) is None, "once only"
    elsewhere = await open_store()
    seen = await elsewhere.get(token.id)
    assert seen is not None
    assert (seen.previous_hash, seen.secret_hash) == (None, b"n" * 32)
    events = await store.list_events(EventQuery(token_id=token.id, limit=10))
    assert [(e.action, e.changed_fields) for e in events[:1]] == [
        (EventAction.REVOKED, ("previous_secret",))
    ]


async def test_policy_fields_are_kept_and_the_secret_time_follows_rotation(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    new = dataclasses.replace(_new("later", now=10), not_before=50)
    token = await store.insert(new)
    assert (token.not_before, token.secret_time) == (50, 10)
    cleared = await store.update(token.id, TokenChanges(set_not_before=True), 20)
    assert cleared is not None
    assert (cleared.not_before, cleared.secret_time) == (None, 10)
    moved = await store.update(token.id, TokenChanges(set_not_before=True, not_before=70), 21)
    assert moved is not None
    assert moved.not_before == 70
    rotation = Rotation(secret_hash=b"n" * 32, sealed_value=None, previous_until=None, now=30)
    rotated = await store.rotate(token.id, rotation)
    assert rotated is not None
    assert (rotated.secret_time, rotated.create_time, rotated.not_before) == (30, 10, 70)
    elsewhere = await open_store()
    seen = await open_store.seen(
        lambda: elsewhere.get(token.id),
        lambda found: found is not None and found.secret_time == 30,
    )
    assert seen == rotated
    (updated, *_) = await store.list_events(EventQuery(limit=10, token_id=token.id))
    assert updated.action == EventAction.ROTATED
    fields = [e.changed_fields for e in await store.list_events(EventQuery(limit=10))]
    assert ("not_before",) in fields


async def test_an_actors_reason_and_detail_reach_the_event(open_store: StoreFactory) -> None:
    store = await open_store()
    why = Actor(reason=REASON_LEAKED, detail="https://example.com/leak github")
    token = await store.insert(dataclasses.replace(_new("leaky"), actor=Actor(reason=REASON_CLI)))
    await store.revoke(token.id, 5, why)
    revoked, created = await store.list_events(EventQuery(limit=10, token_id=token.id))
    assert (revoked.reason, revoked.detail) == (REASON_LEAKED, "https://example.com/leak github")
    assert (created.reason, created.detail) == (REASON_CLI, "")
    assert (revoked.actor_token_id, revoked.actor_owner) == (0, "")


async def test_tokens_past_a_secret_age_are_counted(open_store: StoreFactory) -> None:
    """What ``serve`` reports at start: live, active tokens within their own
    expiry whose current secret is at least that old."""
    store = await open_store()
    old = await store.insert(_new("old", now=10))
    await store.insert(_new("young", now=60))
    await store.insert(dataclasses.replace(_new("inactive", now=10), active=False))
    await store.insert(dataclasses.replace(_new("expired", now=10), expire_time=50))
    gone = await store.insert(_new("revoked", now=10))
    await store.revoke(gone.id, 20)
    assert await store.count_past_secret_age(100, 90) == 1
    rotation = Rotation(secret_hash=b"n" * 32, sealed_value=None, previous_until=None, now=30)
    await store.rotate(old.id, rotation)
    assert await store.count_past_secret_age(100, 90) == 0
    assert await store.count_past_secret_age(100, 40) == 2
