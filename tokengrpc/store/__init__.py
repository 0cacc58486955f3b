"""Persistence behind a small interface, so another engine can be added later."""

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
