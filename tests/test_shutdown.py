"""SIGTERM ends the process within the grace period plus 2 s, whatever clients do;
workers end with their parent, even when it is killed with ``kill -9``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import time
from pathlib import Path

import grpc

from tests import h2
from tests.helpers import bearer
from tests.processes import Serving, children, clean_env, serve
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

GRACE = 1.0


async def _serve_with_http(data: Path, *extra: str) -> Serving:
    return await serve(
        "--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        *extra, env=clean_env(TOKENGRPC_GRACE_PERIOD=str(GRACE)), until="http",
    )  # fmt: skip


async def _use(server: Serving, token: str, times: int) -> None:
    async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        for _ in range(times):
            await stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(token))


async def _timed_stop(server: Serving) -> tuple[int, float]:
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(server.process.wait(), timeout=GRACE + 10)
    finally:
        if server.process.returncode is None:
            server.process.kill()
    return server.process.returncode or 0, time.monotonic() - started


def _usage(data: Path) -> int:
    with sqlite3.connect(data / "tokens.db") as db:
        return int(db.execute("SELECT usage_count FROM tokens WHERE id = 1").fetchone()[0])


async def _connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def test_a_half_sent_body_does_not_hold_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = await _serve_with_http(data)
    admin = (data / "bootstrap-token").read_text().strip()
    await _use(server, admin, 3)
    _, writer = await _connect(server.address("http"))
    writer.write(
        b"POST /v1/tokens HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"name": '
    )
    await writer.drain()
    # A second client that never sends anything at all.
    _, silent = await _connect(server.address("http"))
    await asyncio.sleep(0.3)
    code, took = await _timed_stop(server)
    print(f"exited {took:.2f} s after SIGTERM (grace {GRACE} s)")
    assert code == 0
    assert took <= GRACE + 2
    assert _usage(data) == 3, "usage counts were flushed"
    writer.close()
    silent.close()


async def test_grpc_calls_in_flight_do_not_hold_sigterm(tmp_path: Path) -> None:
    """A raw HTTP/2 client starts a call and never sends its whole message."""
    data = tmp_path / "data"
    server = await _serve_with_http(data)
    admin = (data / "bootstrap-token").read_text().strip()
    await _use(server, admin, 2)
    _, writer = await _connect(server.address("grpc"))
    headers = h2.call_headers(b"/tokengrpc.v1.TokenService/ListTokens")
    partial_message = b"\x00" + (100).to_bytes(4, "big") + b"\x08"  # 100 bytes promised, 1 sent
    writer.write(
        h2.PREFACE
        + h2.frame(h2.SETTINGS, 0, b"")
        + h2.frame(h2.HEADERS, h2.END_HEADERS, headers, 1)  # the stream stays open
        + h2.frame(h2.DATA, 0, partial_message, 1)  # no END_STREAM
    )
    await writer.drain()
    # And a well-formed channel that keeps its connection open.
    channel = grpc.aio.insecure_channel(server.address("grpc"))
    await tokens_pb2_grpc.TokenServiceStub(channel).ListTokens(
        pb.ListTokensRequest(), metadata=bearer(admin)
    )
    await asyncio.sleep(0.3)
    code, took = await _timed_stop(server)
    print(f"exited {took:.2f} s after SIGTERM with a gRPC call in flight (grace {GRACE} s)")
    assert code == 0
    assert took <= GRACE + 2
    assert _usage(data) == 3
    writer.close()
    await channel.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie nobody reaps has exited all the same


def _port_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return False
    return True


async def test_workers_end_when_the_parent_is_killed(tmp_path: Path) -> None:
    server = await _serve_with_http(tmp_path / "data", "--workers", "3")
    workers = children(server.process.pid)
    assert len(workers) == 2
    grpc_address, http_address = server.address("grpc"), server.address("http")
    assert not _port_free(grpc_address)
    assert all(_alive(pid) for pid in workers)
    handles = [os.pidfd_open(pid) for pid in workers]  # readable once the process has exited

    os.kill(server.process.pid, signal.SIGKILL)
    await server.process.wait()
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        for handle in handles:
            exited = asyncio.Event()
            loop.add_reader(handle, exited.set)
            try:
                await asyncio.wait_for(exited.wait(), timeout=10)
            finally:
                loop.remove_reader(handle)
    finally:
        for handle in handles:
            os.close(handle)
    took = time.monotonic() - started
    print(f"workers gone {took:.2f} s after the parent was killed")
    assert not any(_alive(pid) for pid in workers)
    assert _port_free(grpc_address)
    assert _port_free(http_address)
