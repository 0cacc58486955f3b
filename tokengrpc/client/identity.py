"""Who made a request: what the guards hand the code they protect."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Identity:
    """An active token as IntrospectToken described it (never its secret)."""

    token_id: int
    #: Empty for a service token.
    owner: str
    name: str
    scopes: frozenset[str]
    #: None when the token never expires.
    expire_time: datetime | None

    @property
    def is_service(self) -> bool:
        return not self.owner

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Scopes are matched exactly: ``admin`` stands in for nothing downstream."""
        return self.scopes.issuperset(required)


#: The identity of the request being handled, set by ``TokenInterceptor`` and
#: ``TokenMiddleware`` for the handler's task (each gRPC call and each ASGI
#: request runs in its own task, so one request never sees another's).
current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "tokengrpc_identity", default=None
)


def bearer(value: str | None) -> str | None:
    """The token of one ``Authorization: Bearer <token>`` value.

    The same reading as ``tokengrpc.auth.bearer`` (a test holds them equal),
    repeated here so that services need none of the server's modules.
    """
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
