"""Conversions between store records and protobuf messages, all in one place."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import duration_pb2, timestamp_pb2

from tokengrpc.lifetime import effective_expiry
from tokengrpc.rules import Status, status_at
from tokengrpc.store import EventRecord, TokenRecord
from tokengrpc.v1 import tokens_pb2

_STATUS = {
    Status.ACTIVE: tokens_pb2.TOKEN_STATUS_ACTIVE,
    Status.EXPIRED: tokens_pb2.TOKEN_STATUS_EXPIRED,
    Status.INACTIVE: tokens_pb2.TOKEN_STATUS_INACTIVE,
    Status.REVOKED: tokens_pb2.TOKEN_STATUS_REVOKED,
    Status.PENDING: tokens_pb2.TOKEN_STATUS_PENDING,
}

# The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def micros(stamp: timestamp_pb2.Timestamp) -> int | None:
    """Microseconds of a Timestamp; None if it is outside the valid range."""
    if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        return None
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


#: The range google.protobuf.Duration allows: about ±10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000


def duration_micros(duration: duration_pb2.Duration) -> int | None:
    """Microseconds of a Duration; None if it is not a valid one (out of range,
    or seconds and nanos of opposite signs)."""
    seconds, nanos = duration.seconds, duration.nanos
    if abs(seconds) > _MAX_DURATION_SECONDS or abs(nanos) >= 1_000_000_000:
        return None
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        return None
    # Rounded away from zero, so a nanosecond below zero or past a limit still counts.
    rest = -(-abs(nanos) // 1000)
    return seconds * 1_000_000 + (rest if nanos >= 0 else -rest)


def event_fields(event: EventRecord, *, actor_shown: bool = True) -> dict[str, Any]:
    """A TokenEvent's fields, to ``events.add(**f)``; without ``actor_shown``,
    the actor's token id and address are left out (``rules.actor_shown``)."""
    return {
        "event_time": _stamp(event.event_time),
        "action": int(event.action),
        "token_id": event.token_id,
        "actor_token_id": event.actor_token_id if actor_shown else 0,
        "actor_owner": event.actor_owner,
        "client_ip": event.client_ip if actor_shown else "",
        "changed_fields": event.changed_fields,
        "reason": event.reason,
        "detail": event.detail,
    }


def _stamp(micros: int) -> dict[str, int]:
    seconds, rest = divmod(micros, 1_000_000)
    return {"seconds": seconds, "nanos": rest * 1000}


def token_fields(
    record: TokenRecord, now: int, max_secret_age: int | None, grace_end: int | None = None
) -> dict[str, Any]:
    """A Token's fields, to build it where it goes: ``tokens.add(**f)``, or as
    the ``token`` of a response (``Response(token=f)``).

    Its ``expire_time`` is the effective expiry (``lifetime``); ``grace_end``,
    for a replaced secret presented in its grace period, is that secret's own
    end, reported when it comes first.

    Plain values and dicts, never a built message: upb copies a message it is
    handed and fills a dict's fields in place (docs/performance.md).
    The store's records already hold every use, pending ones too.
    """
    last_use_time = record.last_use_time
    expiry = effective_expiry(record, max_secret_age)
    fields: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "owner": record.owner,
        "scopes": record.scopes,
        "active": record.active,
        "allowed_ips": record.allowed_ips,
        "create_time": _stamp(record.create_time),
        "update_time": _stamp(record.update_time),
        "usage_count": record.usage_count,
        "status": _STATUS[status_at(record, now, expiry)],
        "service_token": record.is_service,
        "last_use_ip": record.last_use_ip,
    }
    if grace_end is not None and (expiry is None or grace_end < expiry):
        expiry = grace_end
    if expiry is not None:
        fields["expire_time"] = _stamp(expiry)
    if record.not_before is not None:
        fields["not_before"] = _stamp(record.not_before)
    if record.revoke_time is not None:
        fields["revoke_time"] = _stamp(record.revoke_time)
    if last_use_time is not None:
        fields["last_use_time"] = _stamp(last_use_time)
    return fields


def token_init(
    record: TokenRecord, now: int, max_secret_age: int | None, grace_end: int | None = None
) -> tokens_pb2.Token:
    """The ``token`` argument of a response constructor, and only that.

    It is the fields dict, which upb builds the submessage from without the
    copy a ready message costs; typed as the message it becomes there.
    """
    return cast(tokens_pb2.Token, token_fields(record, now, max_secret_age, grace_end))
