"""The few HTTP pieces the gateway needs, straight on ASGI.

A request reads its body at most once and never past the limit; a response
is bytes plus headers. Nothing here knows about tokens.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from gateway import forwarded
from gateway.forwarded import Trust
from gateway.limits import MAX_BODY, MAX_FORM_BODY, size_text
from gateway.names import shown

__all__ = ["Trust"]  # re-exported: the gateway's callers know it from here

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Parameters in a query string or a form body. Each one costs Python work
#: per item before any rule of the service sees the request.
MAX_FIELDS = 1000
#: Items in one JSON array or object, values in a whole JSON body, and
#: nesting depth: what the gateway walks (and converts) item by item is
#: bounded here, well above anything the service accepts.
MAX_ITEMS = 1000
MAX_VALUES = 10_000
MAX_DEPTH = 32
#: Compact UTF-8 JSON, built once rather than per response as ``json.dumps`` does.
log = logging.getLogger(__name__)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class BadInput(Exception):
    """A request that cannot become a call: the route's family words it, and
    only once the caller is authenticated (``gateway.family.guard``)."""


class BodyTooLarge(BadInput):
    """More bytes were sent than the route takes (``gateway.limits``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {size_text(limit)}")
        self.limit = limit


class ClientGone(Exception):
    """The client went away (or its body came too late) before the body was complete.

    What did arrive is never used: a truncated form is still a valid form.
    """


class BadBody(BadInput):
    """The body (or the query) cannot be read: not JSON, not an object, too big a shape.

    Messages are fixed sentences: they never repeat what was sent.
    """


class BadQuery(BadBody):
    """A query string with more parameters than MAX_FIELDS."""


class Trace(Protocol):
    """A request's trace span, when the process traces (``tokengrpc.spans.HttpTrace``)."""

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The trace context for a call made for this request."""
        ...

    def trace_uuid(self) -> str:
        """The trace id, written as a UUID."""
        ...

    def follow(self, headers: dict[str, str]) -> None:
        """Continue the trace these headers carry (a checked request's), before any call."""
        ...

    def checked(self, token_id: int) -> None:
        """Name the token a check judged on the span."""
        ...


@dataclass(slots=True)
class Request:
    method: str
    #: Still percent-encoded, so that %2F can be told from '/'.
    raw_path: str
    query_string: str
    headers: dict[str, str]
    client_host: str | None
    #: Whether the peer is a trusted proxy, whose X-Forwarded-Proto/-Host count.
    peer_trusted: bool
    #: The connection's own scheme (``scheme`` is what the client used).
    own_scheme: str
    receive: Receive
    _body: bytes | None = field(default=None, repr=False)
    #: The token id the service said it authenticated (for the access line).
    caller_id: int | None = None
    #: The service has accepted this request's credential (a call of its own
    #: said so), so asking again before reporting bad input is not needed.
    authenticated: bool = False
    #: The most body the route takes; its guard sets it (``gateway.limits``).
    body_limit: int = MAX_BODY
    #: The request's span, set by the observer when tracing is on.
    trace: Trace | None = None
    #: The head's headers as they came, for a header whose lines must not be joined.
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list, repr=False)

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive, trust: Trust) -> Request:
        values: dict[str, list[str]] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            values.setdefault(name, []).append(raw_value.decode("latin-1"))
        # Repeated headers are joined in order, so a list header
        # (X-Forwarded-For) keeps its hops and "authorization" twice is one
        # value that is no token. Joined once: thousands of repeats of one
        # header fit in a request head, and joining them one by one is quadratic.
        headers = {name: ", ".join(parts) for name, parts in values.items()}
        client = scope.get("client")
        peer = client[0] if client else None
        raw = scope.get("raw_path") or scope["path"].encode()
        return cls(
            method=scope["method"],
            raw_path=raw.decode("latin-1").split("?", 1)[0],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client_host=forwarded.client_address(peer, headers.get("x-forwarded-for", ""), trust),
            peer_trusted=trust.trusts(peer),
            own_scheme=scope.get("scheme", "http"),
            receive=receive,
            raw_headers=scope["headers"],
        )

    @property
    def scheme(self) -> str:
        """The scheme the client used (for absolute URLs; worked out only when asked)."""
        proto = self.headers.get("x-forwarded-proto", "")
        return forwarded.scheme_of(self.peer_trusted, proto, self.own_scheme)

    @property
    def host(self) -> str:
        """The host the client asked for (for absolute URLs; worked out only when asked)."""
        named = self.headers.get("x-forwarded-host", "")
        return forwarded.host_of(self.peer_trusted, named, self.headers.get("host", "localhost"))

    def header_lines(self, name: bytes) -> list[bytes]:
        """Each line of one header (``name`` in lowercase), in order, not joined."""
        return [value for key, value in self.raw_headers if key.lower() == name]

    def query(self) -> list[tuple[str, str]]:
        """The query's parameters in order; BadQuery past MAX_FIELDS."""
        return _pairs(self.query_string, "the query string")

    def declares_body_within(self, size: int) -> bool:
        """Whether the head promises a body of at most ``size`` bytes (none counts).

        A chunked body, or a length that is not plain digits, promises nothing.
        """
        if "transfer-encoding" in self.headers:
            return False
        declared = self.headers.get("content-length")
        if declared is None:
            return True  # no body at all
        return declared.isascii() and declared.isdigit() and int(declared) <= size

    async def body(self, at_most: int | None = None) -> bytes:
        """The whole body; BodyTooLarge past the route's limit (or ``at_most``, if
        lower), ClientGone if it came cut off."""
        if self._body is not None:
            return self._body
        limit = self.body_limit if at_most is None else min(at_most, self.body_limit)
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = b"".join(chunks)
        return self._body

    async def json(self, *, allow_empty: bool = False, unique_keys: bool = False) -> Any:
        """The body as JSON; ``unique_keys`` refuses an object naming a key twice
        (BadBody) where the default keeps the last, as Python and PHP do."""
        raw = await self.body()
        if not raw.strip() and allow_empty:
            return None
        if raw.count(b",") >= MAX_VALUES:
            # Counted in C before parsing: building half a million small
            # values would hold the event loop for tens of milliseconds.
            raise BadBody(f"the body holds more than {MAX_VALUES} values")
        try:
            value = json.loads(
                raw,
                parse_constant=_no_constant,
                object_pairs_hook=_unique_object if unique_keys else None,
            )
        except RecursionError:
            raise BadBody(f"the body is nested deeper than {MAX_DEPTH} levels") from None
        except UnicodeDecodeError:
            raise BadBody("the body is not valid UTF-8") from None
        except json.JSONDecodeError as error:
            # Its position only: the message never quotes the document.
            raise BadBody(
                f"the body is not valid JSON (line {error.lineno}, column {error.colno})"
            ) from None
        except ValueError:  # an integer past Python's digit limit, NaN, Infinity
            raise BadBody("the body holds a number that is not finite or too large") from None
        check_shape(value)
        return value

    async def json_object(
        self, *, allow_empty: bool = False, unique_keys: bool = False
    ) -> dict[str, Any]:
        value = await self.json(allow_empty=allow_empty, unique_keys=unique_keys)
        if value is None and allow_empty:
            return {}
        if not isinstance(value, dict):
            raise BadBody("the body must be a JSON object")
        return value

    async def form(self) -> dict[str, list[str]]:
        raw = await self.body(MAX_FORM_BODY)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody("the form is not UTF-8") from None
        found: dict[str, list[str]] = {}
        for key, value in _pairs(text, "the form"):
            found.setdefault(key, []).append(value)
        return found

    def is_form(self) -> bool:
        """Whether the body is declared ``application/x-www-form-urlencoded``."""
        declared = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        return declared == "application/x-www-form-urlencoded"


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    try:
        # errors="strict": an escape that is not UTF-8 is refused, not
        # silently turned into U+FFFD and matched against something else.
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except UnicodeDecodeError:
        raise BadQuery(f"{what} has a percent-escape that is not UTF-8") from None
    except ValueError:
        raise BadQuery(f"{what} has more than {MAX_FIELDS} parameters") from None


