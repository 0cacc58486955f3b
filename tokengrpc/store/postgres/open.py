"""Start on a PostgreSQL database: reach it, migrate it, listen to it, pool it.

Every failure on the way becomes ``DatabaseError`` with words an operator can
act on; the URL's password is cut out of everything it says.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from tokengrpc.store.base import StoreMissing
from tokengrpc.store.postgres.changes import LISTENER_APPLICATION, Notifications, new_instance_id
from tokengrpc.store.postgres.dsn import redacted, scrub
from tokengrpc.store.postgres.engine import PostgresEngine
from tokengrpc.store.postgres.migrations import NewerSchema, migrate

T = TypeVar("T")

#: Seconds to reach the database at start before giving up with an error.
CONNECT_TIMEOUT = 5.0


class DatabaseError(ValueError):
    """The database cannot be used; the message names the URL without its password."""


async def _explained(url: str, step: Callable[[], Awaitable[T]]) -> T:
    try:
        return await step()
    except NewerSchema as error:
        raise DatabaseError(f"refusing to start: {error} ({redacted(url)})") from None
    except asyncpg.InvalidPasswordError:
        raise DatabaseError(
            f"the database at {redacted(url)} refused the password (check --database /"
            " TOKENGRPC_DATABASE_URL)"
        ) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = scrub(str(error), url) or type(error).__name__
        raise DatabaseError(f"cannot use the database at {redacted(url)}: {reason}") from None


async def _connect(url: str, application: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        url, timeout=CONNECT_TIMEOUT, server_settings={"application_name": application}
    )


async def migrate_postgres(url: str) -> tuple[int, int]:
    """Apply the migrations; the schema versions before and after."""

    async def run() -> tuple[int, int]:
        connection = await _connect(url, "tokengrpc-migrate")
        try:
            return await migrate(connection)
        finally:
            await connection.close()

    return await _explained(url, run)


async def _has_schema(url: str) -> bool:
    connection = await _connect(url, "tokengrpc")
    try:
        return await connection.fetchval("SELECT to_regclass('tokengrpc_schema')") is not None
    finally:
        await connection.close()


async def open_postgres(url: str, *, create: bool = True) -> tuple[PostgresEngine, Notifications]:
    """A migrated database's engine and its change notifications, listening already
    (``tokengrpc.store.open.layered`` puts the store over them); without
    ``create``, a database tokengrpc never set up is refused, untouched."""
    if not create and not await _explained(url, functools.partial(_has_schema, url)):
        raise StoreMissing(
            f"no store in the database at {redacted(url)}: create it with 'tokengrpc migrate'"
        )
    await migrate_postgres(url)
    instance = new_instance_id()
    listener = f"{LISTENER_APPLICATION} {os.getpid()}"
    changes = Notifications(functools.partial(_connect, url, listener), instance)
    await _explained(url, changes.start)
    try:
        engine = await _explained(url, functools.partial(PostgresEngine.open, url, instance))
    except BaseException:
        await changes.close()
        raise
    return engine, changes


__all__ = ["DatabaseError", "migrate_postgres", "open_postgres"]
