"""Domain errors, and the one table that turns them into gRPC statuses."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2


class DomainError(Exception):
    """A request the service refuses; the message is safe to show the caller."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self) -> None:
        # Deliberately the same words for every failed check.
        super().__init__("missing or invalid bearer token")


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, message: str = "token not found") -> None:
        super().__init__(message)


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(DomainError):
    """The store cannot take the request now (a full disk, say); retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


#: Field violations one error carries at most (contract section 10): enough to
#: fix a request, and small enough for gRPC's trailing metadata (8 KiB).
MAX_VIOLATIONS = 20
#: Characters of an InvalidArgument message before the rest is only counted.
MAX_MESSAGE = 1024
#: The ``google.rpc.ErrorInfo`` that carries the character limits of the
#: TOO_LONG violations: metadata maps each field path to its limit.
MAX_LENGTH = "MAX_LENGTH"
DOMAIN = "tokengrpc"


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field. ``description`` never repeats the value that was sent."""

    field: str
    description: str
    #: A stable word for clients that phrase messages their own way (the
    #: legacy HTTP families do): REQUIRED, TOO_LONG, TOO_MANY, PAST or INVALID.
    reason: str = "INVALID"
    #: The most characters the field takes, for a TOO_LONG about characters:
    #: sent as a number (``MAX_LENGTH``) so clients never parse ``description``.
    max_length: int | None = None


class InvalidArgument(DomainError):
    """One or more bad fields, reported together (the first MAX_VIOLATIONS)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[Violation], more: int = 0) -> None:
        shown = violations[:MAX_VIOLATIONS]
        total = len(violations) + more
        # The message and the details travel together in trailing metadata;
        # the message keeps to MAX_MESSAGE and counts what it leaves out.
        parts: list[str] = []
        length = 0
        for v in shown:
            part = f"{v.field}: {v.description}"
            if parts and length + len(part) > MAX_MESSAGE:
                break
            parts.append(part)
            length += len(part) + 2
        message = "; ".join(parts)
        if total > len(parts):
            message += f"; and {total - len(parts)} more"
        super().__init__(message)
        self.violations = shown


def to_status(error: DomainError) -> status_pb2.Status:
    """The google.rpc.Status for an error, with BadRequest details when it has fields,
    and an ErrorInfo with the limits that were broken when one is a length."""
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description, reason=v.reason
                    )
                    for v in error.violations
                ]
            )
        )
        status.details.append(detail)
        limits = {v.field: str(v.max_length) for v in error.violations if v.max_length}
        if limits:
            info = any_pb2.Any()
            info.Pack(
                error_details_pb2.ErrorInfo(reason=MAX_LENGTH, domain=DOMAIN, metadata=limits)
            )
            status.details.append(info)
    return status
