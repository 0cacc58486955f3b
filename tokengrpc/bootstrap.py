"""The first token of an empty store, so the operator has a way in."""

from __future__ import annotations

import os
from pathlib import Path

from tokengrpc.auth import operator
from tokengrpc.store import StoreNotEmpty, TokenStore
from tokengrpc.tokens import TokenManager
from tokengrpc.v1 import tokens_pb2 as pb

BOOTSTRAP_FILE = "bootstrap-token"
BOOTSTRAP_SCOPES = ("admin", "write", "introspect")


async def ensure_bootstrap_token(
    store: TokenStore, manager: TokenManager, data_dir: Path
) -> Path | None:
    """Create the bootstrap token if the store is empty; return where it was written."""
    if not await store.is_empty():
        return None
    try:
        # Checked again in the insert's own transaction: of instances that start
        # at once on one database, exactly one creates it.
        response = await manager.create_token(
            operator(),
            pb.CreateTokenRequest(name="bootstrap", owner="admin", scopes=BOOTSTRAP_SCOPES),
            first=True,
        )
    except StoreNotEmpty:
        return None
    os.makedirs(data_dir, mode=0o700, exist_ok=True)  # on PostgreSQL, the first file in it
    path = data_dir / BOOTSTRAP_FILE
    # Written 0600 from the first byte: the plaintext never sits world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(response.plaintext + "\n")
    os.chmod(path, 0o600)
    return path
