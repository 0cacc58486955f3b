"""RFC 3339 ``date-time``, strictly (section 5.6), as a protobuf Timestamp.

``datetime.fromisoformat`` reads all of ISO 8601 that Python knows: week
dates, basic format, minutes without seconds, no offset at all. A client of
the ``me`` API that sends one of those gets an answer from no other
implementation of that API, so only the one profile is accepted here:

    2024-04-11T14:35:05Z   2024-04-11t14:35:05.123456789-05:30

``T``/``t`` and ``Z``/``z`` are the same; the fraction has 1 to 9 digits
(what a Timestamp holds); second 60 is refused, as Go's ``time.Parse`` does.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

from google.protobuf import timestamp_pb2

# [0-9], not \d: \d also matches other scripts' digits.
_DATE_TIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"[Tt](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):(?P<offset_minute>[0-9]{2}))"
)
#: The longest string the pattern can match; anything longer is refused unread.
MAX_LENGTH = 35
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
#: Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def parse(text: str) -> timestamp_pb2.Timestamp | None:
    """The instant ``text`` names, or None if it is not a strict RFC 3339
    date-time or the instant lies outside Timestamp's years 1 to 9999."""
    if len(text) > MAX_LENGTH:
        return None
    found = _DATE_TIME.fullmatch(text)
    if found is None:
        return None
    year, month, day = int(found["year"]), int(found["month"]), int(found["day"])
    hour, minute, second = int(found["hour"]), int(found["minute"]), int(found["second"])
    if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset = 0
    if found["utc"] is None:
        offset_hour, offset_minute = int(found["offset_hour"]), int(found["offset_minute"])
        if offset_hour > 23 or offset_minute > 59:
            return None
        offset = (offset_hour * 60 + offset_minute) * 60
        if found["sign"] == "-":
            offset = -offset
    days = dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        return None  # e.g. 0001-01-01T00:00:00+14:00, before year 1 in UTC
    nanos = int((found["fraction"] or "0").ljust(9, "0"))
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
