"""Policies over time (CONTRACT section 12) over a real gRPC server, on each engine:
not_before, the maximum secret age, and why an event happened. The clock the
service reads is moved by the test; tests/test_policies_live.py runs them end
to end in real time."""

from __future__ import annotations

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.helpers import MAX_SECRET_AGE, LiveService, bearer, field_violations
from tokengrpc.v1 import tokens_pb2 as pb

MINUTE = 60 * 1_000_000


def _stamp(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


async def _authenticates(service: LiveService, token: str) -> bool:
    """Whether ``token`` works on every surface that checks one: a gRPC call,
    introspection and Envoy's Check (they must agree)."""
    try:
        await service.stub.ListTokens(pb.ListTokensRequest(page_size=1), metadata=bearer(token))
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        code = grpc.StatusCode.OK
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED)
    called = code == grpc.StatusCode.OK
    admin = bearer(service.admin_token)
    introspected = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=token), metadata=admin
    )
    check = external_auth_pb2_grpc.AuthorizationStub(service.channel)
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.headers["authorization"] = f"Bearer {token}"
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    checked = (await check.Check(request, metadata=admin)).status.code == 0
    assert called == introspected.active == checked
    return called


async def _create(service: LiveService, **fields: object) -> pb.CreateTokenResponse:
    response = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="t", owner="alice", **fields),  # type: ignore[arg-type]
        metadata=bearer(service.admin_token),
    )
    service.plaintexts.append(response.plaintext)
    return response


async def _refused(call: object) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(caught.value)


async def _update(service: LiveService, token: pb.Token, *paths: str) -> pb.UpdateTokenResponse:
    return await service.stub.UpdateToken(
        pb.UpdateTokenRequest(token=token, update_mask=field_mask_pb2.FieldMask(paths=paths)),
        metadata=bearer(service.admin_token),
    )


async def _renew_admin(service: LiveService) -> None:
    """A new administrator token for the rest of the test: the bootstrap token's
    secret ages like any other (passing the maximum age would stop it too)."""
    _, plaintext = await service.create("ops", owner="ops", scopes=["admin"])
    service.admin_token = plaintext


async def _get(service: LiveService, token_id: int) -> pb.Token:
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    return got.token


async def test_a_token_is_pending_until_its_not_before(service: LiveService) -> None:
    now = service.clock()
    created = await _create(service, not_before=_stamp(now + MINUTE))
    assert created.token.status == pb.TOKEN_STATUS_PENDING
    assert created.token.not_before.ToMicroseconds() == now + MINUTE
    assert not await _authenticates(service, created.plaintext)
    service.clock.advance(61)
    assert await _authenticates(service, created.plaintext)
    assert (await _get(service, created.token.id)).status == pb.TOKEN_STATUS_ACTIVE


async def test_not_before_must_come_before_the_expiry_and_a_past_one_changes_nothing(
    service: LiveService,
) -> None:
    now = service.clock()
    for not_before in (now + 2 * MINUTE, now + 3 * MINUTE):
        violations = await _refused(
            _create(service, not_before=_stamp(not_before), expire_time=_stamp(now + 2 * MINUTE))
        )
        assert violations == {"not_before": "must be before the expiry"}
    past = await _create(service, not_before=_stamp(now - MINUTE))
    assert past.token.status == pb.TOKEN_STATUS_ACTIVE
    assert await _authenticates(service, past.plaintext)


async def test_not_before_is_updated_under_its_mask(service: LiveService) -> None:
    now = service.clock()
    created = await _create(service, expire_time=_stamp(now + 10 * MINUTE))
    token = pb.Token(id=created.token.id, not_before=_stamp(now + MINUTE))
    updated = await _update(service, token, "not_before")
    assert updated.token.status == pb.TOKEN_STATUS_PENDING
    assert not await _authenticates(service, created.plaintext)
    events = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(token_id=created.token.id), metadata=bearer(service.admin_token)
    )
    assert list(events.events[0].changed_fields) == ["not_before"]
    late = pb.Token(id=created.token.id, not_before=_stamp(now + 10 * MINUTE))
    assert await _refused(_update(service, late, "not_before")) == {
        "token.not_before": "must be before the expiry"
    }
    early = pb.Token(id=created.token.id, expire_time=_stamp(now + MINUTE))
    assert await _refused(_update(service, early, "expire_time")) == {
        "token.expire_time": "must be after not_before"
    }
    cleared = await _update(service, pb.Token(id=created.token.id), "not_before")
    assert cleared.token.status == pb.TOKEN_STATUS_ACTIVE
    assert not cleared.token.HasField("not_before")
    assert await _authenticates(service, created.plaintext)


