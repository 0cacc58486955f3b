"""The SQL both engines speak alike, and the rows it reads and writes.

SQLite marks parameters ``?``, PostgreSQL ``$1``, ``$2``...; the statements
here differ in nothing else, so each engine asks for them with its marker.
A list column (scopes, allowed ips, changed fields) is JSON text on SQLite and
an array on PostgreSQL: each engine passes its own way in and out of it.
What only one engine can say (SQLite's ``VALUES`` usage batches, PostgreSQL's
``unnest`` and its casts) stays in that engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tokengrpc.store.base import (
    Actor,
    EventAction,
    EventQuery,
    EventRecord,
    ListQuery,
    NewToken,
    TokenChanges,
    TokenRecord,
)

#: The n-th parameter marker (from 1) of an engine's SQL.
Marker = Callable[[int], str]
#: A list column as the engine stores it, and back.
Encode = Callable[[tuple[str, ...]], object]
Decode = Callable[[Any], tuple[str, ...]]


def question_mark(_: int) -> str:
    return "?"


def numbered(n: int) -> str:
    return f"${n}"


#: In the order of :class:`~tokengrpc.store.TokenRecord`'s fields.
TOKEN_COLUMNS = (
    "id, owner, name, secret_hash, scopes, active, expire_time, allowed_ips,"
    " create_time, update_time, revoke_time, last_use_time, usage_count, sealed_value,"
    " previous_hash, previous_until, last_use_ip, not_before, secret_time"
)
#: In the order of :class:`~tokengrpc.store.EventRecord`'s fields.
EVENT_COLUMNS = (
    "id, event_time, action, token_id, owner, actor_token_id, actor_owner, client_ip,"
    " changed_fields, reason, detail"
)


def _values(mark: Marker, columns: int, rows: int) -> str:
    """``rows`` groups of ``columns`` markers, numbered on across the groups."""
    return ", ".join(
        "(" + ", ".join(mark(row * columns + n) for n in range(1, columns + 1)) + ")"
        for row in range(rows)
    )


def insert_tokens(mark: Marker, rows: int = 1) -> str:
    """An insert of ``rows`` tokens (``insert_params`` each), returning their rows."""
    return (
        "INSERT INTO tokens (owner, name, secret_hash, scopes, active, expire_time, allowed_ips,"
        " create_time, update_time, sealed_value, not_before, secret_time)"
        f" VALUES {_values(mark, 12, rows)}"
        f" RETURNING {TOKEN_COLUMNS}"
    )


def insert_events(mark: Marker, rows: int = 1) -> str:
    """An insert of ``rows`` audit events (``event_params`` each)."""
    return (
        "INSERT INTO token_events (event_time, action, token_id, owner, actor_token_id,"
        " actor_owner, client_ip, changed_fields, reason, detail)"
        f" VALUES {_values(mark, 10, rows)}"
    )


def update_token(
    token_id: int, changes: TokenChanges, now: int, mark: Marker, strings: Encode
) -> tuple[str, list[object]]:
    """The update of a live token's changed fields and its update time, returning
    its row; and its parameters. Column names are constants: no value is in the SQL."""
    scopes, ips = changes.scopes, changes.allowed_ips
    changed: list[tuple[str, bool, object]] = [
        ("name", changes.name is not None, changes.name),
        ("scopes", scopes is not None, None if scopes is None else strings(scopes)),
        ("active", changes.active is not None, changes.active),
        ("allowed_ips", ips is not None, None if ips is None else strings(ips)),
        # The columns a change can set to NULL.
        ("expire_time", changes.set_expire_time, changes.expire_time),
        ("not_before", changes.set_not_before, changes.not_before),
    ]
    params: list[object] = [now]
    assignments = [f"update_time = {mark(1)}"]
    for column, is_set, value in changed:
        if is_set:
            params.append(value)
            assignments.append(f"{column} = {mark(len(params))}")
    params.append(token_id)
    sql = (
        f"UPDATE tokens SET {', '.join(assignments)}"
        f" WHERE id = {mark(len(params))} AND revoke_time IS NULL RETURNING {TOKEN_COLUMNS}"
    )
    return sql, params


def get_token(mark: Marker) -> str:
    return f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = {mark(1)}"


def get_service_token(mark: Marker) -> str:
    return (
        f"SELECT {TOKEN_COLUMNS} FROM tokens"
        f" WHERE owner = '' AND revoke_time IS NULL AND name = {mark(1)}"
    )


def list_tokens(mark: Marker) -> dict[tuple[bool, bool], str]:
    """An owner's tokens after an id, by (include_revoked, keyset); parameters:
    owner, after id, limit, and the offset when not keyset."""
    return {
        (include_revoked, keyset): (
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE owner = {mark(1)} AND id > {mark(2)}"
            + ("" if include_revoked else " AND revoke_time IS NULL")
            + f" ORDER BY id LIMIT {mark(3)}"
            + ("" if keyset else f" OFFSET {mark(4)}")
        )
        for include_revoked in (False, True)
        for keyset in (False, True)
    }


def service_tokens_by_name(mark: Marker, collate: str = "", hint: str = "") -> dict[bool, str]:
    """Service tokens after a (name, id), by include_revoked; parameters: name,
    id, limit. A walk of ``tokens_service_by_name`` from the keyset: the literal
    ``owner = ''`` lets the planner match that partial index. ``collate`` makes
    the order code points (UTF-8 bytes), as the index is built. ``hint`` names
    the index where a planner without statistics would rather walk the owner's
    index and sort every service token for each page (SQLite's ``INDEXED BY``)."""
    name = f"name{collate}"
    return {
        include_revoked: (
            f"SELECT {TOKEN_COLUMNS} FROM tokens{hint} WHERE owner = ''"
            f" AND ({name}, id) > ({mark(1)}{collate}, {mark(2)})"
            + ("" if include_revoked else " AND revoke_time IS NULL")
            + f" ORDER BY {name}, id LIMIT {mark(3)}"
        )
        for include_revoked in (False, True)
    }


def numbered_question_mark(n: int) -> str:
    """SQLite's numbered marker, for a statement that uses a parameter twice."""
    return f"?{n}"


def paged_tokens(mark: Marker) -> dict[bool, str]:
    """A numbered page (an offset from the first token) of an owner's tokens, by
    include_revoked; parameters, each marker numbered: 1 owner, 2 offset, 3 limit.

    A deferred join: the offset is walked over ids alone (an index-only scan of
    the owner's index), then only the page's rows are read. And it is walked
    from the nearer end, which the kept count (``token_counts``) tells in the
    same statement, so both read one snapshot: a page in the second half is
    read backwards from the last token. The branch not taken gets LIMIT 0,
    which both engines answer without reading an index entry (a condition in
    its WHERE would be tested on every entry).
    """
    shapes = {}
    for include_revoked in (False, True):
        n = "total" if include_revoked else "live"
        live = "" if include_revoked else " AND revoke_time IS NULL"
        owner, offset, limit = mark(1), mark(2), mark(3)
        ids = f"SELECT id FROM tokens WHERE owner = {owner}{live}"
        forward = f"{offset} * 2 <= n"
        head_limit = f"CASE WHEN {forward} THEN {limit} ELSE 0 END"
        # The rows [offset, offset + limit) counted from the end: past the
        # end, none; the first page from the end may hold fewer than limit.
        back_limit = (
            f"CASE WHEN {forward} OR n <= {offset} THEN 0"
            f" WHEN n - {offset} < {limit} THEN n - {offset} ELSE {limit} END"
        )
        back_offset = f"CASE WHEN n - {offset} > {limit} THEN n - {offset} - {limit} ELSE 0 END"
        shapes[include_revoked] = (
            f"WITH counted AS (SELECT coalesce((SELECT {n} FROM token_counts"
            f" WHERE owner = {owner}), 0) AS n)"
            f" SELECT {TOKEN_COLUMNS} FROM tokens WHERE id IN ("
            f"SELECT id FROM ({ids} ORDER BY id"
            f" LIMIT (SELECT {head_limit} FROM counted) OFFSET {offset}) AS head"
            f" UNION ALL SELECT id FROM ({ids} ORDER BY id DESC"
            f" LIMIT (SELECT {back_limit} FROM counted)"
            f" OFFSET (SELECT {back_offset} FROM counted)) AS tail"
            ") ORDER BY id"
        )
    return shapes


def count_tokens(mark: Marker) -> dict[bool, str]:
    """How many tokens an owner has, by include_revoked; parameter: owner.
    Kept in ``token_counts`` by the write's own transaction (the migrations'
    triggers), so a count is one row however many tokens there are."""
    return {
        include_revoked: "SELECT coalesce((SELECT "
        + ("total" if include_revoked else "live")
        + f" FROM token_counts WHERE owner = {mark(1)}), 0)"
        for include_revoked in (False, True)
    }


def owner_equals(marker: str) -> str:
    return f"owner = {marker}"


def list_events(
    mark: Marker, owner_is: Callable[[str], str] = owner_equals
) -> dict[tuple[bool, bool], str]:
    """Events newest first below an id, by (per owner, per token); parameters:
    before id, the owner and the token id where asked for, limit.

    Any page must be a walk of one index from its page token: (token_id, id),
    (owner, id) or the primary key. So an owner's listing is ordered by
    (owner, id), which only its index gives. PostgreSQL would drop an owner
    it knows to be one value from that order and, for a common owner, walk
    the primary key instead, skipping every newer event of the others on each
    page: it passes ``owner_is`` a test that is not an equality to it
    (``owner = ANY(array)``) for that reason.
    """
    shapes = {}
    for by_owner in (False, True):
        for by_token in (False, True):
            conditions, n = [f"id < {mark(1)}"], 1
            if by_owner:
                n += 1
                conditions.append(owner_is(mark(n)))
            if by_token:
                n += 1
                conditions.append(f"token_id = {mark(n)}")
            held = "owner DESC, " if by_owner and not by_token else ""
            shapes[by_owner, by_token] = (
                f"SELECT {EVENT_COLUMNS} FROM token_events WHERE {' AND '.join(conditions)}"
                f" ORDER BY {held}id DESC LIMIT {mark(n + 1)}"
            )
    return shapes


def count_past_secret_age(mark: Marker) -> str:
    """Tokens that would authenticate but for a secret issued too long ago;
    parameters: now, and the latest issue time too old at now (a whole scan:
    run once at start)."""
    return (
        "SELECT count(*) FROM tokens WHERE revoke_time IS NULL AND active"
        f" AND (expire_time IS NULL OR expire_time > {mark(1)}) AND secret_time <= {mark(2)}"
    )


def list_tokens_params(query: ListQuery) -> tuple[object, ...]:
    """The parameters of ``list_tokens(...)[query.include_revoked, keyset]``."""
    params: tuple[object, ...] = (query.owner, query.after_id, query.limit)
    return params if query.offset == 0 else (*params, query.offset)


def list_events_params(query: EventQuery) -> list[object]:
    """The parameters of ``list_events(...)[owner given, token given]``."""
    params: list[object] = [query.before_id or (1 << 63) - 1]
    if query.owner is not None:
        params.append(query.owner)
    if query.token_id is not None:
        params.append(query.token_id)
    params.append(query.limit)
    return params


def token_record(row: Any, strings: Decode) -> TokenRecord:
    """A row of ``TOKEN_COLUMNS``, which lists the record's fields in order."""
    return TokenRecord(
        row[0], row[1], row[2], row[3], strings(row[4]), bool(row[5]), row[6], strings(row[7]),
        row[8], row[9], row[10], row[11], row[12], row[13], row[14], row[15], row[16] or "",
        row[17], row[18],
    )  # fmt: skip


def event_record(row: Any, strings: Decode) -> EventRecord:
    """A row of ``EVENT_COLUMNS``, which lists the record's fields in order."""
    return EventRecord(
        row[0], row[1], EventAction(row[2]), row[3], row[4], row[5], row[6], row[7],
        strings(row[8]), row[9], row[10],
    )  # fmt: skip


def insert_params(new: NewToken, strings: Encode) -> tuple[object, ...]:
    """The twelve parameters of a token insert, in the engines' column order
    (the secret is issued at creation)."""
    return (
        new.owner,
        new.name,
        new.secret_hash,
        strings(new.scopes),
        new.active,
        new.expire_time,
        strings(new.allowed_ips),
        new.now,
        new.now,
        new.sealed_value,
        new.not_before,
        new.now,
    )


def event_params(
    action: EventAction,
    token: tuple[int, str],
    now: int,
    actor: Actor,
    fields: Sequence[str],
    strings: Encode,
) -> tuple[object, ...]:
    """The ten parameters of an audit event: the token's id and owner, the
    actor, the changed fields' names (never a value) and the actor's reason."""
    return (now, int(action), *token, actor.token_id, actor.owner, actor.client_ip,
            strings(tuple(fields)), actor.reason, actor.detail)  # fmt: skip
