"""One request, one "now": every time-dependent decision about a request
(status, grace, expiry) comes from a single reading of the clock, and a
secret is "replaced" because it matched the replaced hash, never because a
second look at the clock said the grace was over (CONTRACT section 7).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tests.helpers import LiveService, bearer
from tokengrpc.clock import now_us
from tokengrpc.v1 import tokens_pb2 as pb

SECOND = 1_000_000


class SteppingClock:
    """Gives ``first`` on its first reading and ``later`` on every reading after
    that: a request that read the clock twice would see two different moments."""

    def __init__(self) -> None:
        self.readings = 0
        self.first = self.later = now_us()

    def __call__(self) -> int:
        self.readings += 1
        return self.first if self.readings == 1 else self.later

    def at(self, first: int, later: int | None = None) -> None:
        self.readings = 0
        self.first, self.later = first, first if later is None else later


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _rotated_at(
    service: LiveService, clock: SteppingClock, when: int, grace_seconds: int
) -> tuple[int, str, str]:
    """A writer token of alice's, rotated at ``when``: its id, old and new secret."""
    token_id, old = await service.create("ci", owner="alice", scopes=["write"])
    clock.at(when)
    request = pb.RotateTokenRequest(id=token_id)
    request.grace_period.FromSeconds(grace_seconds)
    rotated = await service.stub.RotateToken(request, metadata=bearer(service.admin_token))
    service.plaintexts.append(rotated.plaintext)
    return token_id, old, rotated.plaintext


async def _rotated_under_a_stepping_clock(
    service: LiveService,
) -> tuple[SteppingClock, int, str, str, int]:
    """The service on a stepping clock, and a token rotated now with a 60 s grace:
    the clock, the token's id, its old and new secret, and when the grace ends."""
    clock = SteppingClock()
    service.core.authenticator.clock = clock
    start = now_us()
    token_id, old, new = await _rotated_at(service, clock, start, grace_seconds=60)
    return clock, token_id, old, new, start + 60 * SECOND


async def test_the_old_secret_stays_replaced_when_the_grace_ends_mid_request(
    service: LiveService,
) -> None:
    clock, token_id, old, new, until = await _rotated_under_a_stepping_clock(service)
    create = pb.CreateTokenRequest(name="minted", owner="alice")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "create": lambda: service.stub.CreateToken(create, metadata=bearer(old)),
        "rotate": lambda: service.stub.RotateToken(
            pb.RotateTokenRequest(id=token_id), metadata=bearer(old)
        ),
        "revoke": lambda: service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=token_id), metadata=bearer(old)
        ),
    }
    for name, call in calls.items():
        # The first reading is the last moment of the grace, any later one past it.
        clock.at(until - 1, until + 1)
        code = await _code(call())
        assert code == grpc.StatusCode.PERMISSION_DENIED, name
        assert clock.readings == 1, f"{name} read the clock {clock.readings} times"
    clock.at(until)
    assert await _code(calls["create"]()) == grpc.StatusCode.UNAUTHENTICATED
    clock.at(until - 1)
    listed = await service.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(new))
    assert all(token.status == pb.TOKEN_STATUS_ACTIVE for token in listed.tokens)
    assert [t.name for t in listed.tokens] == ["ci"], "nothing was minted with the old secret"


async def test_every_rpc_reads_the_clock_once(service: LiveService) -> None:
    clock = SteppingClock()
    service.core.authenticator.clock = clock
    admin = bearer(service.admin_token)
    token_id, plaintext = await service.create("svc", service_token=True)
    update = pb.UpdateTokenRequest(token=pb.Token(id=token_id, name="svc2"))
    update.update_mask.paths.append("name")
    requests: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (
            "CreateToken",
            lambda: service.stub.CreateToken(pb.CreateTokenRequest(name="x"), metadata=admin),
        ),
        ("ListTokens", lambda: service.stub.ListTokens(pb.ListTokensRequest(), metadata=admin)),
        (
            "GetToken",
            lambda: service.stub.GetToken(pb.GetTokenRequest(id=token_id), metadata=admin),
        ),
        ("UpdateToken", lambda: service.stub.UpdateToken(update, metadata=admin)),
        (
            "GetTokenValue",
            lambda: service.stub.GetTokenValue(
                pb.GetTokenValueRequest(id=token_id), metadata=admin
            ),
        ),
        (
            "IntrospectToken",
            lambda: service.stub.IntrospectToken(
                pb.IntrospectTokenRequest(token=plaintext), metadata=admin
            ),
        ),
        (
            "ListTokenEvents",
            lambda: service.stub.ListTokenEvents(pb.ListTokenEventsRequest(), metadata=admin),
        ),
        (
            "RotateToken",
            lambda: service.stub.RotateToken(pb.RotateTokenRequest(id=token_id), metadata=admin),
        ),
        (
            "RevokeTokenByValue",
            lambda: service.stub.RevokeTokenByValue(pb.RevokeTokenByValueRequest(token="1|x")),
        ),
        (
            "RevokeToken",
            lambda: service.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=admin),
        ),
    ]
    for name, call in requests:
        clock.at(now_us())
        response = await call()
        assert response is not None
        assert clock.readings == 1, f"{name} read the clock {clock.readings} times"
        if name == "CreateToken":
            service.plaintexts.append(response.plaintext)
        if name == "RotateToken":
            service.plaintexts.append(response.plaintext)


