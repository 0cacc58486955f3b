"""The read cache: rows of recent reads, kept while no process has written.

Engine-neutral and keyed by operation (``("get", id)``, not SQL text). The
protocol, which keeps a revocation effective on the very next request in
every process: a reader keeps rows only if ``Changes.current()`` was the same
before and after it read them, and answers from them only while it has not
moved (docs/store.md).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from tokengrpc.store.base import TokenRecord, Usage
from tokengrpc.store.engine import Changes

#: Usage batches kept for folding into entries; past this, the entries are
#: read again instead (a flush twice a second: about half a minute).
_MAX_BATCHES = 64


class ReadCache:
    """Rows of recent reads, all dropped the moment another process writes.

    This process's own usage batches do not drop them: from the moment such a
    write begins, an entry read before it gets the batch folded in the next
    time it is asked for (once per entry and batch), so hits never wait for a
    flush and a flush never rebuilds the cache. Rows read later already hold
    the batches, so each use is counted exactly once.

    Bounded by rows held (an empty answer counts as one), so neither a few
    large pages nor a flood of made-up ids can grow it without end; when full
    it stops adding until it is emptied: by any write other than this
    process's usage batches, or once it holds ``_MAX_BATCHES`` of those.
    """

    def __init__(self, changes: Changes, max_rows: int = 20_000) -> None:
        self._changes = changes
        self._max_rows = max_rows
        #: Each entry with how many of ``_batches`` its rows hold.
        self._entries: dict[Hashable, tuple[tuple[TokenRecord, ...], int]] = {}
        self._counts: dict[Hashable, int] = {}
        self._rows = 0
        self._valid_at = changes.current()
        self._writes = 0
        #: This process's usage batches begun since the entries were emptied.
        self._batches: list[dict[int, tuple[int, int, str]]] = []

    def begin_write(self) -> None:
        """A write of this process is waiting or running: rows read until it
        ends may or may not hold it, so none are kept."""
        self._writes += 1

    def end_write(self) -> None:
        self._writes -= 1

    def count_usage(self, uses: Mapping[int, Usage]) -> None:
        """This process begins writing ``uses`` (inside ``begin_write``):
        answers from the entries include them from now on."""
        if len(self._batches) >= _MAX_BATCHES:
            self._empty()
        # Kept as plain tuples of atoms, which the garbage collector stops
        # tracking: up to _MAX_BATCHES of these stay alive at once.
        self._batches.append(
            {key: (use.count, use.last_use_time, use.last_use_ip) for key, use in uses.items()}
        )

    def usage_announced(self, before: int) -> None:
        """This process's usage write bumped the counter from ``before``; the
        entries hold it already, so they stay valid if nothing else was announced."""
        if before == self._valid_at:
            self._valid_at = before + 1

    def forget(self) -> None:
        """Drop every entry (they count a usage batch that did not land)."""
        self._empty()

    def _empty(self) -> None:
        self._entries.clear()
        self._counts.clear()
        self._batches.clear()
        self._rows = 0

    def _still_valid(self) -> bool:
        """Whether no other process has written since the entries were read; empties them if so."""
        now = self._changes.current()
        if now == self._valid_at:
            return True
        self._empty()
        self._valid_at = now
        return False

    def get(self, key: Hashable) -> tuple[TokenRecord, ...] | None:
        if not self._still_valid():
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        records, held = entry
        batches = self._batches
        if held == len(batches):
            return records
        for uses in batches[held:]:
            records = _counted(records, uses)
        self._entries[key] = (records, len(batches))
        return records

    def mark(self) -> int:
        """Call before reading rows to ``put``; a write in between makes ``put`` a no-op."""
        return self._changes.current()

    def get_count(self, key: Hashable) -> int | None:
        """A row count read before (usage writes do not change counts)."""
        return self._counts.get(key) if self._still_valid() else None

    def put_count(self, key: Hashable, count: int, mark: int) -> None:
        if self._keeps(1, mark):
            self._counts[key] = count
            self._rows += 1

    def _keeps(self, cost: int, mark: int) -> bool:
        if self._writes or mark != self._valid_at or self._changes.current() != mark:
            return False
        return self._rows + cost <= self._max_rows

    def put(self, key: Hashable, records: tuple[TokenRecord, ...], mark: int) -> None:
        cost = len(records) or 1  # "no such token" answers take room too
        if self._keeps(cost, mark):
            # No write of ours was pending, so every batch begun has committed
            # and these rows hold them all.
            self._entries[key] = (records, len(self._batches))
            self._rows += cost


def _counted(
    records: tuple[TokenRecord, ...], uses: Mapping[int, tuple[int, int, str]]
) -> tuple[TokenRecord, ...]:
    """``records`` with a batch of uses (count, last use time and address) added."""
    if not any(record.id in uses for record in records):
        return records
    counted = []
    for record in records:
        use = uses.get(record.id)
        if use is not None:
            count, last_use_time, last_use_ip = use
            if last_use_time >= (record.last_use_time or 0):
                record = record.with_usage(record.usage_count + count, last_use_time, last_use_ip)
            else:
                record = record.with_usage(record.usage_count + count, record.last_use_time)
        counted.append(record)
    return tuple(counted)
