"""The effective expiry: the earlier of a token's own and its secret's maximum age."""

from __future__ import annotations

import dataclasses

from tokengrpc.lifetime import effective_expiry
from tokengrpc.store import TokenRecord

_RECORD = TokenRecord(
    1, "o", "n", b"h", (), True, None, (), 100, 100, None, None, 0, None, secret_time=500
)


def test_no_maximum_age_leaves_the_tokens_own_expiry() -> None:
    assert effective_expiry(_RECORD, None) is None
    assert effective_expiry(dataclasses.replace(_RECORD, expire_time=900), None) == 900


def test_the_maximum_age_counts_from_the_current_secret() -> None:
    assert effective_expiry(_RECORD, 1000) == 1500  # from the rotation at 500, not creation
    assert effective_expiry(dataclasses.replace(_RECORD, expire_time=900), 1000) == 900
    assert effective_expiry(dataclasses.replace(_RECORD, expire_time=2000), 1000) == 1500
