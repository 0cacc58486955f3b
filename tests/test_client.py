"""tokengrpc.client against a real tokengrpc server: a small gRPC service and
a small ASGI app guarded by it, as a service author would write them.

Calls to IntrospectToken are counted on the server: each one authenticates
the verifier's own token, so its ``usage_count`` is the number of calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.asgiserver import AsgiServer, Receive, Scope, Send
from tests.helpers import LiveService, bearer
from tokengrpc import auth
from tokengrpc.client import (
    Identity,
    TokenInterceptor,
    TokenMiddleware,
    TokenVerifier,
    VerifierUnavailable,
    current_identity,
)
from tokengrpc.client.identity import bearer as client_bearer
from tokengrpc.v1 import tokens_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def _describe(identity: Identity | None) -> bytes:
    if identity is None:
        return b"null"
    fields = {"id": identity.token_id, "owner": identity.owner, "name": identity.name}
    return json.dumps({**fields, "scopes": sorted(identity.scopes)}).encode()


# --- the example gRPC service: bytes in, JSON bytes out, no proto needed ---


async def who_am_i(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return _describe(current_identity.get())


async def who_am_i_stream(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield _describe(current_identity.get())


EXAMPLE = grpc.method_handlers_generic_handler(
    "example.Example",
    {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
        "Deploy": grpc.unary_unary_rpc_method_handler(who_am_i),
        "Stream": grpc.unary_stream_rpc_method_handler(who_am_i_stream),
    },
)


# --- the example ASGI app ---


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    identity = scope["state"]["token"]
    assert identity is current_identity.get()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _describe(identity)})


async def verifier_token(service: LiveService, scopes: tuple[str, ...] = ("introspect",)) -> str:
    name = f"verifier {len(service.plaintexts)}"
    _, token = await service.create(name, service_token=True, scopes=list(scopes))
    return token


async def usage(service: LiveService, token: str) -> int:
    await service.core.usage.flush()  # counts are batched; write them now
    token_id = int(token.partition("|")[0])
    response = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    return response.token.usage_count


@pytest.fixture
async def verifier(service: LiveService) -> AsyncIterator[TokenVerifier]:
    live = TokenVerifier(service.target, await verifier_token(service), cache_ttl=60)
    yield live
    await live.close()


@pytest.fixture
async def example(verifier: TokenVerifier) -> AsyncIterator[grpc.aio.Channel]:
    """The example service behind TokenInterceptor; Deploy needs ``deploy``."""
    interceptor = TokenInterceptor(verifier, method_scopes={"/example.Example/Deploy": ["deploy"]})
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers([EXAMPLE])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    await channel.close()
    await server.stop(0)


def unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(f"/example.Example/{method}")


async def call(channel: grpc.aio.Channel, method: str, token: str | None = None) -> bytes:
    return await unary(channel, method)(b"", metadata=bearer(token) if token else ())


async def test_interceptor_hands_the_handler_the_identity(
    service: LiveService, example: grpc.aio.Channel
) -> None:
    token_id, token = await service.create("app", owner="alice", scopes=["read", "deploy"])
    assert json.loads(await call(example, "WhoAmI", token)) == {
        "id": token_id,
        "owner": "alice",
        "name": "app",
        "scopes": ["deploy", "read"],
    }
    assert json.loads(await call(example, "Deploy", token))["id"] == token_id
    streaming: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = example.unary_stream(
        "/example.Example/Stream"
    )
    stream = streaming(b"", metadata=bearer(token))
    assert [json.loads(item)["id"] async for item in stream] == [token_id, token_id]


async def test_interceptor_denies(service: LiveService, example: grpc.aio.Channel) -> None:
    _, reader = await service.create("reader", owner="alice", scopes=["read"])
    revoked_id, revoked = await service.create("revoked", owner="alice")
    await service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=revoked_id), metadata=bearer(service.admin_token)
    )
    for token in (None, "not-a-token", revoked, reader[:-1] + "#"):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call(example, "WhoAmI", token)
        assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert not token or token not in (denied.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await unary(example, "WhoAmI")(b"", metadata=bearer(reader) + bearer(reader))
    assert twice.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as lacking:
        await call(example, "Deploy", reader)
    assert lacking.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert json.loads(await call(example, "WhoAmI", reader))["owner"] == "alice"


async def test_asgi_middleware(service: LiveService, verifier: TokenVerifier) -> None:
    app = TokenMiddleware(asgi_app, verifier, required_scopes=["read"])
    server = await AsgiServer.start(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            token_id, reader = await service.create("reader", owner="bob", scopes=["read"])
            _, other = await service.create("other", owner="bob", scopes=["write"])
            allowed = await http.get("/x", headers={"authorization": f"Bearer {reader}"})
            assert allowed.status_code == 200
            assert allowed.json()["id"] == token_id
            missing = await http.get("/x")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert missing.json() == {"error": "Unauthenticated."}
            bad = await http.get("/x", headers={"authorization": "Bearer 1|tgr_nope"})
            assert bad.status_code == 401
            lacking = await http.get("/x", headers={"authorization": f"Bearer {other}"})
            assert lacking.status_code == 403
            assert lacking.json() == {"error": "Forbidden."}
    finally:
        await server.stop()


async def test_a_cache_hit_makes_no_call(service: LiveService) -> None:
    own = await verifier_token(service)
    _, token = await service.create("app", owner="alice")
    cached = TokenVerifier(service.target, own, cache_ttl=60)
    try:
        for _ in range(5):
            assert await cached.verify(token, "127.0.0.1") is not None
        assert await usage(service, own) == 1
        assert await usage(service, token) == 1
        assert cached.cache_info().hits == 4
    finally:
        await cached.close()
    uncached = TokenVerifier(service.target, own, cache_ttl=0)
    try:
        for _ in range(3):
            assert await uncached.verify(token) is not None
        assert await usage(service, own) == 4
    finally:
        await uncached.close()


async def test_concurrent_lookups_of_one_token_make_one_call(service: LiveService) -> None:
    own = await verifier_token(service)
    _, token = await service.create("app", owner="alice")
    verifier = TokenVerifier(service.target, own)
    try:
        answers = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
        assert all(answer is not None for answer in answers)
        # Rejected answers are cached too (negative_ttl), and collapsed alike.
        unknown = "99999|" + token.partition("|")[2]
        assert await asyncio.gather(*(verifier.verify(unknown) for _ in range(10))) == [None] * 10
        assert await verifier.verify(unknown) is None
        assert await usage(service, own) == 2
    finally:
        await verifier.close()


async def test_the_cache_is_bounded_and_holds_no_plaintext(service: LiveService) -> None:
    verifier = TokenVerifier(service.target, await verifier_token(service), max_entries=3)
    try:
        tokens = [(await service.create(f"t{i}", owner="alice"))[1] for i in range(6)]
        for token in tokens:
            assert await verifier.verify(token) is not None
        info = verifier.cache_info()
        assert info.entries == 3
        assert info.calls == 6
        # The newest stay; the oldest were dropped and are asked for again.
        assert await verifier.verify(tokens[-1]) is not None
        assert verifier.cache_info().calls == 6
        keys = b"".join(verifier.cache_keys())
        for token in tokens:
            assert token.encode() not in keys
            assert token.partition("|")[2].encode() not in keys
    finally:
        await verifier.close()


async def test_made_up_tokens_neither_evict_real_ones_nor_call_for_garbage(
    service: LiveService,
) -> None:
    own = await verifier_token(service)
    _, token = await service.create("app", owner="alice")
    verifier = TokenVerifier(service.target, own, cache_ttl=60, max_entries=2, max_negative=3)
    try:
        assert await verifier.verify(token) is not None
        # Anyone can compute a checksum: these cost a call each, but live in
        # their own bound and leave the real entry where it is.
        secret = token.partition("|")[2]
        for made_up in range(100_000, 100_020):
            assert await verifier.verify(f"{made_up}|{secret}") is None
        assert verifier.cache_info().calls == 21
        assert len(verifier.cache_keys()) == 1 + 3
        assert await verifier.verify(token) is not None
        assert verifier.cache_info().calls == 21
        # A failing checksum is refused without asking.
        for garbage in ("1|tgr_nope", token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 60):
            assert await verifier.verify(garbage) is None
        assert verifier.cache_info().calls == 21
    finally:
        await verifier.close()


async def test_a_revocation_is_seen_within_cache_ttl(service: LiveService) -> None:
    ttl = 0.3
    verifier = TokenVerifier(service.target, await verifier_token(service), cache_ttl=ttl)
    token_id, token = await service.create("app", owner="alice")
    try:
        assert await verifier.verify(token) is not None
        await service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=token_id), metadata=bearer(service.admin_token)
        )
        await asyncio.sleep(ttl + 0.05)
        assert await verifier.verify(token) is None
    finally:
        await verifier.close()


async def test_allowed_ips_are_checked_against_the_client_address(service: LiveService) -> None:
    verifier = TokenVerifier(service.target, await verifier_token(service))
    _, token = await service.create("app", owner="alice", allowed_ips=["10.0.0.0/8"])
    try:
        assert await verifier.verify(token, "10.1.2.3") is not None
        assert await verifier.verify(token, "127.0.0.1") is None
        assert await verifier.verify(token) is None
    finally:
        await verifier.close()


async def test_fails_closed_and_says_why(
    service: LiveService, caplog: pytest.LogCaptureFixture
) -> None:
    _, token = await service.create("app", owner="alice")
    weak = TokenVerifier(service.target, await verifier_token(service, ("read",)))
    try:
        with caplog.at_level(logging.WARNING, logger="tokengrpc.client"):
            assert await weak.verify(token) is None
        assert "PERMISSION_DENIED" in caplog.text
    finally:
        await weak.close()

    caplog.clear()
    down = TokenVerifier(service.target, await verifier_token(service), timeout=5)
    try:
        await service.server.stop(0)
        with caplog.at_level(logging.WARNING, logger="tokengrpc.client"):
            assert await down.verify(token) is None
        assert "UNAVAILABLE" in caplog.text
        assert token.partition("|")[2] not in caplog.text
        assert down.cache_info().entries == 0  # a failure is never remembered
    finally:
        await down.close()


def test_bearer_is_read_as_the_server_reads_it() -> None:
    for value in (
        None,
        "",
        "Bearer x",
        "bearer  x ",
        "Basic x",
        "Bearer",
        "Bearer ",
        " Bearer a b",
    ):
        assert client_bearer(value) == auth.bearer(value), value


_BLOCKED = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"aiosqlite", "cryptography", "uvicorn", "httptools"}:
            raise ImportError(f"{name} is blocked")
        return None

sys.meta_path.insert(0, Block())
import grpc
from tokengrpc.client import TokenInterceptor, TokenMiddleware, TokenVerifier

async def main():
    verifier = TokenVerifier("127.0.0.1:1", "1|x")
    TokenInterceptor(verifier)
    TokenMiddleware(lambda *a: None, verifier)
    await verifier.close()

import asyncio
asyncio.run(main())
assert not any(m.startswith(("tokengrpc.store", "tokengrpc.server")) for m in sys.modules)
print("imported")
"""


