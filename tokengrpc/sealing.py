"""Encryption of retrievable service-token values (AES-256-GCM).

The key comes from ``TOKENGRPC_SECRET_KEY`` or from ``<data-dir>/secret.key``,
created on first start with mode 0600. Each value is bound to its row by
using the secret's hash as associated data, so ciphertexts cannot be swapped
between rows.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE = "secret.key"
_NONCE = 12


class SecretKeyError(ValueError):
    """The configured key is not 32 bytes in hex or base64."""


def decode_key(text: str) -> bytes:
    """Accept 64 hex digits or base64 (standard or URL-safe) of 32 bytes."""
    text = text.strip()
    candidates: list[bytes] = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(decode(text + "=" * (-len(text) % 4)))
    for key in candidates:
        if len(key) == 32:
            return key
    raise SecretKeyError("the secret key must be 32 bytes, written as 64 hex digits or base64")


@dataclass(frozen=True, slots=True)
class FoundKey:
    key: bytes
    #: Where it came from, in words for a message: the variable or the file.
    origin: str
    #: The key file is readable by group or others.
    exposed: bool = False


def find_key(data_dir: Path, env_value: str | None) -> FoundKey | None:
    """The configured key, or None when neither the variable nor the key file has one."""
    if env_value:
        return FoundKey(decode_key(env_value), "TOKENGRPC_SECRET_KEY")
    path = data_dir / KEY_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    exposed = bool(stat.S_IMODE(path.stat().st_mode) & 0o077)
    return FoundKey(decode_key(text), str(path), exposed)


def fingerprint(key: bytes) -> bytes:
    """What the store keeps to recognise the key: an HMAC by the key, never the key."""
    return hmac.new(key, b"tokengrpc key fingerprint", hashlib.sha256).digest()


def create_key(data_dir: Path) -> bytes:
    """A new key in ``<data_dir>/secret.key`` (0600), or the one a racing process just wrote."""
    path = data_dir / KEY_FILE
    key = secrets.token_bytes(32)
    # O_EXCL: two processes starting at once must not each write their own key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return decode_key(path.read_text())
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return key


class Sealer:
    """Seals and opens secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, label: bytes) -> bytes:
        """A key for another purpose (``label``), the same in every process with this key."""
        return hmac.new(self._key, label, hashlib.sha256).digest()

    def seal(self, secret: str, bound_to: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, secret.encode(), bound_to)

    def open(self, sealed: bytes, bound_to: bytes) -> str | None:
        """The secret, or None if the key is wrong or the data was altered."""
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], bound_to).decode()
        except (InvalidTag, ValueError):
            return None