async def _hammer(
    service: LiveService, token_id: int, old: str, until: float, rotating: bool
) -> list[grpc.StatusCode]:
    """Writes with the old secret, back to back, until the loop's clock says ``until``."""
    loop = asyncio.get_running_loop()
    codes = []
    while loop.time() < until:
        call: Awaitable[Any]
        if rotating:
            call = service.stub.RotateToken(
                pb.RotateTokenRequest(id=token_id), metadata=bearer(old)
            )
        else:
            create = pb.CreateTokenRequest(name="minted", owner="alice")
            call = service.stub.CreateToken(create, metadata=bearer(old))
        codes.append(await _code(call))
    return codes


async def test_no_old_secret_writes_across_the_end_of_a_short_grace(
    service: LiveService,
) -> None:
    """Live: callers hammer CreateToken and RotateToken with the old secret
    while a short grace ends; not one may succeed, in any round."""
    grace = 0.05
    codes: list[grpc.StatusCode] = []
    for round_number in range(12):
        token_id, old = await service.create(f"ci{round_number}", owner="alice", scopes=["write"])
        request = pb.RotateTokenRequest(id=token_id)
        request.grace_period.FromMilliseconds(int(grace * 1000))
        rotated = await service.stub.RotateToken(request, metadata=bearer(service.admin_token))
        service.plaintexts.append(rotated.plaintext)
        until = asyncio.get_running_loop().time() + grace * 2
        found = await asyncio.gather(
            *(_hammer(service, token_id, old, until, rotating=bool(i % 2)) for i in range(8))
        )
        codes.extend(code for part in found for code in part)
    print(f"{len(codes)} writes with an old secret across the end of its grace")
    assert grpc.StatusCode.OK not in codes
    # Both sides of the end were reached: refused as replaced, then as unknown.
    assert set(codes) == {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


async def test_a_service_token_without_admin_rotates_itself(service: LiveService) -> None:
    token_id, old = await service.create("deploy", service_token=True, scopes=["introspect"])
    rotated = await service.stub.RotateToken(
        pb.RotateTokenRequest(id=token_id), metadata=bearer(old)
    )
    service.plaintexts.append(rotated.plaintext)
    assert rotated.token.id == token_id
    value = await service.stub.GetTokenValue(
        pb.GetTokenValueRequest(id=token_id), metadata=bearer(service.admin_token)
    )
    assert value.value == rotated.plaintext != old
    # Itself only: by name (service tokens are an admin's), or another token, stays refused.
    other_id, _ = await service.create("other", service_token=True)
    by_name = pb.RotateTokenRequest(name="other")
    assert (
        await _code(service.stub.RotateToken(by_name, metadata=bearer(rotated.plaintext)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await _code(
            service.stub.RotateToken(
                pb.RotateTokenRequest(id=other_id), metadata=bearer(rotated.plaintext)
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )


async def test_owners_see_who_acted_on_their_tokens_but_not_an_admin_s_token_or_address(
    service: LiveService,
) -> None:
    own_id, own = await service.create("mine", owner="alice", scopes=["write"])
    # Through a trusted proxy, so the events hold a client address to hide.
    forwarded = (*bearer(service.admin_token), ("x-forwarded-for", "203.0.113.7"))
    update = pb.UpdateTokenRequest(token=pb.Token(id=own_id, name="renamed"))
    update.update_mask.paths.append("name")
    await service.stub.UpdateToken(update, metadata=forwarded)
    second, viewer = await service.create("second", by=own)  # alice's own action
    admin_id = int(service.admin_token.partition("|")[0])

    def actors(events: Any) -> list[tuple[int, str, int, str]]:
        return [(e.token_id, e.actor_owner, e.actor_token_id, e.client_ip) for e in events]

    as_alice = await service.stub.ListTokenEvents(pb.ListTokenEventsRequest(), metadata=bearer(own))
    assert (own_id, "admin", 0, "") in actors(as_alice.events)
    assert (second, "alice", own_id, "127.0.0.1") in actors(as_alice.events)
    as_admin = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(), metadata=bearer(service.admin_token)
    )
    assert (own_id, "admin", admin_id, "203.0.113.7") in actors(as_admin.events)
    joined = repr(as_alice)
    assert "203.0.113.7" not in joined

    # A stranger revoking by value is not of alice's owner either.
    stranger = (("x-forwarded-for", "198.51.100.9"),)
    await service.stub.RevokeTokenByValue(
        pb.RevokeTokenByValueRequest(token=own), metadata=stranger
    )
    as_admin = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(token_id=own_id), metadata=bearer(service.admin_token)
    )
    assert actors(as_admin.events)[0] == (own_id, "", 0, "198.51.100.9")
    as_alice = await service.stub.ListTokenEvents(
        pb.ListTokenEventsRequest(token_id=own_id), metadata=bearer(viewer)
    )
    assert actors(as_alice.events)[0] == (own_id, "", 0, "")


async def test_introspection_judges_the_token_by_the_request_s_moment(
    service: LiveService,
) -> None:
    """An introspecting caller and the token it asks about share one "now"."""
    clock, _, old, _, until = await _rotated_under_a_stepping_clock(service)
    clock.at(until - 1, until + 1)
    answer = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=old), metadata=bearer(service.admin_token)
    )
    assert answer.active
    assert clock.readings == 1
    clock.at(until)
    answer = await service.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=old), metadata=bearer(service.admin_token)
    )
    assert not answer.active
