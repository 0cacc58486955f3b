"""``tokengrpc serve`` itself with the time-driven policies set by its flags, in
seconds (CONTRACT section 12), on each engine: unused tokens swept while one in
steady use lives on; reminders once each across ``kill -9`` and a restart."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.conftest import ENGINES
from tests.helpers import bearer
from tests.processes import Serving, clean_env, serve
from tokengrpc.clock import now_us
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

EXPIRING = pb.TOKEN_EVENT_ACTION_EXPIRING
EXPIRED = pb.TOKEN_EVENT_ACTION_EXPIRED


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "sqlite" else str(request.getfixturevalue("database_url"))


class Server:
    """One ``serve`` on the test's store, with a channel to it."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.channel = grpc.aio.insecure_channel(serving.address("grpc"))
        self.stub = tokens_pb2_grpc.TokenServiceStub(self.channel)

    async def stop(self) -> None:
        await self.channel.close()
        code, _ = await self.serving.stop()
        assert code == 0

    async def kill(self) -> None:
        await self.channel.close()
        self.serving.process.send_signal(signal.SIGKILL)
        await self.serving.process.wait()


async def start(data: Path, url: str, *flags: str) -> Server:
    env = clean_env(TOKENGRPC_DATABASE_URL=url) if url else clean_env()
    serving = await serve(
        "--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--no-access-log", *flags, env=env,
    )  # fmt: skip
    return Server(serving)


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Every server a test starts; whatever is left running is stopped at the end."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.serving.process.returncode is None:
            await server.kill()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.1)


async def events(server: Server, caller: str, token_id: int) -> list[pb.TokenEvent]:
    """The token's events, oldest first."""
    found = await server.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(token_id=token_id, page_size=100), metadata=bearer(caller)
    )
    return list(reversed(found.events))


async def create(server: Server, caller: str, name: str, **fields: object) -> tuple[int, str]:
    made = await server.stub.CreateToken(
        pb.CreateTokenRequest(name=name, owner="alice", **fields),  # type: ignore[arg-type]
        metadata=bearer(caller),
    )
    return made.token.id, made.plaintext


async def authenticates(server: Server, plaintext: str) -> bool:
    try:
        await server.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
        return False
    return True


async def test_unused_tokens_are_swept_and_one_in_use_lives_on(
    tmp_path: Path, store_url: str, servers: list[Server]
) -> None:
    data = tmp_path / "data"
    server = await start(data, store_url, "--revoke-unused-after", "3s")
    servers.append(server)
    admin = (data / "bootstrap-token").read_text().strip()
    _, keeper = await create(server, admin, "keeper", scopes=["admin"])
    idle_id, idle = await create(server, admin, "idle")

    async def swept() -> bool:
        assert await authenticates(server, keeper)  # in steady use all along
        found = await events(server, keeper, idle_id)
        return any(e.reason == "inactive" for e in found)

    await eventually(swept)
    (revoked,) = [e for e in await events(server, keeper, idle_id) if e.reason == "inactive"]
    assert revoked.action == pb.TOKEN_EVENT_ACTION_REVOKED
    assert (revoked.actor_token_id, revoked.actor_owner) == (0, "")
    assert not await authenticates(server, idle)
    assert await authenticates(server, keeper)
    await server.stop()


async def test_reminders_once_each_across_kill_9_and_a_restart(
    tmp_path: Path, store_url: str, servers: list[Server]
) -> None:
    data = tmp_path / "data"
    flags = ("--expiry-reminders", "4s,3s,1s")
    first = await start(data, store_url, *flags)
    servers.append(first)
    admin = (data / "bootstrap-token").read_text().strip()
    expiry = Timestamp()
    expiry.FromMicroseconds(now_us() + 6_000_000)
    token_id, _ = await create(first, admin, "soon", expire_time=expiry)

    async def reminded(server: Server, count: int) -> bool:
        found = await events(server, admin, token_id)
        return len([e for e in found if e.action in (EXPIRING, EXPIRED)]) >= count

    await eventually(lambda: reminded(first, 1))
    await first.kill()
    second = await start(data, store_url, *flags)
    servers.append(second)
    await eventually(lambda: reminded(second, 4))
    await second.stop()
    third = await start(data, store_url, *flags)
    servers.append(third)
    await asyncio.sleep(2)  # two looks of the restarted sweeper: nothing is recorded again
    found = [
        e for e in await events(third, admin, token_id) if e.action != pb.TOKEN_EVENT_ACTION_CREATED
    ]
    assert [e.action for e in found] == [EXPIRING, EXPIRING, EXPIRING, EXPIRED]
    expired = found[-1].event_time.ToMicroseconds()
    assert expiry.ToMicroseconds() <= expired < expiry.ToMicroseconds() + 2_000_000
    assert all((e.actor_token_id, e.actor_owner, e.reason) == (0, "", "") for e in found)
    await third.stop()
