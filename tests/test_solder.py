"""The solder family against a live server, checked against seed 000."""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest

from gateway.solder import _listed
from tests.fixtures import seeds
from tests.helpers import LiveGateway, bearer
from tests.shapes import same_shape
from tokengrpc.store import NewToken
from tokengrpc.v1 import tokens_pb2 as pb

VOLATILE = {
    "id": "int",
    "created_at": "micro_z",
    "last_used_at": "micro_z",
    "plaintext": "plaintext",
}


async def test_list_matches_the_seed(gateway: LiveGateway) -> None:
    service = gateway.service
    _, ci = await service.create("CI Deploy Token", owner="solder-user", scopes=["write"])
    await service.create("Local Dev Token", owner="solder-user")
    response = await gateway.client.get("/api/token", headers=gateway.auth(ci))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    same_shape(response.json(), seeds.SOLDER_LIST_RESPONSE, VOLATILE)
    first, second = response.json()["tokens"]
    assert first["id"] < second["id"], "oldest first"
    assert "plaintext" not in response.text


async def test_create_matches_the_seed_and_inherits_scopes(gateway: LiveGateway) -> None:
    service = gateway.service
    _, caller = await service.create("caller", owner="sol", scopes=["write", "deploy"])
    response = await gateway.client.post(
        "/api/token", json=seeds.SOLDER_CREATE_REQUEST, headers=gateway.auth(caller)
    )
    assert response.status_code == 201
    same_shape(response.json(), seeds.SOLDER_CREATE_RESPONSE, VOLATILE)
    created = response.json()["token"]
    service.plaintexts.append(created["plaintext"])
    assert created["plaintext"].startswith(f"{created['id']}|")
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=created["id"]), metadata=bearer(service.admin_token)
    )
    assert sorted(got.token.scopes) == ["deploy", "write"]
    assert got.token.owner == "sol"

    by_admin = await gateway.client.post("/api/token", json={"name": "x"}, headers=gateway.admin)
    service.plaintexts.append(by_admin.json()["token"]["plaintext"])
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=by_admin.json()["token"]["id"]), metadata=bearer(service.admin_token)
    )
    assert "admin" not in got.token.scopes


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "The name field is required."),
        ({"name": None}, "The name field is required."),
        ({"name": "   "}, "The name field is required."),
        ({"name": 5}, "The name field must be a string."),
        ({"name": ["a"]}, "The name field must be a string."),
        ({"name": "n" * 256}, "The name field must not be greater than 255 characters."),
    ],
)
async def test_validation_in_laravel_words(
    gateway: LiveGateway, body: dict[str, object], message: str
) -> None:
    before = gateway.service.snapshot()
    response = await gateway.client.post("/api/token", json=body, headers=gateway.admin)
    assert response.status_code == 422
    assert response.json() == {"error": {"name": [message]}}
    if body == {}:
        assert response.json() == seeds.SOLDER_VALIDATION_ERROR
    assert gateway.service.snapshot() == before


async def test_revoke_then_401_then_404(gateway: LiveGateway) -> None:
    service = gateway.service
    token_id, token = await service.create("soon gone", owner="sol", scopes=["write"])
    response = await gateway.client.delete(f"/api/token/{token_id}", headers=gateway.auth(token))
    assert (response.status_code, response.json()) == (200, seeds.SOLDER_REVOKE_RESPONSE)
    # Revocation takes effect immediately: the token itself is now refused.
    after = await gateway.client.get("/api/token", headers=gateway.auth(token))
    assert (after.status_code, after.json()) == (401, {"error": "Unauthenticated."})
    _, other = await service.create("other", owner="sol", scopes=["write"])
    again = await gateway.client.delete(f"/api/token/{token_id}", headers=gateway.auth(other))
    assert (again.status_code, again.json()) == (404, seeds.SOLDER_NOT_FOUND)


@pytest.mark.parametrize("target", ["another owner's", "unknown", "abc", "1.5", "-1", "9" * 30])
async def test_revoke_what_is_not_yours_is_404(gateway: LiveGateway, target: str) -> None:
    service = gateway.service
    theirs, _ = await service.create("theirs", owner="bob")
    path_id = {"another owner's": str(theirs), "unknown": "424242"}.get(target, target)
    before = service.snapshot()
    # Even an admin: this family acts only on the caller's own tokens.
    response = await gateway.client.delete(f"/api/token/{path_id}", headers=gateway.admin)
    assert (response.status_code, response.json()) == (404, seeds.SOLDER_NOT_FOUND)
    assert service.snapshot() == before


async def test_missing_scope_is_403(gateway: LiveGateway) -> None:
    service = gateway.service
    own_id, reader = await service.create("reader", owner="sol")
    before = service.snapshot()
    for response in (
        await gateway.client.post("/api/token", json={"name": "x"}, headers=gateway.auth(reader)),
        await gateway.client.delete(f"/api/token/{own_id}", headers=gateway.auth(reader)),
    ):
        assert (response.status_code, response.json()) == (403, {"error": "Forbidden."})
    assert service.snapshot() == before
    listed = await gateway.client.get("/api/token", headers=gateway.auth(reader))
    assert listed.status_code == 200


async def test_usage_shows_as_last_used_at(gateway: LiveGateway) -> None:
    service = gateway.service
    token_id, token = await service.create("used", owner="u", scopes=["write"])
    await gateway.client.get("/api/token", headers=gateway.auth(token))
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert got.token.usage_count >= 1
    with pytest.raises(grpc.aio.AioRpcError):
        await service.stub.GetToken(pb.GetTokenRequest(id=token_id), metadata=bearer("x"))


async def test_a_long_list_is_streamed_byte_for_byte_as_the_whole_answer(
    gateway: LiveGateway,
) -> None:
    """Past one page of the service, GET /api/token is sent page by page (no
    length), and its bytes are exactly what the whole list encoded at once is."""
    service = gateway.service
    _, caller = await service.create("caller", owner="many", scopes=["write"])
    now = time.time_ns() // 1000
    ids = await service.core.store.insert_many(
        [
            NewToken("many", f"tök {n} \u2603", os.urandom(32), (), True, None, (), now + n)
            for n in range(450)
        ]
    )
    for revoked in (ids[0], ids[199], ids[200], ids[-1]):
        await service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=revoked), metadata=bearer(service.admin_token)
        )
    async with gateway.client.stream("GET", "/api/token", headers=gateway.auth(caller)) as got:
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        assert "content-length" not in got.headers
        body = await got.aread()
    whole = await service.stub.ListTokens(
        pb.ListTokensRequest(owner="many", page_size=1000), metadata=bearer(service.admin_token)
    )
    assert len(whole.tokens) == 447
    expected = {"tokens": [_listed(token) for token in whole.tokens]}
    # The caller's own last use is its first page's (each page is a call that
    # counts one use), as it was when the gateway held the list whole.
    got_caller, expected_caller = json.loads(body)["tokens"][0], expected["tokens"][0]
    assert got_caller["id"] == expected_caller["id"]
    expected_caller["last_used_at"] = got_caller["last_used_at"]
    assert body == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()

    # One page of the service: answered whole, with its length, as before.
    _, few = await service.create("few", owner="few", scopes=["write"])
    small = await gateway.client.get("/api/token", headers=gateway.auth(few))
    assert small.headers["content-length"] == str(len(small.content))
    listing = await service.stub.ListTokens(
        pb.ListTokensRequest(owner="few"), metadata=bearer(service.admin_token)
    )
    assert small.json() == {"tokens": [_listed(token) for token in listing.tokens]}
