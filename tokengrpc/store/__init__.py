"""The store: one interface (``base.py``), two engines behind it, the layers over them (docs/store.md)."""

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
