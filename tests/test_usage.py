"""Usage counts read while a flush is writing them: each use counted once.

A read that overlaps a flush may see the row before or after the batch
lands. The store's ``add_usage`` is held (before or after its commit) to
make both orders happen on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import pytest

from tests.helpers import LiveService, bearer
from tokengrpc.store import Usage
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


@pytest.mark.parametrize("commit", ["held-before-commit", "held-after-commit"])
@pytest.mark.parametrize(
    ("read", "uses"),
    # Introspecting a token is one more successful use of it.
    [(_get, 1), (_list, 1), (_introspect, 2)],
    ids=["GetToken", "ListTokens", "IntrospectToken"],
)
async def test_a_read_during_a_flush_counts_each_use_once(
    service: LiveService, commit: str, read: Reader, uses: int
) -> None:
    token_id, token = await service.create("counted", owner="counted", scopes=["write"])
    store = service.core.store
    real_add = store.add_usage
    reached, release = asyncio.Event(), asyncio.Event()

    async def held(uses: Mapping[int, Usage]) -> None:
        if token_id not in uses:
            await real_add(uses)
            return
        if commit == "held-after-commit":
            await real_add(uses)
        reached.set()
        await release.wait()
        if commit == "held-before-commit":
            await real_add(uses)

    store.add_usage = held  # type: ignore[method-assign]  # a slow disk, on demand
    await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(token))
    flushing = asyncio.create_task(service.core.usage.flush())
    await asyncio.wait_for(reached.wait(), 5)

    reading = asyncio.create_task(read(service, token_id, token))
    try:
        await asyncio.sleep(0.05)
        assert not reading.done(), "a read racing the flush must wait for it, not guess"
    finally:
        release.set()
        await flushing
    got = await asyncio.wait_for(reading, 5)
    assert got.usage_count == uses
    assert got.HasField("last_use_time")
    store.add_usage = real_add  # type: ignore[method-assign]
    await service.core.usage.flush()
    stored = await store.get(token_id)
    assert stored is not None
    assert stored.usage_count == uses
