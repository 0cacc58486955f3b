"""The plaintext token format: ``<id>|<prefix><40 random><6 checksum>``.

The checksum lets us reject typos and garbage without touching the store; the
id lets us find the row with one primary-key lookup; only the SHA-256 of the
secret part is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

BASE62 = string.digits + string.ascii_letters
RANDOM_LENGTH = 40
CHECKSUM_LENGTH = 6
MAX_PREFIX_LENGTH = 32
MAX_ID = 2**63 - 1
_BASE62_SET = frozenset(BASE62)
_MAX_PLAINTEXT = 20 + 1 + MAX_PREFIX_LENGTH + RANDOM_LENGTH + CHECKSUM_LENGTH


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A plaintext that is well formed and whose checksum holds."""

    id: int
    secret_hash: bytes


#: Every two-character base62 string, by value: a checksum is three lookups.
_PAIRS = tuple(a + b for a in BASE62 for b in BASE62)
_PAIR = 62 * 62


def checksum(body: str) -> str:
    """Six base62 characters of CRC32 (62**6 > 2**32, so nothing is lost)."""
    high, rest = divmod(zlib.crc32(body.encode()), _PAIR * _PAIR)
    middle, low = divmod(rest, _PAIR)
    return _PAIRS[high] + _PAIRS[middle] + _PAIRS[low]


def _random_base62(length: int) -> str:
    """Uniform base62 characters from the OS's CSPRNG, one read for all of them.

    Bytes below 248 (four times 62) map evenly onto the alphabet; the rest are
    dropped. One read per secret, not a ``secrets.choice`` call per character
    (docs/performance.md says why).
    """
    chars: list[str] = []
    while len(chars) < length:
        chars += [BASE62[byte % 62] for byte in secrets.token_bytes(length + 8) if byte < 248]
    return "".join(chars[:length])


def new_secret(prefix: str) -> str:
    """A fresh secret: the prefix, 40 random base62 characters, their checksum."""
    body = prefix + _random_base62(RANDOM_LENGTH)
    return body + checksum(body)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def join(token_id: int, secret: str) -> str:
    return f"{token_id}|{secret}"


def parse(plaintext: str) -> ParsedToken | None:
    """Split and verify a plaintext; None for anything malformed.

    Any prefix is accepted so that changing the configured prefix does not
    invalidate tokens already handed out.
    """
    if len(plaintext) > _MAX_PLAINTEXT:
        return None
    id_part, bar, secret = plaintext.partition("|")
    # Exactly the digits ``join`` writes: ASCII, no sign, space, underscore or
    # leading zero, so one token has one spelling ("007|..." is not token 7).
    if not bar or not id_part.isascii() or not id_part.isdigit() or len(id_part) > 19:
        return None
    if id_part[0] == "0":
        return None
    token_id = int(id_part)
    if not 0 < token_id <= MAX_ID:
        return None
    if len(secret) <= RANDOM_LENGTH + CHECKSUM_LENGTH:
        return None
    body, check = secret[:-CHECKSUM_LENGTH], secret[-CHECKSUM_LENGTH:]
    if not _BASE62_SET.issuperset(body[-RANDOM_LENGTH:]):
        return None
    if check != checksum(body):  # not a secret: anyone can compute it from the body
        return None
    return ParsedToken(token_id, hash_secret(secret))


def secret_matches(parsed: ParsedToken, stored_hash: bytes) -> bool:
    return hmac.compare_digest(parsed.secret_hash, stored_hash)


def valid_prefix(prefix: str) -> bool:
    """A prefix must be short, printable ASCII and free of the ``|`` separator."""
    return (
        0 < len(prefix) <= MAX_PREFIX_LENGTH
        and prefix.isascii()
        and prefix.isprintable()
        and "|" not in prefix
        and " " not in prefix
    )
