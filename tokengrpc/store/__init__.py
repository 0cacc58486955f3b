"""The store: one interface (``base.py``), two engines behind it, layers over them.

``open.py`` puts them together; docs/store.md has the picture.
"""

from tokengrpc.store.base import (
    NO_ACTOR,
    Actor,
    EventAction,
    EventQuery,
    EventRecord,
    ListQuery,
    NameTaken,
    NewToken,
    Rotation,
    StoreMissing,
    StoreNotEmpty,
    TokenChanges,
    TokenRecord,
    TokenStore,
    Usage,
)

__all__ = [
    "NO_ACTOR",
    "Actor",
    "EventAction",
    "EventQuery",
    "EventRecord",
    "ListQuery",
    "NameTaken",
    "NewToken",
    "Rotation",
    "StoreMissing",
    "StoreNotEmpty",
    "TokenChanges",
    "TokenRecord",
    "TokenStore",
    "Usage",
]
