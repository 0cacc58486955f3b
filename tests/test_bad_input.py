"""Every RPC against bad credentials and bad fields: a clear error, nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests import rows
from tests.helpers import LiveService, bearer, field_violations
from tokengrpc.v1 import tokens_pb2 as pb


@dataclass
class World:
    """Tokens in every state a rejected request may come from."""

    user: str  # alice: write + read
    reader: str  # alice: no scopes
    own_id: int
    other_id: int  # bob's token
    service_id: int
    by_state: dict[str, str]


@pytest.fixture
async def world(service: LiveService) -> World:
    _, user = await service.create("alice", owner="alice", scopes=["write", "read"])
    _, reader = await service.create("alice ro", owner="alice")
    own_id, _ = await service.create("alice spare", owner="alice")
    other_id, _ = await service.create("bob", owner="bob", scopes=["write"])
    service_id, _ = await service.create("svc", service_token=True)
    states: dict[str, str] = {}
    for state in ("revoked", "expired", "inactive"):
        token_id, states[state] = await service.create(state, scopes=["admin", "write"])
        column, value = {
            "revoked": ("revoke_time", 1),
            "expired": ("expire_time", 1),
            "inactive": ("active", 0),
        }[state]
        # In a thread: the service's writer may be mid-transaction, waiting for this loop.
        await asyncio.to_thread(
            rows.set_column, service.data_dir, service.database_url, token_id, column, value
        )
    # Those writes went behind the service's back; this create announces a change,
    # so no process keeps a cached copy of the rows from before them.
    _, states["ip-disallowed"] = await service.create(
        "elsewhere", scopes=["admin", "write"], allowed_ips=["192.0.2.0/24"]
    )
    good = service.admin_token
    broken = good[:-1] + ("0" if good[-1] != "0" else "1")
    states |= {
        "malformed": "not-a-token",
        "wrong id": "9999|" + good.partition("|")[2],
        "broken checksum": broken,
        "empty bearer": "",
    }
    return World(user, reader, own_id, other_id, service_id, states)


Call = Callable[[LiveService, World, tuple[tuple[str, str], ...]], Awaitable[object]]


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


RPCS: dict[str, Call] = {
    "CreateToken": lambda s, w, md: s.stub.CreateToken(
        pb.CreateTokenRequest(name="n"), metadata=md
    ),
    "ListTokens": lambda s, w, md: s.stub.ListTokens(pb.ListTokensRequest(), metadata=md),
    "GetToken": lambda s, w, md: s.stub.GetToken(pb.GetTokenRequest(id=w.own_id), metadata=md),
    "UpdateToken": lambda s, w, md: s.stub.UpdateToken(
        pb.UpdateTokenRequest(token=pb.Token(id=w.own_id, name="x"), update_mask=_mask("name")),
        metadata=md,
    ),
    "RevokeToken": lambda s, w, md: s.stub.RevokeToken(
        pb.RevokeTokenRequest(id=w.own_id), metadata=md
    ),
    "GetTokenValue": lambda s, w, md: s.stub.GetTokenValue(
        pb.GetTokenValueRequest(id=w.service_id), metadata=md
    ),
    "IntrospectToken": lambda s, w, md: s.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=w.user), metadata=md
    ),
}

STATES = [
    "no token",
    "empty bearer",
    "malformed",
    "wrong id",
    "broken checksum",
    "revoked",
    "expired",
    "inactive",
    "ip-disallowed",
]


async def _fails(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_every_bad_credential_is_the_same_unauthenticated(
    service: LiveService, world: World, rpc: str
) -> None:
    before = service.snapshot()
    messages = set()
    for state in STATES:
        md = () if state == "no token" else bearer(world.by_state[state])
        error = await _fails(RPCS[rpc](service, world, md))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, state
        messages.add(error.details() or "")
    assert len(messages) == 1, "failures must not say which check failed"
    message = messages.pop()
    assert all(p.partition("|")[2] not in message for p in service.plaintexts)
    assert service.snapshot() == before


@pytest.mark.parametrize("scheme", ["Basic", "Token", "bearer", "Bearer  "])
async def test_the_bearer_scheme(service: LiveService, scheme: str) -> None:
    md = (("authorization", f"{scheme} {service.admin_token}"),)
    call = service.stub.ListTokens(pb.ListTokensRequest(), metadata=md)
    if scheme.strip().lower() == "bearer":
        await call
    else:
        assert (await _fails(call)).code() == grpc.StatusCode.UNAUTHENTICATED


NAME_CASES = {"empty": "", "whitespace": "   \t ", "256 characters": "n" * 256}


@pytest.mark.parametrize("case", list(NAME_CASES))
async def test_bad_names_on_create_and_update(
    service: LiveService, world: World, case: str
) -> None:
    before = service.snapshot()
    name = NAME_CASES[case]
    error = await _fails(
        service.stub.CreateToken(pb.CreateTokenRequest(name=name), metadata=bearer(world.user))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in field_violations(error)
    error = await _fails(
        service.stub.UpdateToken(
            pb.UpdateTokenRequest(
                token=pb.Token(id=world.own_id, name=name), update_mask=_mask("name")
            ),
            metadata=bearer(world.user),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token.name" in field_violations(error)
    assert service.snapshot() == before


@pytest.mark.parametrize("rpc", ["GetToken", "UpdateToken", "RevokeToken", "GetTokenValue"])
@pytest.mark.parametrize("target", ["unknown", "another owner's", "a service token's"])
async def test_tokens_out_of_reach_are_not_found(
    service: LiveService, world: World, rpc: str, target: str
) -> None:
    token_id = {"unknown": 424242, "another owner's": world.other_id}.get(target, world.service_id)
    caller = service.admin_token if target == "unknown" else world.user
    requests: dict[str, Callable[[], Awaitable[object]]] = {
        "GetToken": lambda: service.stub.GetToken(
            pb.GetTokenRequest(id=token_id), metadata=bearer(caller)
        ),
        "UpdateToken": lambda: service.stub.UpdateToken(
            pb.UpdateTokenRequest(token=pb.Token(id=token_id, name="x"), update_mask=_mask("name")),
            metadata=bearer(caller),
        ),
        "RevokeToken": lambda: service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=token_id), metadata=bearer(caller)
        ),
        "GetTokenValue": lambda: service.stub.GetTokenValue(
            pb.GetTokenValueRequest(id=token_id), metadata=bearer(caller)
        ),
    }
    before = service.snapshot()
    error = await _fails(requests[rpc]())
    expected = grpc.StatusCode.NOT_FOUND
    if rpc == "GetTokenValue" and caller != service.admin_token:
        # The RPC's own scope is checked before any lookup.
        expected = grpc.StatusCode.PERMISSION_DENIED
    assert error.code() == expected
    assert service.snapshot() == before


async def test_selecting_by_name_needs_admin_whether_or_not_it_exists(
    service: LiveService, world: World
) -> None:
    before = service.snapshot()
    for name in ("svc", "no such token"):
        for call in (
            service.stub.GetToken(pb.GetTokenRequest(name=name), metadata=bearer(world.user)),
            service.stub.RevokeToken(pb.RevokeTokenRequest(name=name), metadata=bearer(world.user)),
        ):
            assert (await _fails(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert service.snapshot() == before


async def test_read_only_tokens_cannot_write(service: LiveService, world: World) -> None:
    before = service.snapshot()
    md = bearer(world.reader)
    for call in (
        service.stub.CreateToken(pb.CreateTokenRequest(name="n"), metadata=md),
        service.stub.UpdateToken(
            pb.UpdateTokenRequest(
                token=pb.Token(id=world.own_id, name="x"), update_mask=_mask("name")
            ),
            metadata=md,
        ),
        service.stub.RevokeToken(pb.RevokeTokenRequest(id=world.own_id), metadata=md),
    ):
        assert (await _fails(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert service.snapshot() == before


async def test_granting_unheld_scopes(service: LiveService, world: World) -> None:
    before = service.snapshot()
    md = bearer(world.user)
    for call in (
        service.stub.CreateToken(pb.CreateTokenRequest(name="n", scopes=["admin"]), metadata=md),
        service.stub.CreateToken(
            pb.CreateTokenRequest(name="n", scopes=["read", "deploy"]), metadata=md
        ),
        service.stub.UpdateToken(
            pb.UpdateTokenRequest(
                token=pb.Token(id=world.own_id, scopes=["introspect"]), update_mask=_mask("scopes")
            ),
            metadata=md,
        ),
        service.stub.CreateToken(pb.CreateTokenRequest(name="n", owner="bob"), metadata=md),
        service.stub.CreateToken(pb.CreateTokenRequest(name="n", service_token=True), metadata=md),
    ):
        assert (await _fails(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert service.snapshot() == before


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "10.0.0.1/24", "not-an-ip", "", "1.2.3"])
async def test_invalid_cidrs(service: LiveService, world: World, entry: str) -> None:
    before = service.snapshot()
    md = bearer(world.user)
    error = await _fails(
        service.stub.CreateToken(pb.CreateTokenRequest(name="n", allowed_ips=[entry]), metadata=md)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "allowed_ips" in field_violations(error)
    error = await _fails(
        service.stub.UpdateToken(
            pb.UpdateTokenRequest(
                token=pb.Token(id=world.own_id, allowed_ips=[entry]),
                update_mask=_mask("allowed_ips"),
            ),
            metadata=md,
        )
    )
    assert "token.allowed_ips" in field_violations(error)
    assert service.snapshot() == before


@pytest.mark.parametrize("when", ["an hour ago", "this second", "the epoch", "year 33658"])
async def test_expiry_in_the_past(service: LiveService, world: World, when: str) -> None:
    before = service.snapshot()
    seconds = {
        "an hour ago": int(time.time()) - 3600,
        "this second": int(time.time()),
        "the epoch": 0,
        "year 33658": 10**12,  # outside Timestamp's valid range
    }[when]
    stamp = timestamp_pb2.Timestamp(seconds=seconds)
    md = bearer(world.user)
    error = await _fails(
        service.stub.CreateToken(pb.CreateTokenRequest(name="n", expire_time=stamp), metadata=md)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expire_time" in field_violations(error)
    error = await _fails(
        service.stub.UpdateToken(
            pb.UpdateTokenRequest(
                token=pb.Token(id=world.own_id, expire_time=stamp), update_mask=_mask("expire_time")
            ),
            metadata=md,
        )
    )
    assert "token.expire_time" in field_violations(error)
    assert service.snapshot() == before


async def test_bad_update_masks_and_selectors(service: LiveService, world: World) -> None:
    before = service.snapshot()
    md = bearer(world.user)
    cases = [
        pb.UpdateTokenRequest(token=pb.Token(id=world.own_id)),
        pb.UpdateTokenRequest(token=pb.Token(id=world.own_id), update_mask=_mask("owner")),
        pb.UpdateTokenRequest(update_mask=_mask("name")),
    ]
    for request in cases:
        error = await _fails(service.stub.UpdateToken(request, metadata=md))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    for call in (
        service.stub.GetToken(pb.GetTokenRequest(), metadata=md),
        service.stub.RevokeToken(
            pb.RevokeTokenRequest(name="  "), metadata=bearer(service.admin_token)
        ),
        service.stub.ListTokens(pb.ListTokensRequest(page_size=-1), metadata=md),
        service.stub.ListTokens(pb.ListTokensRequest(page_token="garbage!"), metadata=md),
        service.stub.IntrospectToken(
            pb.IntrospectTokenRequest(token=""), metadata=bearer(service.admin_token)
        ),
        service.stub.IntrospectToken(
            pb.IntrospectTokenRequest(token="x", client_ip="nope"),
            metadata=bearer(service.admin_token),
        ),
    ):
        assert (await _fails(call)).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.snapshot() == before


async def test_oversized_requests_are_refused(service: LiveService, world: World) -> None:
    before = service.snapshot()
    md = bearer(world.user)
    huge = pb.CreateTokenRequest(name="n", scopes=[f"s{i}" for i in range(65)])
    error = await _fails(service.stub.CreateToken(huge, metadata=md))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Past the message limit (1 MiB) the request is refused unread.
    giant = pb.CreateTokenRequest(name="x" * (5 * 1024 * 1024))
    error = await _fails(service.stub.CreateToken(giant, metadata=md))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert service.snapshot() == before
