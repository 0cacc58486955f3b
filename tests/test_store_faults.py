"""A store that goes bad under a running server: UNAVAILABLE / 503 on every
surface, /readyz 503, and never UNKNOWN, a 500 or SQLite's own words.

The fault is real and one the server actually meets: its database file
overwritten or truncated in place while it holds it open (removing the
file, or ``chmod 000``, would not reach a process that has it open).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import bearer
from tests.processes import Serving, serve
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

_ENGINE_TEXT = re.compile(
    r"(?i:sqlite|database|malformed|disk image)|[A-Z]\w*(Error|Exception)\b|Traceback|<class"
)
SAYS_SO = "the store cannot be read or written right now"


def _spoil(data: Path, how: str) -> None:
    for name in ("tokens.db", "tokens.db-wal"):
        path = data / name
        with path.open("r+b") as handle:
            if how == "truncated":
                handle.truncate(0)
            else:
                handle.write(os.urandom(path.stat().st_size))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Serving]:
    server = await serve(
        "--data-dir", str(tmp_path / "data"), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", until="http",
    )  # fmt: skip
    try:
        yield server
    finally:
        if server.process.returncode is None:
            await server.stop()


async def _readyz(client: httpx.AsyncClient, expected: int) -> httpx.Response:
    """/readyz once it says ``expected`` (the store is looked at once a second)."""
    for _ in range(50):
        response = await client.get("/readyz")
        if response.status_code == expected:
            break
        await asyncio.sleep(0.1)
    return response


@pytest.mark.parametrize("how", ["overwritten", "truncated"])
async def test_a_spoilt_store_is_unavailable_everywhere(
    running: Serving, tmp_path: Path, how: str
) -> None:
    data = tmp_path / "data"
    admin = (data / "bootstrap-token").read_text().strip()
    auth = {"Authorization": f"Bearer {admin}"}
    async with (
        grpc.aio.insecure_channel(running.address("grpc")) as channel,
        httpx.AsyncClient(base_url=f"http://{running.address('http')}", timeout=30) as client,
    ):
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        created = await stub.CreateToken(
            pb.CreateTokenRequest(name="before", owner="ann", scopes=["introspect"]),
            metadata=bearer(admin),
        )
        assert (await _readyz(client, 200)).status_code == 200

        _spoil(data, how)

        calls: dict[str, Awaitable[object]] = {
            "ListTokens": stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(admin)),
            "GetToken": stub.GetToken(
                pb.GetTokenRequest(id=created.token.id), metadata=bearer(admin)
            ),
            "CreateToken": stub.CreateToken(
                pb.CreateTokenRequest(name="after", owner="ann"), metadata=bearer(admin)
            ),
            "IntrospectToken": stub.IntrospectToken(
                pb.IntrospectTokenRequest(token=created.plaintext), metadata=bearer(admin)
            ),
            "by a stranger": stub.ListTokens(
                pb.ListTokensRequest(), metadata=bearer(created.plaintext)
            ),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (name, caught.value)
            details = caught.value.details() or ""
            assert SAYS_SO in details, (name, details)
            assert not _ENGINE_TEXT.search(details), (name, details)

        check = external_auth_pb2_grpc.AuthorizationStub(channel)
        request = external_auth_pb2.CheckRequest()
        request.attributes.request.http.headers["authorization"] = f"Bearer {created.plaintext}"
        request.attributes.source.address.socket_address.address = "127.0.0.1"
        denied = await check.Check(request, metadata=bearer(admin))
        assert denied.denied_response.status.code == 503, denied

        for method, path in (
            ("GET", "/api/token"),
            ("GET", "/api/v1/me/tokens"),
            ("GET", "/_/token"),
            ("GET", "/v1/tokens"),
            ("GET", f"/v1/tokens/{created.token.id}"),
            ("POST", "/v1/tokens"),
        ):
            body = b'{"name": "after"}' if method == "POST" else None
            response = await client.request(method, path, headers=auth, content=body)
            assert response.status_code == 503, (path, response.text)
            assert SAYS_SO in response.text, (path, response.text)
            assert not _ENGINE_TEXT.search(response.text), (path, response.text)
        introspected = await client.post(
            "/oauth/introspect", data={"token": created.plaintext}, headers=auth
        )
        assert introspected.status_code == 503, introspected.text
        assert not _ENGINE_TEXT.search(introspected.text), introspected.text

        ready = await _readyz(client, 503)
        assert ready.status_code == 503, ready.text
        assert not _ENGINE_TEXT.search(ready.text), ready.text
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="tokengrpc.v1.TokenService")
        )
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING

    code, output = await running.stop()
    assert code == 0, output
    # Said, not shouted: no traceback a second from the health watch.
    assert "Traceback" not in output, output


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_removed_store_file_refuses_writes_instead_of_losing_them(
    running: Serving, tmp_path: Path, how: str
) -> None:
    """Writes into a deleted or replaced file would be acknowledged and then lost
    at the next start; the server says so instead, and /readyz turns 503."""
    data = tmp_path / "data"
    admin = (data / "bootstrap-token").read_text().strip()
    async with (
        grpc.aio.insecure_channel(running.address("grpc")) as channel,
        httpx.AsyncClient(base_url=f"http://{running.address('http')}", timeout=30) as client,
    ):
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        await stub.CreateToken(pb.CreateTokenRequest(name="kept"), metadata=bearer(admin))
        db = data / "tokens.db"
        if how == "deleted":
            db.unlink()
        else:
            copy = data / "copy.db"
            copy.write_bytes(db.read_bytes())
            copy.replace(db)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateToken(pb.CreateTokenRequest(name="lost"), metadata=bearer(admin))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "removed or replaced" in (caught.value.details() or "")
        assert not _ENGINE_TEXT.search(caught.value.details() or "")
        response = await client.post(
            "/api/token", json={"name": "lost"}, headers={"Authorization": f"Bearer {admin}"}
        )
        assert response.status_code == 503, response.text
        assert (await _readyz(client, 503)).status_code == 503
    code, output = await running.stop()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output


async def test_a_list_cut_off_by_the_store_mid_stream_cuts_the_connection(
    running: Serving, tmp_path: Path
) -> None:
    """GET /_/token past its first page: the status is sent, then the store
    fails. The client must see a broken answer, never a short list in valid JSON."""
    data = tmp_path / "data"
    admin = (data / "bootstrap-token").read_text().strip()
    async with (
        grpc.aio.insecure_channel(running.address("grpc")) as channel,
        httpx.AsyncClient(base_url=f"http://{running.address('http')}", timeout=30) as client,
    ):
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        for start in range(0, 300, 100):
            await asyncio.gather(*(
                stub.CreateToken(pb.CreateTokenRequest(name=f"svc {n:03}", service_token=True),
                                 metadata=bearer(admin))
                for n in range(start, start + 100)
            ))  # fmt: skip
        # The gateway's first page, read here, is then the read cache's: the
        # answer begins from it, and its second page meets the spoilt file. A
        # read that overlaps a usage flush (a write, every half second) is not
        # kept, so it is read three times in a row: one of them is kept.
        for _ in range(3):
            await stub.ListTokens(
                pb.ListTokensRequest(service_tokens=True, order_by="name", page_size=200),
                metadata=bearer(admin),
            )
        _spoil(data, "truncated")
        # And SQLite's shared index (mapped: overwritten, never shrunk), so the
        # readers' own page caches are stale and the next page meets the file.
        shm = data / "tokens.db-shm"
        with shm.open("r+b") as handle:
            handle.write(os.urandom(shm.stat().st_size))
        received = bytearray()

        async def read_all() -> None:
            async with client.stream(
                "GET", "/_/token", headers={"Authorization": f"Bearer {admin}"}
            ) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    received.extend(chunk)

        with pytest.raises(httpx.RemoteProtocolError):
            await read_all()
        assert received.startswith(b'[{"name":"svc 000",'), received[:300]
        assert not received.endswith(b"]")
    code, output = await running.stop()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
