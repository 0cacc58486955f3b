"""``POST /v1/leaks/github``: signed leak reports revoke our tokens (CONTRACT section 13).

Keys are made here (ECDSA P-256) and served by a small HTTP server of the
test's own, in GitHub's ``meta/public_keys/secret_scanning`` format, or from
a file; the service and the gateway are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.duration_pb2 import Duration
from openapi_spec_validator import validate

from gateway.limits import LEAK_REPORT_BODY
from tests.conftest import running as serving
from tests.helpers import LiveGateway, LiveService, bearer, start_gateway, stop_gateway
from tests.processes import serve
from tests.processes import start_gateway as start_gateway_command
from tokengrpc.leakkeys import REFETCH_INTERVAL
from tokengrpc.leaks import MAX_REPORT_TOKENS
from tokengrpc.v1 import tokens_pb2 as pb

PATH = "/v1/leaks/github"
KEY_ID = "f9525bf080f75b3506ca1ead061add62b8633a346606dc5fe544e29231c6ee0d"
URL = "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/foo"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def key_document(keys: dict[str, ec.EllipticCurvePrivateKey]) -> bytes:
    """GitHub's ``meta/public_keys/secret_scanning`` document for ``keys``."""
    entries = [
        {"key_identifier": name, "key": pem(key), "is_current": True} for name, key in keys.items()
    ]
    return json.dumps({"public_keys": entries}).encode()


