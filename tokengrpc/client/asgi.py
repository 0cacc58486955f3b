"""An ASGI middleware that admits only requests with an active token.

The app finds the caller in ``scope["state"]["token"]`` (Starlette and
FastAPI: ``request.state.token``) and in ``current_identity``. Denials use
the same bodies as tokengrpc's Envoy check: 401 ``{"error":
"Unauthenticated."}`` with ``WWW-Authenticate: Bearer``, 403 ``{"error":
"Forbidden."}``, and 503 ``{"error": "Service unavailable."}`` when the
token could not be checked at all (tokengrpc unreachable, the verifier's own
token refused, any failure of the lookup): the body never says why, the log
does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from tokengrpc.client.identity import bearer, current_identity
from tokengrpc.client.verifier import TokenVerifier, VerifierUnavailable

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNAUTHENTICATED = b'{"error": "Unauthenticated."}'
_FORBIDDEN = b'{"error": "Forbidden."}'
_UNAVAILABLE = b'{"error": "Service unavailable."}'
# WebSocket close code "policy violation": servers answer a close before
# accept with 403.
_WS_POLICY = 1008


class TokenMiddleware:
    """``app = TokenMiddleware(app, verifier, required_scopes=["read"])``.

    Paths in ``public_paths`` (exact matches, such as ``/healthz``) pass
    without a token; lifespan messages always pass.
    """

    def __init__(
        self,
        app: App,
        verifier: TokenVerifier,
        *,
        required_scopes: Iterable[str] = (),
        public_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._required = frozenset(required_scopes)
        self._public = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("path") in self._public:
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        token = bearer(values[0].decode("latin-1")) if len(values) == 1 else None
        client = scope.get("client")
        try:
            identity = await self._verifier.identify(token, client[0] if client else "")
        except Exception as error:  # fail closed, and never tell the caller why
            if not isinstance(error, VerifierUnavailable):  # the verifier logged those
                log.warning(
                    "denying a request: verifying its token failed with %s", type(error).__name__
                )
            await _deny(kind, send, 503, _UNAVAILABLE, challenge=False)
            return
        if identity is None:
            await _deny(kind, send, 401, _UNAUTHENTICATED, challenge=True)
            return
        if not identity.has_scopes(self._required):
            await _deny(kind, send, 403, _FORBIDDEN, challenge=False)
            return
        # A copy: the server's scope (and lifespan state) stays untouched.
        scope = {**scope, "state": {**scope.get("state", {}), "token": identity}}
        reset = current_identity.set(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            current_identity.reset(reset)


async def _deny(kind: str, send: Send, status: int, body: bytes, *, challenge: bool) -> None:
    if kind == "websocket":
        await send({"type": "websocket.close", "code": _WS_POLICY})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if challenge:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
