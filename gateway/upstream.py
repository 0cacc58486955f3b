"""The gateway's only way to the service: a gRPC channel and its metadata.

Every HTTP request becomes calls with the caller's ``authorization``, its
``x-request-id``, its ``grpc-timeout`` as the deadline, the client's
address as ``x-forwarded-for``, and its trace context: the request's span's
when the process traces, else the client's ``traceparent`` as it came.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from gateway.http import Request
from tokengrpc.v1 import tokens_pb2, tokens_pb2_grpc

R = TypeVar("R")

_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
#: What gRPC accepts in a text metadata value: printable ASCII.
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")
_MAX_REQUEST_ID = 128
#: W3C trace context, passed on as it came when this process does not trace.
_TRACE_HEADERS = ("traceparent", "tracestate")
#: tracestate holds at most 32 entries of up to 256 characters each.
_MAX_TRACE_HEADER = 8192
#: The service's ``tokengrpc.logs.CALLER_ID_METADATA``: the id of the token a
#: call authenticated with, for the access line (never passed on to a client).
CALLER_ID_METADATA = "tokengrpc-caller-id"
#: A token id is a positive 64-bit integer: at most 19 digits.
_MAX_ID_DIGITS = 19
#: A longer grpc-timeout (the header allows 99999999 hours) is clamped: past
#: a deadline this far, gRPC's clock arithmetic overflows and the call fails
#: at once as DEADLINE_EXCEEDED.
MAX_TIMEOUT = 3600.0
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


#: The service's ``google.rpc.ErrorInfo`` reason whose metadata maps a field
#: path to the most characters it takes (``tokengrpc.errors.MAX_LENGTH``).
MAX_LENGTH = "MAX_LENGTH"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field violation, as structured data: a family words it from these,
    never from ``description`` (the service's English, shown as is at most)."""

    field: str
    description: str
    reason: str
    #: The most characters the field takes, when the service said so.
    max_length: int | None = None


@dataclass
class RpcFailure(Exception):
    """A call that ended in a non-OK status, with its details decoded."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status
    problems: list[FieldProblem] = field(default_factory=list)

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> RpcFailure:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
        for key, value in error.trailing_metadata() or ():
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                status = status_pb2.Status.FromString(value)
        violations: list[error_details_pb2.BadRequest.FieldViolation] = []
        lengths: dict[str, str] = {}
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(bad):
                violations.extend(bad.field_violations)
            elif detail.Unpack(info) and info.reason == MAX_LENGTH:
                lengths.update(info.metadata)
        problems = [
            FieldProblem(v.field, v.description, v.reason, _count(lengths.get(v.field)))
            for v in violations
        ]
        return cls(error.code(), error.details() or "", status, problems)


def _count(text: str | None) -> int | None:
    if text is None or not (0 < len(text) <= 9 and text.isascii() and text.isdigit()):
        return None
    return int(text)


def parse_timeout(value: str | None) -> float | None:
    """A ``grpc-timeout`` header value (``100m``, ``5S``) in seconds."""
    if not value:
        return None
    match = _TIMEOUT.match(value.strip())
    if match is None:
        return None
    return min(int(match.group(1)) * _UNIT_SECONDS[match.group(2)], MAX_TIMEOUT)


class LocalCheck(Protocol):
    """``CheckToken`` called directly by a gateway in the service's process (no
    channel, metadata or context; ``tokengrpc.servicer.TokenServicer``): the
    ``authorization`` the call would carry, the client address, the scopes
    demanded -> the answer, or the code the call would end with."""

    async def check_local(
        self, authorization: str | None, client: str | None, required: Sequence[str]
    ) -> tokens_pb2.CheckTokenResponse | grpc.StatusCode: ...

    def check_local_cached(
        self, authorization: str | None, client: str | None, required: Sequence[str]
    ) -> tokens_pb2.CheckTokenResponse | grpc.StatusCode | None:
        """The same without waiting; None when it would have to (a store read)."""
        ...


class Upstream:
    def __init__(self, channel: grpc.aio.Channel, local_check: LocalCheck | None = None) -> None:
        self.channel = channel
        self.tokens = tokens_pb2_grpc.TokenServiceStub(channel)
        #: Set only when the service runs in this process and does not trace
        #: (a traced check keeps the call, which has its span).
        self.local_check = local_check

    @classmethod
    def connect(cls, target: str) -> Upstream:
        return cls(grpc.aio.insecure_channel(target))

    @staticmethod
    def authorization(request: Request) -> str | None:
        """The request's ``authorization`` as a call carries it: None if absent
        or holding bytes gRPC metadata cannot (and then no token either)."""
        value = request.headers.get("authorization")
        return value if value is not None and _METADATA_VALUE.fullmatch(value) else None

    @staticmethod
    def metadata(request: Request) -> tuple[tuple[str, str], ...]:
        """The call's metadata; a header gRPC could not carry is left out.

        An ``authorization`` with bytes outside printable ASCII holds no
        token, so leaving it out makes the call the 401 it deserves rather
        than a channel error.
        """
        headers = request.headers
        pairs = [("x-forwarded-for", request.client_host or "")]
        authorization = Upstream.authorization(request)
        if authorization is not None:
            pairs.append(("authorization", authorization))
        request_id = headers.get("x-request-id")
        if (
            request_id is not None
            and len(request_id) <= _MAX_REQUEST_ID
            and _METADATA_VALUE.fullmatch(request_id)
        ):
            pairs.append(("x-request-id", request_id))
        if request.trace is not None:
            pairs.extend(request.trace.headers())
        else:
            for name in _TRACE_HEADERS:
                value = headers.get(name)
                if (
                    value is not None
                    and len(value) <= _MAX_TRACE_HEADER
                    and _METADATA_VALUE.fullmatch(value)
                ):
                    pairs.append((name, value))
        return tuple(pairs)

    async def call(self, method: Callable[..., Awaitable[R]], message: Any, request: Request) -> R:
        """Make one call for an HTTP request; raise RpcFailure on a non-OK status.

        Whom the service authenticated, if it says so, is noted on ``request``
        for the access line, on success and failure alike.
        """
        try:
            call = method(
                message,
                metadata=self.metadata(request),
                timeout=parse_timeout(request.headers.get("grpc-timeout")),
            )
            response = await call
        except grpc.aio.AioRpcError as error:
            _note_caller(request, error.trailing_metadata())
            raise RpcFailure.of(error) from None
        if isinstance(call, grpc.aio.Call):  # not the in-process channel's plain awaitable
            _note_caller(request, await call.trailing_metadata())
        return response

    async def close(self) -> None:
        await self.channel.close()


def _note_caller(request: Request, trailing: grpc.aio.Metadata | None) -> None:
    """A decimal token id from the service's trailing metadata; anything else is ignored."""
    for key, value in trailing or ():
        if (
            key == CALLER_ID_METADATA
            and isinstance(value, str)
            and 0 < len(value) <= _MAX_ID_DIGITS
            and value.isascii()
            and value.isdigit()
            and 0 < int(value) < 2**63
        ):
            request.caller_id = int(value)