def sign(key: ec.EllipticCurvePrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def report(*tokens: str, url: str = URL, source: str = "content") -> bytes:
    kind = "tokengrpc_token"
    entries = [{"token": t, "type": kind, "url": url, "source": source} for t in tokens]
    return json.dumps(entries).encode()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class KeyServer:
    """A small HTTP server answering every GET with ``document`` (or ``status``)."""

    document: bytes
    status: int = 200
    requests: int = 0
    server: asyncio.Server | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/meta/public_keys/secret_scanning"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            body = self.document if self.status == 200 else b"{}"
            head = (
                f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@dataclass
class Leaks:
    gateway: LiveGateway
    keys: KeyServer
    key: ec.EllipticCurvePrivateKey

    @property
    def service(self) -> LiveService:
        return self.gateway.service

    async def send(self, body: bytes, *, signature: str | None = None, key_id: str = KEY_ID) -> Any:
        headers = {
            "Github-Public-Key-Identifier": key_id,
            "Github-Public-Key-Signature": signature or sign(self.key, body),
            "content-type": "application/json",
        }
        return await self.gateway.client.post(PATH, content=body, headers=headers)

    async def status(self, token_id: int) -> int:
        answer = await self.service.stub.GetToken(
            pb.GetTokenRequest(id=token_id), metadata=bearer(self.service.admin_token)
        )
        return answer.token.status

    async def events(self, token_id: int) -> list[dict[str, Any]]:
        answer = await self.gateway.client.get(
            f"/v1/tokens/{token_id}/events", headers=self.gateway.admin
        )
        assert answer.status_code == 200, answer.text
        events: list[dict[str, Any]] = answer.json()["events"]
        return events


@contextlib.asynccontextmanager
async def running(tmp_path: Path, mode: str, source: str) -> AsyncIterator[LiveGateway]:
    """A gateway in front of a service that takes its keys from ``source``."""
    async with serving(tmp_path / "data", "", github_scanning_keys=source) as service:
        live = await start_gateway(service, mode, leak_reports=True)
        try:
            yield live
        finally:
            await stop_gateway(live)


@pytest.fixture(params=["network", "in-process"])
async def leaks(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Leaks]:
    """A gateway whose service takes its keys from a key server of the test's own."""
    key = new_key()
    keys = KeyServer(key_document({KEY_ID: key}))
    await keys.start()
    try:
        async with running(tmp_path, request.param, keys.url) as live:
            yield Leaks(live, keys, key)
    finally:
        await keys.stop()


async def test_a_signed_report_revokes_our_token_with_reason_leaked(leaks: Leaks) -> None:
    token_id, plaintext = await leaks.service.create("ci", owner="alice")
    answer = await leaks.send(report(plaintext, source="commit"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {"token_hash": sha256(plaintext), "token_type": "tokengrpc_token", "label": "true_positive"}
    ]
    assert plaintext.partition("|")[2] not in answer.text
    assert await leaks.status(token_id) == pb.TOKEN_STATUS_REVOKED
    (revoked, *_) = await leaks.events(token_id)
    assert revoked["action"] == "TOKEN_EVENT_ACTION_REVOKED"
    assert revoked["reason"] == "leaked"
    assert revoked["detail"] == f"{URL} (commit)"
    assert revoked["actorTokenId"] == "0"
    assert leaks.keys.requests == 1


async def test_false_positives_are_labelled_and_left_alone(leaks: Leaks) -> None:
    live_id, live = await leaks.service.create("live", owner="alice")
    gone_id, gone = await leaks.service.create("gone", owner="alice")
    await leaks.service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=gone_id), metadata=bearer(leaks.service.admin_token)
    )
    other_id, _ = await leaks.service.create("other", owner="bob")
    # Well-formed, its checksum holds, but the id is another token's: no stored hash matches.
    forged = f"{other_id}|{live.partition('|')[2]}"
    unknown = f"987654|{live.partition('|')[2]}"
    tokens = [gone, forged, unknown, "not a token at all", "\ud800", live.replace("|", "||")]
    answer = await leaks.send(report(*tokens))
    assert answer.status_code == 200, answer.text
    feedback = answer.json()
    assert [item["label"] for item in feedback] == ["false_positive"] * len(tokens)
    assert [item["token_hash"] for item in feedback[:4]] == [sha256(t) for t in tokens[:4]]
    for token_id in (live_id, other_id):
        assert await leaks.status(token_id) == pb.TOKEN_STATUS_ACTIVE
    assert [e.get("reason", "") for e in await leaks.events(gone_id)] == ["", ""]


async def test_a_token_reported_twice_is_one_revocation(leaks: Leaks) -> None:
    token_id, plaintext = await leaks.service.create("ci", owner="alice")
    answer = await leaks.send(report(plaintext, plaintext))
    assert [item["label"] for item in answer.json()] == ["true_positive"] * 2
    assert [e["action"] for e in await leaks.events(token_id)] == [
        "TOKEN_EVENT_ACTION_REVOKED",
        "TOKEN_EVENT_ACTION_CREATED",
    ]


async def test_a_replaced_secret_in_its_grace_only_loses_its_grace(leaks: Leaks) -> None:
    token_id, old = await leaks.service.create("ci", owner="alice")
    rotated = await leaks.service.stub.RotateToken(
        pb.RotateTokenRequest(id=token_id, grace_period=Duration(seconds=3600)),
        metadata=bearer(leaks.service.admin_token),
    )
    new = rotated.plaintext
    leaks.service.plaintexts.append(new)
    answer = await leaks.send(report(old))
    assert answer.json()[0]["label"] == "true_positive"
    assert await leaks.status(token_id) == pb.TOKEN_STATUS_ACTIVE
    works = leaks.gateway.client.get("/v1/tokens", headers=leaks.gateway.auth(new))
    assert (await works).status_code == 200
    refused = leaks.gateway.client.get("/v1/tokens", headers=leaks.gateway.auth(old))
    assert (await refused).status_code == 401
    (ended, *_) = await leaks.events(token_id)
    assert (ended["changedFields"], ended["reason"]) == (["previous_secret"], "leaked")
    # Once its grace is over, the old secret is nobody's: a false positive.
    again = await leaks.send(report(old))
    assert again.json()[0]["label"] == "false_positive"


async def test_an_unverified_report_revokes_nothing(leaks: Leaks) -> None:
    token_id, plaintext = await leaks.service.create("ci", owner="alice")
    body = report(plaintext)
    altered = body.replace(b"content", b"c0ntent")
    tampered = {
        "another key": (body, sign(new_key(), body)),
        "body altered after signing": (altered, sign(leaks.key, body)),
        "replayed on another body": (body, sign(leaks.key, report("1|tgr_whatever"))),
        "not base64": (body, "!!!!"),
        "no signature": (body, None),
    }
    before = leaks.service.snapshot()
    for case, (sent, signature) in tampered.items():
        if signature is None:
            headers = {"Github-Public-Key-Identifier": KEY_ID}
            answer = await leaks.gateway.client.post(PATH, content=sent, headers=headers)
        else:
            answer = await leaks.send(sent, signature=signature)
        assert answer.status_code == 401, (case, answer.text)
        assert answer.json()["message"] == "the report's signature does not verify", case
        assert plaintext.partition("|")[2] not in answer.text
    assert leaks.service.snapshot() == before
    assert await leaks.status(token_id) == pb.TOKEN_STATUS_ACTIVE


async def test_headers_are_checked_before_the_body_is_read(leaks: Leaks) -> None:
    """A stranger without a well-formed signature gets 401 for a head alone."""
    host, port = leaks.gateway.http.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n"
        "github-public-key-identifier: a, b\r\ngithub-public-key-signature: AAAA\r\n\r\n".encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=5)
    assert status.startswith(b"HTTP/1.1 401"), status
    writer.close()
    assert leaks.keys.requests == 0


