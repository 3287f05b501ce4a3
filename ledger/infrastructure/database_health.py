"""Start-up check and readiness probe against PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from ledger.domain.errors import StartupCheckFailed
from ledger.domain.ports import StoreStatus
from ledger.infrastructure.connection_failures import (
    HINTS,
    TRANSIENT_CAUSES,
    ConnectionFailureCause,
    classify_connection_failure,
)
from ledger.infrastructure.database_engine import pool_settings
from ledger.infrastructure.schema_migrations import current_revision, head_revision
from ledger.infrastructure.secret_providers import SecretUnavailable
from ledger.infrastructure.settings import LedgerSettings
from ledger.infrastructure.structured_logging import redact_text


class DatabaseStoreHealth:
    def __init__(
        self,
        engine: Engine,
        settings: LedgerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._log = structlog.get_logger(__name__)

    def startup_check(self) -> StoreStatus:
        """Connect and run a trivial query with bounded retries, then compare the schema with the newest
        migration. Raises ``StartupCheckFailed`` naming the cause; logs nothing itself, so the caller can report
        the failure as exactly one event."""
        deadline = self._clock() + self._settings.startup_deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._check_once()
            except StartupCheckFailed as failure:
                cause = ConnectionFailureCause(failure.cause)
                remaining = deadline - self._clock()
                if cause not in TRANSIENT_CAUSES or remaining <= self._settings.startup_retry_interval_seconds:
                    failure.message = f"{failure.message} (after {attempt} attempt{'s' if attempt > 1 else ''})"
                    raise
                self._log.info("database_not_ready_retrying", cause=cause.value, attempt=attempt)
                self._sleep(self._settings.startup_retry_interval_seconds)

    def is_ready(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except (sa.exc.SQLAlchemyError, SecretUnavailable):
            return False
        return True

    def _check_once(self) -> StoreStatus:
        try:
            with self._engine.connect() as connection:
                server_version = connection.execute(sa.text("SHOW server_version")).scalar_one()
                revision = current_revision(connection)
        except SecretUnavailable as error:
            raise _failure(ConnectionFailureCause.SECRET_UNAVAILABLE, str(error)) from None
        except sa.exc.DBAPIError as error:
            cause = classify_connection_failure(error)
            raise _failure(cause, _first_line(str(error.orig))) from None
        expected = head_revision()
        if revision != expected:
            raise _failure(
                ConnectionFailureCause.SCHEMA_BEHIND,
                f"schema is at revision {revision or 'none'}, this release needs {expected}",
            )
        return StoreStatus(
            server_version=str(server_version),
            schema_revision=revision,
            details=pool_settings(self._settings),
        )


def _failure(cause: ConnectionFailureCause, detail: str) -> StartupCheckFailed:
    return StartupCheckFailed(cause.value, redact_text(detail), HINTS[cause])


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no message"
