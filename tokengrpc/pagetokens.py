"""Page tokens: a listing's keyset position, signed so a client can only hand it back.

Apart from the token operations because it is a codec with no business rule:
an id in, an opaque string out, and None for anything this listing did not
issue. Pure (no I/O); the key comes from ``Sealer.derive``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from tokengrpc import plaintext

#: What the page-token key is derived from the secret key for (``Sealer.derive``).
PAGE_TOKEN_LABEL = b"page-token"
#: The same for event listings: a token page position is never an event one.
EVENT_PAGE_TOKEN_LABEL = b"event-page-token"
_TAG = 16
#: 8 bytes of id and a 16-byte tag, in unpadded URL-safe base64.
_PAGE_TOKEN_LENGTH = 32
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _page_tag(key: bytes, position: bytes, owner: str, include_revoked: bool) -> bytes:
    # The fixed-size fields come first, so owner needs no separator.
    message = position + (b"\1" if include_revoked else b"\0") + owner.encode()
    return hmac.new(key, message, hashlib.sha256).digest()[:_TAG]


def encode_page_token(key: bytes, after_id: int, owner: str, include_revoked: bool) -> str:
    """The keyset position after ``after_id``, opaque to clients.

    Signed with a key derived from the server's secret key, so a client can
    neither forge a position nor move a token to another listing (owner,
    revoked or not); every process sharing the key accepts it.
    """
    position = after_id.to_bytes(8, "big")
    tag = _page_tag(key, position, owner, include_revoked)
    return base64.urlsafe_b64encode(position + tag).decode().rstrip("=")


def decode_page_token(key: bytes, token: str, owner: str, include_revoked: bool) -> int | None:
    """The ``after_id`` of a page token of this listing; None for anything else.

    The length and alphabet are checked before decoding, the tag in constant time.
    """
    if len(token) != _PAGE_TOKEN_LENGTH or not _BASE64URL.issuperset(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token)  # 32 characters: no padding, no spare bits
    except (binascii.Error, ValueError):
        return None
    position, tag = raw[:8], raw[8:]
    if len(tag) != _TAG or not hmac.compare_digest(
        tag, _page_tag(key, position, owner, include_revoked)
    ):
        return None
    after_id = int.from_bytes(position, "big")
    return after_id if after_id <= plaintext.MAX_ID else None


#: The same for listings in name order: their positions hold a name as well.
NAME_PAGE_TOKEN_LABEL = b"name-page-token"
#: 8 bytes of id, a name of up to 255 characters of up to 4 UTF-8 bytes each, the tag.
_MAX_NAME_PAGE_TOKEN_LENGTH = -(-(8 + 255 * 4 + _TAG) * 4 // 3)


def _name_position(after_id: int, after_name: str) -> bytes:
    return after_id.to_bytes(8, "big") + after_name.encode()


def _name_tag(key: bytes, position: bytes, owner: str, include_revoked: bool) -> bytes:
    # The name's length goes in too: the owner that follows it has no separator.
    return _page_tag(key, len(position).to_bytes(2, "big") + position, owner, include_revoked)


def encode_name_page_token(
    key: bytes, after_id: int, after_name: str, owner: str, include_revoked: bool
) -> str:
    """The position after (``after_name``, ``after_id``) of a listing in name order.

    The name travels in the token rather than being looked up by id, so a
    token renamed between two pages moves no other token across the cut.
    Signed as ``encode_page_token`` is, with a key of its own (``key`` derived
    for NAME_PAGE_TOKEN_LABEL): a token of one order is never one of another.
    """
    position = _name_position(after_id, after_name)
    tag = _name_tag(key, position, owner, include_revoked)
    return base64.urlsafe_b64encode(position + tag).decode().rstrip("=")


def decode_name_page_token(
    key: bytes, token: str, owner: str, include_revoked: bool
) -> tuple[str, int] | None:
    """The (``after_name``, ``after_id``) of a name-order page token of this
    listing; None for anything else (checked as ``decode_page_token`` does)."""
    if len(token) > _MAX_NAME_PAGE_TOKEN_LENGTH or not _BASE64URL.issuperset(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 8 + _TAG:
        return None
    position, tag = raw[:-_TAG], raw[-_TAG:]
    if not hmac.compare_digest(tag, _name_tag(key, position, owner, include_revoked)):
        return None
    after_id = int.from_bytes(position[:8], "big")
    # Signed, so ours: the name is the UTF-8 we encoded.
    return position[8:].decode(), after_id
