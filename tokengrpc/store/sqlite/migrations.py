"""Versioned schema migrations, applied in order at start-up.

The schema version lives in ``PRAGMA user_version``. A migration is only ever
appended, never edited: an older data dir is upgraded step by step, never
wiped.
"""

from __future__ import annotations

import sqlite3

from tokengrpc.store import outbox

MIGRATIONS: tuple[str, ...] = (
    # 1: the tokens table. AUTOINCREMENT so that an id, which is part of every
    # plaintext, is never handed out twice even after rows are gone.
    """
    CREATE TABLE tokens (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        owner         TEXT    NOT NULL,
        name          TEXT    NOT NULL,
        secret_hash   BLOB    NOT NULL,
        scopes        TEXT    NOT NULL,
        active        INTEGER NOT NULL,
        expire_time   INTEGER,
        allowed_ips   TEXT    NOT NULL,
        create_time   INTEGER NOT NULL,
        update_time   INTEGER NOT NULL,
        revoke_time   INTEGER,
        last_use_time INTEGER,
        usage_count   INTEGER NOT NULL DEFAULT 0,
        sealed_value  BLOB
    );
    -- Listing a page of one owner's tokens walks this index from a keyset.
    CREATE INDEX tokens_by_owner ON tokens (owner, id);
    -- The same for listings that leave revoked tokens out.
    CREATE INDEX tokens_live_by_owner ON tokens (owner, id) WHERE revoke_time IS NULL;
    -- Service-token names are unique among live service tokens only, so a
    -- revoked token's name is free again.
    CREATE UNIQUE INDEX tokens_live_service_name ON tokens (name)
        WHERE owner = '' AND revoke_time IS NULL;
    """,
    # 2: the secret key's fingerprint (one row). A process with another key,
    # or with none, must refuse to start rather than seal with a new one.
    """
    CREATE TABLE secret_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        fingerprint BLOB    NOT NULL
    );
    -- Scratch room for the full-disk probe: a row written, then deleted.
    CREATE TABLE write_probe (data BLOB NOT NULL);
    """,
    # 3: the token lifecycle. A rotated token keeps its previous secret's hash
    # until previous_until (microseconds); the address of the last use; and the
    # audit trail, written in the transaction of the change it records.
    """
    ALTER TABLE tokens ADD COLUMN previous_hash BLOB;
    ALTER TABLE tokens ADD COLUMN previous_until INTEGER;
    ALTER TABLE tokens ADD COLUMN last_use_ip TEXT;
    CREATE TABLE token_events (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        event_time     INTEGER NOT NULL,
        action         INTEGER NOT NULL,
        token_id       INTEGER NOT NULL,
        -- The token's owner when it happened: listings filter on it.
        owner          TEXT    NOT NULL,
        actor_token_id INTEGER NOT NULL,
        actor_owner    TEXT    NOT NULL,
        client_ip      TEXT    NOT NULL,
        changed_fields TEXT    NOT NULL
    );
    -- Newest-first keyset pages: overall, per owner, per token.
    CREATE INDEX token_events_by_owner ON token_events (owner, id);
    CREATE INDEX token_events_by_token ON token_events (token_id, id);
    """,
    # 4: policies over time (CONTRACT section 12). not_before; secret_time, when
    # the current secret was issued: a stored token's is its last rotation's
    # time, else its creation's. Why an event happened: reason and detail.
    """
    ALTER TABLE tokens ADD COLUMN not_before INTEGER;
    ALTER TABLE tokens ADD COLUMN secret_time INTEGER NOT NULL DEFAULT 0;
    UPDATE tokens SET secret_time = coalesce(
        (SELECT max(event_time) FROM token_events
         WHERE token_events.token_id = tokens.id AND token_events.action = 3),
        create_time);
    ALTER TABLE token_events ADD COLUMN reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE token_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
    """,
    # 5: the webhook outbox (CONTRACT section 13; tokengrpc/store/outbox.py). The
    # URLs events are queued for; a row per event and URL, with the token as it
    # was right after the event (no secret), written by a trigger in the
    # event's own transaction whoever appends the event.
    """
    CREATE TABLE webhook_endpoints (
        id  INTEGER PRIMARY KEY AUTOINCREMENT,
        url TEXT    NOT NULL UNIQUE
    );
    CREATE TABLE webhook_outbox (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint_id    INTEGER NOT NULL,
        event_id       INTEGER NOT NULL,
        token_id       INTEGER NOT NULL,
        -- When it is due (microseconds); while a sender holds it, its lease's end.
        next_time      INTEGER NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 0,
        owner          TEXT    NOT NULL,
        name           TEXT    NOT NULL,
        scopes         TEXT    NOT NULL,
        active         INTEGER NOT NULL,
        expire_time    INTEGER,
        allowed_ips    TEXT    NOT NULL,
        create_time    INTEGER NOT NULL,
        update_time    INTEGER NOT NULL,
        revoke_time    INTEGER,
        last_use_time  INTEGER,
        usage_count    INTEGER NOT NULL,
        previous_until INTEGER,
        last_use_ip    TEXT,
        not_before     INTEGER,
        secret_time    INTEGER NOT NULL
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (next_time);
    -- A row waits for the earlier rows of its token and URL.
    CREATE INDEX webhook_outbox_order ON webhook_outbox (endpoint_id, token_id, id);
    CREATE TRIGGER webhook_outbox_fill AFTER INSERT ON token_events
    BEGIN
        {fill};
    END;
    """.replace("{fill}", outbox.FILL),
    # 6: each owner's token counts, kept by triggers in the transaction of
    # every insert, revocation (or any change of owner or revoke_time) and
    # delete, so a `?page=` listing's total costs one row, not a scan; and
    # so the listing can walk a deep page from the end nearer to it.
    """
    CREATE TABLE token_counts (
        owner TEXT    PRIMARY KEY,
        -- every token of the owner, and those not revoked
        total INTEGER NOT NULL,
        live  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TRIGGER token_counts_insert AFTER INSERT ON tokens BEGIN
        INSERT INTO token_counts (owner, total, live)
            VALUES (NEW.owner, 1, NEW.revoke_time IS NULL)
            ON CONFLICT (owner) DO UPDATE SET
                total = total + 1, live = live + excluded.live;
    END;
    CREATE TRIGGER token_counts_update AFTER UPDATE OF owner, revoke_time ON tokens
        WHEN OLD.owner IS NOT NEW.owner
            OR (OLD.revoke_time IS NULL) IS NOT (NEW.revoke_time IS NULL)
    BEGIN
        UPDATE token_counts SET total = total - 1, live = live - (OLD.revoke_time IS NULL)
            WHERE owner = OLD.owner;
        INSERT INTO token_counts (owner, total, live)
            VALUES (NEW.owner, 1, NEW.revoke_time IS NULL)
            ON CONFLICT (owner) DO UPDATE SET
                total = total + 1, live = live + excluded.live;
    END;
    CREATE TRIGGER token_counts_delete AFTER DELETE ON tokens BEGIN
        UPDATE token_counts SET total = total - 1, live = live - (OLD.revoke_time IS NULL)
            WHERE owner = OLD.owner;
    END;
    INSERT INTO token_counts (owner, total, live)
        SELECT owner, count(*), count(*) - count(revoke_time) FROM tokens GROUP BY owner;
    """,
    # 7: expiry reminders (CONTRACT section 12; tokengrpc/reminders.py). Where a
    # token's reminders stand: the expiry they count for, the next one due, and
    # when the row asks to be looked at (indexed: finding due rows is no scan).
    # The triggers wake a row whenever a write may move its expiry, whoever
    # writes; reminder_plan remembers the maximum secret age they were planned
    # under (no row: never planned, so the first start wakes every live token).
    """
    ALTER TABLE tokens ADD COLUMN reminder_expiry INTEGER;
    ALTER TABLE tokens ADD COLUMN reminder_next INTEGER;
    ALTER TABLE tokens ADD COLUMN reminder_wake INTEGER;
    CREATE INDEX tokens_reminder_wake ON tokens (reminder_wake) WHERE reminder_wake IS NOT NULL;
    CREATE TRIGGER tokens_wake_reminders_on_insert AFTER INSERT ON tokens
    BEGIN
        UPDATE tokens SET reminder_wake = NEW.create_time WHERE id = NEW.id;
    END;
    CREATE TRIGGER tokens_wake_reminders_on_change AFTER UPDATE OF expire_time, secret_time
    ON tokens
    WHEN NEW.expire_time IS NOT OLD.expire_time OR NEW.secret_time IS NOT OLD.secret_time
    BEGIN
        UPDATE tokens SET reminder_wake = NEW.update_time WHERE id = NEW.id;
    END;
    CREATE TABLE reminder_plan (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        max_secret_age INTEGER
    );
    """,
    # 8: the admin family's whole list of service tokens is by name: paged by a
    # (name, id) keyset along this index. Partial, so personal tokens (nearly
    # every row, and every create at scale) do not pay for it.
    """
    CREATE INDEX tokens_service_by_name ON tokens (name, id) WHERE owner = '';
    """,
)

LATEST = len(MIGRATIONS)


class NewerSchema(RuntimeError):
    """The data dir was written by a newer tokengrpc; refuse rather than guess."""


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema to LATEST; return the version found before."""
    found = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if found > LATEST:
        raise NewerSchema(f"schema version {found} is newer than this program's {LATEST}")
    for version in range(found + 1, LATEST + 1):
        # One transaction per step: a crash leaves the previous version intact.
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return found


def _statements(script: str) -> list[str]:
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [s for s in statements if s]
