"""What a gRPC client may hold of a real ``tokengrpc serve``: a bounded number
of connections, and no ping flood.

The limits come from the flags, as an operator sets them.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.helpers import bearer
from tests.processes import Serving, serve
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

LIMIT = 3
#: Each channel its own connection: by default channels of one process with
#: the same target share their subchannels, and so one TCP connection.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Serving]:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--grpc-max-connections", str(LIMIT), "--grpc-keepalive-min-time", "30",
        "--no-access-log",  # what is left on stderr is what refusals wrote
    )  # fmt: skip
    try:
        yield server
    finally:
        if server.process.returncode is None:  # unless the test stopped it
            code, output = await server.stop()
            assert code == 0, output


async def _lists(channel: grpc.aio.Channel, token: str, *, wait: bool = False) -> bool:
    stub = tokens_pb2_grpc.TokenServiceStub(channel)
    try:
        await stub.ListTokens(
            pb.ListTokensRequest(), metadata=bearer(token), timeout=10, wait_for_ready=wait
        )
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        return True
    assert code == grpc.StatusCode.UNAVAILABLE
    return False


async def test_connections_past_the_limit_are_refused_and_come_back(
    limited: Serving, tmp_path: Path
) -> None:
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    target = limited.address("grpc")
    held = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(LIMIT)]
    extra = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(20)]
    try:
        assert [await _lists(channel, admin) for channel in held] == [True] * LIMIT
        started = time.monotonic()
        refused = [await _lists(channel, admin) for channel in extra]
        elapsed = time.monotonic() - started
        print(f"{len(extra)} connections past the limit refused in {elapsed:.3f} s")
        assert refused == [False] * len(extra)
        # Those within the limit keep working meanwhile.
        assert [await _lists(channel, admin) for channel in held] == [True] * LIMIT

        # Refused channels keep reconnecting in the background: only two stay,
        # so that the two freed places are theirs.
        for channel in (*extra[2:], *held[:2]):
            await channel.close()
        # Room again: a refused channel reconnects (after its backoff) and is served.
        started = time.monotonic()
        assert await _lists(extra[0], admin, wait=True)
        assert await _lists(extra[1], admin, wait=True)
        print(f"served again {time.monotonic() - started:.3f} s after two connections closed")
        assert await _lists(held[2], admin)
    finally:
        for channel in (*held, *extra):
            await channel.close()
    code, output = await limited.stop()
    assert code == 0, output
    # Refusals are not written out one per connection.
    assert output.count("\n") < 10, output


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING, _GOAWAY = 4, 6, 7
_ENHANCE_YOUR_CALM = 0xB


def _frame(kind: int, flags: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + bytes(4) + payload


async def test_a_ping_flood_gets_goaway_enhance_your_calm(limited: Serving, tmp_path: Path) -> None:
    """Pings closer than --grpc-keepalive-min-time, with no call running, earn
    strikes; past two the server says GOAWAY ENHANCE_YOUR_CALM (too_many_pings)."""
    host, _, port = limited.address("grpc").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(_PREFACE + _frame(_SETTINGS, 0, b""))
    started = time.monotonic()
    goaway: tuple[int, bytes] | None = None

    async def flood() -> None:
        for index in range(50):
            writer.write(_frame(_PING, 0, index.to_bytes(8, "big")))
            await writer.drain()
            await asyncio.sleep(0.02)

    flooding = asyncio.create_task(flood())
    try:
        async with asyncio.timeout(10):
            while goaway is None:
                header = await reader.readexactly(9)
                payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
                if header[3] == _GOAWAY:
                    _, code = struct.unpack(">II", payload[:8])
                    goaway = code, payload[8:]
    finally:
        flooding.cancel()
        writer.close()
    print(f"GOAWAY {goaway} after {time.monotonic() - started:.3f} s of pings every 20 ms")
    assert goaway == (_ENHANCE_YOUR_CALM, b"too_many_pings")

    # The server itself is unharmed: a well-behaved client is served.
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    async with grpc.aio.insecure_channel(limited.address("grpc")) as channel:
        assert await _lists(channel, admin)
