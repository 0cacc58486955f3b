"""When a failed delivery is tried again, and when it is given up.

The first retry comes 5 s after the first failure, each next pause doubles
up to an hour, and an event is given up once a try fails 24 hours or more
after the event (about 30 tries). ``TOKENGRPC_WEBHOOK_TIME_SCALE`` (a
positive number, 1 unless set; docs/webhooks.md) multiplies every one of
these times, the 10 s answer timeout included: the tests run them at a
tenth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SCALE_VARIABLE = "TOKENGRPC_WEBHOOK_TIME_SCALE"
_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class Timing:
    """Every time of the sender, in seconds (``scaled`` by the variable)."""

    #: A receiver that has not answered in full by then has failed.
    timeout: float = 10.0
    first_pause: float = 5.0
    longest_pause: float = 3600.0
    give_up_after: float = 24 * 3600.0
    #: A claimed row returns to the queue after this, should its sender die.
    lease: float = 60.0
    #: How often the queue is looked at when nothing woke the sender.
    poll: float = 1.0

    @classmethod
    def scaled(cls, scale: float) -> Timing:
        base = cls()
        return cls(*(getattr(base, name) * scale for name in cls.__slots__))

    @classmethod
    def from_environment(cls) -> Timing:
        text = os.environ.get(SCALE_VARIABLE, "")
        try:
            scale = float(text) if text else 1.0
        except ValueError:
            scale = 0.0
        if not 0 < scale <= 1000:
            raise ValueError(f"{SCALE_VARIABLE}: must be a positive number")
        return cls.scaled(scale)

    def pause(self, failures: int) -> int:
        """Microseconds to wait after the ``failures``-th failed try (from 1)."""
        seconds = min(self.first_pause * 2 ** min(failures - 1, 32), self.longest_pause)
        return int(seconds * _SECOND)

    def gives_up(self, event_time: int, now: int) -> bool:
        """True once a try fails this long after the event."""
        return now - event_time >= self.give_up_after * _SECOND

    def micros(self, seconds: float) -> int:
        return int(seconds * _SECOND)
