"""The token rules, free of I/O: status, scopes, who sees and may change what,
and what a valid field is.

Everything that decides whether a value or an action is allowed lives here
once; the servicer, the CLI and (through the RPCs) the gateway all ask it.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Collection, Iterable

from tokengrpc.addresses import MAX_ALLOWED_IPS, parse_allowed
from tokengrpc.errors import MAX_VIOLATIONS, InvalidArgument, PermissionDenied, Violation
from tokengrpc.lifetime import effective_expiry
from tokengrpc.store import TokenRecord

WRITE = "write"
ADMIN = "admin"
INTROSPECT = "introspect"

MAX_NAME = 255
MAX_OWNER = 255
MAX_SCOPE = 128
MAX_SCOPES = 64
#: The longest grace period of a rotation: the old secret works at most this long.
MAX_GRACE_SECONDS = 7 * 24 * 3600


class Status(enum.Enum):
    ACTIVE = "active"
    EXPIRED = "expired"
    INACTIVE = "inactive"
    REVOKED = "revoked"
    PENDING = "pending"


def status_of(record: TokenRecord, now: int, max_secret_age: int | None) -> Status:
    """Derived, never stored: revoked, expired (by its own expiry or its secret's
    maximum age, ``lifetime``), inactive, pending (before ``not_before``), active."""
    return status_at(record, now, effective_expiry(record, max_secret_age))


def status_at(record: TokenRecord, now: int, expiry: int | None) -> Status:
    """``status_of`` for a caller that has the effective expiry at hand already."""
    if record.revoke_time is not None:
        return Status.REVOKED
    if expiry is not None and expiry <= now:
        return Status.EXPIRED
    if not record.active:
        return Status.INACTIVE
    if record.not_before is not None and now < record.not_before:
        return Status.PENDING
    return Status.ACTIVE


def last_activity(record: TokenRecord) -> int:
    """When a token last showed it is wanted: the latest of its last successful
    use, its creation and its secret's issue (CONTRACT section 12)."""
    return max(record.last_use_time or 0, record.create_time, record.secret_time)


def unused_too_long(record: TokenRecord, now: int, limit: int | None) -> bool:
    """Whether ``--revoke-unused-after`` (``limit``, None: unset) ends the token at
    ``now``: it then authenticates nothing, whether or not its revocation is
    recorded yet."""
    return limit is not None and now >= last_activity(record) + limit


def ungrantable(wanted: Iterable[str], held: Iterable[str]) -> list[str]:
    """The wanted scopes the holder may not grant (none for admin)."""
    held_set = frozenset(held)
    if ADMIN in held_set:
        return []
    return [scope for scope in wanted if scope not in held_set]


def check_grant(wanted: Iterable[str], held: Iterable[str]) -> None:
    """No escalation by granting: PermissionDenied unless every wanted scope is held."""
    missing = ungrantable(wanted, held)
    if missing:
        # Counted, not named: the scopes are the client's own strings.
        raise PermissionDenied(f"cannot grant scopes you do not hold ({len(missing)} of them)")


def check_not_stronger(target: TokenRecord, held: Iterable[str], action: str) -> None:
    """No escalation against the target: without admin, a caller acts only on
    tokens whose scopes it holds too (itself included), so a weak token can
    neither strengthen nor sabotage a strong one of its owner. The caller checks
    visibility first, so other owners' tokens stay NOT_FOUND."""
    if ungrantable(target.scopes, held):
        raise PermissionDenied(f"cannot {action} a token that holds scopes you do not hold")


def visible(viewer_owner: str, viewer_is_admin: bool, record: TokenRecord) -> bool:
    """Whether a viewer may see a token at all: an admin sees every token; an
    owner only its own personal tokens (never a service token)."""
    return viewer_is_admin or (record.owner == viewer_owner and not record.is_service)


def actor_shown(viewer_owner: str, viewer_is_admin: bool, actor_owner: str) -> bool:
    """Whether an event's viewer may see its actor's token id and address: an
    admin sees every actor; an owner sees its own owner's, and of anyone else
    (an administrator, a stranger revoking by value) only the owner's name."""
    return viewer_is_admin or actor_owner == viewer_owner


def inherited_scopes(held: Iterable[str]) -> tuple[str, ...]:
    """What a token created "with the caller's scopes" gets: all but admin."""
    return tuple(sorted(scope for scope in set(held) if scope != ADMIN))