def test_the_client_needs_none_of_the_server_dependencies() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowAnswers(grpc.aio.UnaryUnaryClientInterceptor):
    """Every answer arrives ``delay`` seconds (on ``clock``) after it was asked for."""

    def __init__(self, clock: Clock, delay: float) -> None:
        self.clock = clock
        self.delay = delay

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        answer = await (await continuation(client_call_details, request))
        self.clock.now += self.delay
        return answer


@pytest.mark.parametrize("kind", ["accepted", "rejected"])
async def test_lifetimes_count_from_the_send_not_the_arrival(
    service: LiveService, kind: str
) -> None:
    """An answer that took 0.9 s to come has 0.1 s of its 1 s left: a revocation
    made while it travelled is seen 1 s after the question, not 1.9 s."""
    clock = Clock()
    channel = grpc.aio.insecure_channel(service.target, interceptors=[SlowAnswers(clock, 0.9)])
    verifier = TokenVerifier(
        channel, await verifier_token(service), cache_ttl=1, negative_ttl=1, clock=clock
    )
    token_id, token = await service.create("app", owner="alice")
    if kind == "rejected":
        await service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=token_id), metadata=bearer(service.admin_token)
        )
    expected = (await verifier.verify(token)) is not None
    assert expected is (kind == "accepted")
    assert clock.now == 1000.9  # the answer came late
    clock.now = 1000.95  # within a second of the answer, but not of the question
    assert (await verifier.verify(token) is not None) is expected
    assert verifier.cache_info().calls == 1
    clock.now = 1001.05
    assert (await verifier.verify(token) is not None) is expected
    assert verifier.cache_info().calls == 2  # asked again
    await channel.close()


