"""The ``me`` family: paginated self-service tokens (seed 001).

    GET    /api/v1/me/tokens?page=N  -> ListTokens(page, 20 per page, revoked included)
    POST   /api/v1/me/tokens         -> CreateToken
    DELETE /api/v1/me/tokens/{id}    -> RevokeToken (the caller's own tokens only)

Errors are RFC 9457 problem details with a ``trace_id`` that is also sent as
``X-Trace-Id`` and logged.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import grpc

from gateway import legacy, openapi_legacy, rfc3339
from gateway.family import Fragment, Route, path_id
from gateway.http import BadInput, BodyTooLarge, Request, Response, empty_response, json_response
from gateway.legacy import InputError
from gateway.limits import size_text
from gateway.status import http_status
from gateway.upstream import RpcFailure, Upstream
from tokengrpc.v1 import tokens_pb2 as pb

log = logging.getLogger(__name__)

PATH = "/api/v1/me/tokens"
PER_PAGE = 20
ON_EACH_SIDE = 3
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# The service's field names, as this API calls them.
_FIELDS = {"expire_time": "expires_at", "allowed_ips": "allowed_ips", "scopes": "scopes"}


def instance(request: Request) -> str:
    """The request path, unless it carries something that is not an id.

    A plaintext pasted where the id goes must not come back in the body (or
    reach the log), so such a path is shown as its route template.
    """
    rest = request.raw_path.removeprefix(PATH).rstrip("/")
    if not rest or (rest[0] == "/" and rest[1:].isascii() and rest[1:].isdigit()):
        return request.raw_path if len(rest) <= 20 else PATH + "/{id}"
    return PATH + "/{id}"


def problem(
    request: Request, status: int, detail: str, errors: dict[str, list[str]] | None = None
) -> Response:
    # The request's trace when the process traces, so the client's id finds the spans.
    trace_id = request.trace.trace_uuid() if request.trace is not None else str(uuid.uuid4())
    where = instance(request)
    # WARNING, not INFO: the trace_id is only worth sending to a client if an
    # operator can find it on stderr, and nothing configures INFO there.
    log.warning(
        "problem %s %s %s: %s (trace_id=%s)", status, request.method, where, detail, trace_id
    )
    content: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": where,
        "trace_id": trace_id,
    }
    if errors is not None:
        content["errors"] = errors
    return json_response(
        status,
        content,
        content_type=b"application/problem+json",
        headers=[(b"x-trace-id", trace_id.encode())],
    )


def _failed(request: Request, failure: RpcFailure) -> Response:
    if failure.code == grpc.StatusCode.UNAUTHENTICATED:
        return problem(request, 401, "Authentication failed")
    if failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.problems:
        errors = legacy.errors_by_field(failure, _FIELDS)
        return problem(request, 422, "The given data was invalid.", errors)
    if failure.code == grpc.StatusCode.NOT_FOUND:
        return problem(request, 404, "Token not found.")
    return problem(request, http_status(failure.code), failure.message)


def item(token: pb.Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        # The application me reproduces knows no pending token: not yet usable is inactive.
        "status": "inactive"
        if token.status == pb.TOKEN_STATUS_PENDING
        else legacy.status_word(token),
        "last_used_at": legacy.optional_time(token, "last_use_time", legacy.seconds_z),
        "usage_count": token.usage_count,
        "expires_at": legacy.optional_time(token, "expire_time", legacy.seconds_z),
        "created_at": legacy.seconds_z(token.create_time),
        "allowed_ips": list(token.allowed_ips) or None,
    }


def requested_page(raw: str | None) -> int:
    """Laravel's rule: anything but an integer of at least 1 means page 1."""
    if raw is None:
        return 1
    text = raw.strip()
    if not text.lstrip("+").isdigit() or len(text) > 9:
        return 1
    return max(int(text), 1)


def page_window(current: int, last: int) -> list[int | None]:
    """Laravel's UrlWindow: every page up to 13, else caps, '...' (None) and a slider."""
    if last < ON_EACH_SIDE * 2 + 8:
        return list(range(1, last + 1))
    window = ON_EACH_SIDE + 4
    start, finish = [1, 2], [last - 1, last]
    if current <= window:
        return [*range(1, window + ON_EACH_SIDE + 1), None, *finish]
    if current > last - window:
        return [*start, None, *range(last - (window + ON_EACH_SIDE - 1), last + 1)]
    slider = range(current - ON_EACH_SIDE, current + ON_EACH_SIDE + 1)
    return [*start, None, *slider, None, *finish]


