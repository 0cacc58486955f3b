"""Dispatch by method and path template, most specific template first.

Priority is by specificity (literal beats ``*`` beats ``**``), never by the
order routes were added; a trailing ``/`` matches the route without it; a
path that matches under other methods is 405 with ``Allow``.

A path that is exactly an all-literal template (most legacy routes) is
found by one dictionary lookup: no template can be more specific than it.
A subtree route (``/auth/check`` and everything below it, any method) is
found before any template, by its prefix alone: what lies below is never
decoded, so no path under it can be a 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.http import Request, Response
from gateway.pattern import LITERAL, Template, compile_template, openapi_path

#: The method of a route that answers every method (``/auth/check``).
ANY_METHOD = "*"

Endpoint = Callable[[Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: Template
    endpoint: Endpoint
    #: The route's path as ``/openapi.json`` writes it: its metrics label.
    label: str


@dataclass(frozen=True, slots=True)
class Match:
    endpoint: Endpoint
    variables: dict[str, str]
    #: The route's path as ``/openapi.json`` writes it (``/v1/tokens/{id}``, also for
    #: ``{token.id}``): a label for metrics, logs and spans, never the raw path.
    template: str


@dataclass(frozen=True, slots=True)
class NotAllowed:
    allow: tuple[str, ...]


class AmbiguousRoute(ValueError):
    """Two routes with the same method and the same template."""


class Router:
    def __init__(self) -> None:
        self._routes: list[Route] = []
        #: All-literal templates: path -> method -> endpoint.
        self._exact: dict[str, dict[str, Endpoint]] = {}
        #: Subtree routes: (the path, the path and "/", endpoint).
        self._subtrees: list[tuple[str, str, Endpoint]] = []

    def add(
        self,
        method: str,
        template: Template | str,
        endpoint: Endpoint,
        *,
        subtree: bool = False,
    ) -> None:
        compiled = compile_template(template) if isinstance(template, str) else template
        if subtree:
            literal = all(kind == LITERAL for kind, _ in compiled.segments) and not compiled.verb
            if method != ANY_METHOD or not literal:
                raise ValueError(f"{compiled.source}: a subtree route is literal, for any method")
            self._subtrees.append((compiled.source, compiled.source + "/", endpoint))
            return
        for route in self._routes:
            same = (route.template.segments, route.template.verb) == (
                compiled.segments,
                compiled.verb,
            )
            if route.method == method and same:
                raise AmbiguousRoute(f"{method} {compiled.source} is already routed")
        self._routes.append(Route(method, compiled, endpoint, openapi_path(compiled)))
        self._routes.sort(key=lambda r: r.template.rank, reverse=True)
        if all(kind == LITERAL for kind, _ in compiled.segments):
            # A literal template is its own OpenAPI path, and its own label.
            self._exact.setdefault(compiled.source, {})[method] = endpoint

    def resolve(self, method: str, raw_path: str) -> Match | NotAllowed | None:
        """The endpoint for a request; NotAllowed or None (404) otherwise.

        Raises BadPath for a malformed escape in a path that would match.
        """
        for path, below, endpoint in self._subtrees:
            if raw_path == path or raw_path.startswith(below):
                return Match(endpoint, {}, path)
        if len(raw_path) > 1 and raw_path.endswith("/"):
            raw_path = raw_path[:-1]
        exact = self._exact.get(raw_path)
        if exact is not None and method in exact:
            return Match(exact[method], {}, raw_path)
        allowed: list[str] = []
        for route in self._routes:
            variables = route.template.match(raw_path)
            if variables is None:
                continue
            if route.method == method:
                return Match(route.endpoint, variables, route.label)
            if route.method not in allowed:
                allowed.append(route.method)
        return NotAllowed(tuple(allowed)) if allowed else None
