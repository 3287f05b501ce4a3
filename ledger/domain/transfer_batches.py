"""Many transfers in one request and one transaction: atomic (all or nothing) or independent (a result per item).

All accounts the batch touches are locked once, in ascending id order; the drafts are applied one after another by
the pure ``apply_transfer`` to the evolving account states (so the chain of each account runs through the batch in
order), and everything is written at the end: entries and postings with one statement each, accounts once. A refusal
is decided before anything is written, so an independent batch's refused items leave no trace while the others
commit, and an atomic batch's refusal writes nothing at all.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from ledger.domain.errors import DomainError, InvalidRequest
from ledger.domain.ledgers import Command, require_ledger
from ledger.domain.model import Account
from ledger.domain.ports import UnitOfWork
from ledger.domain.reconciliation import period_locked_refusal
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_service import check_actor, ledger_today
from ledger.domain.transfers import (
    MAX_METADATA_BYTES,
    LedgerRuleViolation,
    Transfer,
    TransferDraft,
    apply_transfer,
    sorted_account_ids,
    validate_draft,
)

MAX_BATCH_TRANSFERS = 1000


class BatchMode(enum.StrEnum):
    ATOMIC = "atomic"
    INDEPENDENT = "independent"


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    index: int
    transfer: Transfer | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def posted(self) -> bool:
        return self.transfer is not None


@dataclass(frozen=True, slots=True)
class BatchResult:
    mode: BatchMode
    items: tuple[BatchItemResult, ...]

    @property
    def posted(self) -> int:
        return sum(1 for item in self.items if item.posted)

    @property
    def refused(self) -> int:
        return len(self.items) - self.posted


def _item_error(index: int, error: DomainError) -> BatchItemResult:
    return BatchItemResult(index=index, error_code=error.code, error_message=error.message)


def _atomic_refusal(index: int, error: DomainError) -> DomainError:
    """The whole atomic batch is refused like its item (same kind, same code), the message naming the item."""
    return type(error)(f"transfers[{index}]: {error.message}", code=error.code)


class TransferBatchService:
    def __init__(self, runner: TransactionRunner, *, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
        self._runner = runner
        self._max_metadata_bytes = max_metadata_bytes

    def post_batch_command(
        self, tenant_id: uuid.UUID, actor: str, ledger_id: uuid.UUID, drafts: Sequence[TransferDraft], mode: BatchMode
    ) -> Command[BatchResult]:
        check_actor(actor)
        if not 1 <= len(drafts) <= MAX_BATCH_TRANSFERS:
            raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH_TRANSFERS} transfers", code="invalid_batch_size")
        # Checks that need no state, before any lock: in an atomic batch the first bad item refuses the batch.
        invalid: dict[int, DomainError] = {}
        for index, draft in enumerate(drafts):
            try:
                if draft.ledger_id != ledger_id:
                    raise InvalidRequest("the transfer names another ledger", code="ledger_mismatch")
                validate_draft(draft, max_metadata_bytes=self._max_metadata_bytes)
            except DomainError as error:
                if mode is BatchMode.ATOMIC:
                    raise _atomic_refusal(index, error) from None
                invalid[index] = error
        transfer_ids = [uuid.uuid4() for _ in drafts]

        def post_batch(uow: UnitOfWork) -> BatchResult:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            valid = [draft for index, draft in enumerate(drafts) if index not in invalid]
            states: dict[uuid.UUID, Account] = uow.accounts.lock(tenant_id, sorted_account_ids(valid))
            recorded_at = uow.now()
            today = ledger_today(ledger, recorded_at)
            locked_through: date | None = None
            if any(draft.effective_date is not None and draft.effective_date < today for draft in valid):
                locked_through = uow.period_locks.locked_through(tenant_id, ledger_id)
            results: list[BatchItemResult] = []
            posted: list[Transfer] = []
            for index, draft in enumerate(drafts):
                if index in invalid:
                    results.append(_item_error(index, invalid[index]))
                    continue
                try:
                    effective_date = draft.effective_date or today
                    if effective_date > today:
                        raise InvalidRequest("the effective date is in the future", code="effective_date_in_future")
                    refusal = period_locked_refusal(effective_date, locked_through)
                    if refusal is not None:
                        raise LedgerRuleViolation(refusal, code="period_locked")
                    transfer, updated = apply_transfer(
                        ledger,
                        states,
                        draft,
                        transfer_id=transfer_ids[index],
                        actor=actor,
                        recorded_at=recorded_at,
                        effective_date=effective_date,
                    )
                except DomainError as error:
                    if mode is BatchMode.ATOMIC:
                        raise _atomic_refusal(index, error) from None
                    results.append(_item_error(index, error))
                    continue
                states = {**states, **updated}
                posted.append(transfer)
                results.append(BatchItemResult(index=index, transfer=transfer))
            if posted:
                uow.transfers.add_many(posted)
                touched = sorted({posting.account_id for transfer in posted for posting in transfer.postings})
                uow.accounts.save([states[account_id] for account_id in touched])
            return BatchResult(mode=mode, items=tuple(results))

        return post_batch

    def post_batch(
        self, tenant_id: uuid.UUID, actor: str, ledger_id: uuid.UUID, drafts: Sequence[TransferDraft], mode: BatchMode
    ) -> BatchResult:
        return self._runner.run(self.post_batch_command(tenant_id, actor, ledger_id, drafts, mode))
