"""What a use does to a record: the one fold, and the uses not yet handed to the engine.

An authentication must not cost a database write, so uses are counted in
memory and written in batches (``CountingStore``, ``counting.py``). Every
record the store hands back has the uses it does not hold yet folded in by
``counted``, the only place that says how: counts add up, and the last use's
time and address follow the later use. The engines say the same in SQL.
"""

from __future__ import annotations

from tokengrpc.store.base import TokenRecord, Usage


def counted(record: TokenRecord, count: int, last_use_time: int, last_use_ip: str) -> TokenRecord:
    """``record`` with ``count`` more uses, the last at ``last_use_time`` from ``last_use_ip``."""
    if last_use_time >= (record.last_use_time or 0):
        return record.with_usage(record.usage_count + count, last_use_time, last_use_ip)
    return record.with_usage(record.usage_count + count, record.last_use_time)


class PendingUses:
    """Uses recorded and not yet taken for a batch, by token id."""

    def __init__(self) -> None:
        self._uses: dict[int, Usage] = {}

    def record(self, token_id: int, when: int, address: str) -> None:
        # ``later(use, Usage(1, when, address))``, with one record made, not two:
        # every authentication comes here.
        use = self._uses.get(token_id)
        if use is None:
            self._uses[token_id] = Usage(1, when, address)
        elif when >= use.last_use_time:
            self._uses[token_id] = Usage(use.count + 1, when, address)
        else:
            self._uses[token_id] = Usage(use.count + 1, use.last_use_time, use.last_use_ip)

    def added(self, record: TokenRecord) -> TokenRecord:
        """``record`` as it will be once its pending uses are written."""
        use = self._uses.get(record.id)
        if use is None:
            return record
        return counted(record, use.count, use.last_use_time, use.last_use_ip)

    def take(self) -> dict[int, Usage]:
        """Every pending use, which leaves the pending counts in this same step."""
        taken, self._uses = self._uses, {}
        return taken

    def give_back(self, batch: dict[int, Usage]) -> None:
        """A batch the engine did not write: pending again, with uses counted since."""
        for token_id, use in batch.items():
            since = self._uses.get(token_id)
            self._uses[token_id] = use if since is None else later(use, since)


def later(first: Usage, second: Usage) -> Usage:
    """Both counts, and the time and address of the later use (``second`` on a tie)."""
    latest = second if second.last_use_time >= first.last_use_time else first
    return Usage(first.count + second.count, latest.last_use_time, latest.last_use_ip)