async def test_unknown_key_ids_refetch_at_most_once_a_minute(leaks: Leaks) -> None:
    token_id, plaintext = await leaks.service.create("ci", owner="alice")
    assert (await leaks.send(report("1|x"))).status_code == 200
    assert leaks.keys.requests == 1  # the first report fills the cache
    # A new key, published after that: unknown until the source is read again.
    newer = new_key()
    leaks.keys.document = key_document({KEY_ID: leaks.key, "newer": newer})
    body = report(plaintext)
    early = await leaks.send(body, signature=sign(newer, body), key_id="newer")
    assert early.status_code == 401
    assert leaks.keys.requests == 1  # within the minute of the last read
    leaks.service.clock.advance(REFETCH_INTERVAL / 1e6)
    for stranger in ("made-up-1", "made-up-2", "made-up-3"):
        answer = await leaks.send(body, key_id=stranger)
        assert answer.status_code == 401
    assert leaks.keys.requests == 2  # one read for the first unknown id, none after
    assert await leaks.status(token_id) == pb.TOKEN_STATUS_ACTIVE
    # The read found the newer key: reports it signs now verify, without another read.
    later = await leaks.send(body, signature=sign(newer, body), key_id="newer")
    assert later.json()[0]["label"] == "true_positive"
    assert leaks.keys.requests == 2


async def test_keys_that_cannot_be_fetched_are_503(leaks: Leaks) -> None:
    token_id, plaintext = await leaks.service.create("ci", owner="alice")
    leaks.keys.status = 500
    before = leaks.service.snapshot()
    answer = await leaks.send(report(plaintext))
    assert answer.status_code == 503, answer.text
    # Still 503 within the minute (no read), and once the source is back, verified.
    assert (await leaks.send(report(plaintext))).status_code == 503
    assert leaks.keys.requests == 1
    assert leaks.service.snapshot() == before
    assert await leaks.status(token_id) == pb.TOKEN_STATUS_ACTIVE
    leaks.keys.status = 200
    leaks.service.clock.advance(REFETCH_INTERVAL / 1e6)
    assert (await leaks.send(report(plaintext))).json()[0]["label"] == "true_positive"


