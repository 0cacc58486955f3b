"""Standard Webhooks signatures: HMAC-SHA256 of ``id.timestamp.body`` under the secret.

The secret is ``whsec_`` and the key's base64, as the specification's
reference libraries take it; they verify what this signs
(``tests/test_webhooks.py`` uses ``standardwebhooks.Webhook``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "whsec_"


def webhook_secret(text: str) -> str:
    """The setting's parser: ``whsec_`` + base64 of a non-empty key (the error
    never repeats the value: it is a secret)."""
    key_text = text.removeprefix(PREFIX)
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not text.startswith(PREFIX) or not key:
        raise ValueError(f"must be {PREFIX} followed by the key in base64")
    return text


def key_of(secret: str) -> bytes:
    """The HMAC key of a secret ``webhook_secret`` accepted."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one try: the id is the same on every try, the time is the try's."""
    content = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }
