"""What the three legacy route families share: time formats, Laravel wording,
input-shape checks and listing every page. No token rules live here: every
decision about tokens comes back from an RPC, and a limit the service
enforces reaches a family as a number in the error's details.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from gateway.http import BadInput, Request, Response, json_items_response
from gateway.upstream import FieldProblem, RpcFailure, Upstream
from tokengrpc.v1 import tokens_pb2 as pb

T = TypeVar("T")


class InputError(BadInput):
    """Request fields of the wrong JSON type, by field, in Laravel's words."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


# Times, each family its own way.


_EPOCH = dt.datetime(1970, 1, 1)


@functools.lru_cache(maxsize=8192)
def _iso(seconds: int, nanos: int, timespec: str) -> str:
    # Naive UTC by arithmetic rather than ToDatetime + strftime (docs/performance.md);
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
    if problem.max_length is not None:
        # The service states its limit as a number; Laravel's max rule words it so.
        return (
            f"The {attribute(field)} field must not be greater than {problem.max_length} "
            "characters."
        )
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


async def token_pages(
    upstream: Upstream, request: Request, list_request: pb.ListTokensRequest
) -> AsyncIterator[Sequence[pb.Token]]:
    """Every page of a listing in turn, for the families that show everything at once."""
    list_request.page_size = 200  # the service reads pages up to 200 without a thread hop
    while True:
        page = await upstream.call(upstream.tokens.ListTokens, list_request, request)
        # Set before the page is handed out: the caller can tell a last page.
        list_request.page_token = page.next_page_token
        yield page.tokens
        if not page.next_page_token:
            return


async def streamed_tokens(
    upstream: Upstream,
    request: Request,
    list_request: pb.ListTokensRequest,
    shape: Callable[[pb.Token], object],
    head: bytes,
    tail: bytes,
) -> Response:
    """A whole listing as JSON, ``head``, the tokens as ``shape`` shows them, ``tail``.

    The first page is read before the answer begins, so its failures (a bad
    token, above all) are still the family's error responses; a listing of
    one page is answered with its length as before, a longer one is sent
    page by page as the service answers, never held whole.
    """
    pages = token_pages(upstream, request, list_request)
    first = [shape(token) for token in await anext(pages)]
    if not list_request.page_token:  # that was the only page
        return json_items_response(200, head, first, tail)

    async def shaped() -> AsyncIterator[list[object]]:
        async for page in pages:
            yield [shape(token) for token in page]

    return json_items_response(200, head, first, tail, shaped())
