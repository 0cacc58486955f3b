"""``POST /oauth/introspect`` (RFC 7662 over IntrospectToken) and
``POST /oauth/revoke`` (RFC 7009 over RevokeTokenByValue).

Form fields: ``token`` (required), ``token_type_hint`` (accepted, unused: we
issue one kind of token) and, for introspection, as an extension,
``client_ip`` for tokens restricted to some addresses. Errors use RFC 6749's
``error`` codes; the two endpoints word them differently, so each is a
family of its own.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway import openapi_legacy
from gateway.family import Fragment, Route
from gateway.http import (
    BadBody,
    BadInput,
    BodyTooLarge,
    Request,
    Response,
    empty_response,
    json_response,
)
from gateway.names import shown
from gateway.status import http_status
from gateway.upstream import RpcFailure, Upstream
from tokengrpc.v1 import tokens_pb2 as pb


def _error(status: int, code: str, description: str) -> Response:
    headers = [(b"www-authenticate", b'Bearer error="invalid_token"')] if status == 401 else []
    return json_response(status, {"error": code, "error_description": description}, headers=headers)


def claims(answer: pb.IntrospectTokenResponse) -> dict[str, Any]:
    if not answer.active:
        return {"active": False}
    token = answer.token
    content: dict[str, Any] = {"active": True, "token_type": "Bearer"}
    if token.owner:
        content["sub"] = token.owner
    content["client_id"] = token.name
    content["scope"] = " ".join(token.scopes)
    if token.HasField("expire_time"):
        content["exp"] = token.expire_time.seconds
    content["iat"] = token.create_time.seconds
    content["jti"] = str(token.id)
    return content


class Introspection:
    """RFC 7662: the caller needs a token with ``introspect`` (or ``admin``)."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def routes(self) -> list[Route]:
        return [Route("POST", "/oauth/introspect", self.introspect)]

    def openapi(self) -> Fragment:
        return openapi_legacy.introspection()

    def bad_input(self, request: Request, problem: BadInput) -> Response:
        status = 413 if isinstance(problem, BodyTooLarge) else 400
        return _error(status, "invalid_request", str(problem))

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        if failure.code == grpc.StatusCode.UNAUTHENTICATED:
            return _error(401, "invalid_token", "the bearer token is missing or invalid")
        if failure.code == grpc.StatusCode.PERMISSION_DENIED:
            return _error(403, "insufficient_scope", "introspection needs 'introspect'")
        if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
            # Field names only: the service's words may describe the value.
            fields = sorted({shown(p.field) for p in failure.problems}) or ["a parameter"]
            return _error(400, "invalid_request", f"invalid {', '.join(fields)}")
        return _error(http_status(failure.code), "server_error", failure.message)

    async def introspect(self, request: Request, _: dict[str, str]) -> Response:
        form = await request.form()
        tokens = form.get("token", [])
        if len(tokens) != 1 or not tokens[0]:
            raise BadBody("give exactly one token parameter")
        client_ip = (form.get("client_ip") or [""])[-1]
        answer = await self._upstream.call(
            self._upstream.tokens.IntrospectToken,
            pb.IntrospectTokenRequest(token=tokens[0], client_ip=client_ip),
            request,
        )
        return json_response(200, claims(answer), headers=[(b"cache-control", b"no-store")])


class Revocation:
    """RFC 7009: no bearer token needed, holding the revoked one is the proof;
    so the body a stranger may send is small (``gateway.limits``)."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def routes(self) -> list[Route]:
        return [Route("POST", "/oauth/revoke", self.revoke, needs_token=False)]

    def openapi(self) -> Fragment:
        return openapi_legacy.revocation()

    def bad_input(self, request: Request, problem: BadInput) -> Response:
        if isinstance(problem, BodyTooLarge):
            return _error(413, "invalid_request", str(problem))
        return json_response(400, {"error": "invalid_request"})

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
            return json_response(400, {"error": "invalid_request"})
        return _error(http_status(failure.code), "server_error", failure.message)

    async def revoke(self, request: Request, _: dict[str, str]) -> Response:
        """200 with an empty body whether or not the token existed (RFC 7009 section 2.2)."""
        tokens = (await request.form()).get("token", [])
        if len(tokens) != 1 or not tokens[0]:
            raise BadBody("give exactly one token parameter")
        await self._upstream.call(
            self._upstream.tokens.RevokeTokenByValue,
            pb.RevokeTokenByValueRequest(token=tokens[0]),
            request,
        )
        return empty_response(200, [(b"cache-control", b"no-store")])
