"""Write health: whether the store takes writes, for ``/readyz`` and the health service.

Both engines keep it alike: a write the disk or the database refused marks
the store unwritable (said once in the log), and only a write that needed
fresh room (a creation, or ``probe_write``) marks it writable again; any
smaller write could fit in room already on disk while creations still fail,
and ``/readyz`` would flap.
"""

from __future__ import annotations

import logging

from tokengrpc.errors import Unavailable

log = logging.getLogger(__name__)

#: What a client is told when the store's disk is full, on either engine.
DISK_FULL = "the store's disk is full; try again later"


class WriteHealth:
    def __init__(self) -> None:
        #: False from a refused write until one that needed fresh room succeeds.
        self.writable = True

    def refused(self, error: Unavailable) -> None:
        """A write failed with ``error``: the store is unwritable until ``healed``."""
        self.stop(f"the store refused a write: {error.message}")

    def stop(self, why: str) -> None:
        """No writes until ``healed`` (logged once, on the change)."""
        if self.writable:
            self.writable = False
            log.warning("%s", why)

    def healed(self) -> None:
        """A write that needed fresh room succeeded: an insert or ``probe_write``."""
        if not self.writable:
            self.writable = True
            log.warning("the store takes writes again")