async def test_an_unreachable_key_source_is_503(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with running(tmp_path, "in-process", f"http://127.0.0.1:{port}/keys") as live:
        token_id, plaintext = await live.service.create("ci", owner="alice")
        body = report(plaintext)
        headers = {
            "Github-Public-Key-Identifier": KEY_ID,
            "Github-Public-Key-Signature": sign(new_key(), body),
        }
        answer = await live.client.post(PATH, content=body, headers=headers)
        assert answer.status_code == 503, answer.text
        got = await live.client.get(f"/v1/tokens/{token_id}", headers=live.admin)
        assert got.json()["status"] == "TOKEN_STATUS_ACTIVE", got.text


async def test_a_verified_body_that_is_not_a_report_is_400(leaks: Leaks) -> None:
    bodies = {
        "not JSON": b"not json",
        "an object": b'{"token": "1|x"}',
        "no token": b'[{"type": "t"}]',
        "a number": b'[{"token": 1, "type": "t"}]',
        "a list for a url": b'[{"token": "1|x", "type": "t", "url": []}]',
        "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    }
    before = leaks.service.snapshot()
    for case, body in bodies.items():
        answer = await leaks.send(body)
        assert answer.status_code == 400, (case, answer.text)
        assert "1|x" not in answer.text
    assert leaks.service.snapshot() == before


async def test_too_long_a_report_is_refused_whole(leaks: Leaks) -> None:
    token_id, plaintext = await leaks.service.create("ci", owner="alice")
    body = report(plaintext, *["x"] * MAX_REPORT_TOKENS)
    before = leaks.service.snapshot()
    answer = await leaks.send(body)
    assert answer.status_code == 400, answer.text
    assert f"more than {MAX_REPORT_TOKENS} tokens" in answer.json()["message"]
    assert leaks.service.snapshot() == before
    assert await leaks.status(token_id) == pb.TOKEN_STATUS_ACTIVE
    # The limit itself is taken.
    full = await leaks.send(report(plaintext, *["x"] * (MAX_REPORT_TOKENS - 1)))
    assert full.status_code == 200
    assert full.json()[0]["label"] == "true_positive"


async def test_too_large_a_body_is_413(leaks: Leaks) -> None:
    body = report("x" * LEAK_REPORT_BODY)
    answer = await leaks.send(body)
    assert answer.status_code == 413, answer.text
    assert leaks.keys.requests == 0


async def test_keys_from_a_file(tmp_path: Path) -> None:
    key = new_key()
    source = tmp_path / "keys.json"
    source.write_bytes(key_document({"scanner-1": key}))
    async with running(tmp_path, "in-process", str(source)) as live:
        token_id, plaintext = await live.service.create("ci", owner="alice")
        body = report(plaintext, url="https://git.example/repo/blob/main/.env", source="scanner")
        headers = {
            "Github-Public-Key-Identifier": "scanner-1",
            "Github-Public-Key-Signature": sign(key, body),
        }
        answer = await live.client.post(PATH, content=body, headers=headers)
        assert answer.json()[0]["label"] == "true_positive", answer.text
        events = await live.client.get(f"/v1/tokens/{token_id}/events", headers=live.admin)
        assert events.json()["events"][0]["detail"] == (
            "https://git.example/repo/blob/main/.env (scanner)"
        )
        source.unlink()
        live.service.clock.advance(REFETCH_INTERVAL / 1e6)
        headers["Github-Public-Key-Identifier"] = "scanner-2"
        assert (await live.client.post(PATH, content=body, headers=headers)).status_code == 503


async def test_without_a_key_source_there_is_no_route(gateway: LiveGateway) -> None:
    token_id, plaintext = await gateway.service.create("ci", owner="alice")
    key = new_key()
    body = report(plaintext)
    signature = sign(key, body)
    headers = {"Github-Public-Key-Identifier": KEY_ID, "Github-Public-Key-Signature": signature}
    answer = await gateway.client.post(PATH, content=body, headers=headers)
    assert answer.status_code == 404
    # Over gRPC, nothing verifies a report either.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.service.stub.ReportLeakedTokens(
            pb.ReportLeakedTokensRequest(report=body, key_identifier=KEY_ID, signature=signature)
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    got = await gateway.client.get(f"/v1/tokens/{token_id}", headers=gateway.admin)
    assert got.json()["status"] == "TOKEN_STATUS_ACTIVE", got.text


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_reports_over_grpc_on_each_engine(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str
) -> None:
    """The RPC behind the route, on both engines: revoke, end a grace, label the rest."""
    url = request.getfixturevalue("database_url") if engine == "postgres" else ""
    key = new_key()
    source = tmp_path / "keys.json"
    source.write_bytes(key_document({KEY_ID: key}))
    async with serving(tmp_path / "data", url, github_scanning_keys=str(source)) as service:
        admin = bearer(service.admin_token)
        leaked_id, leaked = await service.create("leaked", owner="alice")
        rotated_id, old = await service.create("rotated", owner="alice")
        rotation = await service.stub.RotateToken(
            pb.RotateTokenRequest(id=rotated_id, grace_period=Duration(seconds=600)), metadata=admin
        )
        service.plaintexts.append(rotation.plaintext)
        body = report(leaked, old, "nothing")
        answer = await service.stub.ReportLeakedTokens(
            pb.ReportLeakedTokensRequest(
                report=body, key_identifier=KEY_ID, signature=sign(key, body)
            )
        )
        assert [(f.token_hash, f.label) for f in answer.feedback] == [
            (sha256(leaked), pb.LEAK_LABEL_TRUE_POSITIVE),
            (sha256(old), pb.LEAK_LABEL_TRUE_POSITIVE),
            (sha256("nothing"), pb.LEAK_LABEL_FALSE_POSITIVE),
        ]
        got = await service.stub.GetToken(pb.GetTokenRequest(id=leaked_id), metadata=admin)
        assert got.token.status == pb.TOKEN_STATUS_REVOKED
        got = await service.stub.GetToken(pb.GetTokenRequest(id=rotated_id), metadata=admin)
        assert got.token.status == pb.TOKEN_STATUS_ACTIVE
        events = await service.stub.ListTokenEvents(pb.ListTokenEventsRequest(), metadata=admin)
        leaked_events = [e for e in events.events if e.reason == "leaked"]
        assert sorted((e.token_id, e.detail) for e in leaked_events) == [
            (leaked_id, f"{URL} (content)"),
            (rotated_id, f"{URL} (content)"),
        ]


async def test_serve_and_gateway_commands_take_reports(tmp_path: Path) -> None:
    """The setting reaches ``serve``'s route and service, and turns on a separate gateway's."""
    key = new_key()
    source = tmp_path / "keys.json"
    source.write_bytes(key_document({"scanner": key}))
    data = tmp_path / "data"
    server = await serve(
        "--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--github-scanning-keys", str(source), until="http",
    )  # fmt: skip
    alone = await start_gateway_command(server.address("grpc"), "--github-scanning-keys", "on")
    try:
        admin = (data / "bootstrap-token").read_text().strip()

        async def send(address: str, body: bytes) -> httpx.Response:
            headers = {
                "Github-Public-Key-Identifier": "scanner",
                "Github-Public-Key-Signature": sign(key, body),
            }
            async with httpx.AsyncClient(base_url=f"http://{address}") as client:
                return await client.post(PATH, content=body, headers=headers)

        assert (await send(alone.address("http"), report("1|x"))).json()[0]["label"] == (
            "false_positive"
        )
        answer = await send(server.address("http"), report(admin))
        assert answer.json()[0]["label"] == "true_positive"
        async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
            listed = await client.get("/v1/tokens", headers={"Authorization": f"Bearer {admin}"})
            assert listed.status_code == 401
    finally:
        await alone.stop()
        _, output = await server.stop()
    assert admin.partition("|")[2] not in output


async def test_the_document_describes_the_route_when_served(leaks: Leaks) -> None:
    served = (await leaks.gateway.client.get("/openapi.json")).json()
    validate(served)
    operation = served["paths"][PATH]["post"]
    assert operation["security"] == []
    assert {p["name"] for p in operation["parameters"]} == {
        "Github-Public-Key-Identifier",
        "Github-Public-Key-Signature",
    }
