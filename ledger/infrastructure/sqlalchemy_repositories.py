"""PostgreSQL repositories: rows in, domain objects out, through the unit of work's session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ledger.domain.api_keys import ApiKey, ApiKeyRole
from ledger.domain.bank_statements import (
    BankEntry,
    BankStatement,
    BankStatementLine,
    MatchKind,
    StatementMatch,
    entry_reference,
)
from ledger.domain.errors import Conflict
from ledger.domain.idempotency import IdempotencyRecord, RecordedResponse
from ledger.domain.model import Account, AccountKind, AccountStatus, Ledger, LedgerKind, NormalSide
from ledger.domain.money import Currency
from ledger.domain.pending_transfers import (
    ClearanceHold,
    HoldOutcome,
    HoldOutcomeKind,
    PendingOutcome,
    PendingOutcomeKind,
    PendingTransfer,
)
from ledger.domain.ports import (
    AccountRepository,
    ApiKeyRepository,
    BankStatementRepository,
    ClearanceHoldRepository,
    IdempotencyRepository,
    LedgerRepository,
    PendingTransferRepository,
    PeriodLockRepository,
    TransferRepository,
)
from ledger.domain.reconciliation import ReconciliationSignOff
from ledger.domain.transfers import LedgerRuleViolation, Posting, Side, StatementLine, Transfer, TransferKind

_STREAM_BATCH_ROWS = 2_000
# Below SQLAlchemy's insertmanyvalues page (1,000 rows), so one execute is one INSERT statement.
_POSTING_ROWS_PER_STATEMENT = 900


_SAVE_ACCOUNTS_SQL = sa.text(
    """
    UPDATE accounts AS account SET
        posted_debits = new.posted_debits, posted_credits = new.posted_credits,
        pending_debits = new.pending_debits, pending_credits = new.pending_credits,
        version = new.version, status = new.status, chain_head = new.chain_head,
        uncleared_credits = new.uncleared_credits
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:posted_debits AS bigint[]), CAST(:posted_credits AS bigint[]),
        CAST(:pending_debits AS bigint[]), CAST(:pending_credits AS bigint[]), CAST(:versions AS bigint[]),
        CAST(:statuses AS text[]), CAST(:chain_heads AS bytea[]), CAST(:uncleared_credits AS bigint[])
    ) AS new(id, posted_debits, posted_credits, pending_debits, pending_credits, version, status, chain_head,
             uncleared_credits)
    WHERE account.id = new.id
    """
)


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
                kind=ledger.kind.value,
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

    def list_all(self, tenant_id: uuid.UUID | None, *, after: uuid.UUID | None, limit: int) -> Sequence[Ledger]:
        if tenant_id is not None:
            return self.list(tenant_id, after=after, limit=limit)
        query = sa.select(self._table)
        if after is not None:
            query = query.where(self._table.c.id > after)
        rows = self._session.execute(query.order_by(self._table.c.id).limit(limit))
        return [_ledger_from_row(row._mapping) for row in rows]

    def find_any_tenant(self, ledger_id: uuid.UUID) -> Ledger | None:
        row = self._session.execute(sa.select(self._table).where(self._table.c.id == ledger_id)).one_or_none()
        return None if row is None else _ledger_from_row(row._mapping)


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
                status=account.status.value,
                prevent_overdraft=account.prevent_overdraft,
                chain_head=account.chain_head,
                uncleared_credits=account.uncleared_credits,
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

    def lock(self, tenant_id: uuid.UUID, account_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Account]:
        rows = self._session.execute(
            sa.select(self._table)
            .where(self._table.c.tenant_id == tenant_id, self._table.c.id.in_(sorted(set(account_ids))))
            .order_by(self._table.c.id)
            .with_for_update(key_share=True)
        )
        return {row.id: _account_from_row(row._mapping) for row in rows}

    def save(self, accounts: Sequence[Account]) -> None:
        if not accounts:
            return
        # One statement for any number of accounts (a coalesced group touches dozens): the new states travel as
        # arrays, so there is one round trip instead of one per account.
        self._session.execute(
            _SAVE_ACCOUNTS_SQL,
            {
                "ids": [account.id for account in accounts],
                "posted_debits": [account.posted_debits for account in accounts],
                "posted_credits": [account.posted_credits for account in accounts],
                "pending_debits": [account.pending_debits for account in accounts],
                "pending_credits": [account.pending_credits for account in accounts],
                "versions": [account.version for account in accounts],
                "statuses": [account.status.value for account in accounts],
                "chain_heads": [account.chain_head for account in accounts],
                "uncleared_credits": [account.uncleared_credits for account in accounts],
            },
        )

    def of_kind(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, kind: AccountKind) -> Sequence[Account]:
        rows = self._session.execute(
            sa.select(self._table)
            .where(
                self._table.c.tenant_id == tenant_id,
                self._table.c.ledger_id == ledger_id,
                self._table.c.kind == kind.value,
            )
            .order_by(self._table.c.id)
        )
        return [_account_from_row(row._mapping) for row in rows]


class SqlAlchemyTransferRepository(TransferRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._transfers = tables.tables["transfers"]
        self._postings = tables.tables["postings"]

    def add(self, transfer: Transfer) -> None:
        if transfer.reverses_transfer_id is not None:
            inserted = self._session.execute(
                pg_insert(self._transfers)
                .values(_transfer_row(transfer))
                .on_conflict_do_nothing(index_elements=["reverses_transfer_id"])
                .returning(self._transfers.c.id)
            ).one_or_none()
            if inserted is None:
                raise LedgerRuleViolation("the transfer has already been reversed", code="transfer_already_reversed")
        else:
            self._session.execute(self._transfers.insert().values(_transfer_row(transfer)))
        self._session.execute(self._postings.insert(), _posting_rows([transfer]))

    def add_many(self, transfers: Sequence[Transfer]) -> None:
        if any(transfer.reverses_transfer_id is not None for transfer in transfers):
            for transfer in transfers:
                self.add(transfer)
            return
        self._session.execute(self._transfers.insert(), [_transfer_row(transfer) for transfer in transfers])
        # The balance trigger checks each INSERT statement's postings per entry, and the driver sends a long
        # executemany as several statements: cut it only between entries, never inside one.
        chunk: list[Transfer] = []
        rows = 0
        for transfer in transfers:
            if chunk and rows + len(transfer.postings) > _POSTING_ROWS_PER_STATEMENT:
                self._session.execute(self._postings.insert(), _posting_rows(chunk))
                chunk, rows = [], 0
            chunk.append(transfer)
            rows += len(transfer.postings)
        if chunk:
            self._session.execute(self._postings.insert(), _posting_rows(chunk))

    def get(self, tenant_id: uuid.UUID, transfer_id: uuid.UUID) -> Transfer | None:
        row = self._session.execute(
            sa.select(self._transfers).where(
                self._transfers.c.tenant_id == tenant_id, self._transfers.c.id == transfer_id
            )
        ).one_or_none()
        if row is None:
            return None
        postings = self._session.execute(
            sa.select(self._postings).where(self._postings.c.transfer_id == transfer_id).order_by(self._postings.c.id)
        )
        return _transfer_from_row(
            row._mapping,
            postings=tuple(
                Posting(
                    account_id=posting.account_id,
                    side=Side(posting.side),
                    amount=posting.amount,
                    account_version=posting.account_version,
                    balance_after=posting.balance_after,
                    chain_hash=bytes(posting.chain_hash),
                )
                for posting in postings
            ),
        )

    def reversal_of(self, tenant_id: uuid.UUID, transfer_id: uuid.UUID) -> uuid.UUID | None:
        found: uuid.UUID | None = self._session.execute(
            sa.select(self._transfers.c.id).where(
                self._transfers.c.tenant_id == tenant_id, self._transfers.c.reverses_transfer_id == transfer_id
            )
        ).scalar_one_or_none()
        return found

    def _statement_lines(self) -> sa.Select[Any]:
        """Postings with what a statement line shows of their entry."""
        postings, transfers = self._postings, self._transfers
        return sa.select(
            postings.c.transfer_id,
            transfers.c.kind,
            transfers.c.description,
            postings.c.side,
            postings.c.amount,
            postings.c.account_version,
            postings.c.balance_after,
            postings.c.effective_date,
            postings.c.recorded_at,
        ).join(transfers, transfers.c.id == postings.c.transfer_id)

    def statement(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, *, after_version: int, limit: int
    ) -> Sequence[StatementLine]:
        postings = self._postings
        rows = self._session.execute(
            self._statement_lines()
            .where(
                postings.c.tenant_id == tenant_id,
                postings.c.account_id == account_id,
                postings.c.account_version > after_version,
            )
            .order_by(postings.c.account_version)
            .limit(limit)
        )
        return [_statement_line_from_row(row) for row in rows]

    def stream_statement(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Iterator[StatementLine]:
        postings = self._postings
        query = (
            self._statement_lines()
            .where(postings.c.tenant_id == tenant_id, postings.c.account_id == account_id)
            .order_by(postings.c.account_version)
        )
        # A server-side cursor, fetched in batches: memory stays flat however long the account's history is.
        rows = self._session.execute(query, execution_options={"stream_results": True, "yield_per": _STREAM_BATCH_ROWS})
        for row in rows:
            yield _statement_line_from_row(row)

    def totals_as_of(
        self,
        tenant_id: uuid.UUID,
        account_id: uuid.UUID,
        *,
        effective_on_or_before: date | None,
        known_at: datetime | None,
    ) -> tuple[int, int]:
        postings = self._postings
        query = sa.select(
            sa.func.coalesce(sa.func.sum(postings.c.amount).filter(postings.c.side == "debit"), 0),
            sa.func.coalesce(sa.func.sum(postings.c.amount).filter(postings.c.side == "credit"), 0),
        ).where(postings.c.tenant_id == tenant_id, postings.c.account_id == account_id)
        if effective_on_or_before is not None:
            query = query.where(postings.c.effective_date <= effective_on_or_before)
        if known_at is not None:
            query = query.where(postings.c.recorded_at <= known_at)
        debits, credits = self._session.execute(query).one()
        return int(debits), int(credits)

    def ledger_totals_as_of(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date
    ) -> dict[uuid.UUID, tuple[int, int]]:
        postings = self._postings
        rows = self._session.execute(
            sa.select(
                postings.c.account_id,
                sa.func.coalesce(sa.func.sum(postings.c.amount).filter(postings.c.side == "debit"), 0),
                sa.func.coalesce(sa.func.sum(postings.c.amount).filter(postings.c.side == "credit"), 0),
            )
            .where(
                postings.c.tenant_id == tenant_id,
                postings.c.ledger_id == ledger_id,
                postings.c.effective_date <= as_of,
            )
            .group_by(postings.c.account_id)
        )
        return {account_id: (int(debits), int(credits)) for account_id, debits, credits in rows}

    def account_lines(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, *, effective_to: date
    ) -> Sequence[StatementLine]:
        postings = self._postings
        rows = self._session.execute(
            self._statement_lines()
            .where(
                postings.c.tenant_id == tenant_id,
                postings.c.account_id == account_id,
                postings.c.effective_date <= effective_to,
            )
            .order_by(postings.c.effective_date, postings.c.account_version)
        )
        return [_statement_line_from_row(row) for row in rows]

    def counterpart_accounts(
        self, tenant_id: uuid.UUID, transfer_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        if not transfer_ids:
            return {}
        postings = self._postings
        rows = self._session.execute(
            sa.select(postings.c.transfer_id, postings.c.account_id)
            .where(postings.c.tenant_id == tenant_id, postings.c.transfer_id.in_(list(transfer_ids)))
            .order_by(postings.c.transfer_id, postings.c.id)
        )
        found: dict[uuid.UUID, list[uuid.UUID]] = {}
        for transfer_id, account_id in rows:
            found.setdefault(transfer_id, []).append(account_id)
        return found

    def count_postings(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> int:
        postings = self._postings
        count: int = self._session.execute(
            sa.select(sa.func.count()).where(postings.c.tenant_id == tenant_id, postings.c.ledger_id == ledger_id)
        ).scalar_one()
        return count

    def postings_in_chain_order(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Iterator[tuple[Transfer, Posting]]:
        postings, transfers = self._postings, self._transfers
        query = (
            sa.select(
                postings.c.account_id,
                postings.c.side,
                postings.c.amount,
                postings.c.account_version,
                postings.c.balance_after,
                postings.c.chain_hash,
                transfers,
            )
            .join(transfers, transfers.c.id == postings.c.transfer_id)
            .where(postings.c.tenant_id == tenant_id, postings.c.ledger_id == ledger_id)
            .order_by(postings.c.account_id, postings.c.account_version)
        )
        # A server-side cursor, fetched in batches: memory stays flat however long the ledger's history is.
        for row in self._session.execute(
            query, execution_options={"stream_results": True, "yield_per": _STREAM_BATCH_ROWS}
        ):
            mapping = row._mapping
            transfer = _transfer_from_row(mapping, postings=())
            yield (
                transfer,
                Posting(
                    account_id=mapping["account_id"],
                    side=Side(mapping["side"]),
                    amount=mapping["amount"],
                    account_version=mapping["account_version"],
                    balance_after=mapping["balance_after"],
                    chain_hash=bytes(mapping["chain_hash"]),
                ),
            )

    def unbalanced_transfers(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Sequence[tuple[uuid.UUID, int]]:
        postings = self._postings
        signed = sa.case((postings.c.side == "debit", postings.c.amount), else_=-postings.c.amount)
        # Every entry's sum, streamed in entry order through a server-side cursor and filtered here: each fetch is a
        # short statement (a single aggregate over a long ledger would outlast the statement timeout), and memory
        # holds one batch of sums plus the unbalanced entries, however many entries the ledger has.
        rows = self._session.execute(
            sa.select(postings.c.transfer_id, sa.func.sum(signed))
            .where(postings.c.tenant_id == tenant_id, postings.c.ledger_id == ledger_id)
            .group_by(postings.c.transfer_id)
            .order_by(postings.c.transfer_id),
            execution_options={"stream_results": True, "yield_per": _STREAM_BATCH_ROWS},
        )
        return [(transfer_id, int(difference)) for transfer_id, difference in rows if difference != 0]


class SqlAlchemyPendingTransferRepository(PendingTransferRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._pending = tables.tables["pending_transfers"]
        self._outcomes = tables.tables["pending_outcomes"]

    def add(self, pending: PendingTransfer) -> None:
        self._session.execute(
            self._pending.insert().values(
                id=pending.id,
                tenant_id=pending.tenant_id,
                ledger_id=pending.ledger_id,
                kind=pending.kind.value,
                debit_account_id=pending.debit_account_id,
                credit_account_id=pending.credit_account_id,
                amount=pending.amount,
                description=pending.description,
                metadata=dict(pending.metadata),
                created_at=pending.created_at,
                actor=pending.actor,
                expires_at=pending.expires_at,
            )
        )

    def _with_outcomes(self) -> sa.Select[Any]:
        pending, outcomes = self._pending, self._outcomes
        return sa.select(
            pending,
            outcomes.c.kind.label("outcome_kind"),
            outcomes.c.amount_posted,
            outcomes.c.transfer_id,
            outcomes.c.recorded_at,
            outcomes.c.actor.label("outcome_actor"),
        ).outerjoin(outcomes, outcomes.c.pending_transfer_id == pending.c.id)

    def get(self, tenant_id: uuid.UUID, pending_id: uuid.UUID) -> PendingTransfer | None:
        row = self._session.execute(
            self._with_outcomes().where(self._pending.c.tenant_id == tenant_id, self._pending.c.id == pending_id)
        ).one_or_none()
        return None if row is None else _pending_from_row(row._mapping)

    def add_outcome(self, outcome: PendingOutcome) -> None:
        inserted = self._session.execute(
            pg_insert(self._outcomes)
            .values(
                pending_transfer_id=outcome.pending_transfer_id,
                tenant_id=self._session.execute(
                    sa.select(self._pending.c.tenant_id).where(self._pending.c.id == outcome.pending_transfer_id)
                ).scalar_one(),
                kind=outcome.kind.value,
                amount_posted=outcome.amount_posted,
                transfer_id=outcome.transfer_id,
                recorded_at=outcome.recorded_at,
                actor=outcome.actor,
            )
            .on_conflict_do_nothing(index_elements=["pending_transfer_id"])
            .returning(self._outcomes.c.pending_transfer_id)
        ).one_or_none()
        if inserted is None:
            raise LedgerRuleViolation("the pending transfer is already resolved", code="pending_transfer_resolved")

    def due_to_expire(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, now: datetime, *, limit: int
    ) -> Sequence[PendingTransfer]:
        pending = self._pending
        rows = self._session.execute(
            self._with_outcomes()
            .where(
                pending.c.tenant_id == tenant_id,
                pending.c.ledger_id == ledger_id,
                pending.c.expires_at <= now,
                self._outcomes.c.pending_transfer_id.is_(None),
            )
            .order_by(pending.c.expires_at, pending.c.id)
            .limit(limit)
        )
        return [_pending_from_row(row._mapping) for row in rows]

    def open_amounts(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> dict[uuid.UUID, tuple[int, int]]:
        pending, outcomes = self._pending, self._outcomes
        open_pending = (
            sa.select(pending.c.debit_account_id, pending.c.credit_account_id, pending.c.amount)
            .outerjoin(outcomes, outcomes.c.pending_transfer_id == pending.c.id)
            .where(
                pending.c.tenant_id == tenant_id,
                pending.c.ledger_id == ledger_id,
                outcomes.c.pending_transfer_id.is_(None),
            )
        )
        amounts: dict[uuid.UUID, tuple[int, int]] = {}
        for debit_account, credit_account, amount in self._session.execute(open_pending):
            debits, credits = amounts.get(debit_account, (0, 0))
            amounts[debit_account] = (debits + amount, credits)
            debits, credits = amounts.get(credit_account, (0, 0))
            amounts[credit_account] = (debits, credits + amount)
        return amounts


class SqlAlchemyClearanceHoldRepository(ClearanceHoldRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._holds = tables.tables["clearance_holds"]
        self._outcomes = tables.tables["clearance_outcomes"]

    def add(self, hold: ClearanceHold) -> None:
        self._session.execute(
            self._holds.insert().values(
                deposit_transfer_id=hold.deposit_transfer_id,
                tenant_id=hold.tenant_id,
                ledger_id=hold.ledger_id,
                client_account_id=hold.client_account_id,
                amount=hold.amount,
                created_at=hold.created_at,
            )
        )

    def get(self, tenant_id: uuid.UUID, deposit_transfer_id: uuid.UUID) -> ClearanceHold | None:
        holds, outcomes = self._holds, self._outcomes
        row = self._session.execute(
            sa.select(
                holds,
                outcomes.c.kind.label("outcome_kind"),
                outcomes.c.recorded_at,
                outcomes.c.actor,
                outcomes.c.transfer_id,
            )
            .outerjoin(outcomes, outcomes.c.deposit_transfer_id == holds.c.deposit_transfer_id)
            .where(holds.c.tenant_id == tenant_id, holds.c.deposit_transfer_id == deposit_transfer_id)
        ).one_or_none()
        if row is None:
            return None
        mapping = row._mapping
        outcome = None
        if mapping["outcome_kind"] is not None:
            outcome = HoldOutcome(
                deposit_transfer_id=deposit_transfer_id,
                kind=HoldOutcomeKind(mapping["outcome_kind"]),
                recorded_at=mapping["recorded_at"],
                actor=mapping["actor"],
                transfer_id=mapping["transfer_id"],
            )
        return ClearanceHold(
            deposit_transfer_id=deposit_transfer_id,
            tenant_id=mapping["tenant_id"],
            ledger_id=mapping["ledger_id"],
            client_account_id=mapping["client_account_id"],
            amount=mapping["amount"],
            created_at=mapping["created_at"],
            outcome=outcome,
        )

    def add_outcome(self, outcome: HoldOutcome) -> None:
        inserted = self._session.execute(
            pg_insert(self._outcomes)
            .values(
                deposit_transfer_id=outcome.deposit_transfer_id,
                tenant_id=self._session.execute(
                    sa.select(self._holds.c.tenant_id).where(
                        self._holds.c.deposit_transfer_id == outcome.deposit_transfer_id
                    )
                ).scalar_one(),
                kind=outcome.kind.value,
                recorded_at=outcome.recorded_at,
                actor=outcome.actor,
                transfer_id=outcome.transfer_id,
            )
            .on_conflict_do_nothing(index_elements=["deposit_transfer_id"])
            .returning(self._outcomes.c.deposit_transfer_id)
        ).one_or_none()
        if inserted is None:
            raise LedgerRuleViolation("the deposit's hold is already resolved", code="deposit_hold_resolved")

    def open_amounts(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> dict[uuid.UUID, int]:
        holds, outcomes = self._holds, self._outcomes
        rows = self._session.execute(
            sa.select(holds.c.client_account_id, sa.func.sum(holds.c.amount))
            .outerjoin(outcomes, outcomes.c.deposit_transfer_id == holds.c.deposit_transfer_id)
            .where(
                holds.c.tenant_id == tenant_id,
                holds.c.ledger_id == ledger_id,
                outcomes.c.deposit_transfer_id.is_(None),
            )
            .group_by(holds.c.client_account_id)
        )
        return {account_id: int(total) for account_id, total in rows}


class SqlAlchemyPeriodLockRepository(PeriodLockRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._table = tables.tables["reconciliation_signoffs"]

    def _take_period_lock(self, ledger_id: uuid.UUID, *, exclusive: bool) -> None:
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        self._session.execute(
            sa.text(f"SELECT {function}(hashtextextended(:lock_name, 0))"), {"lock_name": f"period:{ledger_id}"}
        )

    def locked_through(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> date | None:
        # Lock first, then read in a statement of its own: its snapshot then includes any sign-off that committed
        # while this transaction waited for the lock.
        self._take_period_lock(ledger_id, exclusive=False)
        locked: date | None = self._session.execute(
            sa.select(sa.func.max(self._table.c.as_of)).where(
                self._table.c.tenant_id == tenant_id, self._table.c.ledger_id == ledger_id
            )
        ).scalar_one()
        return locked

    def lock_for_sign_off(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> None:
        self._take_period_lock(ledger_id, exclusive=True)

    def add_sign_off(self, sign_off: ReconciliationSignOff) -> None:
        inserted = self._session.execute(
            pg_insert(self._table)
            .values(
                id=sign_off.id,
                tenant_id=sign_off.tenant_id,
                ledger_id=sign_off.ledger_id,
                as_of=sign_off.as_of,
                report=dict(sign_off.report),
                signed_off_at=sign_off.signed_off_at,
                signed_off_by=sign_off.signed_off_by,
            )
            .on_conflict_do_nothing(constraint="uq_reconciliation_signoffs_ledger_id_as_of")
            .returning(self._table.c.id)
        ).one_or_none()
        if inserted is None:
            raise LedgerRuleViolation("this date is already signed off", code="reconciliation_already_signed_off")

    def sign_offs(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Sequence[ReconciliationSignOff]:
        rows = self._session.execute(
            sa.select(self._table)
            .where(self._table.c.tenant_id == tenant_id, self._table.c.ledger_id == ledger_id)
            .order_by(self._table.c.as_of)
        )
        return [
            ReconciliationSignOff(
                id=row.id,
                tenant_id=row.tenant_id,
                ledger_id=row.ledger_id,
                as_of=row.as_of,
                report=row.report,
                signed_off_at=row.signed_off_at,
                signed_off_by=row.signed_off_by,
            )
            for row in rows
        ]


class SqlAlchemyIdempotencyRepository(IdempotencyRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._table = tables.tables["idempotency_records"]

    def try_claim(self, tenant_id: uuid.UUID, key: str) -> bool:
        # A transaction-scoped advisory lock: a second request with the key in flight is told at once (409)
        # instead of waiting behind the first one's row lock.
        claimed: bool = self._session.execute(
            sa.text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock_name, 0))"),
            {"lock_name": _idempotency_lock_name(tenant_id, key)},
        ).scalar_one()
        return claimed

    def try_claim_many(self, keys: Sequence[tuple[uuid.UUID, str]]) -> set[tuple[uuid.UUID, str]]:
        # One statement for a whole group of the coalescing writer; try-locks never wait, so the order is free.
        rows = self._session.execute(
            sa.text(
                "SELECT position, pg_try_advisory_xact_lock(hashtextextended(lock_name, 0)) AS claimed "
                "FROM unnest(CAST(:lock_names AS text[])) WITH ORDINALITY AS claim(lock_name, position)"
            ),
            {"lock_names": [_idempotency_lock_name(tenant_id, key) for tenant_id, key in keys]},
        )
        return {keys[row.position - 1] for row in rows if row.claimed}

    def get(self, tenant_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
        row = self._session.execute(
            sa.select(self._table).where(self._table.c.tenant_id == tenant_id, self._table.c.key == key)
        ).one_or_none()
        return None if row is None else _idempotency_record(row._mapping)

    def get_many(self, keys: Sequence[tuple[uuid.UUID, str]]) -> dict[tuple[uuid.UUID, str], IdempotencyRecord]:
        rows = self._session.execute(
            sa.select(self._table).where(sa.tuple_(self._table.c.tenant_id, self._table.c.key).in_(list(keys)))
        )
        records = (_idempotency_record(row._mapping) for row in rows)
        return {(record.tenant_id, record.key): record for record in records}

    def add(self, record: IdempotencyRecord) -> None:
        self.add_many([record])

    def add_many(self, records: Sequence[IdempotencyRecord]) -> None:
        self._session.execute(
            self._table.insert(),
            [
                {
                    "tenant_id": record.tenant_id,
                    "key": record.key,
                    "fingerprint": record.fingerprint,
                    "status_code": record.response.status_code,
                    "body": dict(record.response.body),
                    "recorded_at": record.recorded_at,
                }
                for record in records
            ],
        )


def _idempotency_lock_name(tenant_id: uuid.UUID, key: str) -> str:
    return f"idempotency:{tenant_id}:{key}"


def _idempotency_record(row: sa.RowMapping) -> IdempotencyRecord:
    return IdempotencyRecord(
        tenant_id=row["tenant_id"],
        key=row["key"],
        fingerprint=row["fingerprint"],
        response=RecordedResponse(status_code=row["status_code"], body=row["body"]),
        recorded_at=row["recorded_at"],
    )


class SqlAlchemyApiKeyRepository(ApiKeyRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._table = tables.tables["api_keys"]

    def add(self, key: ApiKey) -> None:
        self._session.execute(self._table.insert().values(_api_key_row(key)))

    def get(self, key_id: str) -> ApiKey | None:
        row = self._session.execute(sa.select(self._table).where(self._table.c.id == key_id)).one_or_none()
        return None if row is None else _api_key_from_row(row._mapping)

    def list(self, tenant_id: uuid.UUID | None) -> Sequence[ApiKey]:
        query = sa.select(self._table)
        if tenant_id is not None:
            query = query.where(self._table.c.tenant_id == tenant_id)
        rows = self._session.execute(query.order_by(self._table.c.created_at, self._table.c.id))
        return [_api_key_from_row(row._mapping) for row in rows]

    def save(self, key: ApiKey) -> None:
        self._session.execute(
            sa.update(self._table)
            .where(self._table.c.id == key.id)
            .values(revoked_at=key.revoked_at, revoked_by=key.revoked_by)
        )


def _api_key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "name": key.name,
        "role": key.role.value,
        "secret_hash": key.secret_hash,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "revoked_at": key.revoked_at,
        "revoked_by": key.revoked_by,
    }


def _api_key_from_row(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        role=ApiKeyRole(row["role"]),
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
    )


def _transfer_row(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": transfer.id,
        "tenant_id": transfer.tenant_id,
        "ledger_id": transfer.ledger_id,
        "kind": transfer.kind.value,
        "description": transfer.description,
        "metadata": dict(transfer.metadata),
        "effective_date": transfer.effective_date,
        "recorded_at": transfer.recorded_at,
        "actor": transfer.actor,
        "reverses_transfer_id": transfer.reverses_transfer_id,
    }


def _statement_line_from_row(row: Any) -> StatementLine:
    return StatementLine(
        transfer_id=row.transfer_id,
        kind=TransferKind(row.kind),
        description=row.description,
        side=Side(row.side),
        amount=row.amount,
        account_version=row.account_version,
        balance_after=row.balance_after,
        effective_date=row.effective_date,
        recorded_at=row.recorded_at,
    )


def _posting_rows(transfers: Sequence[Transfer]) -> list[dict[str, Any]]:
    return [
        {
            "tenant_id": transfer.tenant_id,
            "ledger_id": transfer.ledger_id,
            "transfer_id": transfer.id,
            "account_id": posting.account_id,
            "side": posting.side.value,
            "amount": posting.amount,
            "account_version": posting.account_version,
            "balance_after": posting.balance_after,
            "effective_date": transfer.effective_date,
            "recorded_at": transfer.recorded_at,
            "chain_hash": posting.chain_hash,
        }
        for transfer in transfers
        for posting in transfer.postings
    ]


def _transfer_from_row(row: Any, *, postings: tuple[Posting, ...]) -> Transfer:
    return Transfer(
        id=row["id"],
        tenant_id=row["tenant_id"],
        ledger_id=row["ledger_id"],
        kind=TransferKind(row["kind"]),
        description=row["description"],
        metadata=row["metadata"],
        effective_date=row["effective_date"],
        recorded_at=row["recorded_at"],
        actor=row["actor"],
        reverses_transfer_id=row["reverses_transfer_id"],
        postings=postings,
    )


def _pending_from_row(row: Any) -> PendingTransfer:
    outcome = None
    if row["outcome_kind"] is not None:
        outcome = PendingOutcome(
            pending_transfer_id=row["id"],
            kind=PendingOutcomeKind(row["outcome_kind"]),
            amount_posted=row["amount_posted"],
            transfer_id=row["transfer_id"],
            recorded_at=row["recorded_at"],
            actor=row["outcome_actor"],
        )
    return PendingTransfer(
        id=row["id"],
        tenant_id=row["tenant_id"],
        ledger_id=row["ledger_id"],
        kind=TransferKind(row["kind"]),
        debit_account_id=row["debit_account_id"],
        credit_account_id=row["credit_account_id"],
        amount=row["amount"],
        description=row["description"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        actor=row["actor"],
        expires_at=row["expires_at"],
        outcome=outcome,
    )


def _ledger_from_row(row: Any) -> Ledger:
    return Ledger(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        currency=Currency(code=row["currency_code"], exponent=row["currency_exponent"]),
        time_zone=row["time_zone"],
        created_at=row["created_at"],
        kind=LedgerKind(row["kind"]),
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
        status=AccountStatus(row["status"]),
        prevent_overdraft=row["prevent_overdraft"],
        chain_head=None if row["chain_head"] is None else bytes(row["chain_head"]),
        uncleared_credits=row["uncleared_credits"],
    )


class SqlAlchemyBankStatementRepository(BankStatementRepository):
    def __init__(self, session: Session, tables: sa.MetaData) -> None:
        self._session = session
        self._statements = tables.tables["bank_statements"]
        self._lines = tables.tables["bank_statement_lines"]
        self._matches = tables.tables["statement_matches"]
        self._transfers = tables.tables["transfers"]
        self._postings = tables.tables["postings"]

    def add(self, statement: BankStatement) -> None:
        self._session.execute(
            self._statements.insert().values(
                id=statement.id,
                tenant_id=statement.tenant_id,
                ledger_id=statement.ledger_id,
                bank_account_id=statement.bank_account_id,
                previous_statement_id=statement.previous_statement_id,
                period_start=statement.period_start,
                period_end=statement.period_end,
                opening_balance=statement.opening_balance,
                closing_balance=statement.closing_balance,
                line_count=statement.line_count,
                imported_at=statement.imported_at,
                actor=statement.actor,
            )
        )
        if statement.lines:
            self._session.execute(
                self._lines.insert(),
                [
                    {
                        "id": line.id,
                        "tenant_id": statement.tenant_id,
                        "statement_id": statement.id,
                        "bank_account_id": statement.bank_account_id,
                        "line_number": line.line_number,
                        "line_date": line.date,
                        "amount": line.amount,
                        "reference": line.reference,
                        "description": line.description,
                    }
                    for line in statement.lines
                ],
            )

    def get(self, tenant_id: uuid.UUID, statement_id: uuid.UUID) -> BankStatement | None:
        statements = self._statements
        row = self._session.execute(
            self._counted().where(statements.c.tenant_id == tenant_id, statements.c.id == statement_id)
        ).one_or_none()
        if row is None:
            return None
        matches: dict[uuid.UUID, list[StatementMatch]] = {}
        for match_row in self._session.execute(
            sa.select(self._matches)
            .where(self._matches.c.statement_id == statement_id)
            .order_by(self._matches.c.transfer_id)
        ):
            match = _match_from_row(match_row._mapping)
            matches.setdefault(match.line_id, []).append(match)
        lines = self._session.execute(
            sa.select(self._lines).where(self._lines.c.statement_id == statement_id).order_by(self._lines.c.line_number)
        )
        with_lines = tuple(
            _bank_line_from_row(line._mapping, matches=tuple(matches.get(line.id, ()))) for line in lines
        )
        return _statement_from_row(row._mapping, lines=with_lines)

    def latest(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> BankStatement | None:
        statements = self._statements
        row = self._session.execute(
            self._counted()
            .where(statements.c.tenant_id == tenant_id, statements.c.bank_account_id == bank_account_id)
            .order_by(statements.c.period_end.desc())
            .limit(1)
        ).one_or_none()
        return None if row is None else _statement_from_row(row._mapping)

    def first(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> BankStatement | None:
        statements = self._statements
        row = self._session.execute(
            self._counted()
            .where(statements.c.tenant_id == tenant_id, statements.c.bank_account_id == bank_account_id)
            .order_by(statements.c.period_start)
            .limit(1)
        ).one_or_none()
        return None if row is None else _statement_from_row(row._mapping)

    def latest_ending_on_or_before(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, day: date
    ) -> BankStatement | None:
        statements = self._statements
        row = self._session.execute(
            self._counted()
            .where(
                statements.c.tenant_id == tenant_id,
                statements.c.bank_account_id == bank_account_id,
                statements.c.period_end <= day,
            )
            .order_by(statements.c.period_end.desc())
            .limit(1)
        ).one_or_none()
        return None if row is None else _statement_from_row(row._mapping)

    def list(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: tuple[date, uuid.UUID] | None, limit: int
    ) -> Sequence[BankStatement]:
        statements = self._statements
        query = self._counted().where(statements.c.tenant_id == tenant_id, statements.c.ledger_id == ledger_id)
        if after is not None:
            query = query.where(sa.tuple_(statements.c.period_start, statements.c.id) > sa.tuple_(*after))
        rows = self._session.execute(query.order_by(statements.c.period_start, statements.c.id).limit(limit))
        return [_statement_from_row(row._mapping) for row in rows]

    def add_matches(self, matches: Sequence[StatementMatch]) -> None:
        if not matches:
            return
        inserted = self._session.execute(
            pg_insert(self._matches)
            .values(
                [
                    {
                        "bank_account_id": match.bank_account_id,
                        "transfer_id": match.transfer_id,
                        "line_id": match.line_id,
                        "statement_id": match.statement_id,
                        "tenant_id": match.tenant_id,
                        "ledger_id": match.ledger_id,
                        "kind": match.kind.value,
                        "matched_at": match.matched_at,
                        "actor": match.actor,
                    }
                    for match in matches
                ]
            )
            .on_conflict_do_nothing(index_elements=["bank_account_id", "transfer_id"])
            .returning(self._matches.c.transfer_id)
        ).all()
        if len(inserted) != len(matches):
            raise LedgerRuleViolation("a ledger entry is already matched to a bank line", code="entry_already_matched")

    def unmatched_lines(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, dated_on_or_before: date | None
    ) -> Sequence[BankStatementLine]:
        lines, matches = self._lines, self._matches
        query = sa.select(lines).where(
            lines.c.tenant_id == tenant_id,
            lines.c.bank_account_id == bank_account_id,
            ~sa.exists().where(matches.c.line_id == lines.c.id),
        )
        if dated_on_or_before is not None:
            query = query.where(lines.c.line_date <= dated_on_or_before)
        rows = self._session.execute(query.order_by(lines.c.line_date, lines.c.statement_id, lines.c.line_number))
        return [_bank_line_from_row(row._mapping, matches=()) for row in rows]

    def unmatched_entries(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, effective_from: date | None, effective_to: date
    ) -> Sequence[BankEntry]:
        postings, matches = self._postings, self._matches
        query = self._entries(tenant_id, bank_account_id).where(
            postings.c.effective_date <= effective_to, matches.c.transfer_id.is_(None)
        )
        if effective_from is not None:
            query = query.where(postings.c.effective_date >= effective_from)
        return [_bank_entry_from_row(row._mapping) for row in self._session.execute(query)]

    def entries_not_matched_by(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, effective_to: date, line_dated_on_or_before: date
    ) -> Sequence[BankEntry]:
        postings, matches, lines = self._postings, self._matches, self._lines
        query = (
            self._entries(tenant_id, bank_account_id)
            .outerjoin(lines, lines.c.id == matches.c.line_id)
            .where(
                postings.c.effective_date <= effective_to,
                sa.or_(matches.c.transfer_id.is_(None), lines.c.line_date > line_dated_on_or_before),
            )
        )
        return [_bank_entry_from_row(row._mapping) for row in self._session.execute(query)]

    def lines_matched_to_entries_after(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, dated_on_or_before: date, effective_after: date
    ) -> Sequence[tuple[BankStatementLine, Sequence[BankEntry]]]:
        lines, matches, postings = self._lines, self._matches, self._postings
        straddling = (
            sa.select(matches.c.line_id)
            .join(lines, lines.c.id == matches.c.line_id)
            .join(
                postings,
                sa.and_(
                    postings.c.transfer_id == matches.c.transfer_id, postings.c.account_id == matches.c.bank_account_id
                ),
            )
            .where(
                matches.c.tenant_id == tenant_id,
                matches.c.bank_account_id == bank_account_id,
                lines.c.line_date <= dated_on_or_before,
                postings.c.effective_date > effective_after,
            )
        )
        line_rows = self._session.execute(
            sa.select(lines)
            .where(lines.c.id.in_(straddling))
            .order_by(lines.c.line_date, lines.c.statement_id, lines.c.line_number)
        ).all()
        if not line_rows:
            return []
        entries: dict[uuid.UUID, list[BankEntry]] = {}
        for row in self._session.execute(
            self._entries(tenant_id, bank_account_id).where(matches.c.line_id.in_([row.id for row in line_rows]))
        ):
            entry = _bank_entry_from_row(row._mapping)
            assert entry.matched_line_id is not None
            entries.setdefault(entry.matched_line_id, []).append(entry)
        return [(_bank_line_from_row(row._mapping, matches=()), entries.get(row.id, [])) for row in line_rows]

    def _counted(self) -> sa.Select[Any]:
        statements, matches = self._statements, self._matches
        matched = (
            sa.select(sa.func.count(sa.distinct(matches.c.line_id)))
            .where(matches.c.statement_id == statements.c.id)
            .scalar_subquery()
        )
        return sa.select(statements, matched.label("matched_line_count"))

    def _entries(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> sa.Select[Any]:
        """Postings on the bank account with their entry's header and match (if any), in a stable order."""
        postings, transfers, matches = self._postings, self._transfers, self._matches
        return (
            sa.select(
                postings.c.transfer_id,
                postings.c.side,
                postings.c.amount,
                postings.c.effective_date,
                postings.c.recorded_at,
                transfers.c.kind,
                transfers.c.description,
                transfers.c.metadata,
                matches.c.line_id,
            )
            .join(transfers, transfers.c.id == postings.c.transfer_id)
            .outerjoin(
                matches,
                sa.and_(
                    matches.c.bank_account_id == postings.c.account_id, matches.c.transfer_id == postings.c.transfer_id
                ),
            )
            .where(postings.c.tenant_id == tenant_id, postings.c.account_id == bank_account_id)
            .order_by(postings.c.effective_date, postings.c.recorded_at, postings.c.transfer_id)
        )


