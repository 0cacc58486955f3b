"""No escalation against the target (contract section 1).

A token holding only ``write`` must not strengthen or sabotage a stronger
token of its own owner: not re-activate it, lift its address restriction or
expiry, rename or re-scope it, nor revoke it, on gRPC or on any HTTP family
that acts on a token. Other owners' tokens stay NOT_FOUND; tokens whose
scopes the caller holds too (itself included) stay within reach.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.helpers import LiveGateway, LiveService, bearer, field_violations
from tokengrpc.v1 import tokens_pb2 as pb


@dataclass
class Owner:
    """alice's tokens: one weak caller, strong targets, and weaker siblings."""

    weak: str
    weak_id: int
    #: Tokens holding a scope ``weak`` lacks, by what makes them strong.
    strong: dict[str, int]
    sibling_id: int  # holds only write, like the caller
    bare_id: int  # holds nothing
    bob_id: int  # another owner's token
    service_id: int


async def _code(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def _set(service: LiveService, token: pb.Token, *paths: str) -> None:
    request = pb.UpdateTokenRequest(token=token, update_mask=_mask(*paths))
    await service.stub.UpdateToken(request, metadata=bearer(service.admin_token))


@pytest.fixture
async def alice(service: LiveService) -> Owner:
    weak_id, weak = await service.create("weak", owner="alice", scopes=["write"])
    strong: dict[str, int] = {}
    for label, scopes in {
        "admin": ["admin", "write"],
        "introspect": ["introspect"],
        "opaque scope": ["write", "deploy"],
        "deactivated admin": ["admin"],
    }.items():
        strong[label], _ = await service.create(label, owner="alice", scopes=scopes)
    strong["restricted admin"], _ = await service.create(
        "restricted admin", owner="alice", scopes=["admin"], allowed_ips=["192.0.2.0/24"]
    )
    strong["expiring admin"], _ = await service.create(
        "expiring admin", owner="alice", scopes=["admin"]
    )
    await _set(service, pb.Token(id=strong["deactivated admin"], active=False), "active")
    soon = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    await _set(service, pb.Token(id=strong["expiring admin"], expire_time=soon), "expire_time")
    sibling_id, _ = await service.create("sibling", owner="alice", scopes=["write"])
    bare_id, _ = await service.create("bare", owner="alice")
    bob_id, _ = await service.create("bob admin", owner="bob", scopes=["admin"])
    service_id, _ = await service.create("svc", service_token=True)
    return Owner(weak, weak_id, strong, sibling_id, bare_id, bob_id, service_id)


def _updates(token_id: int) -> dict[str, pb.UpdateTokenRequest]:
    """One update per mask field, each something a weak token must not do to a strong one."""
    return {
        "name": pb.UpdateTokenRequest(
            token=pb.Token(id=token_id, name="renamed"), update_mask=_mask("name")
        ),
        "scopes": pb.UpdateTokenRequest(  # even a downgrade to the caller's own scopes
            token=pb.Token(id=token_id, scopes=["write"]), update_mask=_mask("scopes")
        ),
        "active": pb.UpdateTokenRequest(
            token=pb.Token(id=token_id, active=True), update_mask=_mask("active")
        ),
        "expire_time": pb.UpdateTokenRequest(
            token=pb.Token(id=token_id), update_mask=_mask("expire_time")
        ),
        "allowed_ips": pb.UpdateTokenRequest(
            token=pb.Token(id=token_id), update_mask=_mask("allowed_ips")
        ),
    }


async def test_a_weak_token_cannot_touch_a_stronger_one_over_grpc(
    service: LiveService, alice: Owner
) -> None:
    before = service.snapshot()
    md = bearer(alice.weak)
    for label, token_id in alice.strong.items():
        for field, request in _updates(token_id).items():
            code = await _code(service.stub.UpdateToken(request, metadata=md))
            assert code == grpc.StatusCode.PERMISSION_DENIED, (label, field)
        revoke = service.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=md)
        assert await _code(revoke) == grpc.StatusCode.PERMISSION_DENIED, label
    assert service.snapshot() == before


