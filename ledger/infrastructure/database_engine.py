"""The process's one engine: a pooled SQLAlchemy engine whose URL carries no password.

Credentials are put in per new physical connection from the secret provider, in the ``do_connect`` event. When
PostgreSQL refuses the login the provider is refreshed (one fetch for every thread that hit the refusal together)
and the connect retried; during a single-user rotation the pending version is tried next, and when neither was new
(the rotation finished between the two reads) AWSCURRENT is read once more. A rotated password therefore takes
effect without a restart, and no request fails while it does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.pool import ConnectionPoolEntry

from ledger.infrastructure.connection_failures import ConnectionFailureCause, classify_connection_failure
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.secret_providers import SecretProvider
from ledger.infrastructure.settings import LedgerSettings

DEFAULT_CONNECT_TIMEOUT_SECONDS = 5


class CredentialedConnector:
    """The ``do_connect`` listener. Counts logins so tests and operators can see refreshes happen."""

    def __init__(self, provider: SecretProvider, settings: LedgerSettings) -> None:
        self._provider = provider
        self._base_parameters: dict[str, Any] = {
            "application_name": settings.application_name,
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT_SECONDS,
        }
        # The operator's TLS settings win over the secret document's: production's verified-TLS rule holds for them.
        self._tls_parameters: dict[str, Any] = {}
        if settings.sslmode is not None:
            self._tls_parameters["sslmode"] = settings.sslmode
        if settings.sslrootcert is not None:
            self._tls_parameters["sslrootcert"] = str(settings.sslrootcert)
        self._log = structlog.get_logger(__name__)
        self._counter_lock = threading.Lock()
        self.connections_opened = 0
        self.credential_refreshes = 0

    def __call__(
        self,
        dialect: Dialect,
        connection_record: ConnectionPoolEntry,
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> Any:
        credentials = self._provider.current()
        try:
            connection = self._connect(dialect, cargs, cparams, credentials)
        except psycopg2.OperationalError as refused:
            if classify_connection_failure(refused) is not ConnectionFailureCause.AUTHENTICATION_FAILED:
                raise
            connection = self._connect_after_refusal(dialect, cargs, cparams, credentials, refused)
        with self._counter_lock:
            self.connections_opened += 1
        return connection

    def _connect_after_refusal(
        self,
        dialect: Dialect,
        cargs: list[Any],
        cparams: dict[str, Any],
        stale: DatabaseCredentials,
        refused: psycopg2.OperationalError,
    ) -> Any:
        self._log.info(
            "database_login_refused_refreshing_credentials",
            username=stale.username,
            source=self._provider.description,
        )
        with self._counter_lock:
            self.credential_refreshes += 1
        tried = [stale]
        for candidate, is_pending in self._credentials_after_refusal(stale):
            if any(_same_login(candidate, earlier) for earlier in tried):
                continue  # a refused login is refused again: never send it twice
            tried.append(candidate)
            if is_pending:
                self._log.info("database_login_trying_pending_credentials", username=candidate.username)
            try:
                return self._connect(dialect, cargs, cparams, candidate)
            except psycopg2.OperationalError as refused_again:
                if classify_connection_failure(refused_again) is not ConnectionFailureCause.AUTHENTICATION_FAILED:
                    raise
                refused = refused_again
        raise refused

    def _credentials_after_refusal(self, stale: DatabaseCredentials) -> Iterator[tuple[DatabaseCredentials, bool]]:
        """What the store holds now, read lazily in the order to try (``True`` marks the pending version):
        AWSCURRENT (one read shared by the threads refused together), AWSPENDING, then both again with AWSCURRENT
        read for certain. The first read may not be new enough: another thread's refresh may predate this refusal,
        or the rotation may finish between the two reads (AWSCURRENT moved onto the new password and AWSPENDING
        taken off it), and then only a read that starts after the pending one sees the new password."""
        for read_for_certain in (False, True):
            yield (self._provider.refresh() if read_for_certain else self._provider.refresh(stale)), False
            pending = self._provider.pending()
            if pending is not None:
                yield pending, True

    def _connect(
        self, dialect: Dialect, cargs: list[Any], cparams: dict[str, Any], credentials: DatabaseCredentials
    ) -> Any:
        # A new dict each time: SQLAlchemy reuses cparams for the next connection.
        parameters = {
            **cparams,
            **self._base_parameters,
            **credentials.connect_parameters(),
            **self._tls_parameters,
        }
        return dialect.connect(*cargs, **parameters)


def _same_login(first: DatabaseCredentials, second: DatabaseCredentials) -> bool:
    return first.connect_parameters() == second.connect_parameters()


def create_database_engine(settings: LedgerSettings, connector: CredentialedConnector) -> Engine:
    engine = sa.create_engine(
        sa.URL.create("postgresql+psycopg2"),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        pool_recycle=settings.pool_recycle_seconds,
        pool_pre_ping=settings.pool_pre_ping,
        hide_parameters=settings.hide_sql_parameters,
    )
    sa.event.listen(engine, "do_connect", connector)
    return engine


def pool_settings(settings: LedgerSettings) -> dict[str, object]:
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout_seconds": settings.pool_timeout_seconds,
        "pool_recycle_seconds": settings.pool_recycle_seconds,
        "pool_pre_ping": settings.pool_pre_ping,
        "application_name": settings.application_name,
    }
