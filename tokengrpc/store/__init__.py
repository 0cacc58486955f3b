"""The store: one interface (``base.py``), two engines behind it, layers over them.

``open.py`` puts them together; docs/store.md has the picture.
"""

from tokengrpc.store.base import (
    NO_ACTOR,
    REASON_BY_VALUE,
    REASON_CLI,
    REASON_INACTIVE,
    REASON_LEAKED,
    Actor,
    EventAction,
    EventQuery,
    EventRecord,
    ListQuery,
    NameTaken,
    NewToken,
    ReminderState,
    ReminderStep,
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
    "REASON_BY_VALUE",
    "REASON_CLI",
    "REASON_INACTIVE",
    "REASON_LEAKED",
    "Actor",
    "EventAction",
    "EventQuery",
    "EventRecord",
    "ListQuery",
    "NameTaken",
    "NewToken",
    "ReminderState",
    "ReminderStep",
    "Rotation",
    "StoreMissing",
    "StoreNotEmpty",
    "TokenChanges",
    "TokenRecord",
    "TokenStore",
    "Usage",
]
