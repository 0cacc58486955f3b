"""A grpc.aio server interceptor that admits only calls with an active token.

The handler reads the caller with ``current_identity.get()``. A call without
exactly one valid ``authorization: Bearer`` entry is ``UNAUTHENTICATED``; a
token without the method's scopes is ``PERMISSION_DENIED``; a token nobody
could check (tokengrpc unreachable, the verifier's own token refused, any
failure of the lookup) is ``UNAVAILABLE``, which callers may retry, with a
fixed message that says nothing of the cause (the service's log does).

The check runs inside the handler (the interceptor wraps it) because only the
servicer context knows the peer address that ``allowed_ips`` is checked
against.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from tokengrpc.addresses import peer_address
from tokengrpc.client.identity import Identity, bearer, current_identity
from tokengrpc.client.verifier import TokenVerifier, VerifierUnavailable

log = logging.getLogger(__name__)

#: Methods of these services pass without a token: probes and tooling.
PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)

if TYPE_CHECKING:  # the runtime classes are not generic
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """``grpc.aio.server(interceptors=[TokenInterceptor(verifier)])``.

    ``required_scopes`` apply to every guarded method; ``method_scopes`` adds
    more per full method name (``/package.Service/Method``).
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        required_scopes: Iterable[str] = (),
        method_scopes: Mapping[str, Iterable[str]] | None = None,
        public_services: Iterable[str] = PUBLIC_SERVICES,
    ) -> None:
        self._verifier = verifier
        self._required = frozenset(required_scopes)
        self._per_method = {
            m: frozenset(s) | self._required for m, s in (method_scopes or {}).items()
        }
        self._public = tuple(f"/{name}/" for name in public_services)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._public):
            return handler
        values = [
            value
            for key, value in handler_call_details.invocation_metadata or ()
            if key == "authorization" and isinstance(value, str)
        ]
        token = bearer(values[0]) if len(values) == 1 else None
        required = self._per_method.get(method, self._required)
        return _guarded(handler, lambda context: self._admit(token, required, context))

    async def _admit(
        self,
        token: str | None,
        required: frozenset[str],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Identity:
        try:
            address = peer_address(context.peer())
            identity = await self._verifier.identify(token, str(address) if address else "")
        except Exception as error:  # fail closed, and never tell the caller why
            if not isinstance(error, VerifierUnavailable):  # the verifier logged those
                log.warning(
                    "denying a call: verifying its token failed with %s", type(error).__name__
                )
            await context.abort(grpc.StatusCode.UNAVAILABLE, "token verification is unavailable")
        if identity is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        elif not identity.has_scopes(required):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "the token lacks a scope this method requires"
            )
        assert identity is not None  # abort() raised otherwise
        return identity


def _guarded(
    handler: Handler, admit: Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[Identity]]
) -> Handler:
    """The same handler, with ``admit`` run first and its identity made current."""

    async def unary_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        reset = current_identity.set(await admit(context))
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        finally:
            current_identity.reset(reset)

    async def stream_response(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        reset = current_identity.set(await admit(context))
        try:
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            elif inspect.isawaitable(result):  # writes with context.write()
                await result
            else:
                for item in result:
                    yield item
        finally:
            # A generator may be finished from another context; the task ends anyway.
            with contextlib.suppress(ValueError):
                current_identity.reset(reset)

    kinds = {
        (False, False): ("unary_unary", unary_response, grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", stream_response, grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", unary_response, grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", stream_response, grpc.stream_stream_rpc_method_handler),
    }
    name, wrapper, make = kinds[(handler.request_streaming, handler.response_streaming)]
    behavior = getattr(handler, name)
    made: Handler = make(
        wrapper,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return made
