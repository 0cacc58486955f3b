"""TokenService behaviour, over a real gRPC channel to a live server."""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests import rows
from tests.helpers import LiveService, bearer, field_violations, start_twin, stop_service
from tokengrpc.v1 import tokens_pb2 as pb

PLAINTEXT = re.compile(r"^(\d+)\|tgr_[0-9A-Za-z]{46}$")


def _future(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(time.time()) + seconds)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_create_returns_the_plaintext_once_and_it_authenticates(
    service: LiveService,
) -> None:
    response = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="  CI Deploy  ", scopes=["write", "deploy:prod"]),
        metadata=bearer(service.admin_token),
    )
    service.plaintexts.append(response.plaintext)
    match = PLAINTEXT.match(response.plaintext)
    assert match is not None
    token = response.token
    assert int(match.group(1)) == token.id
    assert token.name == "CI Deploy"
    assert token.owner == "admin"
    assert list(token.scopes) == ["write", "deploy:prod"]
    assert token.status == pb.TOKEN_STATUS_ACTIVE
    assert not token.service_token
    assert not token.HasField("expire_time")

    listed = await service.stub.ListTokens(
        pb.ListTokensRequest(), metadata=bearer(response.plaintext)
    )
    assert [t.name for t in listed.tokens] == ["bootstrap", "CI Deploy"]
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=token.id), metadata=bearer(service.admin_token)
    )
    assert got.token.name == "CI Deploy"
    assert "plaintext" not in str(got)


async def test_inactive_then_reactivated(service: LiveService) -> None:
    token_id, plaintext = await service.create("toggle", scopes=["write"])
    await service.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=pb.Token(id=token_id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=bearer(service.admin_token),
    )
    listing = service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
    assert await _code(listing) == grpc.StatusCode.UNAUTHENTICATED
    got = await service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert got.token.status == pb.TOKEN_STATUS_INACTIVE
    await service.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=pb.Token(id=token_id, active=True),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=bearer(service.admin_token),
    )
    await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))


async def test_update_changes_only_masked_fields(service: LiveService) -> None:
    token_id, _ = await service.create("before", scopes=["write", "x"])
    expiry = _future(3600)
    updated = await service.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=pb.Token(
                id=token_id,
                name="after",
                scopes=["ignored"],
                expire_time=expiry,
                allowed_ips=["10.0.0.0/24", "203.0.113.12"],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "expire_time", "allowed_ips"]),
        ),
        metadata=bearer(service.admin_token),
    )
    token = updated.token
    assert token.name == "after"
    assert list(token.scopes) == ["write", "x"]
    assert token.expire_time.seconds == expiry.seconds
    assert list(token.allowed_ips) == ["10.0.0.0/24", "203.0.113.12"]
    assert token.update_time.ToMicroseconds() > token.create_time.ToMicroseconds()

    cleared = await service.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=pb.Token(id=token_id),
            update_mask=field_mask_pb2.FieldMask(paths=["expire_time", "allowed_ips"]),
        ),
        metadata=bearer(service.admin_token),
    )
    assert not cleared.token.HasField("expire_time")
    assert list(cleared.token.allowed_ips) == []


async def test_revocation_is_immediate_and_kept(service: LiveService) -> None:
    token_id, plaintext = await service.create("short-lived", scopes=["write"])
    await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
    revoked = await service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=token_id), metadata=bearer(plaintext)
    )
    assert revoked.token.status == pb.TOKEN_STATUS_REVOKED
    assert revoked.token.HasField("revoke_time")
    call = service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
    assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED

    admin = bearer(service.admin_token)
    got = await service.stub.GetToken(pb.GetTokenRequest(id=token_id), metadata=admin)
    assert got.token.status == pb.TOKEN_STATUS_REVOKED
    live = await service.stub.ListTokens(pb.ListTokensRequest(), metadata=admin)
    assert token_id not in [t.id for t in live.tokens]
    everything = await service.stub.ListTokens(
        pb.ListTokensRequest(show_revoked=True), metadata=admin
    )
    assert token_id in [t.id for t in everything.tokens]
    again = service.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=admin)
    assert await _code(again) == grpc.StatusCode.NOT_FOUND


async def test_revocation_reaches_another_process_sharing_the_store(
    service: LiveService,
) -> None:
    token_id, plaintext = await service.create("shared", scopes=["write"])
    other = await start_twin(service)
    try:
        await other.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
        await service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=token_id), metadata=bearer(service.admin_token)
        )
        call = other.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
        assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await stop_service(other)


