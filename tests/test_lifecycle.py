"""Rotation with grace, revocation by value, audit events and the last-use
address, over a real gRPC server (the HTTP side: test_lifecycle_http.py)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.helpers import LiveService, bearer, field_violations
from tokengrpc.v1 import tokens_pb2 as pb

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


async def _works(service: LiveService, token: str) -> bool:
    """Whether ``token`` authenticates a call right now."""
    try:
        await service.stub.ListTokens(pb.ListTokensRequest(page_size=1), metadata=bearer(token))
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        return True
    assert code == UNAUTHENTICATED
    return False


async def _rotate(
    service: LiveService, by: str, grace: float = 0, **selector: int | str
) -> pb.RotateTokenResponse:
    request = pb.RotateTokenRequest(**selector)  # type: ignore[arg-type]
    if grace:
        request.grace_period.FromNanoseconds(int(grace * 1e9))
    response = await service.stub.RotateToken(request, metadata=bearer(by))
    service.plaintexts.append(response.plaintext)
    return response


async def _events(service: LiveService, by: str, token_id: int = 0) -> list[pb.TokenEvent]:
    response = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(token_id=token_id, page_size=1000), metadata=bearer(by)
    )
    return list(response.events)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_old_and_new_secret_work_inside_the_grace_period_only_the_new_after(
    service: LiveService,
) -> None:
    token_id, old = await service.create("ci", owner="alice", scopes=["write"])
    rotated = await _rotate(service, service.admin_token, grace=1.0, id=token_id)
    new = rotated.plaintext
    assert new != old
    assert new.startswith(f"{token_id}|")
    assert rotated.token.id == token_id
    assert rotated.token.name == "ci"
    assert list(rotated.token.scopes) == ["write"]
    assert await _works(service, old)
    assert await _works(service, new)
    service.clock.advance(1.2)  # past the one-second grace, once
    assert not await _works(service, old)
    assert await _works(service, new)


async def test_a_replaced_secret_can_be_used_but_changes_nothing(service: LiveService) -> None:
    """A leaked secret is why tokens get rotated: inside its grace it must not be
    able to rotate again (locking the owner out), mint tokens that outlive the
    grace, change tokens or read a value back."""
    token_id, old = await service.create("ci", owner="alice", scopes=["write", "introspect"])
    admin_id, old_admin = await service.create("ops", owner="ops", scopes=["admin"])
    new = (await _rotate(service, service.admin_token, grace=600, id=token_id)).plaintext
    new_admin = (await _rotate(service, service.admin_token, grace=600, id=admin_id)).plaintext
    service_id, _ = await service.create("svc", service_token=True)
    before = service.snapshot()
    refused = [
        service.stub.RotateToken(pb.RotateTokenRequest(id=token_id), metadata=bearer(old)),
        service.stub.RotateToken(pb.RotateTokenRequest(id=admin_id), metadata=bearer(old_admin)),
        service.stub.CreateToken(pb.CreateTokenRequest(name="spare"), metadata=bearer(old)),
        service.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=bearer(old)),
        service.stub.GetTokenValue(
            pb.GetTokenValueRequest(id=service_id), metadata=bearer(old_admin)
        ),
        service.stub.CreateToken(
            pb.CreateTokenRequest(name="spare", owner="x"), metadata=bearer(old_admin)
        ),
    ]
    for call in refused:
        assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED
    assert service.snapshot() == before
    # Still a working credential for what it did before: reads and introspection.
    assert await _works(service, old)
    answer = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=new), metadata=bearer(old)
    )
    assert answer.active
    # The new secrets keep every power.
    created = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="spare"), metadata=bearer(new)
    )
    service.plaintexts.append(created.plaintext)
    rotated = await _rotate(service, new_admin, id=admin_id)
    service.plaintexts.append(rotated.plaintext)


async def test_grace_zero_ends_the_old_secret_at_once(service: LiveService) -> None:
    token_id, old = await service.create("ci", owner="alice", scopes=["write"])
    new = (await _rotate(service, service.admin_token, id=token_id)).plaintext
    assert not await _works(service, old)
    assert await _works(service, new)
    answer = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=old), metadata=bearer(service.admin_token)
    )
    assert not answer.active


async def test_a_revocation_ends_the_old_secret_inside_its_grace(service: LiveService) -> None:
    token_id, old = await service.create("ci", owner="alice", scopes=["write"])
    new = (await _rotate(service, service.admin_token, grace=600, id=token_id)).plaintext
    await service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert not await _works(service, old)
    assert not await _works(service, new)


async def test_rotating_a_revoked_token_is_failed_precondition_and_changes_nothing(
    service: LiveService,
) -> None:
    token_id, _ = await service.create("ci", owner="alice", scopes=["write"])
    await service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    before = service.snapshot()
    code = await _code(
        service.stub.RotateToken(
            pb.RotateTokenRequest(id=token_id), metadata=bearer(service.admin_token)
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert service.snapshot() == before


async def test_a_token_rotates_itself_even_without_write(service: LiveService) -> None:
    token_id, old = await service.create("plain", owner="alice")  # no scopes at all
    other_id, _ = await service.create("other", owner="alice")
    new = (await _rotate(service, old, id=token_id)).plaintext
    assert not await _works(service, old)
    assert await _works(service, new)
    # Another token of its owner needs write.
    code = await _code(
        service.stub.RotateToken(pb.RotateTokenRequest(id=other_id), metadata=bearer(new))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    (event,) = [e for e in await _events(service, service.admin_token, token_id) if e.action == 3]
    assert event.actor_token_id == token_id
    assert event.actor_owner == "alice"


async def test_no_escalation_through_rotation(service: LiveService) -> None:
    _, writer = await service.create("writer", owner="alice", scopes=["write"])
    strong_id, _ = await service.create("strong", owner="alice", scopes=["write", "introspect"])
    foreign_id, _ = await service.create("foreign", owner="bob", scopes=["write"])
    await service.create("svc", service_token=True, scopes=["write"])
    before = service.snapshot()
    rotate = service.stub.RotateToken
    assert (
        await _code(rotate(pb.RotateTokenRequest(id=strong_id), metadata=bearer(writer)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await _code(rotate(pb.RotateTokenRequest(id=foreign_id), metadata=bearer(writer)))
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await _code(rotate(pb.RotateTokenRequest(name="svc"), metadata=bearer(writer)))
        == grpc.StatusCode.PERMISSION_DENIED  # names select service tokens: admin only
    )
    assert service.snapshot() == before


async def test_a_rotated_service_token_s_value_is_the_new_plaintext(service: LiveService) -> None:
    _, old = await service.create("deploy", service_token=True, scopes=["write"])
    rotated = await _rotate(service, service.admin_token, name="deploy")
    value = await service.stub.GetTokenValue(
        pb.GetTokenValueRequest(name="deploy"), metadata=bearer(service.admin_token)
    )
    assert value.value == rotated.plaintext != old
    events = await _events(service, service.admin_token, rotated.token.id)
    assert [e.action for e in events] == [
        pb.TOKEN_EVENT_ACTION_VALUE_READ,
        pb.TOKEN_EVENT_ACTION_ROTATED,
        pb.TOKEN_EVENT_ACTION_CREATED,
    ]
    assert list(events[1].changed_fields) == ["secret", "value"]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-1, 0), (0, -1), (7 * 86400 + 1, 0), (7 * 86400, 1000), (1, -5), (-1, 5), (0, 10**9)],
)
async def test_bad_grace_periods_are_invalid_argument_and_change_nothing(
    service: LiveService, seconds: int, nanos: int
) -> None:
    token_id, plaintext = await service.create("ci", owner="alice", scopes=["write"])
    before = service.snapshot()
    request = pb.RotateTokenRequest(
        id=token_id, grace_period=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.RotateToken(request, metadata=bearer(service.admin_token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"grace_period"}
    assert service.snapshot() == before
    assert await _works(service, plaintext)


async def test_seven_days_is_the_longest_grace(service: LiveService) -> None:
    token_id, old = await service.create("ci", owner="alice", scopes=["write"])
    await _rotate(service, service.admin_token, grace=7 * 86400, id=token_id)
    assert await _works(service, old)


async def test_revoke_by_value_needs_no_auth_and_answers_alike(service: LiveService) -> None:
    token_id, plaintext = await service.create("leaked", owner="alice", scopes=["write"])
    revoke = service.stub.RevokeTokenByValue
    answer = await revoke(pb.RevokeTokenByValueRequest(token=plaintext))  # no metadata at all
    assert answer == pb.RevokeTokenByValueResponse()
    assert not await _works(service, plaintext)
    before = service.snapshot()
    unknown = plaintext.replace(f"{token_id}|", "999999|", 1)
    tampered = plaintext[:-7] + ("A" if plaintext[-7] != "A" else "B") + plaintext[-6:]
    for other in (plaintext, unknown, "not a token", tampered, "1|" + "x" * 5000):
        assert await revoke(pb.RevokeTokenByValueRequest(token=other)) == answer
    assert service.snapshot() == before, "already revoked, unknown or malformed: nothing written"
    (event,) = [e for e in await _events(service, service.admin_token, token_id) if e.action == 4]
    assert event.actor_token_id == 0
    assert event.actor_owner == ""
    assert event.client_ip == "127.0.0.1"


async def test_revoke_by_value_with_a_bad_authorization_still_works(service: LiveService) -> None:
    _, plaintext = await service.create("leaked", owner="alice")
    await service.stub.RevokeTokenByValue(
        pb.RevokeTokenByValueRequest(token=plaintext), metadata=bearer("garbage")
    )
    assert not await _works(service, plaintext)


async def test_revoke_by_value_of_the_old_secret_ends_only_its_grace(service: LiveService) -> None:
    """Whoever holds a replaced (perhaps leaked) secret may kill that secret,
    never the token and the secret that replaced it."""
    token_id, old = await service.create("ci", owner="alice", scopes=["write"])
    new = (await _rotate(service, service.admin_token, grace=600, id=token_id)).plaintext
    await service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest(token=old))
    assert not await _works(service, old)
    assert await _works(service, new)
    token = (
        await service.stub.GetToken(
            pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
        )
    ).token
    assert token.status == pb.TOKEN_STATUS_ACTIVE
    (event, *_) = await _events(service, service.admin_token, token_id)
    assert (event.action, list(event.changed_fields), event.actor_token_id) == (
        pb.TOKEN_EVENT_ACTION_REVOKED,
        ["previous_secret"],
        0,
    )
    # Once more changes nothing: the secret is gone, and so is its grace.
    before = service.snapshot()
    await service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest(token=old))
    assert service.snapshot() == before
    # The current secret, revoked by value, still revokes the token.
    await service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest(token=new))
    assert not await _works(service, new)


async def test_revoke_by_value_of_an_expired_grace_secret_does_nothing(
    service: LiveService,
) -> None:
    token_id, old = await service.create("ci", owner="alice", scopes=["write"])
    new = (await _rotate(service, service.admin_token, id=token_id)).plaintext
    await service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest(token=old))
    assert await _works(service, new)


async def test_revoke_by_value_without_a_token_is_invalid_argument(service: LiveService) -> None:
    before = service.snapshot()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"token"}
    assert service.snapshot() == before


async def test_every_action_writes_exactly_one_event(service: LiveService) -> None:
    admin = service.admin_token
    admin_id = int(admin.partition("|")[0])
    boot = await _events(service, admin, admin_id)
    assert [(e.action, e.actor_token_id, e.actor_owner) for e in boot] == [
        (pb.TOKEN_EVENT_ACTION_CREATED, 0, "admin")
    ]
    token_id, _ = await service.create("ci", owner="alice", scopes=["write"])
    update = pb.UpdateTokenRequest(token=pb.Token(id=token_id, name="ci2", active=False))
    update.update_mask.paths.extend(["name", "active"])
    await service.stub.UpdateToken(update, metadata=bearer(admin))
    await _rotate(service, admin, id=token_id)
    await service.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=bearer(admin))
    events = await _events(service, admin, token_id)
    assert [(e.action, list(e.changed_fields)) for e in events] == [
        (pb.TOKEN_EVENT_ACTION_REVOKED, ["revoke_time"]),
        (pb.TOKEN_EVENT_ACTION_ROTATED, ["secret"]),
        (pb.TOKEN_EVENT_ACTION_UPDATED, ["name", "active"]),
        (pb.TOKEN_EVENT_ACTION_CREATED, []),
    ]
    for event in events:
        assert event.token_id == token_id
        assert event.actor_token_id == admin_id
        assert event.actor_owner == "admin"
        assert event.client_ip == "127.0.0.1"
    times = [e.event_time.ToMicroseconds() for e in events]
    assert times == sorted(times, reverse=True)


async def test_a_failed_action_writes_no_event(service: LiveService) -> None:
    admin = service.admin_token
    await service.create("svc", service_token=True)
    token_id, _ = await service.create("ci", owner="alice", scopes=["write"])
    before = service.snapshot()
    failing = [
        service.stub.CreateToken(
            pb.CreateTokenRequest(name="svc", service_token=True), metadata=bearer(admin)
        ),
        service.stub.UpdateToken(
            pb.UpdateTokenRequest(token=pb.Token(id=token_id)), metadata=bearer(admin)
        ),
        service.stub.RotateToken(pb.RotateTokenRequest(id=10**6), metadata=bearer(admin)),
        service.stub.RevokeToken(pb.RevokeTokenRequest(id=10**6), metadata=bearer(admin)),
        service.stub.GetTokenValue(pb.GetTokenValueRequest(id=token_id), metadata=bearer(admin)),
    ]
    for call in failing:
        assert await _code(call) != grpc.StatusCode.OK
    assert service.snapshot() == before


async def test_a_non_admin_sees_only_its_owner_s_events(service: LiveService) -> None:
    alice_id, alice = await service.create("a", owner="alice", scopes=["write"])
    bob_id, _ = await service.create("b", owner="bob", scopes=["write"])
    svc_id, _ = await service.create("svc", service_token=True)
    await _rotate(service, alice, id=alice_id)
    alice = service.plaintexts[-1]
    seen = {e.token_id for e in await _events(service, alice)}
    assert seen == {alice_id}
    for hidden in (bob_id, svc_id):
        code = await _code(
            service.stub.ListTokenEvents(
                pb.ListTokenEventsRequest(token_id=hidden), metadata=bearer(alice)
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND
    everything = {e.token_id for e in await _events(service, service.admin_token)}
    assert {alice_id, bob_id, svc_id} <= everything


async def test_event_pages_are_stable_while_new_events_arrive(service: LiveService) -> None:
    admin = service.admin_token
    for index in range(5):
        await service.create(f"t{index}", owner="alice")
    listed = pb.ListTokenEventsRequest(page_size=2)
    first = await service.stub.ListTokenEvents(listed, metadata=bearer(admin))
    seen = [e.token_id for e in first.events]
    page_token = first.next_page_token
    while page_token:
        await service.create("late", owner="alice")  # newer than every page: never in them
        page = await service.stub.ListTokenEvents(
            pb.ListTokenEventsRequest(page_size=2, page_token=page_token), metadata=bearer(admin)
        )
        seen += [e.token_id for e in page.events]
        page_token = page.next_page_token
    admin_id = int(admin.partition("|")[0])
    assert seen == [6, 5, 4, 3, 2, admin_id]


async def test_bad_event_listing_input_is_invalid_argument(service: LiveService) -> None:
    admin = service.admin_token
    _, alice = await service.create("a", owner="alice", scopes=["write"])
    for index in range(3):
        await service.create(f"t{index}", owner="alice")
    page = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(page_size=1), metadata=bearer(admin)
    )
    token = page.next_page_token
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    before = service.snapshot()
    cases: list[tuple[pb.ListTokenEventsRequest, str, str]] = [
        (pb.ListTokenEventsRequest(page_size=-1), admin, "page_size"),
        (pb.ListTokenEventsRequest(token_id=-5), admin, "token_id"),
        (pb.ListTokenEventsRequest(page_token=tampered), admin, "page_token"),
        (pb.ListTokenEventsRequest(page_token="x" * 10_000), admin, "page_token"),
        # A page of the admin's listing is not one of alice's, nor of one token's.
        (pb.ListTokenEventsRequest(page_token=token), alice, "page_token"),
        (pb.ListTokenEventsRequest(page_token=token, token_id=1), admin, "page_token"),
    ]
    for request, by, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.stub.ListTokenEvents(request, metadata=bearer(by))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(caught.value)) == {field}
    huge = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(page_size=2**31 - 1), metadata=bearer(admin)
    )
    assert len(huge.events) == 5
    assert not huge.next_page_token
    assert service.snapshot() == before


async def test_events_need_authentication(service: LiveService) -> None:
    code = await _code(service.stub.ListTokenEvents(pb.ListTokenEventsRequest()))
    assert code == UNAUTHENTICATED
    code = await _code(service.stub.RotateToken(pb.RotateTokenRequest(id=1)))
    assert code == UNAUTHENTICATED


async def test_last_use_ip_is_the_address_of_the_last_use(service: LiveService) -> None:
    token_id, plaintext = await service.create("ci", owner="alice")
    fresh = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert fresh.token.last_use_ip == ""
    assert await _works(service, plaintext)
    pending = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert pending.token.last_use_ip == "127.0.0.1"  # counted before the flush writes it
    await service.core.usage.flush()
    written = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert written.token.last_use_ip == "127.0.0.1"
    assert written.token.usage_count == 1
