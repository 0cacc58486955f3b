"""The SQL both engines speak alike, and the rows it reads and writes.

SQLite marks parameters ``?``, PostgreSQL ``$1``, ``$2``...; the statements
here differ in nothing else, so each engine asks for them with its marker.
A list column (scopes, allowed ips, changed fields) is JSON text on SQLite and
an array on PostgreSQL: each engine passes its own way in and out of it.
What only one engine can say (SQLite's ``VALUES`` batches, PostgreSQL's
``unnest`` and ``RETURNING`` of a whole insert) stays in that engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokengrpc.store.base import (
    EventAction,
    EventQuery,
    EventRecord,
    ListQuery,
    NewToken,
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
    " previous_hash, previous_until, last_use_ip"
)
#: In the order of :class:`~tokengrpc.store.EventRecord`'s fields.
EVENT_COLUMNS = (
    "id, event_time, action, token_id, owner, actor_token_id, actor_owner, client_ip,"
    " changed_fields"
)


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


def count_tokens(mark: Marker) -> dict[bool, str]:
    """How many tokens an owner has, by include_revoked; parameter: owner."""
    return {
        include_revoked: f"SELECT count(*) FROM tokens WHERE owner = {mark(1)}"
        + ("" if include_revoked else " AND revoke_time IS NULL")
        for include_revoked in (False, True)
    }


def list_events(mark: Marker) -> dict[tuple[bool, bool], str]:
    """Events newest first below an id, by (per owner, per token); parameters:
    before id, the owner and the token id where asked for, limit."""
    shapes = {}
    for by_owner in (False, True):
        for by_token in (False, True):
            conditions, n = [f"id < {mark(1)}"], 1
            if by_owner:
                n += 1
                conditions.append(f"owner = {mark(n)}")
            if by_token:
                n += 1
                conditions.append(f"token_id = {mark(n)}")
            shapes[by_owner, by_token] = (
                f"SELECT {EVENT_COLUMNS} FROM token_events WHERE {' AND '.join(conditions)}"
                f" ORDER BY id DESC LIMIT {mark(n + 1)}"
            )
    return shapes


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
    )  # fmt: skip


def event_record(row: Any, strings: Decode) -> EventRecord:
    """A row of ``EVENT_COLUMNS``, which lists the record's fields in order."""
    return EventRecord(
        row[0], row[1], EventAction(row[2]), row[3], row[4], row[5], row[6], row[7],
        strings(row[8]),
    )  # fmt: skip


def insert_params(new: NewToken, strings: Encode) -> tuple[object, ...]:
    """The ten parameters of a token insert, in the engines' column order."""
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
    )