async def test_service_tokens_names_values_and_reuse(service: LiveService) -> None:
    admin = bearer(service.admin_token)
    token_id, plaintext = await service.create("example", service_token=True, scopes=["write"])
    by_name = await service.stub.GetToken(pb.GetTokenRequest(name="example"), metadata=admin)
    assert by_name.token.id == token_id
    assert by_name.token.service_token
    assert by_name.token.owner == ""

    value = await service.stub.GetTokenValue(pb.GetTokenValueRequest(id=token_id), metadata=admin)
    assert value.value == plaintext
    value = await service.stub.GetTokenValue(
        pb.GetTokenValueRequest(name="example"), metadata=admin
    )
    assert value.value == plaintext

    duplicate = service.stub.CreateToken(
        pb.CreateTokenRequest(name="example", service_token=True), metadata=admin
    )
    assert await _code(duplicate) == grpc.StatusCode.ALREADY_EXISTS

    # Personal tokens may share names; only live service tokens are unique.
    await service.create("example")
    await service.create("example")

    await service.stub.RevokeToken(pb.RevokeTokenRequest(name="example"), metadata=admin)
    reused_id, _ = await service.create("example", service_token=True)
    assert reused_id != token_id

    personal_id, _ = await service.create("personal")
    call = service.stub.GetTokenValue(pb.GetTokenValueRequest(id=personal_id), metadata=admin)
    assert await _code(call) == grpc.StatusCode.FAILED_PRECONDITION


async def test_pagination_keyset_and_page_numbers(service: LiveService) -> None:
    admin = bearer(service.admin_token)
    ids = [(await service.create(f"t{i}", owner="carol"))[0] for i in range(7)]
    seen: list[int] = []
    page_token = ""
    while True:
        page = await service.stub.ListTokens(
            pb.ListTokensRequest(owner="carol", page_size=3, page_token=page_token),
            metadata=admin,
        )
        seen.extend(t.id for t in page.tokens)
        page_token = page.next_page_token
        if not page_token:
            break
    assert seen == ids

    third = await service.stub.ListTokens(
        pb.ListTokensRequest(owner="carol", page_size=3, page=3), metadata=admin
    )
    assert [t.id for t in third.tokens] == ids[6:]
    assert third.total_size == 7
    past_end = await service.stub.ListTokens(
        pb.ListTokensRequest(owner="carol", page_size=3, page=9), metadata=admin
    )
    assert list(past_end.tokens) == []
    assert past_end.total_size == 7

    # A page token belongs to its listing.
    first = await service.stub.ListTokens(
        pb.ListTokensRequest(owner="carol", page_size=3), metadata=admin
    )
    call = service.stub.ListTokens(
        pb.ListTokensRequest(page_token=first.next_page_token), metadata=admin
    )
    assert await _code(call) == grpc.StatusCode.INVALID_ARGUMENT


async def test_service_tokens_by_name_page_by_name_and_id(service: LiveService) -> None:
    """order_by "name": pages by a signed (name, id) position, so a token
    renamed between two pages moves no other token across the cut."""
    admin = bearer(service.admin_token)
    for name in ("m", "c", "x", "a", "k", "e"):
        await service.create(name, service_token=True)

    async def names(token: str = "", size: int = 2) -> tuple[list[str], str]:
        page = await service.stub.ListTokens(
            pb.ListTokensRequest(
                service_tokens=True, order_by="name", page_size=size, page_token=token
            ),
            metadata=admin,
        )
        return [t.name for t in page.tokens], page.next_page_token

    everything, _ = await names(size=100)
    assert everything == sorted(everything)
    assert {"a", "c", "e", "k", "m", "x"} <= set(everything)
    first, after_first = await names()
    # The last token of the first page renamed to the end: the next page
    # starts after its old name, as if nothing moved.
    last = await service.stub.GetToken(pb.GetTokenRequest(name=first[-1]), metadata=admin)
    await service.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=pb.Token(id=last.token.id, name="zz"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=admin,
    )
    rest: list[str] = []
    token = after_first
    while token:
        page, token = await names(token)
        rest += page
    assert first + rest == [*everything, "zz"]

    refused = {
        "order_by": pb.ListTokensRequest(service_tokens=True, order_by="create_time"),
        "order_by ": pb.ListTokensRequest(order_by="name"),
        "page": pb.ListTokensRequest(service_tokens=True, order_by="name", page=2),
        "page_token": pb.ListTokensRequest(
            service_tokens=True, order_by="name", page_token=(
                await service.stub.ListTokens(
                    pb.ListTokensRequest(service_tokens=True, page_size=1), metadata=admin
                )
            ).next_page_token
        ),
    }  # fmt: skip
    for field, request in refused.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.stub.ListTokens(request, metadata=admin)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert set(field_violations(caught.value)) == {field.strip()}, field
        assert "create_time" not in (caught.value.details() or "")
    # An id-order token does not continue a name-order listing, nor the reverse.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.ListTokens(
            pb.ListTokensRequest(service_tokens=True, page_token=after_first), metadata=admin
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_owners_see_only_their_own_tokens(service: LiveService) -> None:
    _, alice = await service.create("alice main", owner="alice", scopes=["write"])
    bob_id, _ = await service.create("bob's", owner="bob")
    service_id, _ = await service.create("svc", service_token=True)
    listed = await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(alice))
    assert [t.name for t in listed.tokens] == ["alice main"]
    for token_id in (bob_id, service_id):
        call = service.stub.GetToken(pb.GetTokenRequest(id=token_id), metadata=bearer(alice))
        assert await _code(call) == grpc.StatusCode.NOT_FOUND
    call = service.stub.GetToken(pb.GetTokenRequest(name="svc"), metadata=bearer(alice))
    assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED
    others = service.stub.ListTokens(pb.ListTokensRequest(owner="bob"), metadata=bearer(alice))
    assert await _code(others) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_token_with_no_scopes_may_read_but_not_write(service: LiveService) -> None:
    _, reader = await service.create("reader", owner="dave")
    listed = await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(reader))
    assert [t.name for t in listed.tokens] == ["reader"]
    call = service.stub.CreateToken(pb.CreateTokenRequest(name="x"), metadata=bearer(reader))
    assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_introspection(service: LiveService) -> None:
    _, introspector = await service.create("gateway", scopes=["introspect"])
    token_id, subject = await service.create("subject", owner="erin", scopes=["read:repo", "write"])
    md = bearer(introspector)
    answer = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=subject), metadata=md
    )
    assert answer.active
    assert answer.token.id == token_id
    assert answer.token.owner == "erin"
    assert list(answer.token.scopes) == ["read:repo", "write"]
    for junk in ("nonsense", subject[:-1] + ("A" if subject[-1] != "A" else "B"), "1|x"):
        answer = await service.stub.IntrospectToken(
            pb.IntrospectTokenRequest(token=junk), metadata=md
        )
        assert answer == pb.IntrospectTokenResponse(active=False)

    call = service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=subject), metadata=bearer(subject)
    )
    assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_introspection_checks_the_client_address(service: LiveService) -> None:
    _, subject = await service.create("office only", allowed_ips=["10.0.0.0/24"])
    md = bearer(service.admin_token)

    async def active(client_ip: str) -> bool:
        request = pb.IntrospectTokenRequest(token=subject, client_ip=client_ip)
        return (await service.stub.IntrospectToken(request, metadata=md)).active

    assert await active("10.0.0.9")
    assert not await active("10.0.1.9")
    assert not await active("")


