"""Usage counts read while a flush is writing them: each use counted once.

The store starts counting a batch in its answers the moment the flush hands
it over. A cached answer knows it does not hold the batch yet and adds it at
once; a fresh read may or may not hold it (whether the commit came first), so
it waits for the flush and reads again. The flush's COMMIT is held (before or
after it runs) to make both orders happen on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from tests.helpers import LiveService, bearer
from tokengrpc.store.counting import CountingStore
from tokengrpc.store.sqlite import GENERATION_FILE, Generation, SqliteEngine
from tokengrpc.v1 import tokens_pb2 as pb

Reader = Callable[[LiveService, int, str], Coroutine[Any, Any, pb.Token]]


async def _get(service: LiveService, token_id: int, token: str) -> pb.Token:
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    return got.token


async def _list(service: LiveService, token_id: int, token: str) -> pb.Token:
    listed = await service.stub.ListTokens(
        pb.ListTokensRequest(owner="counted"), metadata=bearer(service.admin_token)
    )
    (only,) = listed.tokens
    return only


async def _introspect(service: LiveService, token_id: int, token: str) -> pb.Token:
    answer = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=token), metadata=bearer(service.admin_token)
    )
    assert answer.active
    return answer.token


@pytest.mark.parametrize("cache", ["cached", "announced-elsewhere"])
@pytest.mark.parametrize("commit", ["held-before-commit", "held-after-commit"])
@pytest.mark.parametrize(
    ("read", "uses"),
    # Introspecting a token is one more successful use of it.
    [(_get, 0), (_list, 0), (_introspect, 1)],
    ids=["GetToken", "ListTokens", "IntrospectToken"],
)
async def test_a_read_during_a_flush_counts_each_use_once(
    sqlite_service: LiveService, cache: str, commit: str, read: Reader, uses: int
) -> None:
    # SQLite's own: its writer's COMMIT is held and its counter file bumped.
    service = sqlite_service
    # The timer off: the flush below is the one that writes the use (a slow moment
    # between the use and that flush let the timer write it first, with nothing left).
    await service.core.usage.stop()
    # The policies' timer off too: its own writes (a new token's reminder mark
    # cleared) would empty the cache at a moment of its choosing.
    if service.core.sweeper is not None:
        await service.core.sweeper.stop()
    token_id, token = await service.create("counted", owner="counted", scopes=["write"])
    store = service.core.store
    await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(token))  # one use
    await read(service, token_id, token)  # the answer is cached now
    assert isinstance(store, CountingStore)
    engine = store.engine
    assert isinstance(engine, SqliteEngine)
    reached, release = asyncio.Event(), asyncio.Event()

    async def held(sql: str, run: Callable[[], Awaitable[Any]]) -> Any:  # a slow disk
        if sql != "COMMIT" or reached.is_set():
            return await run()
        result = await run() if commit == "held-after-commit" else None
        reached.set()
        await release.wait()
        if commit == "held-before-commit":
            result = await run()
        return result

    engine.around_write = held
    flushing = asyncio.create_task(service.core.usage.flush())
    await asyncio.wait_for(reached.wait(), 5)
    if cache == "announced-elsewhere":  # another process wrote: the cache is dropped
        elsewhere = Generation(service.data_dir / GENERATION_FILE)
        elsewhere.bump()
        elsewhere.close_now()

    reading = asyncio.create_task(read(service, token_id, token))
    try:
        await asyncio.sleep(0.05)
        if cache == "cached":
            assert reading.done(), "a cached answer knows what it holds: no need to wait"
        else:
            assert not reading.done(), "a fresh read racing the flush must wait, not guess"
    finally:
        release.set()
        await flushing
        engine.around_write = None
    got = await asyncio.wait_for(reading, 5)
    expected = 1 + 2 * uses
    assert got.usage_count == expected
    assert got.HasField("last_use_time")
    await service.core.usage.flush()
    stored = await store.get(token_id)
    assert stored is not None
    assert stored.usage_count == expected
