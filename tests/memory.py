"""An ``Engine`` held in dicts: the store's layers (cache, usage counting) over
an engine with no SQL, no disk and no thread (docs/store.md).

Several engines on one ``Database`` stand for several processes on one file,
and their ``MemoryChanges`` share its counter as SQLite's share the counter
file. ``around_write`` is the same seam as SQLite's: each write is one step
(its own commit), labelled by the ``Engine`` method that makes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar, cast

from tokengrpc.store.base import (
    NO_ACTOR,
    PREVIOUS_SECRET,
    REASON_INACTIVE,
    SERVICE_OWNER,
    Actor,
    EventAction,
    EventQuery,
    EventRecord,
    ListQuery,
    NameTaken,
    NewToken,
    Outgoing,
    ReminderState,
    ReminderStep,
    Rotation,
    StoreNotEmpty,
    TokenChanges,
    TokenRecord,
    Usage,
)

T = TypeVar("T")
#: ``around(label, run)`` must return ``await run()``'s result (as SQLite's ``AroundWrite``).
AroundWrite = Callable[[str, Callable[[], Awaitable[object]]], Awaitable[object]]


@dataclasses.dataclass
class Database:
    """What every engine on it shares: rows, events, the key and the change counter."""

    tokens: dict[int, TokenRecord] = dataclasses.field(default_factory=dict)
    events: list[EventRecord] = dataclasses.field(default_factory=list)
    fingerprint: bytes | None = None
    generation: int = 0
    #: Each token's expiry reminders (the engines' reminder_* columns).
    reminders: dict[int, ReminderState] = dataclasses.field(default_factory=dict)
    #: The maximum secret age reminders were planned under; empty: never planned.
    reminder_plan: list[int | None] = dataclasses.field(default_factory=list)
    #: The webhook URLs events are queued for, and the queue: rows by id, in
    #: order, each due at its ``due`` time (as the engines' outbox tables).
    webhook_urls: list[str] = dataclasses.field(default_factory=list)
    outbox: dict[int, Queued] = dataclasses.field(default_factory=dict)
    outbox_ids: int = 0


@dataclasses.dataclass
class Queued:
    outgoing: Outgoing
    due: int = 0


class MemoryChanges:
    """A ``Changes``: the database's counter, moved by every announcement."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def current(self) -> int:
        return self._db.generation

    async def announce(self) -> int:
        before = self._db.generation
        self._db.generation += 1
        return before

    async def close(self) -> None:
        pass


