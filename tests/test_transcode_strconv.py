"""Path and query values parse as grpc-gateway's Go ``strconv`` parses them.

The reference table: what ``strconv.ParseInt(s, 10, bits)``,
``strconv.ParseUint(s, 10, bits)`` and ``strconv.ParseBool(s)`` give for each
input (None: Go returns an error, so the gateway answers 400). Then the same
table through the live gateway, on an int64 path variable (``id``), an int32
query parameter (``page_size``) and a bool query parameter (``show_revoked``).
"""

from __future__ import annotations

import pytest

from gateway import strconv
from tests.helpers import LiveGateway

INT64_MAX = 2**63 - 1

# input -> ParseInt(s, 10, 64)
INT64: list[tuple[str, int | None]] = [
    ("0", 0),
    ("7", 7),
    ("+7", 7),
    ("-7", -7),
    ("007", 7),  # Go accepts leading zeros in base 10
    ("-0", 0),
    (str(INT64_MAX), INT64_MAX),
    (str(-(2**63)), -(2**63)),
    (str(2**63), None),  # out of range
    (str(-(2**63) - 1), None),
    ("9" * 40, None),
    ("", None),
    ("+", None),
    ("-", None),
    ("++7", None),
    ("+-7", None),
    (" 7", None),
    ("7 ", None),
    ("\t7", None),
    ("7\n", None),
    ("1_000", None),  # Python's int() takes it; base 10 in Go does not
    ("1,000", None),
    ("0x1f", None),
    ("0o17", None),
    ("0b101", None),
    ("1e3", None),
    ("7.0", None),
    ("\u0667", None),  # ARABIC-INDIC DIGIT SEVEN: int() takes it
    ("\uff17", None),  # FULLWIDTH DIGIT SEVEN
    ("\u00b2", None),  # SUPERSCRIPT TWO
    ("7|tgr_secret", None),
    ("1" * 100_000, None),  # read no further than a 64-bit number can be long
]

# input -> ParseInt(s, 10, 32)
INT32: list[tuple[str, int | None]] = [
    ("2147483647", 2147483647),
    ("-2147483648", -2147483648),
    ("2147483648", None),
    ("-2147483649", None),
    ("+20", 20),
    ("020", 20),
]

# input -> ParseUint(s, 10, 64) and ParseUint(s, 10, 32)
UINT64: list[tuple[str, int | None]] = [
    ("0", 0),
    ("18446744073709551615", 2**64 - 1),
    ("18446744073709551616", None),
    ("+1", None),  # ParseUint takes no sign at all
    ("-1", None),
    ("-0", None),
    ("1_0", None),
]
UINT32: list[tuple[str, int | None]] = [("4294967295", 2**32 - 1), ("4294967296", None)]

# input -> ParseBool(s)
BOOL: list[tuple[str, bool | None]] = [
    *[(s, True) for s in ("1", "t", "T", "TRUE", "true", "True")],
    *[(s, False) for s in ("0", "f", "F", "FALSE", "false", "False")],
    *[
        (s, None)
        for s in ("", "yes", "no", "on", "off", "tRUE", "TrUe", "y", "n", "2", " true", "true ")
    ],
    ("01", None),
    ("+1", None),
]

# input -> ParseFloat(s, 64) (decimal forms; no float field is bound yet)
FLOAT: list[tuple[str, float | None]] = [
    ("1.5", 1.5),
    ("-1e3", -1000.0),
    (".5", 0.5),
    ("5.", 5.0),
    ("+Inf", float("inf")),
    ("-infinity", float("-inf")),
    ("1e400", None),  # Go: ErrRange
    ("1_0.0", None),
    (" 1.0", None),
    ("1.0f", None),
]


@pytest.mark.parametrize(("text", "value"), INT64)
def test_parse_int64(text: str, value: int | None) -> None:
    assert strconv.parse_int(text, 64) == value


@pytest.mark.parametrize(("text", "value"), INT32)
def test_parse_int32(text: str, value: int | None) -> None:
    assert strconv.parse_int(text, 32) == value


@pytest.mark.parametrize(("text", "value"), UINT64)
def test_parse_uint64(text: str, value: int | None) -> None:
    assert strconv.parse_uint(text, 64) == value


@pytest.mark.parametrize(("text", "value"), UINT32)
def test_parse_uint32(text: str, value: int | None) -> None:
    assert strconv.parse_uint(text, 32) == value


@pytest.mark.parametrize(("text", "value"), BOOL)
def test_parse_bool(text: str, value: bool | None) -> None:
    assert strconv.parse_bool(text) is value


@pytest.mark.parametrize(("text", "value"), FLOAT)
def test_parse_float(text: str, value: float | None) -> None:
    assert strconv.parse_float(text) == value


def test_nan_is_nan() -> None:
    parsed = strconv.parse_float("NaN")
    assert parsed is not None
    assert parsed != parsed


def _quoted(text: str) -> str:
    return "".join(
        c if c.isascii() and c.isalnum() else f"%{b:02X}" for c in text for b in c.encode()
    )


async def test_the_table_through_the_gateway(gateway: LiveGateway) -> None:
    client, admin = gateway.client, gateway.admin
    token_id, plaintext = await gateway.service.create("table", owner="ann")
    before = gateway.service.snapshot()
    # int64 in a path: GET /v1/tokens/{id}
    for text, value in INT64[:-1]:
        if not text:
            continue  # /v1/tokens/ is the listing
        response = await client.get(f"/v1/tokens/{_quoted(text)}", headers=admin)
        if value is None:
            assert response.status_code == 400, (text, response.text)
            assert "integer" in response.json()["message"]
        else:
            # A well-formed id: found if it is ours, else 404, never 400.
            assert response.status_code == (200 if value == token_id else 404), text
    same = await client.get(f"/v1/tokens/{token_id:+d}", headers=admin)
    assert same.json()["id"] == str(token_id)
    padded = await client.get(f"/v1/tokens/000{token_id}", headers=admin)
    assert padded.json()["id"] == str(token_id)
    # int32 in a query: page_size
    for text, value in INT32:
        response = await client.get(f"/v1/tokens?page_size={_quoted(text)}", headers=admin)
        if value is None:
            assert response.status_code == 400, (text, response.text)
        else:
            assert response.status_code < 500
    # bool in a query: show_revoked
    for text, flag in BOOL:
        response = await client.get(f"/v1/tokens?show_revoked={_quoted(text)}", headers=admin)
        expected = 400 if flag is None else 200
        assert response.status_code == expected, (text, response.text)
    # No message repeats what was sent.
    pasted = await client.get(f"/v1/tokens/{_quoted(plaintext)}", headers=admin)
    assert pasted.status_code == 400
    assert plaintext.partition("|")[2] not in pasted.text
    assert gateway.service.snapshot() == before


@pytest.mark.parametrize("mask", ["updateMask", "update_mask"])
@pytest.mark.parametrize("paths", ["allowed_ips,name", "allowedIps,name"])
async def test_update_mask_in_the_query_in_either_case(
    gateway: LiveGateway, mask: str, paths: str
) -> None:
    token_id, _ = await gateway.service.create("masked", owner="ann", allowed_ips=["10.0.0.0/8"])
    response = await gateway.client.patch(
        f"/v1/tokens/{token_id}?{mask}={paths}",
        json={"name": "renamed", "allowedIps": [], "scopes": ["ignored"]},
        headers=gateway.admin,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "renamed"
    assert body["allowedIps"] == []
    assert body["scopes"] == [], "scopes is not in the mask"