async def test_the_bootstrap_token_cannot_be_revoked_by_a_write_token_of_its_owner(
    service: LiveService,
) -> None:
    _, writer = await service.create("writer", owner="admin", scopes=["write"])
    bootstrap = await service.stub.ListTokens(
        pb.ListTokensRequest(), metadata=bearer(service.admin_token)
    )
    bootstrap_id = next(t.id for t in bootstrap.tokens if t.name == "bootstrap")
    before = service.snapshot()
    revoke = service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=bootstrap_id), metadata=bearer(writer)
    )
    assert await _code(revoke) == grpc.StatusCode.PERMISSION_DENIED
    assert service.snapshot() == before


async def test_other_owners_and_service_tokens_stay_not_found(
    service: LiveService, alice: Owner
) -> None:
    before = service.snapshot()
    md = bearer(alice.weak)
    for token_id in (alice.bob_id, alice.service_id):
        for request in _updates(token_id).values():
            code = await _code(service.stub.UpdateToken(request, metadata=md))
            assert code == grpc.StatusCode.NOT_FOUND
        revoke = service.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=md)
        assert await _code(revoke) == grpc.StatusCode.NOT_FOUND
    assert service.snapshot() == before


async def test_equal_or_weaker_tokens_and_itself_stay_within_reach(
    service: LiveService, alice: Owner
) -> None:
    md = bearer(alice.weak)
    for token_id in (alice.sibling_id, alice.bare_id, alice.weak_id):
        request = pb.UpdateTokenRequest(
            token=pb.Token(id=token_id, name=f"renamed {token_id}"), update_mask=_mask("name")
        )
        updated = await service.stub.UpdateToken(request, metadata=md)
        assert updated.token.name == f"renamed {token_id}"
    revoked = await service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=alice.sibling_id), metadata=md
    )
    assert revoked.token.status == pb.TOKEN_STATUS_REVOKED
    # An admin still manages the strong ones.
    admin = bearer(service.admin_token)
    for request in _updates(alice.strong["deactivated admin"]).values():
        await service.stub.UpdateToken(request, metadata=admin)
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=alice.strong["deactivated admin"]), metadata=admin
    )
    assert got.token.active
    assert list(got.token.scopes) == ["write"]


async def test_a_weak_token_cannot_touch_a_stronger_one_over_http(
    gateway: LiveGateway, alice: Owner
) -> None:
    service = gateway.service
    before = service.snapshot()
    weak = gateway.auth(alice.weak)
    for label, token_id in alice.strong.items():
        for body in ({"active": True}, {"name": "renamed"}, {"scopes": ["write"]}):
            patched = await gateway.client.patch(f"/v1/tokens/{token_id}", json=body, headers=weak)
            assert (patched.status_code, patched.json()["code"]) == (403, 7), (label, body)
        cleared = await gateway.client.patch(
            f"/v1/tokens/{token_id}?updateMask=allowedIps,expireTime", json={}, headers=weak
        )
        assert cleared.status_code == 403, (label, cleared.text)
        deleted = await gateway.client.delete(f"/v1/tokens/{token_id}", headers=weak)
        assert (deleted.status_code, deleted.json()["code"]) == (403, 7), label
        solder = await gateway.client.delete(f"/api/token/{token_id}", headers=weak)
        assert (solder.status_code, solder.json()) == (403, {"error": "Forbidden."}), label
        me = await gateway.client.delete(f"/api/v1/me/tokens/{token_id}", headers=weak)
        assert me.status_code == 403, label
        assert me.headers["content-type"].startswith("application/problem+json")
        assert me.json()["title"] == "Forbidden"
    assert service.snapshot() == before
    # The same routes still revoke what the caller may act on.
    assert (await gateway.client.delete(f"/api/token/{alice.sibling_id}", headers=weak)).is_success
    me = await gateway.client.delete(f"/api/v1/me/tokens/{alice.bare_id}", headers=weak)
    assert me.status_code == 204


async def test_an_ownerless_admin_must_name_the_owner_of_a_personal_token(
    service: LiveService,
) -> None:
    _, robot = await service.create("robot", service_token=True, scopes=["admin"])
    before = service.snapshot()
    for request in (
        pb.CreateTokenRequest(name="nobody's"),
        pb.CreateTokenRequest(name="nobody's", inherit_caller_scopes=True),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await service.stub.CreateToken(request, metadata=bearer(robot))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "owner" in field_violations(raised.value)
    assert service.snapshot() == before
    created = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="for carol", owner="carol"), metadata=bearer(robot)
    )
    service.plaintexts.append(created.plaintext)
    assert (created.token.owner, created.token.service_token) == ("carol", False)
