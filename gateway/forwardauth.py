"""``/auth/check``: forward auth for nginx, Caddy, Traefik and Envoy's ``http_service``.

Any method, ``/auth/check`` and every path below it (Envoy appends the
protected request's path), no body read. The decision is the service's
``CheckToken``, the one Envoy's gRPC ``Check`` makes too: the forwarded
``Authorization`` is the token checked, ``X-Forwarded-For`` (walked past
trusted proxies, ``gateway.forwarded``) the client address, and the scopes
the route demands come from every ``X-Required-Scopes`` line and, on
``/auth/check`` itself only, from the repeatable query parameter ``scope``.
Below ``/auth/check/`` the path and query are the protected request's: never read.

Allowed: 200, an empty body, ``Cache-Control: no-store`` and the identity
headers. Denied with the bodies Envoy's ``Check`` sends: 401 (with
``WWW-Authenticate: Bearer``), 403, or 503 when the answer cannot be had.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
from google.rpc import status_pb2

from gateway import openapi_legacy
from gateway.family import Fragment, Route
from gateway.http import BadInput, Request, Response
from gateway.router import ANY_METHOD
from gateway.upstream import RpcFailure, Upstream
from tokengrpc.v1 import tokens_pb2 as pb

PATH = "/auth/check"
#: Where a proxy names the scopes a route demands (space separated, every line counts).
REQUIRED_SCOPES = b"x-required-scopes"
#: Demanded when a requirement cannot be read (a line that is not UTF-8, a
#: query past its limits): no token holds it, since every scope is printable.
#: A requirement is never dropped because it was unreadable.
UNREADABLE = "\x00"

_NO_STORE = (b"cache-control", b"no-store")
#: Answers whose headers are kept (the service keeps as many answers).
_KEPT = 4096
_JSON = (b"content-type", b"application/json")
#: The ``endpoint`` label of this route's decisions (``tokengrpc_authz_decisions_total``).
ENDPOINT = PATH
#: A refusal's gRPC code -> the decision's ``result`` label.
_RESULTS = {
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
}


def _denial(status: int, message: str, *extra: tuple[bytes, bytes]) -> Response:
    # json.dumps, as tokengrpc.extauthz words Envoy's denials: the same bytes.
    body = json.dumps({"error": message}).encode()
    return Response(status, body, [_JSON, _NO_STORE, *extra])


def unauthenticated() -> Response:
    return _denial(401, "Unauthenticated.", (b"www-authenticate", b"Bearer"))


def forbidden() -> Response:
    return _denial(403, "Forbidden.")


def unavailable() -> Response:
    return _denial(503, "Service unavailable.")


def allowed_headers(answer: pb.CheckTokenResponse) -> list[tuple[bytes, bytes]]:
    headers = [_NO_STORE]
    headers.extend((h.name.encode(), h.value.encode()) for h in answer.identity_headers)
    return headers


def required_scopes(request: Request) -> list[str]:
    """Every ``X-Required-Scopes`` line, and on ``/auth/check`` itself each ``scope``."""
    required: list[str] = []
    for line in request.header_lines(REQUIRED_SCOPES):
        try:
            required.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            required.append(UNREADABLE)
    if request.raw_path == PATH and request.query_string:
        try:
            required.extend(value for name, value in request.query() if name == "scope")
        except BadInput:
            required.append(UNREADABLE)
    return required


class ForwardAuth:
    """A family of one route: any method, the path and everything below it."""

    def __init__(
        self, upstream: Upstream, decided: Callable[[str, str], None] | None = None
    ) -> None:
        self._upstream = upstream
        self._decided = decided
        #: Headers by answer: the in-process service hands out one answer object
        #: per token record, so a token's headers are encoded once, not per check.
        self._headers: dict[int, tuple[pb.CheckTokenResponse, list[tuple[bytes, bytes]]]] = {}

    def routes(self) -> list[Route]:
        return [Route(ANY_METHOD, PATH, self.check, needs_token=False, subtree=True)]

    def openapi(self) -> Fragment:
        return openapi_legacy.forward_auth(PATH)

    def bad_input(self, request: Request, problem: BadInput) -> Response:
        # Nothing is read that could be bad input (see required_scopes); were it
        # ever, the request would not pass.
        return forbidden()

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        if self._decided is not None:
            self._decided(ENDPOINT, _RESULTS.get(failure.code, "unavailable"))
        if failure.code == grpc.StatusCode.UNAUTHENTICATED:
            return unauthenticated()
        if failure.code == grpc.StatusCode.PERMISSION_DENIED:
            return forbidden()
        # The store, or the service behind a network gateway, cannot answer: never a pass.
        return unavailable()

    async def check(self, request: Request, _: dict[str, str]) -> Response:
        if request.trace is not None:  # the protected request's trace goes on
            request.trace.follow(request.headers)
        required = required_scopes(request)
        local = self._upstream.local_check
        # A grpc-timeout is a deadline only a call keeps: such a request takes the call.
        if local is not None and "grpc-timeout" not in request.headers:
            got = await local.check_local(
                Upstream.authorization(request), request.client_host, required
            )
            if isinstance(got, grpc.StatusCode):
                raise _failure(got)
            answer = got
        else:
            answer = await self._upstream.call(
                self._upstream.tokens.CheckToken,
                pb.CheckTokenRequest(required_scopes=required),
                request,
            )
        return self._pass(request, answer)

    def check_now(self, request: Request) -> Response | None:
        """``check``'s answer without waiting, when the in-process service has the
        token in memory (most checks); None if it must wait (then ``check``)."""
        local = self._upstream.local_check
        if local is None or request.trace is not None or "grpc-timeout" in request.headers:
            return None
        got = local.check_local_cached(
            Upstream.authorization(request), request.client_host, required_scopes(request)
        )
        if got is None:
            return None
        if isinstance(got, grpc.StatusCode):
            return self.failed(request, _failure(got))
        return self._pass(request, got)

    def _pass(self, request: Request, answer: pb.CheckTokenResponse) -> Response:
        if self._decided is not None:
            self._decided(ENDPOINT, "allowed")
        if request.trace is not None:
            request.trace.checked(_token_id(answer))
        return Response(200, b"", list(self._allowed(answer)))  # a copy: never shared

    def _allowed(self, answer: pb.CheckTokenResponse) -> list[tuple[bytes, bytes]]:
        known = self._headers.get(id(answer))
        if known is not None and known[0] is answer:  # the id of a live object is its own
            return known[1]
        headers = allowed_headers(answer)
        if len(self._headers) >= _KEPT:
            self._headers.clear()
        self._headers[id(answer)] = (answer, headers)
        return headers


def _failure(code: grpc.StatusCode) -> RpcFailure:
    """The failure a call ending with ``code`` raises (no message: none is shown)."""
    return RpcFailure(code, "", status_pb2.Status(code=code.value[0]))


def _token_id(answer: pb.CheckTokenResponse) -> int:
    """The checked token's id, from the ``x-token-id`` the answer carries."""
    for header in answer.identity_headers:
        if header.name == "x-token-id":
            return int(header.value)
    return 0
