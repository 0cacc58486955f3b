"""The me family's ``expires_at``: RFC 3339 date-time and nothing else.

The reference table, through a live server: each accepted string creates a
token whose expiry is the instant it names; each refused one is a 422 in
Laravel's wording and changes nothing stored.
"""

from __future__ import annotations

import datetime as dt

import pytest

from gateway import rfc3339
from tests.helpers import LiveGateway

PATH = "/api/v1/me/tokens"
REFUSED_MESSAGE = "The expires at field must be a valid RFC 3339 date."

#: (sent, the instant as the me family shows it)
ACCEPTED: list[tuple[str, str]] = [
    ("2999-01-02T03:04:05Z", "2999-01-02T03:04:05Z"),
    ("2999-01-02t03:04:05z", "2999-01-02T03:04:05Z"),
    ("2999-01-02T03:04:05.5Z", "2999-01-02T03:04:05Z"),
    ("2999-01-02T03:04:05.123456789Z", "2999-01-02T03:04:05Z"),
    ("2999-01-02T03:04:05+00:00", "2999-01-02T03:04:05Z"),
    ("2999-01-02T03:04:05-00:00", "2999-01-02T03:04:05Z"),
    ("2999-01-02T03:04:05+05:30", "2999-01-01T21:34:05Z"),
    ("2999-01-02T03:04:05-23:59", "2999-01-03T03:03:05Z"),
    ("2999-12-31T23:59:59.999+01:00", "2999-12-31T22:59:59Z"),
    ("2996-02-29T00:00:00Z", "2996-02-29T00:00:00Z"),
    ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ("9999-12-31T23:59:59+14:00", "9999-12-31T09:59:59Z"),
]

REFUSED: list[str] = [
    "",
    "tomorrow",
    "2999-01-02",  # a date alone
    "2999-01-02T03:04:05",  # no offset
    "2999-01-02T03:04Z",  # no seconds
    "2999-01-02T03Z",
    "2999-01-02 03:04:05Z",  # a space for T (RFC 3339 allows it only by agreement)
    "2999-01-02_03:04:05Z",
    "29990102T030405Z",  # ISO 8601 basic format
    "2999-01-02T030405Z",
    "2999-W01-1T03:04:05Z",  # week date
    "2999-002T03:04:05Z",  # ordinal date
    "2999-01-02T03:04:05+0530",  # offset without a colon
    "2999-01-02T03:04:05+05",
    "2999-01-02T03:04:05+24:00",
    "2999-01-02T03:04:05+05:60",
    "2999-01-02T03:04:05.Z",  # a point without digits
    "2999-01-02T03:04:05.1234567890Z",  # finer than a nanosecond
    "2999-01-02T03:04:05,5Z",  # a comma fraction
    "2999-01-02T24:00:00Z",
    "2999-01-02T23:60:00Z",
    "2999-12-31T23:59:60Z",  # a leap second, refused as Go does
    "2999-13-01T00:00:00Z",
    "2999-00-01T00:00:00Z",
    "2999-02-29T00:00:00Z",  # not a leap year
    "2999-04-31T00:00:00Z",
    "2999-01-00T00:00:00Z",
    "+2999-01-02T03:04:05Z",  # expanded year
    "12999-01-02T03:04:05Z",
    "299-01-02T03:04:05Z",
    " 2999-01-02T03:04:05Z",  # surrounding space
    "2999-01-02T03:04:05Z ",
    "2999-01-02T03:04:05Z\n",
    "2999-01-02T03:04:05ZZ",
    "2999-01-02T03:04:05+05:30Z",
    "\u0662\u0669\u0669\u0669-01-02T03:04:05Z",  # Arabic-Indic digits
    "2999-01-02T03:04:05\u2212" + "05:00",  # a minus sign, not a hyphen
    "2999-01-02T03:04:05.\uff11Z",  # a full-width digit
    "0000-01-01T00:00:00Z",  # year 0: before any Timestamp
    "0001-01-01T00:00:00+14:00",  # year 1, but before it in UTC
    "9999-12-31T23:59:59-00:01",  # after year 9999 in UTC
    "2999-01-02T03:04:05.000000000000000000000000000000000000001Z",
    "2" * 60_000,  # within a form body's 64 KiB, so the form is read too
]


@pytest.mark.parametrize(("sent", "shown"), ACCEPTED)
def test_accepted_strings_name_their_instant(sent: str, shown: str) -> None:
    stamp = rfc3339.parse(sent)
    assert stamp is not None
    expected = dt.datetime.strptime(shown, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert stamp.ToDatetime(dt.UTC).replace(microsecond=0) == expected


@pytest.mark.parametrize("sent", REFUSED, ids=repr)
def test_refused_strings(sent: str) -> None:
    assert rfc3339.parse(sent) is None


def test_the_fraction_keeps_nanoseconds() -> None:
    stamp = rfc3339.parse("2999-01-02T03:04:05.000001234Z")
    assert stamp is not None
    assert stamp.nanos == 1234
    assert rfc3339.parse("2999-01-02T03:04:05.5Z") == rfc3339.parse("2999-01-02T03:04:05.500Z")


async def test_the_table_through_the_me_family(gateway: LiveGateway) -> None:
    for sent, shown in ACCEPTED:
        response = await gateway.client.post(
            PATH, json={"name": "rfc3339", "expires_at": sent}, headers=gateway.admin
        )
        assert response.status_code == 201, (sent, response.text)
        assert response.json()["data"]["expires_at"] == shown, sent
        gateway.service.plaintexts.append(response.json()["plaintext"])
    before = gateway.service.snapshot()
    for sent in REFUSED:
        body = {"name": "x", "expires_at": sent}
        as_json = await gateway.client.post(PATH, json=body, headers=gateway.admin)
        as_form = await gateway.client.post(PATH, data=body, headers=gateway.admin)
        for response in (as_json, as_form):
            assert response.status_code == 422, (sent, response.text)
            problem = response.json()
            assert problem["title"] == "Unprocessable Content"
            assert problem["errors"] == {"expires_at": [REFUSED_MESSAGE]}, sent
            if len(sent) > 3:
                assert sent.strip() not in response.text
    assert gateway.service.snapshot() == before