def paginated(tokens: list[pb.Token], total: int, current: int, base: str) -> dict[str, Any]:
    last = max(math.ceil(total / PER_PAGE), 1)

    def url(page: int) -> str:
        return f"{base}?page={page}"

    prev_page = current - 1 if current > 1 else None
    next_page = current + 1 if current < last else None
    links: list[dict[str, Any]] = [
        {
            "url": url(prev_page) if prev_page else None,
            "label": "\u00ab Previous",
            "page": prev_page,
            "active": False,
        }
    ]
    for page in page_window(current, last):
        if page is None:
            links.append({"url": None, "label": "...", "page": None, "active": False})
        else:
            links.append(
                {"url": url(page), "label": str(page), "page": page, "active": page == current}
            )
    links.append(
        {
            "url": url(next_page) if next_page else None,
            "label": "Next \u00bb",
            "page": next_page,
            "active": False,
        }
    )
    first_item = (current - 1) * PER_PAGE + 1 if tokens else None
    return {
        "data": [item(t) for t in tokens],
        "links": {
            "first": url(1),
            "last": url(last),
            "prev": url(prev_page) if prev_page else None,
            "next": url(next_page) if next_page else None,
        },
        "meta": {
            "current_page": current,
            "from": first_item,
            "last_page": last,
            "links": links,
            "path": base,
            "per_page": PER_PAGE,
            "to": first_item + len(tokens) - 1 if first_item is not None else None,
            "total": total,
        },
    }


class Me:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def routes(self) -> list[Route]:
        return [
            Route("GET", PATH, self.list),
            Route("POST", PATH, self.create),
            Route("DELETE", PATH + "/{id}", self.revoke),
        ]

    def openapi(self) -> Fragment:
        return openapi_legacy.me()

    def bad_input(self, request: Request, bad: BadInput) -> Response:
        if isinstance(bad, BodyTooLarge):
            return problem(request, 413, f"The request body is larger than {size_text(bad.limit)}.")
        if isinstance(bad, InputError):
            return problem(request, 422, "The given data was invalid.", bad.errors)
        return problem(request, 400, str(bad))

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        return _failed(request, failure)

    async def list(self, request: Request, _: dict[str, str]) -> Response:
        pages = [value for key, value in request.query() if key == "page"]
        current = requested_page(pages[-1] if pages else None)
        listing = await self._upstream.call(
            self._upstream.tokens.ListTokens,
            pb.ListTokensRequest(page=current, page_size=PER_PAGE, show_revoked=True),
            request,
        )
        base = f"{request.scheme}://{request.host}{PATH}"
        content = paginated(list(listing.tokens), listing.total_size, current, base)
        return json_response(200, content)

    async def create(self, request: Request, _: dict[str, str]) -> Response:
        body = await legacy.body_fields(request, lists=("allowed_ips", "scopes"))
        errors: dict[str, list[str]] = {}
        name = legacy.optional_string(body, "name", errors)
        expires_text = legacy.optional_string(body, "expires_at", errors)
        allowed_ips = legacy.optional_strings(body, "allowed_ips", errors)
        scopes = legacy.optional_strings(body, "scopes", errors)
        create = pb.CreateTokenRequest(
            name=name or "",
            allowed_ips=allowed_ips or [],
            scopes=scopes or [],
            inherit_caller_scopes=scopes is None,
        )
        if expires_text is not None:
            stamp = rfc3339.parse(expires_text)
            if stamp is None:
                errors.setdefault("expires_at", []).append(
                    "The expires at field must be a valid RFC 3339 date."
                )
            else:
                create.expire_time.CopyFrom(stamp)
        if errors:
            raise InputError(errors)
        created = await self._upstream.call(self._upstream.tokens.CreateToken, create, request)
        return json_response(201, {"data": item(created.token), "plaintext": created.plaintext})

    async def revoke(self, request: Request, variables: dict[str, str]) -> Response:
        await self._upstream.call(
            self._upstream.tokens.RevokeToken,
            pb.RevokeTokenRequest(id=path_id(variables["id"]), caller_owner_only=True),
            request,
        )
        return empty_response(204)
