"""What every request leaves behind: a metric sample and an access line, from one place per surface.

gRPC: one server interceptor wraps every handler of every service (tokens,
health, reflection, ext_authz), and reads their requests so that unreadable
bytes are an answer, not a crash (``tokengrpc.decoding``). HTTP: the gateway
calls :class:`HttpObserver` once per request from ``Gateway.__call__`` (it is
handed one by the command line, since the gateway does not import this package).

Traces (``tokengrpc.spans``) are started and ended here too, but only when
the observer was given a :class:`~tokengrpc.spans.Tracing`: without one, a
request meets a ``None`` check and no tracer call.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc

from tokengrpc.decoding import TOO_LARGE, Unreadable, guarded, readable
from tokengrpc.logs import AccessLog, CallerSlot, request_id_of, trace_id_of, track_caller
from tokengrpc.metrics import UNMATCHED_ROUTE, Metrics

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from tokengrpc.spans import HttpTrace, Tracing

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
#: Where a method's trace context is, when not in the call's metadata (Check:
#: in the checked request's headers, so the protected request's trace goes on).
TraceCarrier: TypeAlias = Callable[[Any], Iterable[tuple[str, Any]] | None]


def _address(peer: str) -> str | None:
    """``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5`` -> the address; anything else as gRPC said it."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer or None