class Violations:
    """Collects every bad field of a request so the caller hears of all at once.

    Past MAX_VIOLATIONS only a count is kept: the error shows no more.
    """

    def __init__(self) -> None:
        self.items: list[Violation] = []
        self.more = 0

    def add(
        self, field: str, description: str, reason: str = "INVALID", max_length: int | None = None
    ) -> None:
        if len(self.items) < MAX_VIOLATIONS:
            self.items.append(Violation(field, description, reason, max_length))
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items, self.more)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in text)


def clean_name(raw: str, field: str, problems: Violations) -> str:
    name = raw.strip()
    if not name:
        problems.add(field, "a name is required", "REQUIRED")
    elif len(name) > MAX_NAME:
        # The length only: the name itself may be anything a client pasted.
        problems.add(
            field,
            f"must be at most {MAX_NAME} characters (it has {len(name)})",
            "TOO_LONG",
            max_length=MAX_NAME,
        )
    elif _has_control(name):  # after the length check: at most MAX_NAME lookups
        problems.add(field, "must not contain control characters")
    return name


def clean_owner(raw: str, field: str, problems: Violations) -> str:
    owner = raw.strip()
    if len(owner) > MAX_OWNER:
        problems.add(
            field, f"must be at most {MAX_OWNER} characters", "TOO_LONG", max_length=MAX_OWNER
        )
    elif _has_control(owner):
        problems.add(field, "must not contain control characters")
    return owner


def _too_many(
    raw: Collection[str], limit: int, what: str, field: str, problems: Violations
) -> bool:
    """The list limit, checked on the raw length before any per-item work."""
    if len(raw) <= limit:
        return False
    problems.add(field, f"must hold at most {limit} {what} (it has {len(raw)})", "TOO_MANY")
    return True


def clean_scopes(raw: Collection[str], field: str, problems: Violations) -> tuple[str, ...]:
    """Scopes keep their order; duplicates go. Introspection joins them with spaces.

    Linear: a dict dedupes, and each item's check is bounded by MAX_SCOPE.
    """
    if _too_many(raw, MAX_SCOPES, "scopes", field, problems):
        return ()
    scopes: dict[str, None] = {}
    for index, scope in enumerate(raw):
        if not scope or len(scope) > MAX_SCOPE or not scope.isprintable() or " " in scope:
            problems.add(
                field,
                f"item {index} is not a valid scope: use 1 to {MAX_SCOPE} printable"
                " characters without spaces",
            )
        else:
            scopes[scope] = None
    return tuple(scopes)


def clean_allowed_ips(raw: Collection[str], field: str, problems: Violations) -> tuple[str, ...]:
    """Normalised addresses and ranges in their order, duplicates gone; linear."""
    if _too_many(raw, MAX_ALLOWED_IPS, "addresses or ranges", field, problems):
        return ()
    entries: dict[str, None] = {}
    for index, entry in enumerate(raw):
        try:
            entries[parse_allowed(entry)] = None
        except ValueError as exc:
            problems.add(field, f"item {index} {exc}")
    return tuple(entries)


def check_expiry(expire_time: int | None, now: int, field: str, problems: Violations) -> None:
    if expire_time is not None and expire_time <= now:
        problems.add(field, "must be in the future", "PAST")


def check_not_before(
    not_before: int | None, expiry: int | None, field: str, problems: Violations
) -> None:
    """A token must have a moment to live: ``not_before`` before its (effective) expiry."""
    if not_before is not None and expiry is not None and not_before >= expiry:
        problems.add(field, "must be before the expiry", "AFTER_EXPIRY")


def check_secret_age(
    expire_time: int | None,
    secret_end: int | None,
    max_secret_age: str,
    field: str,
    problems: Violations,
) -> None:
    """No expiry past the current secret's end under a maximum secret age (named
    by its setting and value, ``max_secret_age``: never the time asked for)."""
    if expire_time is not None and secret_end is not None and expire_time > secret_end:
        problems.add(
            field,
            f"must be at most {max_secret_age} after the secret was issued: the maximum"
            f" secret age (--max-secret-age, TOKENGRPC_MAX_SECRET_AGE) is {max_secret_age}",
            "TOO_LATE",
        )


def check_grace(grace_us: int, field: str, problems: Violations) -> None:
    """A rotation's grace period: from zero (the old secret stops at once) to seven days."""
    if grace_us < 0:
        problems.add(field, "must not be negative")
    elif grace_us > MAX_GRACE_SECONDS * 1_000_000:
        problems.add(field, "must be at most 7 days", "TOO_LONG")
