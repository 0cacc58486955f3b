"""The read cache: rows of recent reads, kept while no process has written.

Engine-neutral and keyed by operation (``("get", id)``, not SQL text). The
protocol, which keeps a revocation effective on the very next request in
every process: a reader keeps rows only if ``Changes.current()`` was the same
before and after it read them, and answers from them only while it has not
moved (docs/store.md).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from tokengrpc.store.base import TokenRecord
from tokengrpc.store.engine import Changes

Rows = tuple[TokenRecord, ...]
#: What a write of this process does to rows, known before it runs.
Amendment = Callable[[Rows], Rows]

#: Amendments kept for entries read before them; past this, the entries are
#: read again instead (one every half second: about half a minute).
_MAX_AMENDMENTS = 64


class ReadCache:
    """Rows of recent reads, all dropped the moment another process writes.

    A write of this process whose effect is known beforehand (an
    ``amendment``) does not drop them: from the moment it begins, an entry
    read before it gets the amendment applied the next time it is asked for
    (once per entry and amendment), so hits never wait for that write and
    the write never rebuilds the cache. Rows read later already hold it, so
    each amendment counts exactly once.

    Bounded by rows held (an empty answer counts as one), so neither a few
    large pages nor a flood of made-up ids can grow it without end; when full
    it stops adding until it is emptied: by any other write, or once it holds
    ``_MAX_AMENDMENTS`` amendments.
    """

    def __init__(self, changes: Changes, max_rows: int = 20_000) -> None:
        self._changes = changes
        self._max_rows = max_rows
        #: Each entry with how many of ``_amendments`` its rows hold.
        self._entries: dict[Hashable, tuple[Rows, int]] = {}
        self._counts: dict[Hashable, int] = {}
        self._rows = 0
        self._valid_at = changes.current()
        self._writes = 0
        #: Amendments begun since the entries were emptied, oldest first.
        self._amendments: list[Amendment] = []

    def begin_write(self) -> None:
        """A write of this process is waiting or running: rows read until it
        ends may or may not hold it, so none are kept."""
        self._writes += 1

    def end_write(self) -> None:
        self._writes -= 1

    def amend(self, amendment: Amendment) -> None:
        """A write of this process (inside ``begin_write``) does ``amendment`` to
        rows: answers from the entries include it from now on. It must not
        change which rows an entry holds, nor any count."""
        if len(self._amendments) >= _MAX_AMENDMENTS:
            self._empty()
        self._amendments.append(amendment)

    def amended_write_announced(self, before: int) -> None:
        """This process's amending write moved the counter from ``before``; the
        entries hold it already, so they stay valid if nothing else was announced."""
        if before == self._valid_at:
            self._valid_at = before + 1

    def forget(self) -> None:
        """Drop every entry (they hold an amendment whose write did not land)."""
        self._empty()

    def _empty(self) -> None:
        self._entries.clear()
        self._counts.clear()
        self._amendments.clear()
        self._rows = 0

    def _still_valid(self) -> bool:
        """Whether no other process has written since the entries were read; empties them if so."""
        now = self._changes.current()
        if now == self._valid_at:
            return True
        self._empty()
        self._valid_at = now
        return False

    def get(self, key: Hashable) -> Rows | None:
        if not self._still_valid():
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        records, held = entry
        amendments = self._amendments
        if held == len(amendments):
            return records
        for amendment in amendments[held:]:
            records = amendment(records)
        self._entries[key] = (records, len(amendments))
        return records

    def mark(self) -> int:
        """Call before reading rows to ``put``; a write in between makes ``put`` a no-op."""
        return self._changes.current()

    def get_count(self, key: Hashable) -> int | None:
        """A row count read before (amendments do not change counts)."""
        return self._counts.get(key) if self._still_valid() else None

    def put_count(self, key: Hashable, count: int, mark: int) -> None:
        if self._keeps(1, mark):
            self._counts[key] = count
            self._rows += 1

    def _keeps(self, cost: int, mark: int) -> bool:
        if self._writes or mark != self._valid_at or self._changes.current() != mark:
            return False
        return self._rows + cost <= self._max_rows

    def put(self, key: Hashable, records: Rows, mark: int) -> None:
        cost = len(records) or 1  # "no such token" answers take room too
        if self._keeps(cost, mark):
            # No write of ours was pending, so every amending write begun has
            # committed and these rows hold them all.
            self._entries[key] = (records, len(self._amendments))
            self._rows += cost
