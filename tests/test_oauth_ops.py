"""RFC 7662 introspection over HTTP, and the health routes."""

from __future__ import annotations

import asyncio
import time

from google.protobuf import timestamp_pb2

from tests.helpers import LiveGateway, bearer
from tokengrpc.v1 import tokens_pb2 as pb


async def test_introspection_claims(gateway: LiveGateway) -> None:
    service = gateway.service
    _, caller = await service.create("resource server", scopes=["introspect"])
    token_id, subject = await service.create("app", owner="user:42", scopes=["read", "write"])
    response = await gateway.client.post(
        "/oauth/introspect",
        data={"token": subject, "token_type_hint": "access_token"},
        headers=gateway.auth(caller),
    )
    assert response.status_code == 200
    claims = response.json()
    assert claims == {
        "active": True,
        "token_type": "Bearer",
        "sub": "user:42",
        "client_id": "app",
        "scope": "read write",
        "iat": claims["iat"],
        "jti": str(token_id),
    }
    assert abs(claims["iat"] - time.time()) < 60
    assert response.headers["cache-control"] == "no-store"
    got = await service.stub.GetToken(pb.GetTokenRequest(id=token_id), metadata=bearer(subject))
    assert got.token.usage_count >= 1, "an introspection counts a use"


async def test_expiry_claim_and_inactive_answers(gateway: LiveGateway) -> None:
    service = gateway.service
    expire = int(time.time()) + 3600
    created = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="exp", expire_time=timestamp_pb2.Timestamp(seconds=expire)),
        metadata=bearer(service.admin_token),
    )
    service.plaintexts.append(created.plaintext)
    answer = await gateway.client.post(
        "/oauth/introspect", data={"token": created.plaintext}, headers=gateway.admin
    )
    assert answer.json()["exp"] == expire
    for junk in ("garbage", created.plaintext[:-2] + "xx", "1|" + "a" * 50):
        response = await gateway.client.post(
            "/oauth/introspect", data={"token": junk}, headers=gateway.admin
        )
        assert response.json() == {"active": False}


async def test_introspection_errors(gateway: LiveGateway) -> None:
    _, plain = await gateway.service.create("no scopes")
    cases = [
        ({}, {"token": "x"}, 401, "invalid_token"),
        (gateway.auth("bad"), {"token": "x"}, 401, "invalid_token"),
        (gateway.auth(plain), {"token": "x"}, 403, "insufficient_scope"),
        (gateway.admin, {}, 400, "invalid_request"),
        (gateway.admin, {"token": ""}, 400, "invalid_request"),
        ({}, {}, 401, "invalid_token"),
    ]
    for headers, form, status, error in cases:
        response = await gateway.client.post("/oauth/introspect", data=form, headers=headers)
        assert response.status_code == status
        assert response.json()["error"] == error
    big = await gateway.client.post(
        "/oauth/introspect", content=b"token=" + b"a" * (2 * 1024 * 1024), headers=gateway.admin
    )
    assert big.status_code == 413


async def test_health_routes(gateway: LiveGateway) -> None:
    assert (await gateway.client.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_readyz_fails_when_the_store_does_not_answer(gateway: LiveGateway) -> None:
    await gateway.service.core.store.close()  # the store goes away under the server
    for _ in range(50):
        ready = await gateway.client.get("/readyz")
        if ready.status_code == 503:
            break
        await asyncio.sleep(0.1)
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert (await gateway.client.get("/healthz")).status_code == 200
