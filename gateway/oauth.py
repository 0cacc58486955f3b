"""``POST /oauth/introspect`` (RFC 7662 over IntrospectToken) and
``POST /oauth/revoke`` (RFC 7009 over RevokeTokenByValue).

Form fields: ``token`` (required), ``token_type_hint`` (accepted, unused: we
issue one kind of token) and, for introspection, as an extension,
``client_ip`` for tokens restricted to some addresses. Errors use RFC 6749's
``error`` codes.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway import authfirst
from gateway.http import BadBody, BodyTooLarge, Request, Response, empty_response, json_response
from gateway.legacy import Handler
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


class OAuth:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/oauth/introspect", self.introspect),
            ("POST", "/oauth/revoke", self.revoke),
        ]

    async def revoke(self, request: Request, _: dict[str, str]) -> Response:
        """200 with an empty body whether or not the token existed (RFC 7009 section 2.2);
        no bearer token needed: holding the revoked one is the proof, so the
        body a stranger may send is small (``authfirst.NO_TOKEN_MAX_BODY``)."""
        invalid = json_response(400, {"error": "invalid_request"})
        try:
            form = await request.form(authfirst.NO_TOKEN_MAX_BODY)
        except BodyTooLarge as large:
            return _error(413, "invalid_request", str(large))
        except BadBody:
            return invalid
        tokens = form.get("token", [])
        if len(tokens) != 1 or not tokens[0]:
            return invalid
        try:
            await self._upstream.call(
                self._upstream.tokens.RevokeTokenByValue,
                pb.RevokeTokenByValueRequest(token=tokens[0]),
                request,
            )
        except RpcFailure as failure:
            if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
                return invalid
            return _error(http_status(failure.code), "server_error", failure.message)
        return empty_response(200, [(b"cache-control", b"no-store")])

    async def introspect(self, request: Request, _: dict[str, str]) -> Response:
        try:
            # The caller needs a token: a stranger only ever sees 401.
            await authfirst.before_body(self._upstream, request)
            try:
                form = await request.form()
            except (BodyTooLarge, BadBody) as bad:
                await authfirst.authenticate(self._upstream, request)
                status = 413 if isinstance(bad, BodyTooLarge) else 400
                return _error(status, "invalid_request", str(bad))
            tokens = form.get("token", [])
            if len(tokens) != 1 or not tokens[0]:
                await authfirst.authenticate(self._upstream, request)
                return _error(400, "invalid_request", "give exactly one token parameter")
            client_ip = (form.get("client_ip") or [""])[-1]
            answer = await self._upstream.call(
                self._upstream.tokens.IntrospectToken,
                pb.IntrospectTokenRequest(token=tokens[0], client_ip=client_ip),
                request,
            )
        except RpcFailure as failure:
            if failure.code == grpc.StatusCode.UNAUTHENTICATED:
                return _error(401, "invalid_token", "the bearer token is missing or invalid")
            if failure.code == grpc.StatusCode.PERMISSION_DENIED:
                return _error(403, "insufficient_scope", "introspection needs 'introspect'")
            if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
                # Field names only: the service's words may describe the value.
                fields = sorted({shown(p.field) for p in failure.problems}) or ["a parameter"]
                return _error(400, "invalid_request", f"invalid {', '.join(fields)}")
            return _error(http_status(failure.code), "server_error", failure.message)
        return json_response(200, claims(answer), headers=[(b"cache-control", b"no-store")])
