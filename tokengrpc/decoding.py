"""Request bytes that are not a message, or too large a one: an answer, never a crash.

grpc.aio runs a method's ``request_deserializer`` before (or, for streamed
requests, while) the servicer runs; when it raises, the call ends ``UNKNOWN``
with the exception's class name and grpc logs a traceback. :func:`guarded`
wraps a deserializer so that it never raises: bytes that do not decode, or
more bytes than a method takes, become a :class:`Unreadable` marker, which
the observer (``tokengrpc.observe``) answers with a fixed status before the
servicer sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class Unreadable:
    """What a request became when it could not be read; the message is fixed."""

    code: grpc.StatusCode
    message: str


UNDECODABLE = Unreadable(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid message")
TOO_LARGE = Unreadable(
    grpc.StatusCode.RESOURCE_EXHAUSTED, "the request message is larger than the server accepts"
)


def guarded(
    deserializer: Callable[[bytes], Any] | None, limit: int | None
) -> Callable[[bytes], Any]:
    """``deserializer`` that returns a marker instead of raising, and refuses
    more than ``limit`` bytes (None: what the transport let through) unread."""

    def decode(data: bytes) -> Any:
        if limit is not None and len(data) > limit:
            return TOO_LARGE
        if deserializer is None:  # a generic handler taking raw bytes
            return data
        try:
            return deserializer(data)
        except Exception:  # whatever the decoder raises, the bytes were not a message
            return UNDECODABLE

    return decode


async def readable(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    """A stream of requests that ends the call at the first unreadable one."""
    async for request in requests:
        if isinstance(request, Unreadable):
            await context.abort(request.code, request.message)
        yield request
