"""The token rules, free of I/O: status, scopes, and what a valid field is.

Everything that decides whether a value or an action is allowed lives here
once; the servicer, the CLI and (through the RPCs) the gateway all ask it.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable

from tokengrpc.addresses import MAX_ALLOWED_IPS, parse_allowed
from tokengrpc.errors import InvalidArgument, Violation
from tokengrpc.store import TokenRecord

WRITE = "write"
ADMIN = "admin"
INTROSPECT = "introspect"

MAX_NAME = 255
MAX_OWNER = 255
MAX_SCOPE = 128
MAX_SCOPES = 64


class Status(enum.Enum):
    ACTIVE = "active"
    EXPIRED = "expired"
    INACTIVE = "inactive"
    REVOKED = "revoked"


def status_of(record: TokenRecord, now: int) -> Status:
    """Derived, never stored: revoked beats expired beats inactive."""
    if record.revoke_time is not None:
        return Status.REVOKED
    if record.expire_time is not None and record.expire_time <= now:
        return Status.EXPIRED
    if not record.active:
        return Status.INACTIVE
    return Status.ACTIVE


def grantable(wanted: Iterable[str], held: Iterable[str]) -> list[str]:
    """The wanted scopes the holder may not grant (all of them are fine for admin)."""
    held_set = frozenset(held)
    if ADMIN in held_set:
        return []
    return [scope for scope in wanted if scope not in held_set]


def inherited_scopes(held: Iterable[str]) -> tuple[str, ...]:
    """What a token created "with the caller's scopes" gets: all but admin."""
    return tuple(sorted(scope for scope in set(held) if scope != ADMIN))


class Violations:
    """Collects every bad field of a request so the caller hears of all at once."""

    def __init__(self) -> None:
        self.items: list[Violation] = []

    def add(self, field: str, description: str, reason: str = "INVALID") -> None:
        self.items.append(Violation(field, description, reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in text)


def clean_name(raw: str, field: str, problems: Violations) -> str:
    name = raw.strip()
    if not name:
        problems.add(field, "a name is required", "REQUIRED")
    elif len(name) > MAX_NAME:
        problems.add(
            field, f"must be at most {MAX_NAME} characters (it has {len(name)})", "TOO_LONG"
        )
    elif _has_control(name):
        problems.add(field, "must not contain control characters")
    return name


def clean_owner(raw: str, field: str, problems: Violations) -> str:
    owner = raw.strip()
    if len(owner) > MAX_OWNER:
        problems.add(field, f"must be at most {MAX_OWNER} characters")
    elif _has_control(owner):
        problems.add(field, "must not contain control characters")
    return owner


def clean_scopes(raw: Iterable[str], field: str, problems: Violations) -> tuple[str, ...]:
    """Scopes keep their order; duplicates go. Introspection joins them with spaces."""
    scopes: list[str] = []
    for scope in raw:
        if not scope or len(scope) > MAX_SCOPE or not scope.isprintable() or " " in scope:
            problems.add(
                field,
                f"{scope!r} is not a valid scope: use 1 to {MAX_SCOPE} printable"
                " characters without spaces",
            )
        elif scope not in scopes:
            scopes.append(scope)
    if len(scopes) > MAX_SCOPES:
        problems.add(field, f"at most {MAX_SCOPES} scopes are allowed")
    return tuple(scopes)


def clean_allowed_ips(raw: Iterable[str], field: str, problems: Violations) -> tuple[str, ...]:
    entries: list[str] = []
    for entry in raw:
        try:
            normal = parse_allowed(entry)
        except ValueError as exc:
            problems.add(field, str(exc))
            continue
        if normal not in entries:
            entries.append(normal)
    if len(entries) > MAX_ALLOWED_IPS:
        problems.add(field, f"at most {MAX_ALLOWED_IPS} addresses or ranges are allowed")
    return tuple(entries)


def check_expiry(expire_time: int | None, now: int, field: str, problems: Violations) -> None:
    if expire_time is not None and expire_time <= now:
        problems.add(field, "must be in the future", "PAST")
