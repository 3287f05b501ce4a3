"""Use cases of two-phase transfers: reserve, post (in full or in part), void, and expire."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.ledgers import Command, require_ledger
from ledger.domain.model import Account
from ledger.domain.pending_transfers import (
    PendingDraft,
    PendingOutcome,
    PendingOutcomeKind,
    PendingTransfer,
    release,
    require_open,
    reserve,
)
from ledger.domain.ports import UnitOfWork
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_service import check_actor, post_in_unit_of_work
from ledger.domain.transfers import (
    MAX_METADATA_BYTES,
    LedgerRuleViolation,
    PostingDraft,
    Side,
    TransferDraft,
    validate_description,
    validate_metadata,
)

EXPIRY_BATCH = 200


class PendingTransferService:
    def __init__(self, runner: TransactionRunner, *, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
        self._runner = runner
        self._max_metadata_bytes = max_metadata_bytes

    def create_command(self, tenant_id: uuid.UUID, actor: str, draft: PendingDraft) -> Command[PendingTransfer]:
        check_actor(actor)
        draft.validate()
        validate_description(draft.description)
        validate_metadata(draft.metadata, max_bytes=self._max_metadata_bytes)
        pending_id = uuid.uuid4()

        def create_pending(uow: UnitOfWork) -> PendingTransfer:
            ledger = require_ledger(uow, tenant_id, draft.ledger_id)
            locked = uow.accounts.lock(tenant_id, sorted({draft.debit_account_id, draft.credit_account_id}))
            now = uow.now()
            pending = PendingTransfer(
                id=pending_id,
                tenant_id=tenant_id,
                ledger_id=ledger.id,
                debit_account_id=draft.debit_account_id,
                credit_account_id=draft.credit_account_id,
                amount=draft.amount,
                description=draft.description,
                metadata=dict(draft.metadata),
                created_at=now,
                actor=actor,
                expires_at=None if draft.timeout_seconds is None else now + timedelta(seconds=draft.timeout_seconds),
            )
            updated = reserve(ledger, locked, pending)
            uow.pending_transfers.add(pending)
            uow.accounts.save([updated[account_id] for account_id in sorted(updated)])
            return pending

        return create_pending

    def create(self, tenant_id: uuid.UUID, actor: str, draft: PendingDraft) -> PendingTransfer:
        return self._runner.run(self.create_command(tenant_id, actor, draft))

    def post_command(
        self, tenant_id: uuid.UUID, actor: str, pending_id: uuid.UUID, *, amount: int | None = None
    ) -> Command[PendingTransfer]:
        """Books ``amount`` (default: all of it) as a transfer and releases the rest of the reservation."""
        check_actor(actor)
        if amount is not None and (type(amount) is not int or amount <= 0):
            raise InvalidRequest("amounts are positive integers in minor units", code="invalid_amount")
        transfer_id = uuid.uuid4()

        def post_pending(uow: UnitOfWork) -> PendingTransfer:
            pending, locked, now = _lock_open(uow, tenant_id, pending_id)
            if pending.is_due_to_expire(now):
                raise LedgerRuleViolation("the pending transfer has expired", code="pending_transfer_expired")
            posted = pending.amount if amount is None else amount
            if posted > pending.amount:
                raise InvalidRequest(
                    "a pending transfer cannot post more than it reserved", code="amount_exceeds_pending"
                )
            ledger = require_ledger(uow, tenant_id, pending.ledger_id)
            draft = TransferDraft(
                ledger_id=ledger.id,
                postings=(
                    PostingDraft(account_id=pending.debit_account_id, side=Side.DEBIT, amount=posted),
                    PostingDraft(account_id=pending.credit_account_id, side=Side.CREDIT, amount=posted),
                ),
                kind=pending.kind,
                description=pending.description,
                metadata={**pending.metadata, "pending_transfer_id": str(pending.id)},
            )
            post_in_unit_of_work(
                uow, ledger, draft, transfer_id=transfer_id, actor=actor, locked=release(locked, pending)
            )
            outcome = PendingOutcome(pending.id, PendingOutcomeKind.POSTED, posted, transfer_id, now, actor)
            uow.pending_transfers.add_outcome(outcome)
            return replace(pending, outcome=outcome)

        return post_pending

    def post(
        self, tenant_id: uuid.UUID, actor: str, pending_id: uuid.UUID, *, amount: int | None = None
    ) -> PendingTransfer:
        return self._runner.run(self.post_command(tenant_id, actor, pending_id, amount=amount))

    def void_command(self, tenant_id: uuid.UUID, actor: str, pending_id: uuid.UUID) -> Command[PendingTransfer]:
        check_actor(actor)

        def void_pending(uow: UnitOfWork) -> PendingTransfer:
            pending, locked, now = _lock_open(uow, tenant_id, pending_id)
            kind = PendingOutcomeKind.EXPIRED if pending.is_due_to_expire(now) else PendingOutcomeKind.VOIDED
            return _release(uow, pending, locked, PendingOutcome(pending.id, kind, 0, None, now, actor))

        return void_pending

    def void(self, tenant_id: uuid.UUID, actor: str, pending_id: uuid.UUID) -> PendingTransfer:
        return self._runner.run(self.void_command(tenant_id, actor, pending_id))

    def expire_due(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, actor: str) -> int:
        """Ends every pending transfer of the ledger whose time is up; returns how many. Batches of
        ``EXPIRY_BATCH`` per transaction, accounts locked in id order."""
        check_actor(actor)
        expired = 0
        while True:
            count = self._runner.run(lambda uow: _expire_batch(uow, tenant_id, ledger_id, actor))
            expired += count
            if count < EXPIRY_BATCH:
                return expired

    def get(self, tenant_id: uuid.UUID, pending_id: uuid.UUID) -> PendingTransfer:
        pending = self._runner.read(lambda uow: uow.pending_transfers.get(tenant_id, pending_id))
        if pending is None:
            raise NotFound("pending transfer not found", code="pending_transfer_not_found")
        return pending


def _lock_open(
    uow: UnitOfWork, tenant_id: uuid.UUID, pending_id: uuid.UUID
) -> tuple[PendingTransfer, dict[uuid.UUID, Account], datetime]:
    pending = uow.pending_transfers.get(tenant_id, pending_id)
    if pending is None:
        raise NotFound("pending transfer not found", code="pending_transfer_not_found")
    locked = uow.accounts.lock(tenant_id, sorted({pending.debit_account_id, pending.credit_account_id}))
    # Read again under the locks: a concurrent post or void of the same transfer has committed or not.
    pending = uow.pending_transfers.get(tenant_id, pending_id)
    assert pending is not None
    require_open(pending)
    return pending, locked, uow.now()


def _release(
    uow: UnitOfWork, pending: PendingTransfer, locked: dict[uuid.UUID, Account], outcome: PendingOutcome
) -> PendingTransfer:
    updated = release(locked, pending)
    uow.accounts.save([updated[account_id] for account_id in sorted(updated)])
    uow.pending_transfers.add_outcome(outcome)
    return replace(pending, outcome=outcome)


def _expire_batch(uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID, actor: str) -> int:
    require_ledger(uow, tenant_id, ledger_id)
    now = uow.now()
    due = uow.pending_transfers.due_to_expire(tenant_id, ledger_id, now, limit=EXPIRY_BATCH)
    if not due:
        return 0
    locked = uow.accounts.lock(
        tenant_id, sorted({account for item in due for account in (item.debit_account_id, item.credit_account_id)})
    )
    count = 0
    for item in due:
        current = uow.pending_transfers.get(tenant_id, item.id)
        if current is None or not current.is_due_to_expire(now):
            continue
        locked = {**locked, **release(locked, current)}
        uow.pending_transfers.add_outcome(PendingOutcome(current.id, PendingOutcomeKind.EXPIRED, 0, None, now, actor))
        count += 1
    uow.accounts.save([locked[account_id] for account_id in sorted(locked)])
    return count
