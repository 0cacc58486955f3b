"""The ``admin`` family: service tokens managed by name (seed 002).

    POST   /_/token               -> CreateToken(service_token)
    GET    /_/token               -> ListTokens(service_tokens), by name
    PUT    /_/token               -> GetToken(name) + UpdateToken(present fields)
    DELETE /_/token               -> RevokeToken(name)
    GET    /_/token/value?name=   -> GetTokenValue(name)

``expiration_date`` is epoch milliseconds; ``write: true`` is the ``write``
scope. Errors are ``{"error": "<message>"}``.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from gateway import legacy, openapi_legacy
from gateway.family import Fragment, Route
from gateway.http import BadInput, BodyTooLarge, Request, Response, json_response
from gateway.legacy import InputError
from gateway.limits import size_text
from gateway.status import http_status
from gateway.upstream import RpcFailure, Upstream
from tokengrpc.v1 import tokens_pb2 as pb

WRITE = "write"
_MAX_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, Timestamp's limit


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _failed(failure: RpcFailure) -> Response:
    if failure.code == grpc.StatusCode.UNAUTHENTICATED:
        return _error(401, "Unauthenticated.")
    if failure.code == grpc.StatusCode.PERMISSION_DENIED:
        return _error(403, "Forbidden: this needs a token with the admin scope.")
    if failure.code == grpc.StatusCode.NOT_FOUND:
        return _error(404, "Token not found.")
    if failure.code == grpc.StatusCode.ALREADY_EXISTS:
        return _error(409, "A token with this name already exists.")
    if failure.problems:
        names = {"expire_time": "expiration_date"}
        text = "; ".join(
            f"{legacy.family_field(p.field, names)}: {p.description}" for p in failure.problems
        )
        return _error(400, text)
    return _error(http_status(failure.code), failure.message)


def described(token: pb.Token) -> dict[str, Any]:
    return {
        "name": token.name,
        "expiration_date": legacy.optional_time(token, "expire_time", legacy.millis),
        "active": token.active,
        "write": WRITE in token.scopes,
        "created_at": legacy.millis(token.create_time),
        "updated_at": legacy.millis(token.update_time),
        "last_used_at": legacy.optional_time(token, "last_use_time", legacy.millis),
        "usage_count": token.usage_count,
    }


class _Fields:
    """The body of POST and PUT, checked for shape (the service checks meaning)."""

    def __init__(self, body: dict[str, Any]) -> None:
        errors: dict[str, list[str]] = {}
        self.name = legacy.optional_string(body, "name", errors)
        self.active = legacy.optional_bool(body, "active", errors)
        self.write = legacy.optional_bool(body, "write", errors)
        self.expiration: timestamp_pb2.Timestamp | None = None
        raw = body.get("expiration_date")
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != int(raw):
                errors["expiration_date"] = [
                    "expiration_date must be a whole number of milliseconds"
                ]
            elif not 0 <= raw <= _MAX_MILLIS:
                errors["expiration_date"] = ["expiration_date must be between 0 and year 9999"]
            else:
                self.expiration = timestamp_pb2.Timestamp()
                self.expiration.FromMilliseconds(int(raw))
        self.present = {key for key, value in body.items() if value is not None}
        if errors:
            raise InputError(errors)


class Admin:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/_/token", self.create),
            Route("GET", "/_/token", self.list),
            Route("PUT", "/_/token", self.update),
            Route("DELETE", "/_/token", self.delete),
            Route("GET", "/_/token/value", self.value),
        ]

    def openapi(self) -> Fragment:
        return openapi_legacy.admin()

    def bad_input(self, request: Request, bad: BadInput) -> Response:
        if isinstance(bad, BodyTooLarge):
            return _error(413, f"The request body is larger than {size_text(bad.limit)}.")
        return _error(400, str(bad))

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        return _failed(failure)

    async def create(self, request: Request, _: dict[str, str]) -> Response:
        fields = _Fields(await request.json_object())
        create = pb.CreateTokenRequest(
            name=fields.name or "",
            service_token=True,
            scopes=[WRITE] if fields.write is not False else [],
            active=fields.active is not False,
        )
        if fields.expiration is not None:
            create.expire_time.CopyFrom(fields.expiration)
        created = await self._upstream.call(self._upstream.tokens.CreateToken, create, request)
        return json_response(201, {**described(created.token), "value": created.plaintext})

    async def list(self, request: Request, _: dict[str, str]) -> Response:
        # By name from the service, page by page, never held whole.
        return await legacy.streamed_tokens(
            self._upstream,
            request,
            pb.ListTokensRequest(service_tokens=True, order_by="name"),
            described,
            b"[",
            b"]",
        )

    async def update(self, request: Request, _: dict[str, str]) -> Response:
        fields = _Fields(await request.json_object())
        found = await self._upstream.call(
            self._upstream.tokens.GetToken, pb.GetTokenRequest(name=fields.name or ""), request
        )
        token = pb.Token(id=found.token.id)
        paths = []
        if fields.active is not None:
            token.active = fields.active
            paths.append("active")
        if fields.write is not None:
            others = [s for s in found.token.scopes if s != WRITE]
            token.scopes.extend([*others, WRITE] if fields.write else others)
            paths.append("scopes")
        if "expiration_date" in fields.present and fields.expiration is not None:
            token.expire_time.CopyFrom(fields.expiration)
            paths.append("expire_time")
        if not paths:
            return json_response(200, described(found.token))
        updated = await self._upstream.call(
            self._upstream.tokens.UpdateToken,
            pb.UpdateTokenRequest(token=token, update_mask=field_mask_pb2.FieldMask(paths=paths)),
            request,
        )
        return json_response(200, described(updated.token))

    async def delete(self, request: Request, _: dict[str, str]) -> Response:
        fields = _Fields(await request.json_object(allow_empty=True))
        await self._upstream.call(
            self._upstream.tokens.RevokeToken,
            pb.RevokeTokenRequest(name=fields.name or ""),
            request,
        )
        return json_response(200, {"deleted": (fields.name or "").strip()})

    async def value(self, request: Request, _: dict[str, str]) -> Response:
        names = [value for key, value in request.query() if key == "name"]
        result = await self._upstream.call(
            self._upstream.tokens.GetTokenValue,
            pb.GetTokenValueRequest(name=names[-1] if names else ""),
            request,
        )
        return json_response(200, {"name": result.token.name, "value": result.value})
