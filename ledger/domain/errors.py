"""Domain errors. Each carries a stable machine-readable ``code``; only the API layer maps them to HTTP."""

from __future__ import annotations


class DomainError(Exception):
    code: str = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(DomainError):
    """The request breaks a rule of the ledger (not a malformed payload: the API rejects those itself)."""

    code = "invalid_request"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class ServiceUnavailable(DomainError):
    """The store cannot serve right now; the same request may succeed if retried later."""

    code = "service_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after_seconds: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after_seconds = retry_after_seconds


class TransactionConflict(ServiceUnavailable):
    """A serialization failure or deadlock: the whole transaction may safely be run again."""


class StartupCheckFailed(DomainError):
    """The service must not take traffic: the store is unreachable, refuses us, or its schema is behind."""

    code = "startup_check_failed"

    def __init__(self, cause: str, message: str, hint: str) -> None:
        super().__init__(message, code=cause)
        self.cause = cause
        self.hint = hint
