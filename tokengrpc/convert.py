"""Conversions between store records and protobuf messages, all in one place."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from tokengrpc.rules import Status, status_of
from tokengrpc.store import TokenRecord
from tokengrpc.v1 import tokens_pb2

_STATUS = {
    Status.ACTIVE: tokens_pb2.TOKEN_STATUS_ACTIVE,
    Status.EXPIRED: tokens_pb2.TOKEN_STATUS_EXPIRED,
    Status.INACTIVE: tokens_pb2.TOKEN_STATUS_INACTIVE,
    Status.REVOKED: tokens_pb2.TOKEN_STATUS_REVOKED,
}

# The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def timestamp(micros: int) -> timestamp_pb2.Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1000)


def micros(stamp: timestamp_pb2.Timestamp) -> int | None:
    """Microseconds of a Timestamp; None if it is outside the valid range."""
    if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        return None
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def token_message(
    record: TokenRecord, now: int, usage: tuple[int, int | None] | None = None
) -> tokens_pb2.Token:
    """The message for a record; ``usage`` overrides its counters with pending uses."""
    usage_count, last_use_time = usage or (record.usage_count, record.last_use_time)
    token = tokens_pb2.Token(
        id=record.id,
        name=record.name,
        owner=record.owner,
        scopes=record.scopes,
        active=record.active,
        allowed_ips=record.allowed_ips,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        usage_count=usage_count,
        status=_STATUS[status_of(record, now)],
        service_token=record.is_service,
    )
    if record.expire_time is not None:
        token.expire_time.CopyFrom(timestamp(record.expire_time))
    if record.revoke_time is not None:
        token.revoke_time.CopyFrom(timestamp(record.revoke_time))
    if last_use_time is not None:
        token.last_use_time.CopyFrom(timestamp(last_use_time))
    return token
