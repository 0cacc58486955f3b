"""What every route family implements, and the one guard the app wraps its routes in.

A family (the canonical routes, solder, me, admin, the two OAuth endpoints,
the ops probes) is a set of routes that share error shapes. It lists its
routes, describes them for ``/openapi.json``, and renders two kinds of
failure its own way: bad input and a failed call. It never authenticates
first, checks a body's size or catches an error by hand: ``guard`` does it
for every route, as Starlette's exception handlers do for an app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.rpc import status_pb2

from gateway import authfirst, limits
from gateway.http import BadInput, Request, Response
from gateway.pattern import Template
from gateway.upstream import RpcFailure, Upstream

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
Schema = dict[str, Any]

#: The largest token id: ids are positive int64s.
_MAX_ID = 2**63 - 1


#: The methods OpenAPI can name: a route for any method (``gateway.router.ANY_METHOD``)
#: is documented under each.
EVERY_METHOD = ("get", "put", "post", "delete", "options", "head", "patch")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: Template | str
    handler: Handler
    #: False only where holding a secret is the proof (a revocation by value):
    #: such a route takes a stranger's body, so a small one (``gateway.limits``).
    needs_token: bool = True
    #: A limit of the route's own (``gateway.limits``), instead of the one
    #: ``needs_token`` implies.
    body_limit: int | None = None
    #: Also every path below the (all-literal) template, unread: a proxy's
    #: check carries the protected request's path there (``/auth/check/...``).
    subtree: bool = False


@dataclass(frozen=True, slots=True)
class Fragment:
    """A family's part of the OpenAPI document: its paths and the schemas they name."""

    paths: dict[str, dict[str, Schema]]
    schemas: dict[str, Schema] = field(default_factory=dict)


class Family(Protocol):
    def routes(self) -> Iterable[Route]: ...

    def openapi(self) -> Fragment: ...

    def bad_input(self, request: Request, problem: BadInput) -> Response:
        """The answer to a request that could not become a call."""
        ...

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        """The answer to a call the service refused or could not make."""
        ...


class NoSuchToken(Exception):
    """A path names a token id that no token can have: NOT_FOUND, as the service would say."""


def path_id(text: str) -> int:
    """The token id a path segment names; NoSuchToken if it is not one (a pasted plaintext)."""
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= _MAX_ID:
        return int(text)
    raise NoSuchToken


def _not_found() -> RpcFailure:
    """What the service answers for an id it does not hold."""
    code, message = grpc.StatusCode.NOT_FOUND, "token not found"
    return RpcFailure(code, message, status_pb2.Status(code=code.value[0], message=message))


def guard(upstream: Upstream, family: Family, route: Route) -> Handler:
    """The route's handler with the common rules applied, failures in the family's shapes.

    A route that needs a token authenticates before reading a large body and
    before reporting bad input (``gateway.authfirst``), so a stranger sees
    401 whatever it sent; every route reads at most its body limit.
    """
    handler, needs_token = route.handler, route.needs_token
    body_limit = limits.body_limit(needs_token, route.body_limit)

    async def run(request: Request, variables: dict[str, str]) -> Response:
        request.body_limit = body_limit
        try:
            if needs_token:
                await authfirst.before_body(upstream, request)
            try:
                return await handler(request, variables)
            except (BadInput, NoSuchToken) as problem:
                if needs_token:
                    await authfirst.authenticate(upstream, request)
                if isinstance(problem, NoSuchToken):
                    return family.failed(request, _not_found())
                return family.bad_input(request, problem)
        except RpcFailure as failure:
            return family.failed(request, failure)

    return run
