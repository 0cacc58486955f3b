"""``/auth/check`` answered from the request head, by the connection itself
(``gateway.connections``): byte for byte what the ASGI path answers, and
uvicorn's rules kept for what comes around it (pipelining, ``HEAD``,
HTTP/1.0, a store read in the middle, a client that leaves).
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from tests.helpers import LiveGateway, bearer
from tokengrpc.store import Cached
from tokengrpc.v1 import tokens_pb2 as pb

_DATE = re.compile(rb"\r\ndate: [^\r]*")


async def _exchange(gateway: LiveGateway, raw: bytes, answers: int = 1) -> list[bytes]:
    """Send ``raw`` in one write; read ``answers`` whole responses (each with a length)."""
    host, _, port = gateway.http.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        got = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            body = b"" if raw.startswith(b"HEAD") else await reader.readexactly(length)
            got.append(head + body)
        return got
    finally:
        writer.close()


def _undated(response: bytes) -> bytes:
    """The response without its ``date`` line (two answers may straddle a second)."""
    assert _DATE.search(response), response
    return _DATE.sub(b"", response)


def _request(target: str, *lines: str, body: bytes = b"", method: str = "GET") -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: t", *lines]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_the_head_answer_is_the_asgi_answer_byte_for_byte(gateway: LiveGateway) -> None:
    token_id, token = await gateway.service.create("héad", owner="alice", scopes=["read"])
    cases = [
        ("/auth/check", f"Authorization: Bearer {token}"),
        ("/auth/check/app?x=1", f"Authorization: Bearer {token}"),
        ("/auth/check?scope=write", f"Authorization: Bearer {token}"),
        ("/auth/check", "Authorization: Bearer nope"),
    ]
    for target, line in cases:
        # A request with a body is not answered from its head: it takes the ASGI cycle.
        (from_head,) = await _exchange(gateway, _request(target, line))
        (from_asgi,) = await _exchange(gateway, _request(target, line, body=b"ab"))
        assert _undated(from_head) == _undated(from_asgi), target
    (allowed,) = await _exchange(gateway, _request("/auth/check", f"Authorization: Bearer {token}"))
    assert allowed.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"\r\nx-token-id: {token_id}\r\n".encode() in allowed
    assert b"\r\nx-token-name: h%C3%A9ad\r\n" in allowed
    assert b"connection: close" not in allowed


async def test_pipelined_requests_are_answered_in_order(gateway: LiveGateway) -> None:
    _, token = await gateway.service.create("pipe", owner="alice", scopes=["read"])
    # Right after a write the token is not cached: the first check reads the
    # store, and what follows in the same write waits its turn behind it.
    _, fresh = await gateway.service.create("fresh", owner="alice")
    raw = b"".join([
        _request("/auth/check", f"Authorization: Bearer {fresh}"),
        _request("/healthz"),
        _request("/auth/check"),
        _request("/auth/check", f"Authorization: Bearer {token}", "X-Required-Scopes: read"),
        _request("/auth/check", f"Authorization: Bearer {token}", "X-Required-Scopes: write"),
    ])  # fmt: skip
    answers = await _exchange(gateway, raw, answers=5)
    statuses = [int(answer.split(b" ", 2)[1]) for answer in answers]
    assert statuses == [200, 200, 401, 200, 403]
    assert b"x-token-name: fresh" in answers[0]
    assert b"x-token-name: pipe" in answers[3]


async def test_head_and_http_1_0_are_answered_as_uvicorn_would(gateway: LiveGateway) -> None:
    (head,) = await _exchange(gateway, _request("/auth/check", method="HEAD"))
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert head.endswith(b"\r\n\r\n")  # the length of the body it would have, and no body
    assert b"content-length: 29\r\n" in head

    host, _, port = gateway.http.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /auth/check HTTP/1.0\r\n\r\n")
    whole = await asyncio.wait_for(reader.read(), timeout=10)  # to the end: the server closes
    writer.close()
    assert whole.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"\r\nconnection: close\r\n" in whole
    assert whole.endswith(b'{"error": "Unauthenticated."}')


async def test_a_client_that_leaves_gets_nothing_and_breaks_nothing(
    gateway: LiveGateway,
) -> None:
    _, token = await gateway.service.create("gone", owner="alice")
    host, _, port = gateway.http.address.rpartition(":")
    for _ in range(20):  # some leave before their answer is ready (a store read after the write)
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(_request("/auth/check", f"Authorization: Bearer {token}"))
        writer.close()
    await asyncio.sleep(0.2)
    allowed = await gateway.client.get("/auth/check", headers=gateway.auth(token))
    assert allowed.status_code == 200
    await gateway.healthy()


async def test_a_check_the_memory_cannot_answer_waits_for_the_store(
    gateway: LiveGateway,
) -> None:
    """A check is answered at once only from a record in memory: right after a
    write only the store can tell, and nothing is counted until it has."""
    service = gateway.service
    await service.core.usage.stop()  # the flush below writes the uses, not a timer
    if service.core.sweeper is not None:  # its reminder writes would empty the cache at will
        await service.core.sweeper.stop()
    token_id, token = await service.create("waits", owner="alice", scopes=["read"])
    auth = service.core.authenticator
    assert auth.verified_cached(token, None, auth.clock()) is Cached.MISS
    assert auth.verified_cached("1|nope", None, auth.clock()) is None  # no store needed to refuse
    first = await gateway.client.get("/auth/check", headers=gateway.auth(token))
    assert first.status_code == 200  # it waited for the store's read
    found = auth.verified_cached(token, None, auth.clock())
    assert found is not Cached.MISS
    assert found is not None
    assert found[0].id == token_id
    await service.core.usage.flush()
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert got.token.usage_count == 2  # the check, and the answer from memory: once each


@pytest.mark.parametrize("asked", ["head", "body"])
async def test_a_client_that_does_not_read_holds_its_answers_back(
    gateway: LiveGateway, asked: str
) -> None:
    """Checks asked faster than their answers are read, from the head or with a
    body the route reads: the server stops reading rather than buffer answers,
    or queue requests, without end."""
    _, token = await gateway.service.create("unread", owner="alice")
    line = f"Authorization: Bearer {token}"
    one = (
        _request("/auth/check", line)
        if asked == "head"
        else _request("/v1/tokens:check", line, "Content-Type: application/json", body=b"{}")
    )
    host, _, port = gateway.http.address.rpartition(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    _, writer = await asyncio.open_connection(sock=sock)
    burst = one * 50
    sent = 0
    held_back = False
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline:
        writer.write(burst)
        try:
            await asyncio.wait_for(writer.drain(), timeout=0.5)
        except TimeoutError:
            held_back = True  # the server stopped reading us
            break
        sent += len(burst)
    connections = gateway.http.server.server_state.connections
    buffered = max(c.transport.get_write_buffer_size() for c in connections)
    print(f"{sent} bytes of checks sent; the server buffers {buffered} bytes of answers")
    queued = max(len(c.pipeline) for c in connections)
    print(f"and holds {queued} requests queued")
    assert held_back
    assert buffered < 512 * 1024
    assert queued < 5000  # a read's worth of requests at most (256 KiB), not all that came
    writer.close()
    await gateway.healthy()
