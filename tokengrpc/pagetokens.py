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
