"""What a hostile client may hold: request heads, idle sockets, connections, streams."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.app import HttpServer, start_http
from gateway.connections import ConnectionLimits
from tests.helpers import LiveService, bearer
from tests.processes import Serving, serve
from tokengrpc.v1 import tokens_pb2 as pb

LIMITS = ConnectionLimits(
    max_head_bytes=16 * 1024, head_timeout=0.5, keep_alive_timeout=1, max_connections=6
)


@pytest.fixture
async def http(sqlite_service: LiveService) -> AsyncIterator[HttpServer]:
    """The HTTP server on SQLite only: what a connection may hold is the
    server's, and the store behind it never sees one (tests/conftest.py)."""
    server = await start_http(sqlite_service.target, "127.0.0.1:0", limits=LIMITS, grace_period=1)
    try:
        yield server
    finally:
        await server.stop()


async def _open(http: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = http.address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (reading whatever it sent first)."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while True:
            try:
                if not await reader.read(65536):
                    break
            except ConnectionResetError:
                break
    return time.monotonic() - started


async def _status(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), timeout=5)
    return int(line.split()[1])


async def _healthy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request on the connection, answered whole."""
    writer.write(_head())
    assert await _status(reader) == 200
    await reader.readuntil(b'{"status":"ok"}')


def _head(extra: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


async def test_a_head_over_16_kib_is_431_whole_or_growing(
    http: HttpServer, sqlite_service: LiveService
) -> None:
    before = sqlite_service.snapshot()
    reader, writer = await _open(http)
    writer.write(_head(b"X-Big: " + b"a" * 16_400 + b"\r\n"))
    assert await _status(reader) == 431
    await _closed_within(reader, 5)
    writer.close()

    # A head that never ends: refused once it passes the limit, not buffered for ever.
    reader, writer = await _open(http)
    writer.write(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
    for _ in range(40):
        writer.write(b"b" * 1024)
        await writer.drain()
    assert await _status(reader) == 431
    body = await reader.read(65536)
    assert b"bbbb" not in body, "the answer does not echo what was sent"
    writer.close()

    # Just under the limit is served.
    reader, writer = await _open(http)
    writer.write(_head(b"X-Fits: " + b"c" * 15_000 + b"\r\n"))
    assert await _status(reader) == 200
    writer.close()
    assert sqlite_service.snapshot() == before


async def test_a_connection_without_a_complete_head_is_closed(http: HttpServer) -> None:
    reader, _ = await _open(http)
    silent = await _closed_within(reader, 5)
    print(f"silent connection closed after {silent:.2f} s (head timeout 0.5 s)")
    assert silent >= 0.4

    reader, writer = await _open(http)
    writer.write(b"GET /healthz HTTP/1.1\r\n")

    async def trickle() -> None:
        for _ in range(50):  # a byte at a time, never finishing the head
            await asyncio.sleep(0.05)
            if writer.is_closing():
                return
            writer.write(b"X")

    dripping = asyncio.create_task(trickle())
    slow = await _closed_within(reader, 5)
    dripping.cancel()
    print(f"slow head closed after {slow:.2f} s")
    writer.close()


def _post(path: str, length: int, *extra: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n".encode()
        + b"".join(extra)
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


async def test_a_body_not_complete_in_time_is_408_and_closed(
    http: HttpServer, sqlite_service: LiveService
) -> None:
    """Whether the application is waiting for the body or has answered already."""
    before = sqlite_service.snapshot()
    auth = f"Authorization: Bearer {sqlite_service.admin_token}\r\n".encode()
    for extra in ((auth,), ()):  # a caller's body and a stranger's small one are both read
        reader, writer = await _open(http)
        writer.write(_post("/v1/tokens", 100, *extra) + b"{")
        assert await _status(reader) == 408
        rest = await reader.read(65536)
        assert b"did not arrive in time" in rest
        await _closed_within(reader, 5)
        writer.close()

    # A stranger's large body is answered (401) before it is read; the rest of
    # it, dribbled, must not keep the connection either.
    reader, writer = await _open(http)
    writer.write(_post("/api/token", 1024 * 1024) + b"{")
    assert await _status(reader) == 401

    async def dribble() -> None:
        while not writer.is_closing():
            writer.write(b" ")
            await asyncio.sleep(0.05)

    dribbling = asyncio.create_task(dribble())
    took = await _closed_within(reader, 5)
    dribbling.cancel()
    print(f"dribbled body after an answer closed after {took:.2f} s (timeout 0.5 s)")
    writer.close()
    assert sqlite_service.snapshot() == before


async def test_a_connection_idle_after_a_body_answered_early_is_closed(
    http: HttpServer,
) -> None:
    """A stranger's 401 comes before its body; the rest, once sent, is discarded,
    and the connection is then idle like any other (uvicorn's keep-alive timer
    was cancelled by the body's bytes and never set again)."""
    reader, writer = await _open(http)
    writer.write(_post("/api/token", 20_000) + b"{")
    assert await _status(reader) == 401
    writer.write(b" " * 19_999)
    await writer.drain()
    idle = await _closed_within(reader, 5)
    print(f"idle after an early answer closed after {idle:.2f} s (keep-alive 1 s)")
    writer.close()


async def test_slow_bodies_cannot_hold_every_connection(http: HttpServer) -> None:
    """Every connection slot taken by a body sent a byte at a time: /healthz
    is answered again within the body timeout."""
    held = []
    for _ in range(LIMITS.max_connections):
        reader, writer = await _open(http)
        writer.write(_post("/v1/tokens", 1000) + b"{")
        held.append((reader, writer))

    async def dribble() -> None:
        while True:
            for _, writer in held:
                if not writer.is_closing():
                    writer.write(b" ")
            await asyncio.sleep(0.05)

    dribbling = asyncio.create_task(dribble())
    try:
        async with asyncio.timeout(5):
            while True:  # refused while the slots are held, then served
                reader, writer = await _open(http)
                writer.write(_head())
                try:
                    if await _status(reader) == 200:
                        break
                except (ValueError, IndexError, ConnectionResetError):
                    pass  # closed unanswered: every slot still held
                finally:
                    writer.close()
        for reader, _ in held:
            assert await _status(reader) == 408
    finally:
        dribbling.cancel()
        for _, writer in held:
            writer.close()


async def test_an_idle_keep_alive_connection_is_closed(http: HttpServer) -> None:
    reader, writer = await _open(http)
    for _ in range(2):  # the connection is kept between requests
        await _healthy(reader, writer)
    idle = await _closed_within(reader, 5)
    print(f"idle keep-alive connection closed after {idle:.2f} s (timeout 1 s)")
    assert idle >= 0.5
    writer.close()


async def test_a_later_head_gets_its_own_full_time(http: HttpServer) -> None:
    """One timer watches a connection's heads: a head that begins just before it
    fires (it was armed for the request before) still gets the whole timeout."""
    for pause in (0.4, 0.7):  # before the first arming fires (0.5 s), and after
        reader, writer = await _open(http)
        await _healthy(reader, writer)
        await asyncio.sleep(pause)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        slow = await _closed_within(reader, 5)
        print(f"a head begun {pause} s after the connection was closed {slow:.2f} s later")
        assert 0.4 <= slow < 1.5
        writer.close()


async def test_each_idle_wait_gets_the_whole_keep_alive_time(http: HttpServer) -> None:
    """One timer watches a connection's idle waits: requests 0.7 s apart (the
    timeout is 1 s) keep it open, though the timer armed after the first answer
    fires in the middle of a later wait."""
    reader, writer = await _open(http)
    for _ in range(5):
        await _healthy(reader, writer)
        await asyncio.sleep(0.7)
    await _healthy(reader, writer)  # still open after 3.5 s: each wait was shorter than 1 s
    idle = await _closed_within(reader, 5)
    print(f"closed {idle:.2f} s after the last answer (timeout 1 s)")
    assert idle >= 0.5
    writer.close()


async def test_blank_lines_do_not_keep_an_idle_connection(http: HttpServer) -> None:
    """Bytes that start no request (the blank lines allowed between requests)
    neither end an idle wait nor hold a connection for ever."""
    reader, writer = await _open(http)
    await _healthy(reader, writer)
    for _ in range(3):
        writer.write(b"\r\n")
        await asyncio.sleep(0.3)
    idle = await _closed_within(reader, 5)
    print(f"closed {idle:.2f} s after the last blank line (keep-alive 1 s, 0.9 s of lines)")
    assert idle < 0.5
    writer.close()


async def test_the_first_head_counts_from_the_connection(http: HttpServer) -> None:
    reader, writer = await _open(http)
    await asyncio.sleep(0.35)
    writer.write(b"G")  # a first byte late in the head timeout buys no more time
    started = time.monotonic()
    await _closed_within(reader, 5)
    after = time.monotonic() - started
    print(f"closed {after:.2f} s after a first byte sent 0.35 s in (head timeout 0.5 s)")
    assert after < 0.4
    writer.close()


async def test_upgrade_requests_are_logged_once(
    http: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    upgrade = _head(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    for _ in range(3):
        reader, writer = await _open(http)
        writer.write(upgrade)
        await _closed_within(reader, 5)  # whatever the answer, the connection ends
        writer.close()
    lines = [r for r in caplog.records if "upgrade" in r.getMessage().lower()]
    assert len(lines) == 1, [r.getMessage() for r in lines]


async def test_connections_past_the_limit_are_refused_and_logged_once(
    http: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    held = [await _open(http) for _ in range(LIMITS.max_connections)]
    for reader, writer in held[:1]:
        writer.write(_head())
        assert await _status(reader) == 200
    caplog.set_level(logging.WARNING, logger="gateway.connections")
    for _ in range(20):
        reader, writer = await _open(http)
        assert await _closed_within(reader, 2) < 2
        writer.close()
    refusals = [r for r in caplog.records if "refusing HTTP connections" in r.getMessage()]
    assert len(refusals) == 1, "one line per interval, not one per connection"

    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.2)
    reader, writer = await _open(http)
    writer.write(_head())
    assert await _status(reader) == 200, "served again once connections are free"
    writer.close()


# gRPC, through a real `tokengrpc serve` with the limits set by flags.

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _GOAWAY = 4, 7


async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, int, bytes]]:
    while True:
        try:
            header = await reader.readexactly(9)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        yield kind, flags, await reader.readexactly(length)


@pytest.fixture
async def limited_grpc(tmp_path: Path) -> AsyncIterator[Serving]:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--grpc-max-connection-idle", "0.5", "--grpc-max-concurrent-streams", "7",
        "--grpc-max-receive-bytes", "65536",
    )  # fmt: skip
    try:
        yield server
    finally:
        assert (await server.stop())[0] == 0