async def test_a_secret_stops_at_its_maximum_age_and_rotation_renews_it(
    aged_service: LiveService,
) -> None:
    service = aged_service
    created = await _create(service)
    now = created.token.create_time.ToMicroseconds()
    assert created.token.expire_time.ToMicroseconds() == now + MAX_SECRET_AGE
    sooner = await _create(service, expire_time=_stamp(now + MINUTE))
    assert sooner.token.expire_time.ToMicroseconds() == now + MINUTE
    assert await _authenticates(service, created.plaintext)
    service.clock.advance(1800)
    await _renew_admin(service)
    service.clock.advance(1200)
    assert await _authenticates(service, created.plaintext)
    service.clock.advance(600)
    assert not await _authenticates(service, created.plaintext)
    assert (await _get(service, created.token.id)).status == pb.TOKEN_STATUS_EXPIRED
    rotated = await service.stub.RotateToken(
        pb.RotateTokenRequest(id=created.token.id), metadata=bearer(service.admin_token)
    )
    service.plaintexts.append(rotated.plaintext)
    assert rotated.token.status == pb.TOKEN_STATUS_ACTIVE
    rotate_time = rotated.token.update_time.ToMicroseconds()
    assert rotated.token.expire_time.ToMicroseconds() == rotate_time + MAX_SECRET_AGE
    assert await _authenticates(service, rotated.plaintext)
    assert not await _authenticates(service, created.plaintext)


async def test_a_replaced_secret_reports_its_grace_end_as_its_expiry(
    aged_service: LiveService,
) -> None:
    service = aged_service
    created = await _create(service, scopes=["write"])
    request = pb.RotateTokenRequest(id=created.token.id)
    request.grace_period.FromSeconds(60)
    rotated = await service.stub.RotateToken(request, metadata=bearer(service.admin_token))
    service.plaintexts.append(rotated.plaintext)
    admin = bearer(service.admin_token)
    old = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=created.plaintext), metadata=admin
    )
    new = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=rotated.plaintext), metadata=admin
    )
    rotate_time = rotated.token.update_time.ToMicroseconds()
    assert old.token.expire_time.ToMicroseconds() == rotate_time + 60 * 1_000_000
    assert new.token.expire_time.ToMicroseconds() == rotate_time + MAX_SECRET_AGE


async def test_asking_past_the_maximum_age_is_refused_naming_the_setting(
    aged_service: LiveService,
) -> None:
    service = aged_service
    now = service.clock()
    later = now + MAX_SECRET_AGE + MINUTE
    violations = await _refused(_create(service, expire_time=_stamp(later)))
    assert list(violations) == ["expire_time"]
    said = violations["expire_time"]
    assert "--max-secret-age" in said
    assert "TOKENGRPC_MAX_SECRET_AGE" in said
    assert "1h" in said
    assert str(later // 1_000_000) not in said
    created = await _create(service)
    token = pb.Token(id=created.token.id, expire_time=_stamp(later))
    assert list(await _refused(_update(service, token, "expire_time"))) == ["token.expire_time"]


async def test_the_reported_expiry_sent_back_stores_nothing(aged_service: LiveService) -> None:
    """A read-modify-write client sends back what it read: that is no request for
    a later expiry, and the maximum age's end never becomes the token's own."""
    service = aged_service
    created = await _create(service)
    before = service.snapshot()
    token = await _get(service, created.token.id)
    echoed = await _update(service, token, "expire_time")
    assert echoed.token.expire_time == token.expire_time
    assert service.snapshot() == before
    sooner = pb.Token(id=token.id, expire_time=_stamp(token.expire_time.ToMicroseconds() - 1))
    assert (await _update(service, sooner, "expire_time")).token.expire_time == sooner.expire_time
    assert service.snapshot() != before


async def test_revocation_by_value_says_why(service: LiveService) -> None:
    admin = bearer(service.admin_token)
    token_id, plaintext = await service.create("leaky", owner="alice", scopes=["write"])
    request = pb.RotateTokenRequest(id=token_id)
    request.grace_period.FromSeconds(600)
    rotated = await service.stub.RotateToken(request, metadata=admin)
    service.plaintexts.append(rotated.plaintext)
    await service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest(token=plaintext))
    await service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest(token=rotated.plaintext))
    events = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(token_id=token_id), metadata=admin
    )
    reasons = [(e.action, e.reason, e.detail) for e in events.events]
    revoked = pb.TOKEN_EVENT_ACTION_REVOKED
    assert reasons == [
        (revoked, "by_value", ""),  # the token
        (revoked, "by_value", ""),  # the replaced secret's grace
        (pb.TOKEN_EVENT_ACTION_ROTATED, "", ""),
        (pb.TOKEN_EVENT_ACTION_CREATED, "", ""),
    ]