async def test_allowed_ips_use_forwarded_for_from_a_trusted_proxy(service: LiveService) -> None:
    _, limited = await service.create("limited", allowed_ips=["10.0.0.0/24"])
    request = pb.ListTokensRequest()
    call = service.stub.ListTokens(request, metadata=bearer(limited))
    assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED
    proxied = (*bearer(limited), ("x-forwarded-for", "10.0.0.5, 127.0.0.1"))
    listed = await service.stub.ListTokens(request, metadata=proxied)
    assert [t.name for t in listed.tokens] == ["bootstrap", "limited"]


async def test_usage_is_counted_in_batches(service: LiveService) -> None:
    token_id, plaintext = await service.create("counted")
    for _ in range(5):
        await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
    # The API shows pending uses at once ...
    got = await service.stub.GetToken(pb.GetTokenRequest(id=token_id), metadata=bearer(plaintext))
    assert got.token.usage_count == 6
    assert got.token.HasField("last_use_time")
    # ... and the flusher writes them well within a second.
    await asyncio.sleep(0.3)
    count = rows.usage_count(service.data_dir, service.database_url, token_id)
    assert count == 6


async def test_escalation_is_refused(service: LiveService) -> None:
    _, writer = await service.create("writer", owner="fay", scopes=["write", "read"])
    allowed = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="narrower", scopes=["read"]), metadata=bearer(writer)
    )
    service.plaintexts.append(allowed.plaintext)
    assert allowed.token.owner == "fay"
    for scopes in (["admin"], ["introspect"], ["read", "deploy"]):
        call = service.stub.CreateToken(
            pb.CreateTokenRequest(name="wider", scopes=scopes), metadata=bearer(writer)
        )
        assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_validation_errors_name_every_bad_field(service: LiveService) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateToken(
            pb.CreateTokenRequest(
                name=" ",
                scopes=["bad scope"],
                allowed_ips=["10.0.0.0/33"],
                expire_time=timestamp_pb2.Timestamp(seconds=1),
            ),
            metadata=bearer(service.admin_token),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert set(violations) == {"name", "scopes", "allowed_ips", "expire_time"}
    assert violations["expire_time"] == "must be in the future"


async def test_inherited_scopes_leave_admin_out(service: LiveService) -> None:
    created = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="child", inherit_caller_scopes=True),
        metadata=bearer(service.admin_token),
    )
    service.plaintexts.append(created.plaintext)
    assert sorted(created.token.scopes) == ["introspect", "write"]
    both = service.stub.CreateToken(
        pb.CreateTokenRequest(name="x", scopes=["write"], inherit_caller_scopes=True),
        metadata=bearer(service.admin_token),
    )
    assert await _code(both) == grpc.StatusCode.INVALID_ARGUMENT


async def test_caller_owner_only_hides_other_tokens_even_from_admins(
    service: LiveService,
) -> None:
    other_id, _ = await service.create("someone else's", owner="gus")
    own_id, _ = await service.create("mine")
    admin = bearer(service.admin_token)
    call = service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=other_id, caller_owner_only=True), metadata=admin
    )
    assert await _code(call) == grpc.StatusCode.NOT_FOUND
    revoked = await service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=own_id, caller_owner_only=True), metadata=admin
    )
    assert revoked.token.status == pb.TOKEN_STATUS_REVOKED