def _statement_from_row(row: Any, *, lines: tuple[BankStatementLine, ...] = ()) -> BankStatement:
    return BankStatement(
        id=row["id"],
        tenant_id=row["tenant_id"],
        ledger_id=row["ledger_id"],
        bank_account_id=row["bank_account_id"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        opening_balance=row["opening_balance"],
        closing_balance=row["closing_balance"],
        line_count=row["line_count"],
        imported_at=row["imported_at"],
        actor=row["actor"],
        previous_statement_id=row["previous_statement_id"],
        matched_line_count=row["matched_line_count"],
        lines=lines,
    )


def _bank_line_from_row(row: Any, *, matches: tuple[StatementMatch, ...]) -> BankStatementLine:
    return BankStatementLine(
        id=row["id"],
        statement_id=row["statement_id"],
        line_number=row["line_number"],
        date=row["line_date"],
        amount=row["amount"],
        reference=row["reference"],
        description=row["description"],
        matches=matches,
    )


def _match_from_row(row: Any) -> StatementMatch:
    return StatementMatch(
        line_id=row["line_id"],
        transfer_id=row["transfer_id"],
        statement_id=row["statement_id"],
        bank_account_id=row["bank_account_id"],
        tenant_id=row["tenant_id"],
        ledger_id=row["ledger_id"],
        kind=MatchKind(row["kind"]),
        matched_at=row["matched_at"],
        actor=row["actor"],
    )


def _bank_entry_from_row(row: Any) -> BankEntry:
    return BankEntry(
        transfer_id=row["transfer_id"],
        kind=TransferKind(row["kind"]),
        effective_date=row["effective_date"],
        recorded_at=row["recorded_at"],
        amount=row["amount"] if row["side"] == Side.DEBIT.value else -row["amount"],
        description=row["description"],
        reference=entry_reference(row["metadata"]),
        matched_line_id=row["line_id"],
    )
