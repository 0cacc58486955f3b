"""Logging on stderr, as text or JSON lines, and who the caller of a request was.

Every line, access or application, goes through :mod:`logging` with one
formatter, so an operator parses one format. An access line is a record of
the ``tokengrpc.access`` logger whose fields travel in ``extra``; the
formatters never print a request's values except the ones named in
:data:`ACCESS_FIELDS`, and those are a token *id*, an address and a trace id
that :func:`trace_id_of` has checked.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tokengrpc import plaintext

ACCESS_LOGGER = "tokengrpc.access"
#: Trailing metadata by which the service names the token a call authenticated
#: with, so that a gateway in another process can log it too. The id is the
#: public part of the caller's own token: telling it back reveals nothing.
CALLER_ID_METADATA = "tokengrpc-caller-id"
#: The fields of an access line, in the order the text format prints them.
ACCESS_FIELDS = ("surface", "method", "route", "status", "duration_ms", "token_id", "client",
                 "trace_id", "request_id")  # fmt: skip

#: A request id worth logging: short, and no character a plaintext holds (``|``).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The secret part of a plaintext holds this many base62 characters in a row
#: (random and checksum); request ids in use (UUIDs, ULIDs, hex trace ids) never
#: do, so an id holding such a run may be a pasted secret and is not logged.
_SECRET_RUN = re.compile(f"[A-Za-z0-9]{{{plaintext.RANDOM_LENGTH + plaintext.CHECKSUM_LENGTH}}}")
#: W3C trace context: version-traceid-parentid-flags; the trace id is what we log.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


@dataclass(slots=True)
class CallerSlot:
    """Filled in by authentication, read by whoever logs the request."""

    token_id: int | None = None
    #: On ``Check``: the token the checked request presented, once judged.
    checked_id: int | None = None

    @property
    def named_id(self) -> int | None:
        """The token an access line names: the caller's, else the one a check
        judged (a check refused for a scope names the token it refused)."""
        return self.token_id if self.token_id is not None else self.checked_id


_CALLER: contextvars.ContextVar[CallerSlot | None] = contextvars.ContextVar(
    "tokengrpc_caller", default=None
)


def track_caller() -> CallerSlot:
    """A fresh slot for the request running in this context (and the tasks it starts)."""
    slot = CallerSlot()
    _CALLER.set(slot)
    return slot


def note_caller(token_id: int) -> None:
    """Record who authenticated, if anyone is listening."""
    slot = _CALLER.get()
    if slot is not None:
        slot.token_id = token_id


def note_checked(token_id: int) -> None:
    """Record which token a check judged (its span names that one, not the checker)."""
    slot = _CALLER.get()
    if slot is not None:
        slot.checked_id = token_id


def checked_metadata() -> tuple[tuple[str, str], ...]:
    """The trailing metadata naming the token a refused check judged, if any."""
    slot = _CALLER.get()
    if slot is None or slot.checked_id is None:
        return ()
    return caller_metadata(slot.checked_id)


def current_caller() -> CallerSlot | None:
    """The slot of the request running in this context, if one is tracked."""
    return _CALLER.get()


def caller_metadata(token_id: int) -> tuple[tuple[str, str]]:
    """The trailing metadata of a call whose caller authenticated with ``token_id``."""
    return ((CALLER_ID_METADATA, str(token_id)),)


def trace_id_of(pairs: Iterable[tuple[str, Any]]) -> str | None:
    """The client's ``x-request-id`` or ``traceparent`` trace id, if it is well formed.

    Anything else is dropped, not escaped: a client must not choose what
    our log says, and a pasted plaintext (it holds ``|``) never fits, nor
    does its secret part alone.
    """
    request_id = traceparent = None
    for key, value in pairs:
        if key == "x-request-id" and isinstance(value, str):
            request_id = value
        elif key == "traceparent" and isinstance(value, str):
            traceparent = value
    if request_id is not None and _loggable(request_id):
        return request_id
    if traceparent is not None:
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match is not None:
            return match.group(1)
    return None


def request_id_of(pairs: Iterable[tuple[str, Any]]) -> str | None:
    """The client's ``x-request-id``, if it is well formed (as :func:`trace_id_of` judges)."""
    found = None
    for key, value in pairs:
        if key == "x-request-id" and isinstance(value, str):
            found = value
    return found if found is not None and _loggable(found) else None


def _loggable(request_id: str) -> bool:
    return _REQUEST_ID.fullmatch(request_id) is not None and not _SECRET_RUN.search(request_id)


def _time(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger: message``; access lines as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_time(record)} {record.levelname} {record.name}:"
        if record.name == ACCESS_LOGGER:
            values = (f"{name}={_text(getattr(record, name, None))}" for name in ACCESS_FIELDS)
            return f"{head} {' '.join(values)}"
        line = f"{head} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: object) -> str:
    return "-" if value is None else str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, then the access fields
    or ``message`` (and ``exception``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
        }
        if record.name == ACCESS_LOGGER:
            for name in ACCESS_FIELDS:
                line[name] = getattr(record, name, None)
        else:
            line["message"] = record.getMessage()
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


def configure(log_format: str = "text", *, access_log: bool = True) -> None:
    """Send every logger to stderr in ``log_format``; INFO and up, access lines included."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    access = logging.getLogger(ACCESS_LOGGER)
    access.disabled = not access_log


class AccessLog:
    """Writes access lines; a disabled one costs a single attribute check."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)

    @property
    def enabled(self) -> bool:
        return not self._logger.disabled and self._logger.isEnabledFor(logging.INFO)

    def write(self, **fields: object) -> None:
        self._logger.info("access", extra=fields)