class MemoryEngine:
    """An ``Engine`` on a ``Database``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.around_write: AroundWrite | None = None
        self.closed = False

    @property
    def writable(self) -> bool:
        return True

    async def _write(self, label: str, step: Callable[[], T]) -> T:
        async def run() -> T:
            return step()

        if self.around_write is None:
            return await run()
        return cast(T, await self.around_write(label, run))

    def _event(
        self,
        action: EventAction,
        record: TokenRecord,
        now: int,
        actor: Actor,
        fields: Sequence[str] = (),
    ) -> None:
        events = self._db.events
        event = EventRecord(
            len(events) + 1, now, action, record.id, record.owner, actor.token_id,
            actor.owner, actor.client_ip, tuple(fields), actor.reason, actor.detail,
        )  # fmt: skip
        events.append(event)
        # As the engines' trigger: a row per URL, with the token as it is now, no secret.
        token = dataclasses.replace(record, secret_hash=b"", sealed_value=None, previous_hash=None)
        for url in self._db.webhook_urls:
            self._db.outbox_ids += 1
            row_id = self._db.outbox_ids
            self._db.outbox[row_id] = Queued(Outgoing(row_id, url, 0, event, token))

    def _name_taken(self, owner: str, name: str, other_than: int = 0) -> bool:
        return owner == SERVICE_OWNER and any(
            t.owner == SERVICE_OWNER and t.name == name and t.revoke_time is None
            for t in self._db.tokens.values()
            if t.id != other_than
        )

    def _add(self, new: NewToken, token_id: int) -> TokenRecord:
        if self._name_taken(new.owner, new.name):
            raise NameTaken(new.name)
        record = TokenRecord(
            token_id, new.owner, new.name, new.secret_hash, new.scopes, new.active,
            new.expire_time, new.allowed_ips, new.now, new.now, None, None, 0, new.sealed_value,
            not_before=new.not_before, secret_time=new.now,
        )  # fmt: skip
        self._db.tokens[token_id] = record
        self._wake(record, new.now)
        self._event(EventAction.CREATED, record, new.now, new.actor)
        return record

    def _wake(self, record: TokenRecord, when: int) -> None:
        """What the engines' triggers do when a write may move an expiry."""
        found = self._db.reminders.get(record.id, ReminderState(None, None, None))
        self._db.reminders[record.id] = dataclasses.replace(found, wake=when)

    def _next_id(self) -> int:
        return max(self._db.tokens, default=0) + 1

    async def insert(self, new: NewToken) -> TokenRecord:
        def step() -> TokenRecord:
            if new.only_into_empty_store and self._db.tokens:
                raise StoreNotEmpty
            return self._add(new, self._next_id())

        return await self._write("insert", step)

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        def step() -> range:
            first = self._next_id()
            for index, new in enumerate(news):
                self._add(new, first + index)
            return range(first, first + len(news))

        return await self._write("insert_many", step)

    async def get(self, token_id: int) -> TokenRecord | None:
        return self._db.tokens.get(token_id)

    async def get_service_token(self, name: str) -> TokenRecord | None:
        return next(
            (
                t
                for t in self._db.tokens.values()
                if t.owner == SERVICE_OWNER and t.name == name and t.revoke_time is None
            ),
            None,
        )

    def _owned(self, query: ListQuery) -> list[TokenRecord]:
        return [
            t
            for _, t in sorted(self._db.tokens.items())
            if t.owner == query.owner and (query.include_revoked or t.revoke_time is None)
        ]

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]:
        if query.after_name is not None:
            key = (query.after_name, query.after_id)
            named = sorted(self._owned(query), key=lambda t: (t.name, t.id))
            return [t for t in named if (t.name, t.id) > key][: query.limit]
        after = [t for t in self._owned(query) if t.id > query.after_id]
        return after[query.offset : query.offset + query.limit]

    async def count(self, query: ListQuery) -> int:
        return len(self._owned(query))

    def _change(
        self,
        label: str,
        token_id: int,
        change: Callable[[TokenRecord], TokenRecord | None],
        event: Callable[[TokenRecord], None],
    ) -> Awaitable[TokenRecord | None]:
        """A write of one live token: ``change`` says its new row (None: no change)."""

        def step() -> TokenRecord | None:
            found = self._db.tokens.get(token_id)
            if found is None or found.revoke_time is not None:
                return None
            changed = change(found)
            if changed is not None:
                self._db.tokens[token_id] = changed
                moved = (changed.expire_time, changed.secret_time)
                if moved != (found.expire_time, found.secret_time):
                    self._wake(changed, changed.update_time)
                event(changed)
            return changed

        return self._write(label, step)

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor
    ) -> TokenRecord | None:
        def change(found: TokenRecord) -> TokenRecord:
            name = found.name if changes.name is None else changes.name
            if name != found.name and self._name_taken(found.owner, name, found.id):
                raise NameTaken(name)
            return dataclasses.replace(
                found,
                name=name,
                scopes=found.scopes if changes.scopes is None else changes.scopes,
                active=found.active if changes.active is None else changes.active,
                allowed_ips=found.allowed_ips
                if changes.allowed_ips is None
                else changes.allowed_ips,
                expire_time=changes.expire_time if changes.set_expire_time else found.expire_time,
                not_before=changes.not_before if changes.set_not_before else found.not_before,
                update_time=now,
            )

        def event(record: TokenRecord) -> None:
            self._event(EventAction.UPDATED, record, now, actor, changes.fields())

        return await self._change("update", token_id, change, event)

    async def revoke(self, token_id: int, now: int, actor: Actor) -> TokenRecord | None:
        def event(record: TokenRecord) -> None:
            self._event(EventAction.REVOKED, record, now, actor, ("revoke_time",))

        return await self._change(
            "revoke",
            token_id,
            lambda found: dataclasses.replace(found, revoke_time=now, update_time=now),
            event,
        )

    async def rotate(self, token_id: int, rotation: Rotation, actor: Actor) -> TokenRecord | None:
        now, until = rotation.now, rotation.previous_until or 0
        fields = ("secret",) if rotation.sealed_value is None else ("secret", "value")

        def change(found: TokenRecord) -> TokenRecord:
            graced = until > now
            return dataclasses.replace(
                found,
                previous_hash=found.secret_hash if graced else None,
                previous_until=until if graced else None,
                secret_hash=rotation.secret_hash,
                sealed_value=rotation.sealed_value,
                update_time=now,
                secret_time=now,
            )

        def event(record: TokenRecord) -> None:
            self._event(EventAction.ROTATED, record, now, actor, fields)

        return await self._change("rotate", token_id, change, event)

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor
    ) -> TokenRecord | None:
        def change(found: TokenRecord) -> TokenRecord | None:
            if found.previous_hash != previous_hash or (found.previous_until or 0) <= now:
                return None
            return dataclasses.replace(
                found, previous_hash=None, previous_until=None, update_time=now
            )

        def event(record: TokenRecord) -> None:
            self._event(EventAction.REVOKED, record, now, actor, (PREVIOUS_SECRET,))

        return await self._change("end_grace", token_id, change, event)

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None:
        def step() -> None:
            found = self._db.tokens.get(token_id)
            if found is not None:
                self._event(EventAction.VALUE_READ, found, now, actor)

        await self._write("record_value_read", step)

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]:
        below = query.before_id or len(self._db.events) + 1
        found = [
            e
            for e in reversed(self._db.events)
            if e.id < below
            and (query.owner is None or e.owner == query.owner)
            and (query.token_id is None or e.token_id == query.token_id)
        ]
        return found[: query.limit]

    async def revoke_unused(
        self, cutoff: int, now: int, token_id: int | None = None
    ) -> Sequence[TokenRecord]:
        def unused(t: TokenRecord) -> bool:
            activity = max(t.last_use_time or 0, t.create_time, t.secret_time)
            return t.revoke_time is None and activity <= cutoff

        def step() -> list[TokenRecord]:
            revoked = []
            for found in list(self._db.tokens.values()):
                if (token_id is None or found.id == token_id) and unused(found):
                    record = dataclasses.replace(found, revoke_time=now, update_time=now)
                    self._db.tokens[found.id] = record
                    actor = Actor(reason=REASON_INACTIVE)
                    self._event(EventAction.REVOKED, record, now, actor, ("revoke_time",))
                    revoked.append(record)
            return revoked

        return await self._write("revoke_unused", step)

    async def next_reminder_wake(self) -> int | None:
        wakes = [s.wake for s in self._db.reminders.values() if s.wake is not None]
        return min(wakes, default=None)

    async def advance_reminders(
        self, now: int, step: ReminderStep, limit: int, *, only_own_expiries: bool
    ) -> int:
        def advance() -> int:
            for token_id, state in list(self._db.reminders.items()):
                record = self._db.tokens[token_id]
                lasting = only_own_expiries and record.expire_time is None
                if (
                    state.wake is not None
                    and state.wake <= now
                    and (record.revoke_time is not None or lasting)
                ):
                    self._db.reminders[token_id] = ReminderState(None, None, None)
            due = sorted(
                (s.wake, token_id)
                for token_id, s in self._db.reminders.items()
                if s.wake is not None and s.wake <= now
            )[:limit]
            for _, token_id in due:
                record = self._db.tokens[token_id]
                state, action = step(record, self._db.reminders[token_id])
                self._db.reminders[token_id] = state
                if action is not None:
                    self._event(action, record, now, NO_ACTOR)
            return len(due)

        return await self._write("advance_reminders", advance)

    async def plan_reminders(self, max_secret_age: int | None, now: int) -> bool:
        def plan() -> bool:
            if self._db.reminder_plan == [max_secret_age]:
                return False
            for record in self._db.tokens.values():
                wake = self._db.reminders.get(record.id, ReminderState(None, None, None)).wake
                needs = record.expire_time is not None or max_secret_age is not None
                if record.revoke_time is None and needs:
                    self._wake(record, now if wake is None else min(wake, now))
            self._db.reminder_plan[:] = [max_secret_age]
            return True

        return await self._write("plan_reminders", plan)

    async def add_usage(self, uses: Mapping[int, Usage]) -> None:
        # As the engines' SQL says it: counts add up, the later use's time and address win.
        def step() -> None:
            for token_id, use in uses.items():
                found = self._db.tokens.get(token_id)
                if found is None:
                    continue
                last = found.last_use_time or 0
                newer = use.last_use_time >= last
                self._db.tokens[token_id] = dataclasses.replace(
                    found,
                    usage_count=found.usage_count + use.count,
                    last_use_time=max(last, use.last_use_time),
                    last_use_ip=use.last_use_ip if newer else found.last_use_ip,
                )

        await self._write("add_usage", step)

    async def set_webhook_urls(self, urls: Sequence[str]) -> int:
        def step() -> int:
            gone = [k for k, q in self._db.outbox.items() if q.outgoing.url not in urls]
            for row_id in gone:
                del self._db.outbox[row_id]
            self._db.webhook_urls = list(urls)
            return len(gone)

        return await self._write("set_webhook_urls", step)

    async def claim_deliveries(self, now: int, lease_until: int, limit: int) -> Sequence[Outgoing]:
        def step() -> list[Outgoing]:
            claimed: list[Outgoing] = []
            waiting: set[tuple[str, int]] = set()  # (URL, token) with an earlier row queued
            for queued in self._db.outbox.values():
                row = queued.outgoing
                key = (row.url, row.event.token_id)
                if key not in waiting and queued.due <= now and len(claimed) < limit:
                    queued.due = lease_until
                    claimed.append(row)
                waiting.add(key)
            return claimed

        return await self._write("claim_deliveries", step)

    async def finish_delivery(self, row_id: int) -> None:
        await self._write("finish_delivery", lambda: self._db.outbox.pop(row_id, None))

    async def retry_delivery(self, row_id: int, attempts: int, due: int) -> None:
        def step() -> None:
            queued = self._db.outbox.get(row_id)
            if queued is not None:
                queued.outgoing = dataclasses.replace(queued.outgoing, attempts=attempts)
                queued.due = due

        await self._write("retry_delivery", step)

    async def oldest_undelivered(self) -> int | None:
        return next((q.outgoing.event.event_time for q in self._db.outbox.values()), None)

    async def is_empty(self) -> bool:
        return not self._db.tokens

    async def count_past_secret_age(self, now: int, max_secret_age: int) -> int:
        return sum(
            1
            for t in self._db.tokens.values()
            if t.revoke_time is None
            and t.active
            and (t.expire_time is None or t.expire_time > now)
            and t.secret_time <= now - max_secret_age
        )

    async def key_fingerprint(self) -> bytes | None:
        return self._db.fingerprint

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        def step() -> bytes:
            if self._db.fingerprint is None:
                self._db.fingerprint = fingerprint
            return self._db.fingerprint

        return await self._write("record_key_fingerprint", step)

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        return next(
            (
                (t.sealed_value, t.secret_hash)
                for t in self._db.tokens.values()
                if t.sealed_value is not None
            ),
            None,
        )

    async def ping(self) -> None:
        pass

    async def probe_write(self) -> None:
        await self._write("probe_write", lambda: None)

    async def close(self) -> None:
        self.closed = True


__all__ = ["Database", "MemoryChanges", "MemoryEngine"]
