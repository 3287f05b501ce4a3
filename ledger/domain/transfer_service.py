"""Use cases for transfers: post, reverse, read, statements and balances at a point in time."""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.ledgers import Command, Page, check_page_size, require_ledger
from ledger.domain.model import Account, Ledger, NormalSide
from ledger.domain.pending_transfers import HoldOutcome, HoldOutcomeKind, lift_hold
from ledger.domain.ports import UnitOfWork
from ledger.domain.reconciliation import period_locked_refusal
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfers import (
    MAX_METADATA_BYTES,
    LedgerRuleViolation,
    StatementLine,
    Transfer,
    TransferDraft,
    TransferKind,
    apply_transfer,
    reversal_of,
    sorted_account_ids,
    validate_draft,
)

MAX_ACTOR_LENGTH = 200
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class PointInTimeBalance:
    account_id: uuid.UUID
    effective_on_or_before: date | None
    known_at: datetime | None
    debits: int
    credits: int
    balance: int


@dataclass(frozen=True, slots=True)
class StatementExport:
    """An account's whole statement as of one snapshot: its ledger (for the currency), the account row as the
    snapshot has it (``account.version`` lines), and the lines in version order, streamed: iterate them only inside
    the consumer given to ``export_statement``, while the snapshot is open."""

    ledger: Ledger
    account: Account
    lines: Iterator[StatementLine]


def check_actor(actor: str) -> str:
    if not 1 <= len(actor) <= MAX_ACTOR_LENGTH or "\x00" in actor:
        raise InvalidRequest("actor must name who makes the entry", code="invalid_actor")
    return actor


def ledger_today(ledger: Ledger, moment: datetime) -> date:
    return moment.astimezone(zoneinfo.ZoneInfo(ledger.time_zone)).date()


def post_in_unit_of_work(
    uow: UnitOfWork,
    ledger: Ledger,
    draft: TransferDraft,
    *,
    transfer_id: uuid.UUID,
    actor: str,
    locked: Mapping[uuid.UUID, Account] | None = None,
) -> Transfer:
    """Locks the accounts in ascending id order (unless the caller already holds them: ``locked``), applies the
    draft (pure), then writes. Every refusal is raised before the first write, so a refused request leaves the
    transaction clean."""
    accounts = locked if locked is not None else uow.accounts.lock(ledger.tenant_id, sorted_account_ids([draft]))
    recorded_at = uow.now()
    today = ledger_today(ledger, recorded_at)
    effective_date = draft.effective_date or today
    if effective_date > today:
        raise InvalidRequest("the effective date is in the future", code="effective_date_in_future")
    if effective_date < today:
        # Only a back-dated entry can fall in a locked period: sign-offs are for days that have ended.
        refusal = period_locked_refusal(effective_date, uow.period_locks.locked_through(ledger.tenant_id, ledger.id))
        if refusal is not None:
            raise LedgerRuleViolation(refusal, code="period_locked")
    transfer, updated = apply_transfer(
        ledger,
        accounts,
        draft,
        transfer_id=transfer_id,
        actor=actor,
        recorded_at=recorded_at,
        effective_date=effective_date,
    )
    uow.transfers.add(transfer)
    uow.accounts.save([updated[account_id] for account_id in sorted(updated)])
    return transfer


