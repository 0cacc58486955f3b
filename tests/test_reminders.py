"""One step of a token's expiry reminders (``tokengrpc/reminders.py``), and the
unused-token rule (``tokengrpc/rules.py``): no I/O, so no store either."""

from __future__ import annotations

import dataclasses

from tokengrpc.reminders import ASLEEP, Reminders, following
from tokengrpc.rules import last_activity, unused_too_long
from tokengrpc.store import EventAction, ReminderState, TokenRecord

RECORD = TokenRecord(
    1, "o", "t", b"h", (), True, 1000, (), 10, 10, None, None, 0, None, secret_time=10
)


def test_following_is_the_next_offset_ahead_then_the_expiry() -> None:
    assert following(1000, 10, (5000, 500, 100)) == 500  # 5000 before was never ahead
    assert following(1000, 500, (5000, 500, 100)) == 900
    assert following(1000, 900, (5000, 500, 100)) == 1000
    assert following(1000, 1000, (5000, 500, 100)) is None


def test_a_new_expiry_is_planned_from_the_write_that_set_it() -> None:
    reminders = Reminders((500,), None)
    state, action = reminders.step(RECORD, ReminderState(None, None, 10), now=20)
    assert (state, action) == (ReminderState(1000, 500, 500), None)
    # Stepped late (after a stop): still from the write's time, and due at once.
    state, action = reminders.step(RECORD, ReminderState(None, None, 10), now=700)
    assert (state, action) == (ReminderState(1000, 1000, 1000), EventAction.EXPIRING)


def test_an_expiry_past_when_set_brings_nothing() -> None:
    reminders = Reminders((500,), None)
    assert reminders.step(RECORD, ReminderState(None, None, 1200), now=1300) == (
        ReminderState(1000, None, None),
        None,
    )


def test_a_revoked_token_and_one_without_expiry_sleep() -> None:
    reminders = Reminders((500,), None)
    revoked = dataclasses.replace(RECORD, revoke_time=600)
    assert reminders.step(revoked, ReminderState(1000, 1000, 1000), now=1000) == (ASLEEP, None)
    lasting = dataclasses.replace(RECORD, expire_time=None)
    assert reminders.step(lasting, ReminderState(1000, 1000, 800), now=900) == (ASLEEP, None)


def test_the_maximum_age_is_an_expiry_too() -> None:
    reminders = Reminders((100,), max_secret_age=300)
    lasting = dataclasses.replace(RECORD, expire_time=None)
    state, _ = reminders.step(lasting, ReminderState(None, None, 10), now=20)
    assert state == ReminderState(310, 210, 210)


def test_last_activity_and_the_limit() -> None:
    used = dataclasses.replace(RECORD, last_use_time=50, secret_time=40)
    assert last_activity(used) == 50
    assert last_activity(dataclasses.replace(used, secret_time=70)) == 70
    assert not unused_too_long(used, 149, 100)
    assert unused_too_long(used, 150, 100)
    assert not unused_too_long(used, 10**12, None)
