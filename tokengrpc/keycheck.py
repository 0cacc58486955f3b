"""The secret key must be the one the store's values were sealed with.

Losing it makes every retrievable value unreadable for good, so a process
that finds another key, or none while the store already depends on one,
refuses to start instead of quietly making a new key.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from tokengrpc.sealing import KEY_FILE, Sealer, create_key, find_key, fingerprint
from tokengrpc.store import TokenStore


class KeyMismatch(ValueError):
    """The configured key is not the store's, or the store's key is missing."""


@dataclass(frozen=True, slots=True)
class CheckedKey:
    key: bytes
    #: Warnings for the operator (stderr at start), never holding the key.
    notices: list[str] = field(default_factory=list)


def _key_dir(data_dir: Path, make_dir: bool) -> None:
    """Where a new key file goes: made only by a command that may make the data dir."""
    if os.path.isdir(data_dir):
        return
    if not make_dir:
        raise KeyMismatch(
            "no secret key: set TOKENGRPC_SECRET_KEY (the key the servers use), or give the"
            f" data dir holding it (--data-dir; {data_dir} does not exist)"
        )
    os.makedirs(data_dir, mode=0o700, exist_ok=True)


def _restore_hint(path: Path) -> str:
    return (
        f"set TOKENGRPC_SECRET_KEY or restore {path} to the original key;"
        " a new key would make every retrievable token value unreadable"
    )


async def checked_key(
    store: TokenStore, data_dir: Path, env_value: str | None, *, make_dir: bool = True
) -> CheckedKey:
    """The key to seal with, after making sure it is the store's own; a new key file
    only in a data dir that exists, or that ``make_dir`` lets it make."""
    path = data_dir / KEY_FILE
    stored = await store.key_fingerprint()
    sample = await store.sealed_sample()
    found = find_key(data_dir, env_value)
    notices = []
    if found is None:
        if stored is not None or sample is not None:
            raise KeyMismatch(
                "refusing to start: the store holds values sealed with a secret key, but"
                f" TOKENGRPC_SECRET_KEY is not set and the key file {path} is missing; "
                + _restore_hint(path)
            )
        _key_dir(data_dir, make_dir)
        key, origin = create_key(data_dir), str(path)
    else:
        key, origin = found.key, found.origin
        if found.exposed:
            notices.append(f"the key file {path} is readable by group or others; chmod 600 it")
    mine = fingerprint(key)
    if stored is None and sample is not None and Sealer(key).open(*sample) is None:
        stored = b""  # values from before fingerprints were kept: the key does not open them
    if stored is None:
        stored = await store.record_key_fingerprint(mine)
    if not hmac.compare_digest(stored, mine):
        raise KeyMismatch(
            f"refusing to start: the secret key from {origin} is not the one this store's"
            " values were sealed with; " + _restore_hint(path)
        )
    return CheckedKey(key, notices)