async def test_grpc_announces_the_stream_limit_and_closes_idle_connections(
    limited_grpc: Serving,
) -> None:
    host, _, port = limited_grpc.address("grpc").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(_PREFACE + struct.pack(">I", 0)[1:] + bytes([_SETTINGS, 0]) + bytes(4))
    started = time.monotonic()
    settings: dict[int, int] = {}
    goaway = None
    async with asyncio.timeout(10):
        async for kind, flags, payload in _frames(reader):
            if kind == _SETTINGS and not flags & 1:  # not an ACK
                for offset in range(0, len(payload), 6):
                    key, value = struct.unpack(">HI", payload[offset : offset + 6])
                    settings[key] = value
            if kind == _GOAWAY:
                goaway = time.monotonic() - started
                break
    writer.close()
    assert settings.get(3) == 7, "SETTINGS_MAX_CONCURRENT_STREAMS"
    print(f"idle gRPC connection sent GOAWAY after {goaway} s (limit 0.5 s)")
    assert goaway is not None


async def test_grpc_refuses_a_message_over_the_receive_limit(
    limited_grpc: Serving, tmp_path: Path
) -> None:
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    async with grpc.aio.insecure_channel(limited_grpc.address("grpc")) as channel:
        create = channel.unary_unary(
            "/tokengrpc.v1.TokenService/CreateToken",
            request_serializer=pb.CreateTokenRequest.SerializeToString,
            response_deserializer=pb.CreateTokenResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(pb.CreateTokenRequest(name="x" * 70_000), metadata=bearer(admin))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        created = await create(pb.CreateTokenRequest(name="fits"), metadata=bearer(admin))
        assert created.token.name == "fits"


def _soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line in /proc/PID/limits")


async def test_serve_raises_its_open_file_limit_and_warns_when_short(tmp_path: Path) -> None:
    """The connection limits, not the descriptors, must be what runs out first."""
    args = ("--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
    roomy = await serve("--data-dir", str(tmp_path / "a"), *args, open_files=(256, 8192))
    try:
        assert _soft_open_files(roomy.process.pid) == 8192
    finally:
        code, output = await roomy.stop()
    assert code == 0
    assert "open-file limit" not in "\n".join(roomy.lines) + output

    short = await serve("--data-dir", str(tmp_path / "b"), *args, open_files=(256, 512))
    code, output = await short.stop()
    assert code == 0
    warning = "the open-file limit (512) is below the connection limits (2000)"
    assert warning in "\n".join(short.lines) + output
