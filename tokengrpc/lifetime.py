"""When a token stops authenticating: its own expiry or its secret's maximum age.

CONTRACT section 12: no secret authenticates longer than the maximum secret
age after it was issued (created or rotated). Every surface reports the
earlier of the two as the token's expiry, and status, authentication and
the sweeps judge by it; none of them computes it another way. No I/O.
"""

from __future__ import annotations

from tokengrpc.store import TokenRecord


def effective_expiry(record: TokenRecord, max_secret_age: int | None) -> int | None:
    """The earlier of ``record.expire_time`` and ``secret_time + max_secret_age``
    (microseconds); None when neither limits it."""
    own = record.expire_time
    if max_secret_age is None:
        return own
    cap = record.secret_time + max_secret_age
    return cap if own is None or cap < own else own
