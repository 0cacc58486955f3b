"""Expiry reminders (CONTRACT section 12): one step of a token's reminders. No I/O.

For an effective expiry ``E`` set at time ``s`` (``tokengrpc.lifetime``), the
reminders are one EXPIRING at ``E - o`` for each offset ``o`` of
``--expiry-reminders`` with ``E - o > s`` (still ahead when it was set), then
EXPIRED at ``E`` if ``E > s``: an expiry already past when it is set gets
none. The store keeps where each token stands (``ReminderState``), wakes a
row whenever a write may move its expiry, and writes each step with its event
in one transaction, so each is recorded once (``TokenStore.advance_reminders``);
``tokengrpc.sweeper`` runs the steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokengrpc.lifetime import effective_expiry
from tokengrpc.store import EventAction, ReminderState, TokenRecord

#: Nothing planned, nothing to wake for.
ASLEEP = ReminderState(None, None, None)


def following(expiry: int, after: int, offsets: Sequence[int]) -> int | None:
    """The first reminder time of ``expiry`` later than ``after``: an offset's,
    else the expiry itself; None when both are past."""
    times = [expiry - offset for offset in offsets if expiry - offset > after]
    if expiry > after:
        times.append(expiry)
    return min(times, default=None)


@dataclass(frozen=True, slots=True)
class Reminders:
    """The settings the steps follow."""

    #: ``--expiry-reminders``, microseconds before the expiry.
    offsets: tuple[int, ...]
    max_secret_age: int | None

    def step(
        self, record: TokenRecord, state: ReminderState, *, now: int
    ) -> tuple[ReminderState, EventAction | None]:
        """``state`` one step on at ``now``, and the event it records (None: none)."""
        if record.revoke_time is not None:
            return ASLEEP, None  # a revoked token gets no more reminders
        expiry = effective_expiry(record, self.max_secret_age)
        if expiry != state.expiry:
            # New or moved: the count starts over, from the write that moved it
            # (the wake it left), however late this step runs (a restart).
            if expiry is None:
                return ASLEEP, None
            set_at = now if state.wake is None else state.wake
            state = ReminderState(expiry, following(expiry, set_at, self.offsets), None)
        due = state.next_due
        if state.expiry is None or due is None or due > now:
            return ReminderState(state.expiry, due, due), None
        action = EventAction.EXPIRED if due >= state.expiry else EventAction.EXPIRING
        after = following(state.expiry, due, self.offsets)
        return ReminderState(state.expiry, after, after), action