def _no_constant(_: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


class DuplicateKey(BadBody):
    """A JSON object names one key twice (not a ValueError: json.loads lets it through)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{shown(key)} is given more than once in one object of the body")
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook for ``json.loads``: linear, and a set only when there is a repeat."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


def check_shape(value: Any) -> None:
    """Refuse JSON the gateway should not walk item by item: too deep, too wide,
    too many values, non-finite numbers, or strings with lone surrogates.

    Iterative, and it stops at the first problem, so its cost is bounded by
    MAX_VALUES whatever was sent.
    """
    pending: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while pending:
        current, depth = pending.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise BadBody(f"the body holds more than {MAX_VALUES} values")
        if isinstance(current, dict | list):
            if depth > MAX_DEPTH:
                raise BadBody(f"the body is nested deeper than {MAX_DEPTH} levels")
            if len(current) > MAX_ITEMS:
                raise BadBody(f"an array or object in the body has more than {MAX_ITEMS} items")
            if isinstance(current, dict):
                for key in current:
                    _check_text(key)
                pending.extend((item, depth + 1) for item in current.values())
            else:
                pending.extend((item, depth + 1) for item in current)
        elif isinstance(current, str):
            _check_text(current)
        elif isinstance(current, float) and not math.isfinite(current):
            raise BadBody("the body holds a number that is not finite or too large")


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadBody("the body holds a string with a lone UTF-16 surrogate") from None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The rest of the body, sent as it is produced (chunked, no length): a
    #: whole list need not be held. uvicorn waits while the client's socket
    #: buffers are full, so a slow reader holds back production, not memory.
    more: AsyncIterator[bytes] | None = None

    async def send(self, send: Send) -> None:
        if self.more is None:
            headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            await send({"type": "http.response.body", "body": self.body})
            return
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        try:
            async for chunk in self.more:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:
            # Too late for a status: the connection is cut, so the client sees
            # an incomplete body, never a complete-looking wrong one.
            log.warning("a streamed %s response was cut short: its source failed", self.status)
            return
        await send({"type": "http.response.body", "body": b""})


def json_response(
    status: int,
    content: Any,
    *,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> Response:
    body = _ENCODER.encode(content).encode()
    return Response(status, body, [(b"content-type", content_type), *headers])


def json_items_response(
    status: int,
    head: bytes,
    first: Sequence[Any],
    tail: bytes,
    more: AsyncIterator[Sequence[Any]] | None = None,
) -> Response:
    """``head``, items as one JSON array's elements, ``tail``: byte for byte what
    ``json_response`` makes of the whole list. Items of ``more`` are sent batch
    by batch after ``first``, which the caller read before the answer began
    (so a failure there is still an error response); without it, the answer
    is whole, with its length."""
    body = head + ",".join(map(_ENCODER.encode, first)).encode()
    headers = [(b"content-type", b"application/json")]
    if more is None:
        return Response(status, body + tail, headers)

    async def chunks() -> AsyncIterator[bytes]:
        empty = not first
        async for batch in more:
            if batch:
                items = ",".join(map(_ENCODER.encode, batch))
                yield (items if empty else "," + items).encode()
                empty = False
        yield tail

    return Response(status, body, headers, chunks())


def empty_response(status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> Response:
    return Response(status, b"", list(headers))