def _verify_in_loop_after_loop(target: str, own: str, token: str) -> list[bool]:
    """As a module does at import time: a verifier made where no loop runs, then
    used by one loop after another (uvicorn's, a test suite's loop per test)."""
    verifier = TokenVerifier(target, own, cache_ttl=0)
    answers = [asyncio.run(verifier.verify(token)) is not None for _ in range(3)]
    asyncio.run(verifier.close())
    return answers


async def test_a_verifier_made_outside_any_loop_serves_every_loop(service: LiveService) -> None:
    own = await verifier_token(service)
    _, token = await service.create("app", owner="alice")
    # In a thread of its own, so that this loop (the server's) keeps running.
    answers = await asyncio.to_thread(_verify_in_loop_after_loop, service.target, own, token)
    assert answers == [True, True, True]
    assert await usage(service, own) == 3


async def test_any_failure_of_the_lookup_fails_closed_and_says_nothing(
    service: LiveService, caplog: pytest.LogCaptureFixture
) -> None:
    own = await verifier_token(service)
    _, token = await service.create("app", owner="alice", scopes=["read"])
    secret = token.partition("|")[2]

    def broken() -> grpc.aio.Channel:
        raise RuntimeError(f"a message quoting {secret}")

    verifier = TokenVerifier(broken, own)
    with caplog.at_level(logging.WARNING, logger="tokengrpc.client"):
        assert await verifier.verify(token) is None
        with pytest.raises(VerifierUnavailable):
            await verifier.identify(token)
        app = TokenMiddleware(asgi_app, verifier)
        server = await AsgiServer.start(app)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                answer = await http.get("/x", headers={"authorization": f"Bearer {token}"})
        finally:
            await server.stop()
        assert answer.status_code == 503
        assert answer.content == b'{"error": "Service unavailable."}'
        assert "www-authenticate" not in answer.headers

        guarded = grpc.aio.server(interceptors=[TokenInterceptor(verifier)])
        guarded.add_generic_rpc_handlers([EXAMPLE])
        port = guarded.add_insecure_port("127.0.0.1:0")
        await guarded.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await call(channel, "WhoAmI", token)
        finally:
            await guarded.stop(0)
        assert denied.value.code() is grpc.StatusCode.UNAVAILABLE
        assert denied.value.details() == "token verification is unavailable"
    assert "RuntimeError" in caplog.text  # the operator learns what failed
    assert secret not in caplog.text  # but not what its message quoted
    assert verifier.cache_info().entries == 0
