"""The ``solder`` family: Technic Solder's personal-token API (seed 000).

GET    /api/token            -> ListTokens (all pages)
POST   /api/token            -> CreateToken (the caller's scopes, minus admin)
DELETE /api/token/{tokenId}  -> RevokeToken (the caller's own tokens only)
"""

from __future__ import annotations

import grpc

from gateway import authfirst, legacy
from gateway.http import BodyTooLarge, Request, Response, json_response
from gateway.legacy import Handler, InputError
from gateway.status import http_status
from gateway.upstream import RpcFailure
from tokengrpc.v1 import tokens_pb2 as pb

_NOT_FOUND = {"error": "Token not found."}


def _failure(_: Request, failure: RpcFailure) -> Response:
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


def _bad_input(request: Request, problem: legacy.InputFailure) -> Response:
    if isinstance(problem, BodyTooLarge):
        return json_response(413, {"error": "The request body is too large."})
    if isinstance(problem, InputError):
        return json_response(422, {"error": problem.errors})
    return json_response(400, {"error": str(problem)})


class Solder(legacy.Family):
    bad_input = staticmethod(_bad_input)
    failed = staticmethod(_failure)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/api/token", self.guard(self.list)),
            ("POST", "/api/token", self.guard(self.create)),
            ("DELETE", "/api/token/{tokenId}", self.guard(self.revoke)),
        ]

    async def list(self, request: Request, _: dict[str, str]) -> Response:
        tokens = await legacy.all_tokens(self._upstream, request, pb.ListTokensRequest())
        return json_response(200, {"tokens": [_listed(t) for t in tokens]})

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
        token_id = variables["tokenId"]
        if not (token_id.isascii() and token_id.isdigit()) or len(token_id) > 18:
            # Still authenticate first: a stranger learns nothing from our 404s.
            await authfirst.authenticate(self._upstream, request)
            return json_response(404, _NOT_FOUND)
        await self._upstream.call(
            self._upstream.tokens.RevokeToken,
            pb.RevokeTokenRequest(id=int(token_id), caller_owner_only=True),
            request,
        )
        return json_response(200, {"success": "Token revoked."})
