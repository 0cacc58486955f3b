"""Fill a data dir with many tokens, straight through the store (no RPCs).

Most rows get a random hash (they are never presented); a sample gets real
secrets, whose plaintexts are returned for the load generators.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tokengrpc import plaintext
from tokengrpc.config import Settings
from tokengrpc.server import Core
from tokengrpc.store import NewToken


@dataclass
class Seeded:
    admin: str
    introspector: str
    #: owner -> plaintext of a caller with ``write`` among that owner's tokens
    callers: dict[str, str] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Group:
    owner: str
    count: int
    samples: int = 0  # how many of them get real, returned secrets


async def seed(
    data_dir: Path,
    groups: list[Group],
    filler_owners: int = 0,
    filler: int = 0,
    database_url: str = "",
) -> Seeded:
    """Create the groups (the first token of each is a writer caller) and filler rows
    (in the data dir's SQLite, or in the PostgreSQL database ``database_url`` names)."""
    core = await Core.open(Settings(data_dir=data_dir, database_url=database_url))
    try:
        admin = (data_dir / "bootstrap-token").read_text().strip()
        now = time.time_ns() // 1000
        began = time.perf_counter()
        rows: list[NewToken] = []
        secrets: dict[int, str] = {}  # row index -> secret
        callers: dict[str, int] = {}
        sample_rows: list[int] = []

        def add(owner: str, name: str, scopes: tuple[str, ...], real: bool) -> int:
            secret = plaintext.new_secret("tgr_") if real else None
            digest = plaintext.hash_secret(secret) if secret else os.urandom(32)
            rows.append(NewToken(owner, name, digest, scopes, True, None, (), now))
            if secret:
                secrets[len(rows) - 1] = secret
            return len(rows) - 1

        introspector = add("bench", "introspector", ("introspect",), True)
        for group in groups:
            callers[group.owner] = add(group.owner, "caller", ("write",), True)
            for index in range(1, group.count):
                real = index <= group.samples
                row = add(group.owner, f"t{index}", ("read",), real)
                if real:
                    sample_rows.append(row)
        for index in range(filler):
            add(f"user:{index % max(filler_owners, 1)}", f"f{index}", ("read",), False)
        ids = await core.store.insert_many(rows)

        def shown(row: int) -> str:
            return plaintext.join(ids[row], secrets[row])

        return Seeded(
            admin=admin,
            introspector=shown(introspector),
            callers={owner: shown(row) for owner, row in callers.items()},
            samples=[shown(row) for row in sample_rows],
            seconds=time.perf_counter() - began,
        )
    finally:
        await core.close()


def seed_sync(
    data_dir: Path,
    groups: list[Group],
    filler_owners: int = 0,
    filler: int = 0,
    database_url: str = "",
) -> Seeded:
    return asyncio.run(seed(data_dir, groups, filler_owners, filler, database_url))
