"""The one decision for a proxy asking before it forwards a request.

Envoy's gRPC ``Check`` (``tokengrpc.extauthz``) and the HTTP ``/auth/check``
(the ``CheckToken`` RPC, which the gateway calls) both come here: the same
reading of the presented credential, the same ``Authenticator`` (checksum,
hash, status, ``allowed_ips``), the same scope rule and the same identity
headers. Only the shape of the answer differs per surface.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Literal, TypeVar
from urllib.parse import quote

from tokengrpc.addresses import IPAddress
from tokengrpc.auth import Authenticator, bearer
from tokengrpc.errors import PermissionDenied, Unauthenticated
from tokengrpc.logs import note_checked
from tokengrpc.rules import MAX_SCOPE, MAX_SCOPES
from tokengrpc.store import Cached, TokenRecord

#: What the upstream learns about an allowed request; client copies never pass.
IDENTITY_HEADERS = ("x-token-id", "x-token-owner", "x-token-name", "x-token-scopes")
#: The longest requirement a token could meet: every scope it may hold, spaced.
REQUIRED_TEXT = MAX_SCOPES * (MAX_SCOPE + 1)
#: A requirement no token meets (no scope is empty).
UNMEETABLE = frozenset({""})
#: Allowing answers kept, one per token: a few hundred bytes each.
_KEPT_ANSWERS = 4096

# Printable ASCII stays readable; the rest (and "%") is percent-encoded UTF-8,
# so a name in any script survives every HTTP parser between the proxy and the app.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class Refusal(enum.Enum):
    """Why a checked request may not pass (an unreachable store raises ``Unavailable``)."""

    #: No token, not exactly one, or one that does not authenticate: 401.
    UNAUTHENTICATED = "unauthenticated"
    #: An active token without every scope the route demands: 403.
    FORBIDDEN = "forbidden"


def presented_token(values: Sequence[str | bytes]) -> str | None:
    """The one bearer token among a request's ``authorization`` values, else None.

    Proxies join repeated headers into one comma-separated value (Envoy does,
    and so does the gateway); a comma is never part of a token, so two
    credentials fail whether they came as two lines or one.
    """
    if len(values) != 1:
        return None
    value = values[0]
    if not isinstance(value, str) or "," in value:
        return None
    return bearer(value)


def required_scopes(lines: Iterable[str]) -> frozenset[str]:
    """The scopes demanded by space-separated lines, all together.

    Read up to REQUIRED_TEXT characters (a line counts one more): past that,
    no token could meet the requirement, and it is UNMEETABLE without reading
    the rest, so a huge one costs no more than a long one.
    """
    found: set[str] = set()
    size = 0
    for line in lines:
        size += len(line) + 1
        if size > REQUIRED_TEXT:
            return UNMEETABLE
        found.update(line.split())
    return frozenset(found)


def lacks_required_scopes(record: TokenRecord, required: frozenset[str]) -> bool:
    """Opaque scopes are matched exactly: ``admin`` stands in only for reserved ones."""
    return bool(required) and not required.issubset(record.scopes)


def identity_headers(record: TokenRecord) -> list[tuple[str, str]]:
    """``(name, value)`` for the protected service; ``x-token-owner`` only for a
    personal token, ``x-token-scopes`` only for a token with scopes."""
    headers = [
        ("x-token-id", str(record.id)),
        ("x-token-name", quote(record.name, safe=_SAFE)),
    ]
    if record.scopes:
        # Scopes hold no spaces but may hold any other printable text: each is
        # encoded like the name, so the header stays ASCII and splits on " ".
        scopes = " ".join(quote(scope, safe=_SAFE) for scope in record.scopes)
        headers.append(("x-token-scopes", scopes))
    if record.owner:  # service tokens have none, and then the header is absent
        headers.append(("x-token-owner", quote(record.owner, safe=_SAFE)))
    return headers


def absent_headers(present: Iterable[tuple[str, str]]) -> list[str]:
    """The identity headers an answer leaves out: client copies of them must go too."""
    kept = {name for name, _ in present}
    return [name for name in IDENTITY_HEADERS if name not in kept]


async def decide(
    auth: Authenticator,
    token: str | None,
    address: IPAddress | None,
    required: frozenset[str],
    now: int,
) -> TokenRecord | Refusal:
    """The token's record if the request may pass (one use counted), else why not.

    ``Unavailable`` from the store propagates: each surface answers it with
    its own "service unavailable", never with an allow.
    """
    return _decided(await auth.check(token, address, now), required)


def decide_cached(
    auth: Authenticator,
    token: str | None,
    address: IPAddress | None,
    required: frozenset[str],
    now: int,
) -> TokenRecord | Refusal | Literal[Cached.MISS]:
    """``decide`` without waiting, from the token's record in memory;
    ``Cached.MISS`` if it needs the store (then ``decide`` it)."""
    found = auth.verified_cached(token, address, now)
    return Cached.MISS if found is Cached.MISS else _decided(found, required)


def _decided(
    found: tuple[TokenRecord, bool] | None, required: frozenset[str]
) -> TokenRecord | Refusal:
    if found is None:
        return Refusal.UNAUTHENTICATED
    record = found[0]
    note_checked(record.id)  # the span and access line name the judged token
    if lacks_required_scopes(record, required):
        return Refusal.FORBIDDEN
    return record


async def check_call(
    auth: Authenticator,
    metadata: Iterable[tuple[str, str | bytes]],
    peer: str,
    required: Iterable[str],
) -> TokenRecord:
    """``CheckToken``'s decision on a call's own ``authorization`` and address:
    the record, or Unauthenticated / PermissionDenied (as ``decide`` refuses)."""
    authorizations, address = auth.presented(metadata, peer)
    return await check_presented(auth, authorizations, address, required)


async def check_presented(
    auth: Authenticator,
    authorizations: Sequence[str | bytes],
    address: IPAddress | None,
    required: Iterable[str],
) -> TokenRecord:
    """``check_call`` once the call's ``authorization`` values and client address
    are read (the in-process gateway hands them over without metadata)."""
    token = presented_token(authorizations)
    return _passed(await decide(auth, token, address, required_scopes(required), auth.clock()))


def check_presented_cached(
    auth: Authenticator,
    authorizations: Sequence[str | bytes],
    address: IPAddress | None,
    required: Iterable[str],
) -> TokenRecord | Literal[Cached.MISS]:
    """``check_presented`` without waiting; ``Cached.MISS`` if it needs the store."""
    token = presented_token(authorizations)
    decided = decide_cached(auth, token, address, required_scopes(required), auth.clock())
    return Cached.MISS if decided is Cached.MISS else _passed(decided)


def _passed(decided: TokenRecord | Refusal) -> TokenRecord:
    """The record of a request that may pass; Unauthenticated / PermissionDenied if not."""
    if decided is Refusal.UNAUTHENTICATED:
        raise Unauthenticated()
    if decided is Refusal.FORBIDDEN:
        raise PermissionDenied("the token lacks a scope the request needs")
    return decided


Answer = TypeVar("Answer")


class KeptAnswers(Generic[Answer]):
    """Allowing answers built once per token record, not once per check.

    The store hands out the same record object until the token changes, so
    identity says "still true"; a changed token gets a new answer at once.
    """

    def __init__(self, build: Callable[[TokenRecord], Answer]) -> None:
        self._build = build
        self._answers: dict[int, tuple[TokenRecord, Answer]] = {}

    def __call__(self, record: TokenRecord) -> Answer:
        known = self._answers.get(record.id)
        if known is not None and known[0] is record:
            return known[1]
        answer = self._build(record)
        if len(self._answers) >= _KEPT_ANSWERS:
            self._answers.clear()
        self._answers[record.id] = (record, answer)
        return answer
