"""A channel that calls this process's servicers directly, with no network hop.

``serve`` hands it to the gateway, which sees an ordinary ``grpc.aio``
channel: the same handlers, the same authentication (metadata, including
``x-forwarded-for``), the same status codes and details, the same deadlines.
What it skips is the socket, HTTP/2 framing and protobuf (de)serialization,
much as grpc-gateway's in-process handler registration does in Go. Requests
and responses are handed over as objects; handlers do not keep or mutate
them. When the process traces, each call gets the server span a network
call would, continuing the trace context the gateway sent in the metadata.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc.aio import Metadata

from tokengrpc.logs import current_caller

if TYPE_CHECKING:
    from tokengrpc.spans import Tracing

log = logging.getLogger(__name__)

#: The peer the servicers see: a local process, trusted like a unix socket.
PEER = "unix:in-process"

Handler = Callable[[Any, Any], Awaitable[Any]]


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Metadata) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing


class _Context:
    """The part of ``grpc.aio.ServicerContext`` that handlers use."""

    __slots__ = ("_deadline", "_metadata", "_trailing")

    def __init__(self, metadata: tuple[tuple[str, str], ...], deadline: float | None) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self._trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return PEER

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._trailing = metadata

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        # As grpc does: an abort without trailing metadata sends what was set.
        raise _Abort(code, details, Metadata(*(trailing_metadata or self._trailing)))

    async def abort_with_status(self, status: Any) -> NoReturn:
        raise _Abort(status.code, status.details, Metadata(*status.trailing_metadata))


class _UnaryUnary(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __init__(self, method: str, handler: Handler | None, tracing: Tracing | None) -> None:
        self._method = method
        self._handler = handler
        self._tracing = tracing

    def __call__(  # type: ignore[override]
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        **_: Any,
    ) -> Awaitable[Any]:
        if self._tracing is not None:
            return self._traced(self._tracing, request, timeout, tuple(metadata or ()))
        return self._invoke(request, timeout, tuple(metadata or ()))

    async def _traced(
        self,
        tracing: Tracing,
        request: Any,
        budget: float | None,
        metadata: tuple[tuple[str, str], ...],
    ) -> Any:
        span = tracing.rpc(self._method, metadata, PEER)
        code = grpc.StatusCode.OK
        try:
            return await self._invoke(request, budget, metadata)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        finally:
            # The gateway's request tracks the caller; the service noted it there.
            slot = current_caller()
            tracing.end_rpc(span, code, slot.named_id if slot is not None else None)

    async def _invoke(
        self, request: Any, budget: float | None, metadata: tuple[tuple[str, str], ...]
    ) -> Any:
        if self._handler is None:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNIMPLEMENTED, Metadata(), Metadata(),
                                       f"no handler for {self._method}")  # fmt: skip
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        context = _Context(metadata, deadline)
        try:
            if deadline is None:  # most calls: skip the timeout's bookkeeping
                return await self._handler(request, context)
            async with asyncio.timeout_at(deadline):
                return await self._handler(request, context)
        except _Abort as abort:
            raise grpc.aio.AioRpcError(
                abort.code, Metadata(), abort.trailing, abort.details
            ) from None
        except TimeoutError:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, Metadata(), Metadata(), "Deadline Exceeded"
            ) from None
        except Exception:
            # What a gRPC server does with an unexpected error: log it, say UNKNOWN.
            log.exception("unexpected error in %s", self._method)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNKNOWN, Metadata(), Metadata(), "Unexpected error"
            ) from None


class InProcessChannel(grpc.aio.Channel):
    """Unary calls straight into registered servicers (the only kind our API has)."""

    def __init__(self, tracing: Tracing | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        self._tracing = tracing

    def register(self, service: ServiceDescriptor, servicer: object) -> None:
        for method in service.methods:
            self._handlers[f"/{service.full_name}/{method.name}"] = getattr(servicer, method.name)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryUnary(method, self._handlers.get(method), self._tracing)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        # Stubs create every method up front; only calling a streaming one fails.
        return _UnaryUnary(method, None, None)

    stream_unary = stream_stream = unary_stream

    async def close(self, grace: float | None = None) -> None:
        return None

    async def __aenter__(self) -> InProcessChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        return None

    async def channel_ready(self) -> None:
        return None
