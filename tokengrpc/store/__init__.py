"""Persistence behind a small interface, so another engine can be added later."""

from tokengrpc.store.base import (
    ListQuery,
    NameTaken,
    NewToken,
    TokenChanges,
    TokenRecord,
    TokenStore,
    Usage,
)

__all__ = [
    "ListQuery",
    "NameTaken",
    "NewToken",
    "TokenChanges",
    "TokenRecord",
    "TokenStore",
    "Usage",
]