class GrpcObserver(grpc.aio.ServerInterceptor):
    """Counts, times and logs every call; ``method`` is the full method name.

    It also reads every request through :func:`tokengrpc.decoding.guarded`:
    bytes that are not a message, or more than ``max_request_bytes`` of them,
    are answered here with a fixed status (and one access line), or with the
    method's own answer in ``oversized`` (Check denies rather than fail).

    Each method's handler is wrapped once and kept: a call then pays for its
    timing and its sample, not for building a wrapper.
    """

    def __init__(
        self,
        metrics: Metrics | None,
        access: AccessLog | None,
        *,
        max_request_bytes: int | None = None,
        oversized: Mapping[str, object] | None = None,
        tracing: Tracing | None = None,
        carriers: Mapping[str, TraceCarrier] | None = None,
    ) -> None:
        self._metrics = metrics
        self._tracing = tracing
        #: Full method name -> where its trace context is read from (else the metadata).
        self._carriers = dict(carriers or {})
        self._access = access if access is not None and access.enabled else None
        self._limit = max_request_bytes
        #: Full method name -> the response a too large request gets instead of an error.
        self._oversized = dict(oversized or {})
        #: Full method name -> (the handler as found, the same handler observed).
        self._observed: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        known = self._observed.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        observed = self._observe(handler, method)
        # Only methods a service serves get here (an unknown one has no
        # handler), so the table stays as small as the services.
        self._observed[method] = (handler, observed)
        return observed

    def _observe(self, handler: Handler, method: str) -> Handler:
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                wrapped = self._wrap(behaviour, method, streamed=kind.startswith("stream"))
                return handler._replace(  # type: ignore[attr-defined,no-any-return]
                    request_deserializer=guarded(handler.request_deserializer, self._limit),
                    **{kind: wrapped},
                )
        return handler

    def _wrap(
        self, behaviour: Callable[..., Any], method: str, *, streamed: bool
    ) -> Callable[..., Any]:
        """``streamed``: the request is an iterator of messages, each read as it comes."""
        oversized = self._oversized.get(method)
        # Off: one test per call, and no tracer call.
        span_of = self._spans(self._tracing, method) if self._tracing is not None else None

        if inspect.isasyncgenfunction(behaviour):

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                started, slot, failed = time.perf_counter(), track_caller(), True
                span = span_of(request, context) if span_of is not None else None
                try:
                    if streamed:
                        request = readable(request, context)
                    elif isinstance(request, Unreadable):
                        await context.abort(request.code, request.message)
                    async for response in behaviour(request, context):
                        yield response
                    failed = False
                finally:
                    self._done(method, context, started, slot, failed, span)

            return streaming

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started, slot, failed = time.perf_counter(), track_caller(), True
            span = span_of(request, context) if span_of is not None else None
            try:
                if streamed:
                    request = readable(request, context)
                elif isinstance(request, Unreadable):
                    if request is TOO_LARGE and oversized is not None:
                        failed = False
                        return oversized
                    await context.abort(request.code, request.message)
                response = await behaviour(request, context)
                failed = False
                return response
            finally:
                self._done(method, context, started, slot, failed, span)

        return call

    def _spans(self, tracing: Tracing, method: str) -> Callable[[Any, Any], Span]:
        """What starts ``method``'s server span, from the context its carrier names."""
        carrier = self._carriers.get(method)

        def span_of(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Span:
            found = None
            if carrier is not None and not isinstance(request, Unreadable):
                found = carrier(request)
            return tracing.rpc(method, found or context.invocation_metadata() or (), context.peer())

        return span_of

    def _done(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
        slot: CallerSlot,
        failed: bool,
        span: Span | None,
    ) -> None:
        if self._metrics is None and self._access is None and span is None:
            return
        seconds = time.perf_counter() - started
        # None when the handler neither set a code nor aborted (typed otherwise).
        code: grpc.StatusCode | None = getattr(context, "code")()  # noqa: B009
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        if self._metrics is not None:
            self._metrics.grpc_call(method, code.name, seconds)
        trace_id = None
        if span is not None and self._tracing is not None:
            # A span that continues a checked request's trace (Check's) is that
            # request's: it names the checked token only, never the proxy's own.
            token_id = slot.checked_id if method in self._carriers else slot.named_id
            trace_id = self._tracing.end_rpc(span, code, token_id)
        if self._access is not None:
            metadata: Iterable[tuple[str, Any]] = context.invocation_metadata() or ()
            self._access.write(
                surface="grpc", method=method, route=None, status=code.name,
                duration_ms=round(seconds * 1000, 3), token_id=slot.named_id,
                client=_address(context.peer()), trace_id=trace_id or trace_id_of(metadata),
                request_id=request_id_of(metadata),
            )  # fmt: skip


class HttpRequest(Protocol):
    """What the observer reads of the gateway's request (``gateway.http.Request``)."""

    method: str
    headers: dict[str, str]
    #: Set by a tracing observer: the request's span, for the calls it makes.
    trace: Any

    @property
    def scheme(self) -> str: ...


class HttpObserver:
    """The gateway's observer: ``begin`` before routing, ``end`` once answered."""

    def __init__(self, metrics: Metrics | None, access: AccessLog | None) -> None:
        self._metrics = metrics
        self._access = access if access is not None and access.enabled else None
        self.serves_metrics = metrics is not None

    def begin(self, request: HttpRequest) -> Any:
        return track_caller()

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
        token_id: int | None = None,
    ) -> None:
        """``token_id``: whom a separate service said it authenticated; an
        authentication in this process (noted in ``begun``) comes first."""
        slot, trace_id = self._finish(begun, route, status, client, token_id, trace_id)
        label = route or UNMATCHED_ROUTE
        if self._metrics is not None:
            self._metrics.http_request(label, str(status), seconds)
        if self._access is not None:
            self._access.write(
                surface="http", method=method, route=label, status=status,
                duration_ms=round(seconds * 1000, 3), client=client,
                token_id=_named(slot, token_id),
                trace_id=trace_id or trace_id_of(headers.items()),
                request_id=request_id_of(headers.items()),
            )  # fmt: skip

    def _finish(
        self,
        begun: Any,
        route: str | None,
        status: int,
        client: str | None,
        token_id: int | None,
        trace_id: str | None,
    ) -> tuple[CallerSlot, str | None]:
        """The request's caller slot and the trace id its access line shows."""
        return begun, trace_id

    def decided(self, endpoint: str, result: str) -> None:
        """One authorization decision (``Check``'s or ``/auth/check``'s), counted."""
        if self._metrics is not None:
            self._metrics.decision(endpoint, result)

    def scrape(self) -> tuple[bytes, str] | None:
        return self._metrics.scrape() if self._metrics is not None else None


class TracingHttpObserver(HttpObserver):
    """The same, and a server span per request (the command line picks this one
    only when tracing is on). The span's trace id is the access line's."""

    def __init__(self, metrics: Metrics | None, access: AccessLog | None, tracing: Tracing) -> None:
        super().__init__(metrics, access)
        self._tracing = tracing

    def begin(self, request: HttpRequest) -> Any:
        trace = self._tracing.http(request.method, request.headers, request.scheme)
        request.trace = trace
        return track_caller(), trace

    def _finish(
        self,
        begun: Any,
        route: str | None,
        status: int,
        client: str | None,
        token_id: int | None,
        trace_id: str | None,
    ) -> tuple[CallerSlot, str | None]:
        slot: CallerSlot
        trace: HttpTrace
        slot, trace = begun
        return slot, trace.finish(route, status, client, _named(slot, token_id))


def _named(slot: CallerSlot, told: int | None) -> int | None:
    """The token an HTTP line names: one judged in this process comes first,
    else the one a separate service ``told`` (its trailing metadata)."""
    named = slot.named_id
    return named if named is not None else told