class TransferService:
    def __init__(self, runner: TransactionRunner, *, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
        self._runner = runner
        self._max_metadata_bytes = max_metadata_bytes

    def post_transfer_command(self, tenant_id: uuid.UUID, actor: str, draft: TransferDraft) -> Command[Transfer]:
        validate_draft(draft, max_metadata_bytes=self._max_metadata_bytes)
        check_actor(actor)
        transfer_id = uuid.uuid4()

        def post_transfer(uow: UnitOfWork) -> Transfer:
            ledger = require_ledger(uow, tenant_id, draft.ledger_id)
            return post_in_unit_of_work(uow, ledger, draft, transfer_id=transfer_id, actor=actor)

        return post_transfer

    def post_transfer(self, tenant_id: uuid.UUID, actor: str, draft: TransferDraft) -> Transfer:
        return self._runner.run(self.post_transfer_command(tenant_id, actor, draft))

    def reverse_transfer_command(
        self, tenant_id: uuid.UUID, actor: str, transfer_id: uuid.UUID, *, description: str | None = None
    ) -> Command[Transfer]:
        check_actor(actor)
        reversal_id = uuid.uuid4()

        def reverse_transfer(uow: UnitOfWork) -> Transfer:
            original = uow.transfers.get(tenant_id, transfer_id)
            if original is None:
                raise NotFound("transfer not found", code="transfer_not_found")
            draft = reversal_of(original, description=description)
            ledger = require_ledger(uow, tenant_id, original.ledger_id)
            # Locking the same accounts as the original serializes two reversals of it; the second sees the first.
            locked = uow.accounts.lock(tenant_id, sorted_account_ids([draft]))
            if uow.transfers.reversal_of(tenant_id, transfer_id) is not None:
                raise LedgerRuleViolation("the transfer has already been reversed", code="transfer_already_reversed")
            hold = uow.clearance_holds.get(tenant_id, transfer_id) if original.kind is TransferKind.DEPOSIT else None
            if hold is not None and hold.outcome is None:
                # Reversing an uncleared deposit takes the hold away with it.
                locked[hold.client_account_id] = lift_hold(locked[hold.client_account_id], hold)
            reversal = post_in_unit_of_work(uow, ledger, draft, transfer_id=reversal_id, actor=actor, locked=locked)
            if hold is not None and hold.outcome is None:
                uow.clearance_holds.add_outcome(
                    HoldOutcome(original.id, HoldOutcomeKind.REVERSED, reversal.recorded_at, actor, reversal.id)
                )
            return reversal

        return reverse_transfer

    def reverse_transfer(
        self, tenant_id: uuid.UUID, actor: str, transfer_id: uuid.UUID, *, description: str | None = None
    ) -> Transfer:
        return self._runner.run(self.reverse_transfer_command(tenant_id, actor, transfer_id, description=description))

    def get_transfer(self, tenant_id: uuid.UUID, transfer_id: uuid.UUID) -> Transfer:
        transfer = self._runner.read(lambda uow: uow.transfers.get(tenant_id, transfer_id))
        if transfer is None:
            raise NotFound("transfer not found", code="transfer_not_found")
        return transfer

    def statement(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, *, after: str | None = None, limit: int = 100
    ) -> Page[StatementLine]:
        check_page_size(limit)
        after_version = _version_cursor(after)

        def read_statement(uow: UnitOfWork) -> list[StatementLine]:
            _require_account(uow, tenant_id, account_id)
            return list(uow.transfers.statement(tenant_id, account_id, after_version=after_version, limit=limit + 1))

        lines = self._runner.read(read_statement)
        if len(lines) > limit:
            kept = lines[:limit]
            return Page(items=kept, next_cursor=str(kept[-1].account_version))
        return Page(items=lines, next_cursor=None)

    def export_statement(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, consume: Callable[[StatementExport], Result]
    ) -> Result:
        """Hands ``consume`` every line of the account's statement, read in one consistent snapshot and streamed,
        so the memory an export takes does not grow with the account's history."""

        def read_statement(uow: UnitOfWork) -> Result:
            account = _require_account(uow, tenant_id, account_id)
            ledger = require_ledger(uow, tenant_id, account.ledger_id)
            return consume(StatementExport(ledger, account, uow.transfers.stream_statement(tenant_id, account_id)))

        return self._runner.read_snapshot(read_statement)

    def balance_at(
        self,
        tenant_id: uuid.UUID,
        account_id: uuid.UUID,
        *,
        effective_on_or_before: date | None = None,
        known_at: datetime | None = None,
    ) -> PointInTimeBalance:
        """The balance from the postings effective on or before a date, as recorded no later than a moment."""
        if known_at is not None and known_at.tzinfo is None:
            raise InvalidRequest("known_at needs a time zone offset", code="invalid_timestamp")

        def read_balance(uow: UnitOfWork) -> PointInTimeBalance:
            account = _require_account(uow, tenant_id, account_id)
            debits, credits = uow.transfers.totals_as_of(
                tenant_id, account_id, effective_on_or_before=effective_on_or_before, known_at=known_at
            )
            balance = debits - credits if account.normal_side is NormalSide.DEBIT else credits - debits
            return PointInTimeBalance(
                account_id=account_id,
                effective_on_or_before=effective_on_or_before,
                known_at=known_at,
                debits=debits,
                credits=credits,
                balance=balance,
            )

        return self._runner.read(read_balance)


def _require_account(uow: UnitOfWork, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Account:
    account = uow.accounts.get(tenant_id, account_id)
    if account is None:
        raise NotFound("account not found", code="account_not_found")
    return account


def _version_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidRequest("the cursor is not one this service handed out", code="invalid_cursor")
    return int(cursor)
