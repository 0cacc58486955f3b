"""Fill a data dir (or a PostgreSQL database) with many tokens (no RPCs).

A few rows get real secrets, whose plaintexts are returned for the load
generators: those go in through the store (``insert_many``). The rest get
a random hash (they are never presented) and go in by one SQL statement per
table on the engine itself, each with its CREATED event, as the store would
write them: a million rows in seconds rather than a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from tokengrpc import plaintext
from tokengrpc.config import Settings
from tokengrpc.server import Core
from tokengrpc.store import NewToken
from tokengrpc.store.sqlite import DB_FILE


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
    service_tokens: int = 0,
) -> Seeded:
    """Create the groups (the first token of each is a writer caller), filler rows
    and ``service_tokens`` service tokens ``s0``, ``s1``, … after them (in the data
    dir's SQLite, or in the PostgreSQL database ``database_url`` names)."""
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
            for index in range(1, group.samples + 1):
                sample_rows.append(add(group.owner, f"t{index}", ("read",), True))
        ids = await core.store.insert_many(rows)
        for group in groups:
            await _bulk(data_dir, database_url, group.owner, "t", group.samples + 1,
                        group.count, 0, now)  # fmt: skip
        await _bulk(data_dir, database_url, "user:", "f", 0, filler, max(filler_owners, 1), now)
        await _bulk(data_dir, database_url, "", "s", 0, service_tokens, 0, now)

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


#: Tokens ``prefix || n`` for n in [first, last) of ``owner``, or of ``owner || n % owners``.
#: Parameters: 1 owner, 2 owners (0: one owner), 3 prefix, 4 first, 5 last, 6 now.
_SQLITE_TOKENS = (
    "WITH RECURSIVE series(n) AS (SELECT ?4 UNION ALL SELECT n + 1 FROM series WHERE n + 1 < ?5)"
    " INSERT INTO tokens (owner, name, secret_hash, scopes, active, allowed_ips, create_time,"
    " update_time, secret_time) SELECT CASE WHEN ?2 = 0 THEN ?1 ELSE ?1 || (n % ?2) END,"
    " ?3 || n, randomblob(32), '[\"read\"]', 1, '[]', ?6, ?6, ?6 FROM series"
)
_PG_TOKENS = (
    "INSERT INTO tokens (owner, name, secret_hash, scopes, active, allowed_ips, create_time,"
    " update_time, secret_time)"
    " SELECT CASE WHEN $2::bigint = 0 THEN $1 ELSE $1 || (n % $2::bigint) END, $3 || n,"
    " decode(md5(random()::text) || md5(n::text), 'hex'), '{read}', true, '{}',"
    " $6::bigint, $6::bigint, $6::bigint FROM generate_series($4::bigint, $5::bigint - 1) AS n"
)
#: The CREATED events of the tokens from an id on (the command line's actor, 0).
_EVENTS = (
    "INSERT INTO token_events (event_time, action, token_id, owner, actor_token_id,"
    " actor_owner, client_ip, changed_fields)"
    " SELECT create_time, 1, id, owner, 0, '', '', {empty} FROM tokens WHERE id >= {start}"
    " ORDER BY id"
)


async def _bulk(
    data_dir: Path,
    database_url: str,
    owner: str,
    prefix: str,
    first: int,
    last: int,
    owners: int,
    now: int,
) -> None:
    """Tokens ``prefix + n`` for n in [first, last) of ``owner`` (or, with ``owners``,
    of ``owner + str(n % owners)``), and their CREATED events, by SQL alone."""
    if last <= first:
        return
    params = (owner, owners, prefix, first, last, now)
    if database_url:
        connection = await asyncpg.connect(database_url)
        try:
            async with connection.transaction():
                start = await connection.fetchval("SELECT coalesce(max(id), 0) + 1 FROM tokens")
                await connection.execute(_PG_TOKENS, *params)
                await connection.execute(_EVENTS.format(empty="'{}'", start="$1"), start)
            # As autovacuum would, later: index-only scans need the visibility map.
            await connection.execute("VACUUM ANALYZE tokens")
            await connection.execute("VACUUM ANALYZE token_events")
        finally:
            await connection.close()
        return
    with contextlib.closing(sqlite3.connect(data_dir / DB_FILE, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        (start,) = db.execute("SELECT coalesce(max(id), 0) + 1 FROM tokens").fetchone()
        db.execute(_SQLITE_TOKENS, params)
        db.execute(_EVENTS.format(empty="'[]'", start="?"), (start,))
        db.execute("COMMIT")


def seed_sync(
    data_dir: Path,
    groups: list[Group],
    filler_owners: int = 0,
    filler: int = 0,
    database_url: str = "",
    service_tokens: int = 0,
) -> Seeded:
    return asyncio.run(seed(data_dir, groups, filler_owners, filler, database_url, service_tokens))
