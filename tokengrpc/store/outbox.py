"""The webhook outbox's SQL, which both engines speak (the records and the
``Outbox`` protocol are in ``base.py``).

A trigger on ``token_events`` (both engines' migrations; the memory engine's
``_event``) writes one outbox row per configured URL in the transaction of
the event itself, whoever appends the event: no event is lost to a crash,
and none is queued that was not committed. The row holds a copy of the
token as it was right after the event (never its secret hash, replaced
hash or sealed value) and the time it is next due.

A row is handed to one sender at a time: claiming it moves its due time a
lease ahead, so a sender that dies gives it back when the lease ends. A row
waits while an earlier row of the same token and URL is still queued, so
each URL gets each token's events in order (docs/webhooks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokengrpc.store import statements
from tokengrpc.store.base import Outgoing, TokenRecord

#: The token's columns copied into an outbox row: TOKEN_COLUMNS without the
#: id (the row has its own) and without any secret.
SNAPSHOT_COLUMNS = (
    "owner, name, scopes, active, expire_time, allowed_ips, create_time, update_time,"
    " revoke_time, last_use_time, usage_count, previous_until, last_use_ip, not_before,"
    " secret_time"
)

#: Fills the outbox from a new event row ``NEW`` (the body of both engines' trigger).
FILL = (
    f"INSERT INTO webhook_outbox (endpoint_id, event_id, token_id, next_time, {SNAPSHOT_COLUMNS})"
    " SELECT e.id, NEW.id, NEW.token_id, 0, "
    + ", ".join("t." + column.strip() for column in SNAPSHOT_COLUMNS.split(","))
    + " FROM webhook_endpoints e JOIN tokens t ON t.id = NEW.token_id"
)

#: Due rows with no earlier row of their token and URL still queued.
_DUE = (
    "SELECT o.id FROM webhook_outbox o WHERE o.next_time <= {now} AND NOT EXISTS ("
    "SELECT 1 FROM webhook_outbox p WHERE p.endpoint_id = o.endpoint_id"
    " AND p.token_id = o.token_id AND p.id < o.id)"
    " ORDER BY o.id LIMIT {limit}"
)


def due(mark: statements.Marker, *, first: int = 1, locking: str = "") -> str:
    """The ids of rows to claim; parameters (numbered from ``first``): now, limit.
    ``locking`` is PostgreSQL's ``FOR UPDATE SKIP LOCKED``: concurrent claims take
    different rows."""
    sql = _DUE.format(now=mark(first), limit=mark(first + 1))
    return f"{sql} {locking}".strip()


def claim(mark: statements.Marker, *, locking: str = "") -> str:
    """Moves the due rows' time a lease ahead, returning their ids; parameters:
    the lease's end, now, limit (SQLite's markers are positional: in text order)."""
    return (
        f"UPDATE webhook_outbox SET next_time = {mark(1)}"
        f" WHERE id IN ({due(mark, first=2, locking=locking)}) RETURNING id"
    )


_OUTGOING_COLUMNS = (
    "o.id, e.url, o.attempts, "
    + ", ".join("ev." + column.strip() for column in statements.EVENT_COLUMNS.split(","))
    + ", o.token_id, "
    + ", ".join("o." + column.strip() for column in SNAPSHOT_COLUMNS.split(","))
)


def outgoing(ids: str) -> str:
    """The claimed rows with their URL and event; ``ids`` is the engine's way of
    saying "id in the parameter list"."""
    return (
        f"SELECT {_OUTGOING_COLUMNS} FROM webhook_outbox o"
        " JOIN webhook_endpoints e ON e.id = o.endpoint_id"
        f" JOIN token_events ev ON ev.id = o.event_id WHERE o.id {ids} ORDER BY o.id"
    )


def finish(mark: statements.Marker) -> str:
    return f"DELETE FROM webhook_outbox WHERE id = {mark(1)}"


def retry(mark: statements.Marker) -> str:
    """Parameters: attempts, next time, id."""
    return (
        f"UPDATE webhook_outbox SET attempts = {mark(1)}, next_time = {mark(2)}"
        f" WHERE id = {mark(3)}"
    )


OLDEST = (
    "SELECT ev.event_time FROM webhook_outbox o JOIN token_events ev ON ev.id = o.event_id"
    " ORDER BY o.id LIMIT 1"
)


def outgoing_record(row: Any, strings: Callable[[Any], tuple[str, ...]]) -> Outgoing:
    """A row of ``outgoing``: the outbox's id, URL and attempts, the event, the token."""
    event = statements.event_record(row[3:14], strings)
    t = row[14:]
    token = TokenRecord(
        t[0], t[1], t[2], b"", strings(t[3]), bool(t[4]), t[5], strings(t[6]), t[7], t[8], t[9],
        t[10], t[11], None, None, t[12], t[13] or "", t[14], t[15],
    )  # fmt: skip
    return Outgoing(row[0], row[1], row[2], event, token)
