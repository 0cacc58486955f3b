"""The ``solder`` family: Technic Solder's personal-token API (seed 000).

GET    /api/token            -> ListTokens (all pages)
POST   /api/token            -> CreateToken (the caller's scopes, minus admin)
DELETE /api/token/{tokenId}  -> RevokeToken (the caller's own tokens only)
"""

from __future__ import annotations

import grpc

from gateway import legacy, openapi_legacy
from gateway.family import Fragment, Route, path_id
from gateway.http import BadInput, BodyTooLarge, Request, Response, json_response
from gateway.legacy import InputError
from gateway.status import http_status
from gateway.upstream import RpcFailure, Upstream
from tokengrpc.v1 import tokens_pb2 as pb

_NOT_FOUND = {"error": "Token not found."}


def _failed(failure: RpcFailure) -> Response:
    if failure.code == grpc.StatusCode.UNAUTHENTICATED:
        return json_response(401, {"error": "Unauthenticated."})
    if failure.code == grpc.StatusCode.PERMISSION_DENIED:
        return json_response(403, {"error": "Forbidden."})
    if failure.code == grpc.StatusCode.NOT_FOUND:
        return json_response(404, _NOT_FOUND)
    if failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.problems:
        return json_response(422, {"error": legacy.errors_by_field(failure, {})})
    return json_response(http_status(failure.code), {"error": failure.message})


def _listed(token: pb.Token) -> dict[str, object]:
    return {
        "id": token.id,
        "name": token.name,
        "last_used_at": legacy.optional_time(token, "last_use_time", legacy.micro_z),
        "created_at": legacy.micro_z(token.create_time),
    }


class Solder:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/api/token", self.list),
            Route("POST", "/api/token", self.create),
            Route("DELETE", "/api/token/{tokenId}", self.revoke),
        ]

    def openapi(self) -> Fragment:
        return openapi_legacy.solder()

    def bad_input(self, request: Request, problem: BadInput) -> Response:
        if isinstance(problem, BodyTooLarge):
            return json_response(413, {"error": "The request body is too large."})
        if isinstance(problem, InputError):
            return json_response(422, {"error": problem.errors})
        return json_response(400, {"error": str(problem)})

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        return _failed(failure)

    async def list(self, request: Request, _: dict[str, str]) -> Response:
        # As json_response(200, {"tokens": [...]}) would, sent page by page.
        return await legacy.streamed_tokens(
            self._upstream, request, pb.ListTokensRequest(), _listed, b'{"tokens":[', b"]}"
        )

    async def create(self, request: Request, _: dict[str, str]) -> Response:
        body = await legacy.body_fields(request)
        errors: dict[str, list[str]] = {}
        name = legacy.optional_string(body, "name", errors)
        if errors:
            raise InputError(errors)
        created = await self._upstream.call(
            self._upstream.tokens.CreateToken,
            pb.CreateTokenRequest(name=name or "", inherit_caller_scopes=True),
            request,
        )
        token = created.token
        return json_response(
            201,
            {
                "token": {
                    "id": token.id,
                    "name": token.name,
                    "plaintext": created.plaintext,
                    "created_at": legacy.micro_z(token.create_time),
                }
            },
        )

    async def revoke(self, request: Request, variables: dict[str, str]) -> Response:
        await self._upstream.call(
            self._upstream.tokens.RevokeToken,
            pb.RevokeTokenRequest(id=path_id(variables["tokenId"]), caller_owner_only=True),
            request,
        )
        return json_response(200, {"success": "Token revoked."})
