"""The HTTP gateway: one router over every route family, on uvicorn.

The app lists the families and wraps each of their routes in the one guard
(``gateway.family.guard``): authenticate first, the body limit, and failures
in the family's own shapes. A family only lists, describes and renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import uvicorn

from gateway import openapi
from gateway.admin import Admin
from gateway.canonical import Canonical
from gateway.connections import ConnectionLimits, protocol_for
from gateway.family import Family, Route, guard
from gateway.forwardauth import PATH as FORWARD_PATH
from gateway.forwardauth import ForwardAuth
from gateway.http import (
    ClientGone,
    Message,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    Trust,
    json_response,
)
from gateway.leaks import LeakReports
from gateway.me import Me
from gateway.oauth import Introspection, Revocation
from gateway.ops import Ops, Scraper
from gateway.pattern import BadPath
from gateway.router import Endpoint, Match, NotAllowed, Router
from gateway.solder import Solder
from gateway.transcode import error_response
from gateway.upstream import LocalCheck, Upstream
from tokengrpc.v1 import tokens_pb2

log = logging.getLogger(__name__)

SERVICE = tokens_pb2.DESCRIPTOR.services_by_name["TokenService"]
DEFAULT_TRUSTED = ("127.0.0.0/8", "::1/128")


def families(
    upstream: Upstream, observer: Observer | None = None, *, leak_reports: bool = False
) -> list[Family]:
    """Every route family: the canonical routes from the annotations, the legacy
    ones, OAuth, leak reports when the service takes them, and the operator's
    routes (whose document describes them all)."""
    found: list[Family] = [
        Canonical(upstream, SERVICE),
        Solder(upstream),
        Me(upstream),
        Admin(upstream),
        Introspection(upstream),
        Revocation(upstream),
        ForwardAuth(upstream, observer.decided if observer is not None else None),
    ]
    if leak_reports:
        found.append(LeakReports(upstream))
    return [*found, Ops(upstream, observer, found)]


def document(
    upstream: Upstream, observer: Observer | None = None, *, leak_reports: bool = False
) -> dict[str, Any]:
    """The OpenAPI document a gateway in front of ``upstream`` serves (no call is made)."""
    found = families(upstream, observer, leak_reports=leak_reports)
    return openapi.document([family.openapi() for family in found])


def routes(
    upstream: Upstream, observer: Observer | None = None, *, leak_reports: bool = False
) -> Iterator[tuple[Route, Endpoint]]:
    """Every HTTP route, and its handler guarded by the rules all families share."""
    return _guarded(upstream, families(upstream, observer, leak_reports=leak_reports))


def _guarded(upstream: Upstream, found: list[Family]) -> Iterator[tuple[Route, Endpoint]]:
    for family in found:
        for route in family.routes():
            yield route, guard(upstream, family, route)


def _router(guarded: Iterable[tuple[Route, Endpoint]]) -> Router:
    router = Router()
    for route, endpoint in guarded:
        router.add(route.method, route.template, endpoint, subtree=route.subtree)
    return router


class Observer(Scraper, Protocol):
    """Metrics and the access log, handed in by the command line (they are the service's).

    ``begin`` runs before routing (so authentication can note the caller in
    what it returns, and a tracing observer sets ``request.trace``); ``end``
    once the response is known, with the token id the upstream named (what an
    in-process ``begin`` noted comes first).
    """

    def begin(self, request: Request) -> Any: ...

    def end(
        self,
        begun: Any,
        *,
        method: str,
        route: str | None,
        status: int,
        seconds: float,
        client: str | None,
        headers: Mapping[str, str],
        trace_id: str | None,
        token_id: int | None,
    ) -> None: ...

    def decided(self, endpoint: str, result: str) -> None:
        """Count one authorization decision (``/auth/check``'s: ``allowed``,
        ``unauthenticated``, ``forbidden`` or ``unavailable``)."""
        ...


class Gateway:
    """The ASGI application."""

    def __init__(
        self,
        upstream: Upstream,
        trusted_proxies: Iterable[str] = DEFAULT_TRUSTED,
        observer: Observer | None = None,
        *,
        leak_reports: bool = False,
    ) -> None:
        """``leak_reports``: serve ``/v1/leaks/github`` (the service has a key source)."""
        self.upstream = upstream
        found = families(upstream, observer, leak_reports=leak_reports)
        self._router = _router(_guarded(upstream, found))
        #: Answers checks from their head (``answer_head``).
        self._forward = next(family for family in found if isinstance(family, ForwardAuth))
        self._trust = Trust.of(trusted_proxies)
        self._observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope, receive, self._trust)
        if self._observer is None:
            response, _ = await self._respond(request)
            await response.send(send)
            return
        started = time.perf_counter()
        begun = self._observer.begin(request)
        response, route = await self._respond(request)
        await response.send(send)
        self._observed(begun, started, request, response, route)

    def answers_head(self, path: bytes) -> bool:
        """Whether a request for ``path`` that has no body is answered from its
        head alone (``answer_head``): forward auth's checks, whose answers are a
        few headers and which come before every request a proxy passes on."""
        return path == _FORWARD_PATH or path.startswith(_FORWARD_SUBTREE)

    def answer_head(self, scope: Scope) -> Response | Coroutine[Any, Any, Response]:
        """The response to a request with no body, for the connection to write
        itself (``gateway.connections``): at once when the check needs no wait
        (the token in memory), else the coroutine that makes it. The same
        family, guard rules and observer as ``__call__``, without ASGI's messages."""
        request = Request.from_scope(scope, _no_body, self._trust)
        started = time.perf_counter()
        begun = self._observer.begin(request) if self._observer is not None else None
        try:
            now = self._forward.check_now(request)
        except Exception:
            now = _internal_error(request)
        if now is None:
            return self._answer_later(request, begun, started)
        if self._observer is not None:
            self._observed(begun, started, request, now, FORWARD_PATH, traced=False)
        return now

    async def _answer_later(self, request: Request, begun: Any, started: float) -> Response:
        response, route = await self._respond(request)
        if self._observer is not None:
            self._observed(begun, started, request, response, route)
        return response

    def _observed(
        self,
        begun: Any,
        started: float,
        request: Request,
        response: Response,
        route: str | None,
        *,
        traced: bool = True,
    ) -> None:
        """``traced``: the response may carry an ``X-Trace-Id`` (a check's has none)."""
        assert self._observer is not None
        self._observer.end(
            begun,
            method=request.method,
            route=route,
            status=response.status,
            seconds=time.perf_counter() - started,
            client=request.client_host,
            headers=request.headers,
            trace_id=_trace_id(response) if traced else None,
            token_id=request.caller_id,
        )

    async def _respond(self, request: Request) -> tuple[Response, str | None]:
        """The response, and the template of the route that made it (None: no route)."""
        route: str | None = None
        try:
            resolved = self._router.resolve(request.method, request.raw_path)
            if isinstance(resolved, Match):
                route = resolved.template
                response = await resolved.endpoint(request, resolved.variables)
            elif isinstance(resolved, NotAllowed):
                response = error_response(
                    grpc.StatusCode.UNIMPLEMENTED, "method not allowed", http=405
                )
                response.headers.append((b"allow", ", ".join(resolved.allow).encode()))
            else:
                response = error_response(grpc.StatusCode.NOT_FOUND, "no route for this path")
        except BadPath as error:
            response = error_response(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ClientGone:
            # Nobody to answer (or the connection answered 408 itself): the status is for the log.
            response = error_response(
                grpc.StatusCode.CANCELLED, "the request body did not arrive", http=408
            )
        except Exception:
            response = _internal_error(request)
        return response, route


_FORWARD_PATH = FORWARD_PATH.encode()
_FORWARD_SUBTREE = _FORWARD_PATH + b"/"


async def _no_body() -> Message:
    """``receive`` for a request answered from its head: it has no body."""
    return {"type": "http.request", "body": b"", "more_body": False}


def _internal_error(request: Request) -> Response:
    """A failure of ours: never a traceback (or a token) to the client; the log
    has it. Not the path: it may hold a plaintext pasted where an id goes."""
    log.exception("unexpected error on a %s request", request.method)
    return json_response(500, {"code": 13, "message": "internal error", "details": []})


def _trace_id(response: Response) -> str | None:
    """The ``me`` family's trace id, which the client has too (``X-Trace-Id``)."""
    for name, value in response.headers:
        if name == b"x-trace-id":
            return value.decode("latin-1")
    return None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: ``tokengrpc serve`` owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class HttpServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    upstream: Upstream
    address: str

    async def stop(self) -> None:
        """Stop accepting; in-flight requests get the grace period, then every connection goes."""
        self.server.should_exit = True
        await self.task
        # A client halfway through a body is still connected after its task was
        # cancelled: its socket must not outlive the server.
        for connection in list(self.server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await self.upstream.close()


def bind(listen: str, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket on ``listen`` (port 0 picks one), for ``start_http`` to serve."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says TCP, and without it every keep-alive
    # response waits 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # several worker processes share the port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, int(port)))
    except (OSError, ValueError) as error:
        sock.close()
        raise OSError(f"could not listen on {listen}: {error}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def start_http(
    upstream: str | grpc.aio.Channel,
    listen: str | socket.socket,
    trusted_proxies: Iterable[str] = DEFAULT_TRUSTED,
    *,
    reuse_port: bool = False,
    limits: ConnectionLimits | None = None,
    grace_period: float = 10.0,
    observer: Observer | None = None,
    tls: ssl.SSLContext | None = None,
    leak_reports: bool = False,
    local_check: LocalCheck | None = None,
) -> HttpServer:
    """Serve the gateway on ``listen`` (port 0 picks one) in front of ``upstream``.

    ``upstream`` is a ``HOST:PORT`` to dial, or a channel (such as the
    in-process one ``tokengrpc serve`` provides). ``tls`` makes it HTTPS with
    that live context (whose certificate the caller may reload). ``listen``
    may be a socket from ``bind``, taken before anything else was started.
    ``leak_reports``: serve ``/v1/leaks/github`` (the upstream has a key source).
    ``local_check``: the in-process service's ``CheckToken``, for ``/auth/check``
    to call without the channel (``gateway.upstream.LocalCheck``).
    """
    limits = limits or ConnectionLimits()
    connection = (
        Upstream.connect(upstream) if isinstance(upstream, str) else Upstream(upstream, local_check)
    )
    app = Gateway(connection, trusted_proxies, observer, leak_reports=leak_reports)
    sock = bind(listen, reuse_port=reuse_port) if isinstance(listen, str) else listen
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's messages reach our handler, in our format
        access_log=False,
        proxy_headers=False,  # we decide whom to trust, in gateway.http
        lifespan="off",
        server_header=False,
        ws="none",
        http=protocol_for(limits, app),
        timeout_keep_alive=limits.keep_alive_timeout,
        ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
    )
    # Without it uvicorn waits for every connection to close, and a client that
    # stops halfway through a body would hold SIGTERM off for ever. (Typed int,
    # used as a float by asyncio.wait_for.)
    config.timeout_graceful_shutdown = grace_period  # type: ignore[assignment]
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    while not server.started:
        if task.done():
            await task
            raise OSError(f"could not serve HTTP on {address}")
        await asyncio.sleep(0.01)
    return HttpServer(server, task, connection, address)
