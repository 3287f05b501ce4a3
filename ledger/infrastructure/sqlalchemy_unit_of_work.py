"""One PostgreSQL transaction per use case, shared by the repositories."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ledger.domain.ports import UnitOfWork
from ledger.infrastructure.database_errors import connection_lost, translate_database_errors, translated_error
from ledger.infrastructure.settings import LedgerSettings
from ledger.infrastructure.sqlalchemy_repositories import (
    SqlAlchemyAccountRepository,
    SqlAlchemyApiKeyRepository,
    SqlAlchemyBankStatementRepository,
    SqlAlchemyClearanceHoldRepository,
    SqlAlchemyIdempotencyRepository,
    SqlAlchemyLedgerRepository,
    SqlAlchemyPendingTransferRepository,
    SqlAlchemyPeriodLockRepository,
    SqlAlchemyTransferRepository,
)

# Applied with SET LOCAL semantics (is_local = true): scoped to the transaction, so nothing leaks to the next
# user of a pooled or PgBouncer-shared connection, and nothing depends on connection start-up options.
_TRANSACTION_SETTINGS_SQL = sa.text(
    "SELECT set_config('statement_timeout', :statement_timeout, true),"
    " set_config('lock_timeout', :lock_timeout, true),"
    " set_config('idle_in_transaction_session_timeout', :idle_timeout, true)"
)


_CLOCK_SQL = sa.text("SELECT clock_timestamp()")


class TransactionSettings:
    def __init__(self, settings: LedgerSettings) -> None:
        self.parameters = {
            "statement_timeout": f"{settings.statement_timeout_ms}ms",
            "lock_timeout": f"{settings.lock_timeout_ms}ms",
            "idle_timeout": f"{settings.idle_in_transaction_timeout_ms}ms",
        }


def create_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, autoflush=False, expire_on_commit=False)


class SqlAlchemyUnitOfWork(UnitOfWork):
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        tables: sa.MetaData,
        transaction_settings: TransactionSettings,
        *,
        snapshot: bool = False,
    ) -> None:
        self._session_factory = session_factory
        self._tables = tables
        self._transaction_settings = transaction_settings
        self._snapshot = snapshot
        self._session: Session | None = None

    def __enter__(self) -> Self:
        session = self._session_factory()
        try:
            with translate_database_errors():
                if self._snapshot:
                    # Before the first query: the whole transaction then reads one snapshot.
                    session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
                    )
                session.execute(_TRANSACTION_SETTINGS_SQL, self._transaction_settings.parameters)
        except BaseException:
            session.close()
            raise
        self._session = session
        self.ledgers = SqlAlchemyLedgerRepository(session, self._tables)
        self.accounts = SqlAlchemyAccountRepository(session, self._tables)
        self.transfers = SqlAlchemyTransferRepository(session, self._tables)
        self.idempotency = SqlAlchemyIdempotencyRepository(session, self._tables)
        self.api_keys = SqlAlchemyApiKeyRepository(session, self._tables)
        self.pending_transfers = SqlAlchemyPendingTransferRepository(session, self._tables)
        self.clearance_holds = SqlAlchemyClearanceHoldRepository(session, self._tables)
        self.period_locks = SqlAlchemyPeriodLockRepository(session, self._tables)
        self.bank_statements = SqlAlchemyBankStatementRepository(session, self._tables)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._require_session()
        self._session = None
        try:
            session.rollback()
        except Exception as error:
            # With an error on the way out, that error is the one to report. Without one, a connection that died
            # after the work was done (a read's) has nothing left to roll back: the work stands.
            if exc is None and not connection_lost(error):
                translated = translated_error(error)
                if translated is None:
                    raise
                raise translated from None
        finally:
            session.close()
        if exc is not None:
            translated = translated_error(exc)
            if translated is not None:
                raise translated from None

    def commit(self) -> None:
        with translate_database_errors():
            self._require_session().commit()

    def now(self) -> datetime:
        with translate_database_errors():
            moment: datetime = self._require_session().execute(_CLOCK_SQL).scalar_one()
        return moment

    def rollback(self) -> None:
        self._require_session().rollback()

    def _require_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._session
