"""OpenTelemetry spans for every gRPC call and HTTP request, when tracing is on.

Only :func:`tokengrpc.tracing.start` builds a :class:`Tracing`, and only when
the ``OTEL_*`` variables ask for traces; the observers (``tokengrpc.observe``,
the in-process channel) call it per request, and nothing else does.

Attributes follow OpenTelemetry's semantic conventions for RPC and HTTP
servers, plus ``tokengrpc.token_id``. A span carries nothing that can hold
a secret: a method name or a route *template*, a status, an address, a
token *id*; never a path, a query or a header's value (a plaintext pasted
where an id goes would be in them).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tokengrpc.addresses import address_text, peer_address
from tokengrpc.version import version

log = logging.getLogger(__name__)

#: The id (never the secret) of the token a call authenticated with; on
#: ``Check`` and ``/auth/check``, of the token that was checked.
TOKEN_ID = "tokengrpc.token_id"  # noqa: S105 (an attribute's name, not a secret)
#: gRPC codes that make a *server* span an error (semantic conventions for gRPC).
_SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})  # fmt: skip
_ERROR = Status(StatusCode.ERROR)
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    for variable in _PROTOCOLS:
        protocol = environ.get(variable, "").strip()
        if protocol:
            if protocol != "grpc":
                raise ValueError(f"{variable}: this build exports OTLP over grpc only")
            break
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        # xds-protos (Envoy's API, for Check) ships an old opentelemetry/proto/
        # of its own; installed after opentelemetry-proto, it replaces that one's.
        raise ValueError(
            "the OTLP exporter cannot be loaded: opentelemetry-proto's files were replaced"
            " (by xds-protos's older copy, as a rule); reinstall it: pip install"
            " --force-reinstall --no-deps opentelemetry-proto"
        ) from None
    return OTLPSpanExporter()  # endpoint, headers, TLS, timeout: from OTEL_EXPORTER_OTLP_*


def _resource() -> Resource:
    """OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win; ``tokengrpc`` is the default name."""
    # The pid tells the workers of one `serve --workers N` apart.
    found = Resource.create({SERVICE_VERSION: version(), "process.pid": os.getpid()})
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: "tokengrpc"}))
    return found


def _carrier(pairs: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """gRPC metadata as the propagators read it (binary entries hold no trace context)."""
    return {key: value for key, value in pairs if isinstance(value, str)}


def trace_hex(span: Span) -> str:
    """The span's trace id as the access log writes it (W3C: 32 hex digits)."""
    return format(span.get_span_context().trace_id, "032x")


class Tracing:
    """The process's tracer provider, and the spans of its requests."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("tokengrpc", version())
        #: Full method name -> the span's name and its fixed attributes, made once.
        self._rpcs: dict[str, tuple[str, dict[str, str]]] = {}

    @classmethod
    def start(cls, exporters: Iterable[str], environ: Mapping[str, str]) -> Tracing:
        provider = TracerProvider(resource=_resource())  # the sampler: OTEL_TRACES_SAMPLER
        for name in exporters:
            # The batch processor reads OTEL_BSP_*; export happens on its thread.
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
        return cls(provider)

    def stop(self) -> None:
        """Send what is queued (briefly: shutdown has a deadline), then stop exporting."""
        try:
            self.provider.force_flush(timeout_millis=2000)
            self.provider.shutdown()
        except Exception as error:  # an exporter's failure must not stop the shutdown
            log.warning("traces could not all be sent: %s", error)

    def _rpc_names(self, method: str) -> tuple[str, dict[str, str]]:
        service, _, name = method.lstrip("/").rpartition("/")
        fixed = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        self._rpcs[method] = named = (f"{service}/{name}", fixed)
        return named

    def rpc(self, method: str, carrier: Iterable[tuple[str, Any]], peer: str) -> Span:
        """A server span for one gRPC call, continuing the trace ``carrier`` names."""
        name, fixed = self._rpcs.get(method) or self._rpc_names(method)
        parent = propagate.extract(_carrier(carrier))
        span = self._tracer.start_span(name, parent, SpanKind.SERVER, fixed)
        address = peer_address(peer)  # None for a unix socket or the in-process channel
        if address is not None:
            span.set_attribute("client.address", address_text(address))
        return span

    def end_rpc(self, span: Span, code: grpc.StatusCode, token_id: int | None) -> str:
        """End the span; return its trace id for the access line."""
        if token_id is not None:
            span.set_attributes({"rpc.grpc.status_code": code.value[0], TOKEN_ID: token_id})
        else:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            span.set_status(_ERROR)
        span.end()
        return trace_hex(span)

    def http(self, method: str, headers: Mapping[str, str], scheme: str) -> HttpTrace:
        return HttpTrace(self._tracer, method, scheme, propagate.extract(headers))


class HttpTrace:
    """One HTTP request's server span, started when first needed.

    Until then the parent may still change (:meth:`follow`): a forward-auth
    route continues the trace of the request it checks. Its start time is
    the request's, whenever it is started.
    """

    __slots__ = ("_checked", "_method", "_parent", "_scheme", "_span", "_started", "_tracer")

    def __init__(self, tracer: trace.Tracer, method: str, scheme: str, parent: Context) -> None:
        self._tracer, self._method, self._scheme = tracer, method, scheme
        self._parent = parent
        self._started = time.time_ns()
        self._span: Span | None = None
        self._checked: int | None = None

    def follow(self, headers: Mapping[str, str]) -> None:
        """Continue the trace these headers carry (a checked request's), if they carry
        one and no call has been made for this request yet."""
        if self._span is None:
            parent = propagate.extract(headers)
            if trace.get_current_span(parent).get_span_context().is_valid:
                self._parent = parent

    def span(self) -> Span:
        if self._span is None:
            self._span = self._start({})
        return self._span

    def _start(self, more: dict[str, str | int]) -> Span:
        attributes = {"http.request.method": self._method, "url.scheme": self._scheme, **more}
        return self._tracer.start_span(
            self._method, self._parent, SpanKind.SERVER, attributes, start_time=self._started
        )

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The trace context to send with a call made for this request (its child)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, trace.set_span_in_context(self.span()))
        return tuple(carrier.items())

    def trace_uuid(self) -> str:
        """The trace id written as a UUID (the ``me`` family's ``trace_id``)."""
        return str(uuid.UUID(int=self.span().get_span_context().trace_id))

    def checked(self, token_id: int) -> None:
        """The token a check judged (``/auth/check``): the span's ``tokengrpc.token_id``."""
        self._checked = token_id

    def finish(
        self, route: str | None, status: int, client: str | None, token_id: int | None
    ) -> str:
        """End the span; return its trace id for the access line."""
        found: dict[str, str | int] = {"http.response.status_code": status}
        if route is not None:
            found["http.route"] = route
        if client is not None:
            found["client.address"] = client
        if self._checked is not None:  # a check's span names the token it judged
            token_id = self._checked
        if token_id is not None:
            found[TOKEN_ID] = token_id
        if self._span is None:  # no call was made: one start with everything
            span = self._span = self._start(found)
        else:
            span = self._span
            span.set_attributes(found)
        if route is not None:
            span.update_name(f"{self._method} {route}")
        if status >= 500:
            span.set_status(_ERROR)
        span.end()
        return trace_hex(span)
