"""Turns driver and pool failures into domain errors, so the API never needs to know SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy.exc

from ledger.domain.errors import DomainError, ServiceUnavailable, TransactionConflict
from ledger.infrastructure.secret_providers import SecretUnavailable

# SQLSTATEs after which the same request is safe to retry later.
_UNAVAILABLE_STATES: dict[str, str] = {
    "55P03": "lock_timeout",
    "57014": "statement_timeout",
    "57P01": "database_unavailable",  # admin shutdown: the server is restarting
    "57P02": "database_unavailable",
    "57P03": "database_unavailable",
    "53300": "database_unavailable",  # too many connections
    "25P03": "database_unavailable",  # idle-in-transaction timeout
}
_CONFLICT_STATES: dict[str, str] = {"40001": "serialization_failure", "40P01": "deadlock_detected"}


def translated_error(error: BaseException) -> DomainError | None:
    """The domain error that stands for ``error``, or None when it is not a database or pool failure."""
    if isinstance(error, sqlalchemy.exc.TimeoutError):
        return ServiceUnavailable("no database connection became free in time", code="database_pool_exhausted")
    if isinstance(error, SecretUnavailable):
        return ServiceUnavailable("database credentials are unavailable", code="database_unavailable")
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        state = getattr(error.orig, "pgcode", None)
        if state in _CONFLICT_STATES:
            return TransactionConflict("the transaction conflicted with another one", code=_CONFLICT_STATES[state])
        if state in _UNAVAILABLE_STATES:
            return ServiceUnavailable("the database could not complete the request", code=_UNAVAILABLE_STATES[state])
        if error.connection_invalidated or isinstance(
            error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
        ):
            return ServiceUnavailable("the database is unavailable", code="database_unavailable")
    return None


def connection_lost(error: BaseException) -> bool:
    """The connection died under this error (SQLAlchemy has invalidated it): PostgreSQL has ended its transaction,
    rolling back whatever was not committed."""
    return isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated


@contextmanager
def translate_database_errors() -> Iterator[None]:
    try:
        yield
    except Exception as error:
        translated = translated_error(error)
        if translated is None:
            raise
        raise translated from None
