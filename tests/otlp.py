"""A real OTLP/gRPC trace receiver in the test process (opentelemetry-proto's
generated service on a grpc server on port 0), keeping every request's raw
bytes as well as its spans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

#: Short enough that a test waits for its spans a moment, not seconds.
BATCH_DELAY_MS = "50"
#: A correctness bound: spans come within a batch delay, this is far beyond it.
WAIT = 10.0


def value_of(value: common_pb2.AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


@dataclass(frozen=True)
class Received:
    """One exported span, with its process's resource attributes."""

    span: trace_pb2.Span
    resource: dict[str, object]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, object]:
        return {kv.key: value_of(kv.value) for kv in self.span.attributes}

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()


@dataclass
class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    endpoint: str = ""
    raw: list[bytes] = field(default_factory=list)
    spans: list[Received] = field(default_factory=list)
    _more: asyncio.Event = field(default_factory=asyncio.Event)

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans.extend(Received(span, resource) for span in scope.spans)
        self._more.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def wait_for(self, found: Callable[[Received], bool], count: int = 1) -> list[Received]:
        """The spans ``found`` accepts, once there are ``count`` of them."""
        async with asyncio.timeout(WAIT):
            while len(matches := [s for s in self.spans if found(s)]) < count:
                self._more.clear()
                await self._more.wait()
        return matches

    def env(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": BATCH_DELAY_MS,
        }


class _KeepRawBytes(grpc.aio.ServerInterceptor):
    """Records every request's bytes as they arrived, before they are parsed."""

    def __init__(self, raw: list[bytes]) -> None:
        self._raw = raw

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        parse = handler.request_deserializer

        def keep(data: bytes) -> Any:
            self._raw.append(data)
            return parse(data)

        return handler._replace(request_deserializer=keep)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    server = grpc.aio.server(interceptors=(_KeepRawBytes(found.raw),))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    found.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        await server.stop(None)
