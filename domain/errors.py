"""Typed domain errors.

Every rule the domain enforces fails with one of these, so that the API can turn it into a
`userErrors` entry with a stable machine-readable code instead of an opaque failure.
Nothing is recorded when one is raised: rules are checked before an event is triggered.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    VALIDATION = "VALIDATION"
    NOT_FOUND = "NOT_FOUND"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    FORBIDDEN = "FORBIDDEN"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    CONFLICT = "CONFLICT"
    REASON_REQUIRED = "REASON_REQUIRED"
    ERASED = "ERASED"
    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"


class DomainError(Exception):
    code: ErrorCode = ErrorCode.VALIDATION

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationError(DomainError):
    code = ErrorCode.VALIDATION


class NotFoundError(DomainError):
    code = ErrorCode.NOT_FOUND


class InvalidTransitionError(DomainError):
    """A command that the aggregate's current state does not allow; the message names it."""

    code = ErrorCode.INVALID_TRANSITION

    def __init__(
        self,
        message: str,
        current_state: str,
        field: str | None = None,
        attempted: str | None = None,
    ) -> None:
        super().__init__(message, field)
        self.current_state = current_state
        self.attempted = attempted


class ForbiddenError(DomainError):
    code = ErrorCode.FORBIDDEN


class ReasonRequiredError(DomainError):
    """The command's metadata has no reason (`meta.reason`): the API names the input field
    the reason is read from (`reason`, or a mutation's own, such as `note`)."""

    code = ErrorCode.REASON_REQUIRED

    def __init__(
        self, message: str = "a reason is required for this action", field: str = "meta.reason"
    ) -> None:
        super().__init__(message, field=field)


class ConcurrencyConflictError(DomainError):
    """Raised when retries could not resolve a clash with concurrent writers."""

    code = ErrorCode.CONFLICT


class ErasedError(DomainError):
    code = ErrorCode.ERASED


class InsufficientPointsError(DomainError):
    code = ErrorCode.INSUFFICIENT_POINTS


class IdempotencyConflictError(DomainError):
    """The idempotency key was used before with a different request."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT

    def __init__(self, message: str, field: str = "idempotency_key") -> None:
        super().__init__(message, field=field)


class LimitExceededError(DomainError):
    code = ErrorCode.LIMIT_EXCEEDED


class ConflictError(DomainError):
    """The command would take something another holds (an email another member uses)."""

    code = ErrorCode.CONFLICT
