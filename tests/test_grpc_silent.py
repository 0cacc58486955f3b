"""Connections to a real ``tokengrpc serve`` that start no call cannot hold the
gRPC connection limit: they are closed after the head timeout, while a
connection that started a call stays (until the separate idle timeout)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import h2
from tests.processes import Serving, serve
from tokengrpc.silent import stalled

LIMIT = 4
#: The head timeout, short for the test; the idle timeout stays long.
HEAD_TIMEOUT = 0.5
#: Each channel its own connection (channels of one process share by default).
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


def _health_check_call(*, request: bool = True) -> bytes:
    """Stream 1: a grpc.health.v1.Health/Check call, as raw HTTP/2 frames;
    without ``request``, its headers only (the stream stays open, waiting)."""
    headers = h2.call_headers(b"/grpc.health.v1.Health/Check")
    empty_message = bytes(5)  # not compressed, length 0: an empty HealthCheckRequest
    opened = h2.frame(h2.HEADERS, h2.END_HEADERS, headers, 1)
    return opened + h2.frame(h2.DATA, h2.END_STREAM, empty_message, 1) if request else opened


class Raw:
    """A TCP connection speaking HTTP/2 frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: str, *, preface: bool = True) -> Raw:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        if preface:
            writer.write(h2.PREFACE + h2.frame(h2.SETTINGS, 0, b""))
            await writer.drain()
        return cls(reader, writer)

    async def frame(self) -> tuple[int, int, bytes] | None:
        """The next frame (kind, flags, payload), or None when the server closed."""
        try:
            header = await self.reader.readexactly(9)
            payload = await self.reader.readexactly(int.from_bytes(header[:3], "big"))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        return header[3], header[4], payload

    async def closed_by_server(self) -> None:
        """Returns once the server has closed the connection (whatever it sent first)."""
        while await self.frame() is not None:
            pass

    async def ping_answered(self) -> bool:
        """Still open: a PING is acknowledged."""
        self.writer.write(h2.frame(h2.PING, 0, b"stillhere"[:8]))
        await self.writer.drain()
        while (frame := await self.frame()) is not None:
            if frame[0] == h2.PING and frame[1] & h2.ACK and frame[2] == b"stillhere"[:8]:
                return True
        return False

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Serving]:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--grpc-max-connections", str(LIMIT), "--http-head-timeout", str(HEAD_TIMEOUT),
        "--grpc-max-connection-idle", "300",
    )  # fmt: skip
    try:
        yield server
    finally:
        code, output = await server.stop()
        assert code == 0, output


async def _health_check(address: str, *, wait: bool) -> grpc.StatusCode:
    """A real client on a connection of its own: how its call ended."""
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=wait
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_silent_connections_are_closed_and_free_the_limit(limited: Serving) -> None:
    address = limited.address("grpc")
    # One connection that starts a call, and the rest of the limit silent:
    # the preface and SETTINGS, then nothing; and one that never even says hello.
    calling = await Raw.open(address)
    calling.writer.write(_health_check_call())
    silent = [await Raw.open(address) for _ in range(LIMIT - 2)]
    mute = await Raw.open(address, preface=False)
    try:
        # The limit is full: a real client is refused.
        assert await _health_check(address, wait=False) == grpc.StatusCode.UNAVAILABLE
        async with asyncio.timeout(10):  # generous: the head timeout is 0.5 s
            await asyncio.gather(*(raw.closed_by_server() for raw in (*silent, mute)))
        # The connection that started a call is as old, and still open.
        async with asyncio.timeout(10):
            assert await calling.ping_answered()
        # Their places are free again: a new real client is served.
        assert await _health_check(address, wait=True) == grpc.StatusCode.OK
    finally:
        for raw in (calling, *silent, mute):
            raw.close()


async def test_a_call_whose_request_never_comes_does_not_hold_the_limit(limited: Serving) -> None:
    """A stream opened and never sent its message counts as a call to grpc (its
    idle timer never starts): it gets the head timeout for its request too."""
    address = limited.address("grpc")
    waiting = [await Raw.open(address) for _ in range(LIMIT)]
    for raw in waiting:
        raw.writer.write(_health_check_call(request=False))
        await raw.writer.drain()
    try:
        assert await _health_check(address, wait=False) == grpc.StatusCode.UNAVAILABLE
        async with asyncio.timeout(15):  # generous: the head timeout is 0.5 s
            await asyncio.gather(*(raw.closed_by_server() for raw in waiting))
        assert await _health_check(address, wait=True) == grpc.StatusCode.OK
    finally:
        for raw in waiting:
            raw.close()


def test_what_counts_as_stalled() -> None:
    now = 1_800_000_000.0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z", time.gmtime(now - 30))
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    assert stalled({}, now, 10)
    assert stalled({"streamsStarted": "0"}, now, 10)
    waiting = {"streamsStarted": "2", "messagesReceived": "1"}
    assert stalled({**waiting, "lastRemoteStreamCreatedTimestamp": stamp}, now, 10)
    assert not stalled({**waiting, "lastRemoteStreamCreatedTimestamp": recent}, now, 10)
    assert not stalled(
        {
            **waiting,
            "lastRemoteStreamCreatedTimestamp": stamp,
            "lastMessageReceivedTimestamp": recent,
        },
        now,
        10,
    )
    # Every call delivered its request: in use or idle, never stalled (a long
    # Watch, or the idle timeout's business).
    assert not stalled({"streamsStarted": "3", "messagesReceived": "3"}, now, 10)
    assert not stalled({"streamsStarted": "1", "messagesReceived": "5"}, now, 10)


async def _ended(watch: Any) -> grpc.StatusCode:
    """How a Watch stream ended, read to its end."""
    try:
        while True:
            await watch.read()
    except grpc.aio.AioRpcError as error:
        return error.code()


async def test_streams_a_stranger_keeps_open_do_not_hold_the_limit_for_good(
    tmp_path: Path,
) -> None:
    """A health Watch (or a reflection stream) needs no token and may last as
    long as its client likes: every connection lives at most its age, streams
    or not, and is closed a grace period later."""
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--grpc-max-connections", str(LIMIT), "--grpc-max-connection-age", "1",
        "--grace-period", "0.5", "--http-head-timeout", "0.5",
    )  # fmt: skip
    address = server.address("grpc")
    channels = [grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(LIMIT)]
    watches = [
        health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        for channel in channels
    ]
    try:
        for watch in watches:
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        assert await _health_check(address, wait=False) == grpc.StatusCode.UNAVAILABLE
        async with asyncio.timeout(15):  # generous: age 1 s (plus jitter) and grace 0.5 s
            ended = [await _ended(watch) for watch in watches]
        assert grpc.StatusCode.OK not in ended
        assert await _health_check(address, wait=True) == grpc.StatusCode.OK
    finally:
        for channel in channels:
            await channel.close()
        code, output = await server.stop()
    assert code == 0, output
