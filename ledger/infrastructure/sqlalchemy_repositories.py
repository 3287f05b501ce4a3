"""PostgreSQL repositories: rows in, domain objects out, through the unit of work's session."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger.domain.errors import Conflict
from ledger.domain.model import Account, AccountKind, Ledger, NormalSide
from ledger.domain.money import Currency
from ledger.domain.ports import AccountRepository, LedgerRepository


class SqlAlchemyLedgerRepository(LedgerRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._table = tables.tables["ledgers"]

    def add(self, ledger: Ledger) -> None:
        self._session.execute(
            self._table.insert().values(
                id=ledger.id,
                tenant_id=ledger.tenant_id,
                name=ledger.name,
                currency_code=ledger.currency.code,
                currency_exponent=ledger.currency.exponent,
                time_zone=ledger.time_zone,
                created_at=ledger.created_at,
            )
        )

    def get(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger | None:
        row = self._session.execute(
            sa.select(self._table).where(self._table.c.tenant_id == tenant_id, self._table.c.id == ledger_id)
        ).one_or_none()
        return None if row is None else _ledger_from_row(row._mapping)

    def list(self, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> Sequence[Ledger]:
        query = sa.select(self._table).where(self._table.c.tenant_id == tenant_id)
        if after is not None:
            query = query.where(self._table.c.id > after)
        rows = self._session.execute(query.order_by(self._table.c.id).limit(limit))
        return [_ledger_from_row(row._mapping) for row in rows]


class SqlAlchemyAccountRepository(AccountRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._table = tables.tables["accounts"]

    def add(self, account: Account) -> None:
        inserted = self._session.execute(
            pg_insert(self._table)
            .values(
                id=account.id,
                tenant_id=account.tenant_id,
                ledger_id=account.ledger_id,
                code=account.code,
                name=account.name,
                kind=account.kind.value,
                normal_side=account.normal_side.value,
                posted_debits=account.posted_debits,
                posted_credits=account.posted_credits,
                pending_debits=account.pending_debits,
                pending_credits=account.pending_credits,
                version=account.version,
                created_at=account.created_at,
            )
            .on_conflict_do_nothing(constraint="uq_accounts_ledger_id_code")
            .returning(self._table.c.id)
        ).one_or_none()
        if inserted is None:
            raise Conflict(f"the ledger already has an account with code {account.code!r}", code="account_code_taken")

    def get(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Account | None:
        row = self._session.execute(
            sa.select(self._table).where(self._table.c.tenant_id == tenant_id, self._table.c.id == account_id)
        ).one_or_none()
        return None if row is None else _account_from_row(row._mapping)

    def list(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
    ) -> Sequence[Account]:
        query = sa.select(self._table).where(self._table.c.tenant_id == tenant_id, self._table.c.ledger_id == ledger_id)
        if after is not None:
            query = query.where(self._table.c.id > after)
        rows = self._session.execute(query.order_by(self._table.c.id).limit(limit))
        return [_account_from_row(row._mapping) for row in rows]


def _ledger_from_row(row: Any) -> Ledger:
    return Ledger(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        currency=Currency(code=row["currency_code"], exponent=row["currency_exponent"]),
        time_zone=row["time_zone"],
        created_at=row["created_at"],
    )


def _account_from_row(row: Any) -> Account:
    return Account(
        id=row["id"],
        tenant_id=row["tenant_id"],
        ledger_id=row["ledger_id"],
        code=row["code"],
        name=row["name"],
        kind=AccountKind(row["kind"]),
        normal_side=NormalSide(row["normal_side"]),
        posted_debits=row["posted_debits"],
        posted_credits=row["posted_credits"],
        pending_debits=row["pending_debits"],
        pending_credits=row["pending_credits"],
        version=row["version"],
        created_at=row["created_at"],
    )
