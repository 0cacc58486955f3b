"""Uses counted in memory and not yet handed to the engine.

An authentication must not cost a database write, so uses are counted here
and written in batches (``CachingStore.flush_usage``). Records the store
hands back get these counts added, so every use shows at once.
"""

from __future__ import annotations

from tokengrpc.store.base import TokenRecord, Usage


class PendingUses:
    def __init__(self) -> None:
        self._uses: dict[int, Usage] = {}

    def record(self, token_id: int, when: int, address: str) -> None:
        use = self._uses.get(token_id)
        if use is None:
            self._uses[token_id] = Usage(1, when, address)
        else:
            self._uses[token_id] = later(use, Usage(1, when, address))

    def added(self, record: TokenRecord) -> TokenRecord:
        """``record`` as it will be once its pending uses are written."""
        use = self._uses.get(record.id)
        if use is None:
            return record
        if use.last_use_time >= (record.last_use_time or 0):
            return record.with_usage(
                record.usage_count + use.count, use.last_use_time, use.last_use_ip
            )
        return record.with_usage(record.usage_count + use.count, record.last_use_time)

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
