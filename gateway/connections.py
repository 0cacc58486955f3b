"""Connection hygiene for uvicorn's httptools protocol: what a hostile client may hold.

httptools has no limit of its own on a request head and uvicorn no timer for
one, so a client could keep a connection, and tens of megabytes of header,
for as long as it liked; nor has it one for a body, so a ``Content-Length``
and one byte held a connection slot for ever. This protocol closes a
connection whose head is not complete within ``head_timeout``, or whose body
is not complete within ``head_timeout`` of its head (408 when no answer has
begun), answers 431 once a head passes ``max_head_bytes``, and closes new
connections at once past ``max_connections`` instead of running the process
out of descriptors. (Idle keep-alive connections are uvicorn's own
``timeout_keep_alive``.)

It also answers some requests itself: one with no body that the app says it
answers from the head alone (``HeadAnswers``: forward auth's checks) is
written here, without uvicorn's ASGI cycle, task and messages, which cost
more than the check. The answer stands in for uvicorn's cycle, so pipelining
and shutdown stay uvicorn's; a request that would have to wait for the
client to read what was written takes uvicorn's path, which waits.

Timers: one per connection watches request heads and one its keep-alive
waits, each moved on when it fires early, instead of two armed and cancelled
per request. Only a request's start ends an idle wait: bytes that start none
(blank lines between requests) do not keep a connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Coroutine, Sized
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.http import Response, Scope

log = logging.getLogger(__name__)

#: Requests queued behind the one being answered past which a connection is
#: not read until they are answered (one read may still queue a chunk's worth).
_PIPELINED = 8
#: Seconds a refused connection is drained before it is closed.
_LINGER = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    #: Bytes a request line plus headers may take (431 beyond).
    max_head_bytes: int = 16 * 1024
    #: Seconds from connection (or, after a first request, from a request's
    #: first byte) to a complete head.
    head_timeout: float = 10.0
    #: Seconds an idle keep-alive connection is kept (whole seconds: uvicorn's unit).
    keep_alive_timeout: int = 5
    #: Open connections per process; more are closed as they arrive.
    max_connections: int = 1000


class RateLimitedLog:
    """One line per ``interval`` for a message a client can trigger at will, with a count."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last = -interval
        self._skipped = 0

    def warning(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._skipped += 1
            return
        more = f" ({self._skipped} more since the last report)" if self._skipped else ""
        log.warning("%s%s", message, more)
        self._last, self._skipped = now, 0


def _answer(status: bytes, code: int, message: str) -> bytes:
    """A complete response closing the connection, its body a ``google.rpc.Status``."""
    body = json.dumps(
        {"code": code, "message": message, "details": []}, separators=(",", ":")
    ).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


_RESPONSE_431 = _answer(b"431 Request Header Fields Too Large", 3, "request head too large")
_RESPONSE_408 = _answer(b"408 Request Timeout", 4, "the request body did not arrive in time")


class _CappedFlow(FlowControl):
    """uvicorn's flow control, which resumed reading after every answer (and on
    every body read), so a client pipelining faster than it is answered grew
    the queue without end: past ``_PIPELINED`` waiting, reading stays paused
    until answers bring the queue down (each answer tries again)."""

    def __init__(self, transport: asyncio.Transport, pipeline: Sized) -> None:
        super().__init__(transport)
        self._pipeline = pipeline

    def resume_reading(self) -> None:
        if len(self._pipeline) <= _PIPELINED:
            super().resume_reading()


class HeadAnswers(Protocol):
    """An app that answers some requests without a body from their head (``gateway.app``)."""

    def answers_head(self, path: bytes) -> bool: ...

    def answer_head(self, scope: Scope) -> Response | Coroutine[Any, Any, Response]:
        """The response at once, or the coroutine that makes it."""
        ...


class _NoEvent:
    """The cycle's ``message_event`` for an answer that reads no body: nobody waits on it."""

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class HeadAnswer:
    """Stands in for uvicorn's cycle while a request is answered from its head.

    uvicorn reads these fields to queue a pipelined request behind this one,
    to end the connection at shutdown or when the client leaves, and to drop
    body bytes after an answer; they mean here what they mean there.
    """

    __slots__ = ("body", "disconnected", "keep_alive", "message_event", "more_body",
                 "response_complete", "response_started")  # fmt: skip

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.more_body = False
        self.body = bytearray()
        self.message_event = _NO_EVENT


#: What uvicorn answers when its app fails before answering.
_NO_ANSWER = Response(
    500, b"Internal Server Error", [(b"content-type", b"text/plain; charset=utf-8")]
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; see ``protocol_for``."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    #: The app, when it answers some requests from their head.
    heads: ClassVar[HeadAnswers | None] = None
    #: Shared by the connections of one server: one line per interval, however many come.
    refusals: ClassVar[RateLimitedLog] = RateLimitedLog()
    upgrades: ClassVar[RateLimitedLog] = RateLimitedLog()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turned_away = False
        self._discarding = False
        #: Between a request's first byte (or the connection's start) and its complete head.
        self._in_head = True
        self._head_bytes = 0
        #: When the head being waited for began (loop time), and the one timer
        #: watching heads: armed once, moved on when it fires early, so that a
        #: request costs no timer of its own.
        self._head_since = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        #: The size of the chunk being parsed, and whether a head ended in it.
        self._chunk = 0
        self._head_ended = False
        #: Since when the connection waits, idle, for a next request (loop
        #: time; None while a request is coming or being answered). uvicorn's
        #: keep-alive timer watches it, armed once like the head timer.
        self._idle_since: float | None = None
        #: Between a complete head and the end of its body.
        self._in_body = False
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._turned_away = True
            transport.abort()
            self.refusals.warning(
                f"refusing HTTP connections: {self.limits.max_connections} already open"
            )
            return
        super().connection_made(transport)
        self.flow = _CappedFlow(transport, self.pipeline)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._turned_away:
            return
        self._stop_head_timer()
        self._disarm_body_timer()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding or self.transport.is_closing():
            return
        # Bytes alone do not end an idle wait (blank lines between requests start
        # none, and would hold the connection for ever): a request's start does.
        self._chunk = len(data)
        self._head_ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            # Not uvicorn's warning per bad request: a client must not write our log at will.
            if not self._discarding:  # else our own 431 stopped the parser
                self.send_400_response("Invalid HTTP request received.")
            return
        # A head still incomplete past the limit: buffered bytes a client could grow for
        # ever. (A chunk in which a head began counts whole: an over-count, never an
        # under; but a chunk in which another head ended, as pipelined requests
        # come, counts at most the limit, or a big one would refuse a small head.)
        if self._in_head:
            grown = len(data)
            if self._head_ended:
                grown = min(grown, self.limits.max_head_bytes)
            self._head_bytes += grown
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse_head()
        # Armed here, not per request: a body that came with its head (most do)
        # never costs a timer.
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.head_timeout, self._body_late)

    def _unsupported_upgrade_warning(self) -> None:
        # Not uvicorn's two lines per request: a client must not write our log at will.
        self.upgrades.warning("refused upgrade requests (this server speaks plain HTTP)")

    def on_message_begin(self) -> None:
        self._idle_since = None
        if not self._in_head:  # the head before it is complete: this one counts from now
            self._in_head = True
            self._arm_head_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_ended = True
        seen, self._head_bytes = self._head_bytes + self._chunk, 0
        # The exact size of what was parsed, for a big head that came in one
        # chunk with its body (only then: fewer bytes than the limit came).
        if seen > self.limits.max_head_bytes:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.limits.max_head_bytes:
                self._refuse_head()
                raise _HeadTooLarge  # stops the parser; data_received sees a refused connection
        self._in_body = True
        if self.heads is not None and self._answer_from_head(self.heads):
            return
        super().on_headers_complete()

    def _answer_from_head(self, heads: HeadAnswers) -> bool:
        """Answer the request now if the app takes it from its head; False if not.

        Only a request that waits for none: a pipelined one behind an answer not
        yet written, or one while the client is not reading what was written
        (uvicorn's path then waits for it, and stops reading), is uvicorn's.
        """
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return False  # one is being answered: this one queues behind it, as uvicorn does
        if self.flow.write_paused:
            return False
        for name, value in self.headers:
            if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                return False
        if self.parser.should_upgrade():
            return False
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return False  # uvicorn answers it
        if not heads.answers_head(url.path):
            return False
        scope: Scope = self.scope  # type: ignore[assignment]
        method = self.parser.get_method().decode("ascii")
        version = self.parser.get_http_version()
        scope["method"] = method
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = url.path.decode("latin-1")
        scope["raw_path"] = url.path
        scope["query_string"] = url.query or b""
        answer = HeadAnswer(keep_alive=version != "1.0" and self.parser.should_keep_alive())
        self.cycle = answer  # type: ignore[assignment]
        # A context of its own, as a task has: what the answer sets (its caller,
        # a span) is not left behind for the connection's later requests.
        context = contextvars.copy_context()
        got = context.run(heads.answer_head, scope)
        if isinstance(got, Response):  # no wait: no task, no turn of the loop
            self._write(got, answer, method)
            return True
        task = self.loop.create_task(self._answer(got, answer, method), context=context)
        self.tasks.add(task)  # shutdown waits for it, as for uvicorn's own
        task.add_done_callback(self.tasks.discard)
        return True

    async def _answer(
        self, answering: Coroutine[Any, Any, Response], answer: HeadAnswer, method: str
    ) -> None:
        """Write what ``answer_head`` makes of the request, once it has."""
        try:
            got = await answering
        except BaseException as error:  # as uvicorn does for its app: a 500, then close
            if not isinstance(error, asyncio.CancelledError):
                log.error("answering a request from its head failed", exc_info=error)
            answer.keep_alive = False
            got = _NO_ANSWER
        if self.flow.write_paused and not answer.disconnected:
            await self.flow.drain()  # the client reads slower than it asks
        self._write(got, answer, method)

    def _write(self, got: Response, answer: HeadAnswer, method: str) -> None:
        if answer.disconnected or self.transport.is_closing():
            return
        if got.more is not None:  # answers from a head are whole, never streamed
            log.error("an answer from a head came streamed")
            answer.keep_alive = False
            got = _NO_ANSWER
        answer.response_started = answer.response_complete = True
        self.transport.write(
            _written(got, self.server_state.default_headers, answer.keep_alive, method == "HEAD")
        )
        if not answer.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm_body_timer()
        super().on_message_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and not self.pipeline
            and self._idle_since is None
            and not self.transport.is_closing()
        ):
            # Answered before its body ended (a stranger's 401): the body's bytes
            # ended the idle wait the answer began. The connection is idle from
            # here, and must time out as such.
            self._idle()

    def on_response_complete(self) -> None:
        """uvicorn's, but the keep-alive wait costs no timer per request (``_idle``)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()  # unless too many wait (``_CappedFlow``)
        if self.pipeline:  # the next pipelined request, which waited for this answer
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._in_body:  # an answer before its body ended: idle once it has
            self._idle()

    def _unset_keepalive_if_required(self) -> None:
        """Bytes came: the connection is not idle (the timer, if armed, finds so)."""
        self._idle_since = None

    def _idle(self) -> None:
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._idle_late
            )

    def _idle_late(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None or self.transport.is_closing():
            return  # busy: the next idle wait arms the timer again
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:  # armed for an earlier wait: this one has time left
            self.timeout_keep_alive_task = self.loop.call_later(left, self._idle_late)
        else:
            self.transport.close()

    def _refuse_head(self) -> None:
        self._stop_head_timer()
        self._answer_and_close(_RESPONSE_431)

    def _answer_and_close(self, response: bytes) -> None:
        """Answer, then drain for a moment before closing (a lingering close):
        closing on a client still sending would reset the connection and lose
        the answer."""
        self._discarding = True
        self.transport.write(response)
        if self.transport.can_write_eof():  # not over TLS
            self.transport.write_eof()
        self.loop.call_later(_LINGER, self.transport.close)

    def _arm_head_timer(self) -> None:
        """A head begins now (the timer, if armed for an earlier one, moves on when it fires)."""
        self._head_since = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return  # no head is awaited: the next one arms the timer again
        left = self._head_since + self.limits.head_timeout - self.loop.time()
        if left > 0:  # armed for an earlier head: this one has time left
            self._head_timer = self.loop.call_later(left, self._head_late)
        else:
            self.transport.close()

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self) -> None:
        """The body is not complete in time: 408 if nothing of an answer was
        written (and none of this request's will be), else just close."""
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started or self.pipeline:
            self.transport.close()
            return
        # The application sees a client gone (its reads end, its answer goes
        # nowhere): the 408 is the only thing written on this connection.
        cycle.disconnected = True
        cycle.message_event.set()
        self._answer_and_close(_RESPONSE_408)


def _written(
    response: Response, defaults: list[tuple[bytes, bytes]], keep_alive: bool, head_only: bool
) -> bytes:
    """The bytes uvicorn would write for ``response``: its default headers
    first, the length, ``connection: close`` when the connection ends.

    Unlike uvicorn, no header is searched for bytes that would split the
    response: the only answers written here are forward auth's, whose names
    are fixed and whose values are percent-encoded printable ASCII
    (``forwardcheck.identity_headers``).
    """
    parts = [STATUS_LINE[response.status]]
    for name, value in defaults:
        parts += (name, b": ", value, b"\r\n")
    for name, value in response.headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"content-length: ", str(len(response.body)).encode(), b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(response.body)
    return b"".join(parts)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


def protocol_for(
    limits: ConnectionLimits, heads: HeadAnswers | None = None
) -> type[GuardedProtocol]:
    """A protocol class carrying ``limits`` and the app answering from heads
    (uvicorn instantiates the class itself)."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "limits": limits,
            "refusals": RateLimitedLog(),
            "upgrades": RateLimitedLog(),
            "heads": heads,
        },
    )
