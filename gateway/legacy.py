"""What the three legacy route families share: time formats, Laravel wording,
input-shape checks and the error plumbing. No token rules live here: every
decision about tokens comes back from an RPC.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from gateway import authfirst
from gateway.http import BadBody, BodyTooLarge, Request, Response
from gateway.upstream import FieldProblem, RpcFailure, Upstream
from tokengrpc.v1 import tokens_pb2 as pb

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
T = TypeVar("T")


class InputError(Exception):
    """Request fields of the wrong JSON type, by field, in Laravel's words."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


# Times, each family its own way.


_EPOCH = dt.datetime(1970, 1, 1)


@functools.lru_cache(maxsize=8192)
def _iso(seconds: int, nanos: int, timespec: str) -> str:
    # Naive UTC by arithmetic, about half the cost of ToDatetime + strftime;
    # cached, as listings render the same creation times request after request.
    moment = _EPOCH + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)
    return f"{moment.isoformat(timespec=timespec)}Z"


def micro_z(stamp: timestamp_pb2.Timestamp) -> str:
    """``2026-03-31T12:00:00.000000Z`` (solder)."""
    return _iso(stamp.seconds, stamp.nanos, "microseconds")


def seconds_z(stamp: timestamp_pb2.Timestamp) -> str:
    """``2024-04-11T14:35:05Z`` (me)."""
    return _iso(stamp.seconds, 0, "seconds")


def millis(stamp: timestamp_pb2.Timestamp) -> int:
    """Epoch milliseconds (admin)."""
    return int(stamp.ToMilliseconds())


def optional_time(
    token: pb.Token, field: str, render: Callable[[timestamp_pb2.Timestamp], Any]
) -> Any:
    if not token.HasField(field):  # type: ignore[arg-type]
        return None
    stamp: timestamp_pb2.Timestamp = getattr(token, field)
    return render(stamp)


def status_word(token: pb.Token) -> str:
    return pb.TokenStatus.Name(token.status).removeprefix("TOKEN_STATUS_").lower()


# Laravel's validation wording.

#: How the service words a length limit (``must be at most 255 characters``).
_AT_MOST = re.compile(r"\bat most (\d+) characters\b")


def attribute(field: str) -> str:
    """Laravel shows ``expires_at`` as ``expires at``."""
    return field.replace("_", " ")


def required(field: str) -> str:
    return f"The {attribute(field)} field is required."


def must_be(field: str, kind: str) -> str:
    return f"The {attribute(field)} field must be {kind}."


def laravel_message(field: str, problem: FieldProblem) -> str:
    """The service's field violation in the words a Laravel client expects."""
    if problem.reason == "REQUIRED":
        return required(field)
    too_long = _AT_MOST.search(problem.description) if problem.reason == "TOO_LONG" else None
    if too_long is not None:
        # The service states its limit; Laravel's max rule words it so.
        return f"The {attribute(field)} field must not be greater than {too_long[1]} characters."
    if problem.reason == "PAST":
        return f"The {attribute(field)} field must be a date after now."
    text = problem.description.rstrip(".")
    if text.startswith("must "):
        return f"The {attribute(field)} field {text}."
    return f"The {attribute(field)} field is invalid: {text}."


def family_field(field: str, names: dict[str, str]) -> str:
    """A service field path (``token.expire_time``) as the family calls it."""
    bare = field.removeprefix("token.")
    return names.get(bare, bare)


def errors_by_field(failure: RpcFailure, names: dict[str, str]) -> dict[str, list[str]]:
    """Field violations keyed by the family's own field names."""
    errors: dict[str, list[str]] = {}
    for problem in failure.problems:
        field = family_field(problem.field, names)
        errors.setdefault(field, []).append(laravel_message(field, problem))
    return errors


# Input shapes.


def _optional(
    body: dict[str, Any], field: str, errors: dict[str, list[str]], kind: type[T], words: str
) -> T | None:
    """The field's value if it has the JSON type ``kind``; None if absent or wrong."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, kind):
        errors.setdefault(field, []).append(must_be(field, words))
        return None
    return value


def optional_string(body: dict[str, Any], field: str, errors: dict[str, list[str]]) -> str | None:
    return _optional(body, field, errors, str, "a string")


def optional_bool(body: dict[str, Any], field: str, errors: dict[str, list[str]]) -> bool | None:
    return _optional(body, field, errors, bool, "true or false")


def optional_strings(
    body: dict[str, Any], field: str, errors: dict[str, list[str]]
) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        errors.setdefault(field, []).append(must_be(field, "an array"))
        return None
    if not all(isinstance(item, str) for item in value):
        errors.setdefault(field, []).append(must_be(field, "an array of strings"))
        return None
    return value


async def body_fields(request: Request, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as fields, from JSON or, as Laravel reads it, a urlencoded form.

    In a form, ``key[]`` and repeated keys make a list (for the fields in
    ``lists`` even a single ``key`` does); any other key keeps its last
    value, as PHP does. A JSON object naming a key twice keeps the last too,
    as PHP's ``json_decode`` does (the canonical routes refuse it).
    """
    if not request.is_form():
        return await request.json_object()
    fields: dict[str, Any] = {}
    for key, values in (await request.form()).items():
        name = key.removesuffix("[]")
        if key.endswith("[]") or name in lists:
            previous = fields.get(name)
            fields[name] = [*previous, *values] if isinstance(previous, list) else list(values)
        else:
            fields[name] = values[-1]
    return fields


# Calls.


async def all_tokens(
    upstream: Upstream, request: Request, list_request: pb.ListTokensRequest
) -> list[pb.Token]:
    """Every page of a listing, for the families that show everything at once."""
    tokens: list[pb.Token] = []
    list_request.page_size = 200  # the service reads pages up to 200 without a thread hop
    while True:
        page = await upstream.call(upstream.tokens.ListTokens, list_request, request)
        tokens.extend(page.tokens)
        if not page.next_page_token:
            return tokens
        list_request.page_token = page.next_page_token


InputFailure = BadBody | BodyTooLarge | InputError


def guarded(
    upstream: Upstream,
    handler: Handler,
    bad_input: Callable[[Request, InputFailure], Response],
    failed: Callable[[Request, RpcFailure], Response],
) -> Handler:
    """Run a family's handler, turning bad input and failed calls into its error shape.

    Every legacy route needs a token: a large body waits for the caller to
    be authenticated, and bad input is reported only to an authenticated
    caller, so a stranger sees 401 (``gateway.authfirst``).
    """

    async def run(request: Request, variables: dict[str, str]) -> Response:
        try:
            await authfirst.before_body(upstream, request)
            try:
                return await handler(request, variables)
            except (BadBody, BodyTooLarge, InputError) as problem:
                await authfirst.authenticate(upstream, request)
                return bad_input(request, problem)
        except RpcFailure as failure:
            return failed(request, failure)

    return run


class Family:
    """A legacy route family: a table of routes, each guarded into the family's error shapes.

    A family names its two error renderers and lists its routes; the guard
    (authenticate first on bad input, map failed calls) is the same for all.
    """

    bad_input: staticmethod[[Request, InputFailure], Response]
    failed: staticmethod[[Request, RpcFailure], Response]

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def guard(self, handler: Handler) -> Handler:
        return guarded(self._upstream, handler, self.bad_input, self.failed)
