"""Two-phase transfers and clearance holds: money reserved now, settled (or released) later.

A pending transfer reserves its amount: the debited account's pending debits and the credited account's pending
credits grow, so the available balance counts the pending debit but not the pending credit. It ends exactly once,
by a new outcome row (history is never updated): posted (in full or in part: a real transfer of that amount is
booked and the rest released), voided, or expired.

A clearance hold marks a client deposit as not yet cleared by the bank: the deposit is booked (book balance), but
the client's available funds exclude it until it clears. A returned (bounced) deposit is booked even when it
overdraws the client, and ends the hold.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ledger.domain.errors import InvalidRequest
from ledger.domain.model import Account, AccountStatus, Ledger
from ledger.domain.transfers import LedgerRuleViolation, TransferKind, insufficient_funds, validate_amount

MAX_PENDING_SECONDS = 366 * 24 * 3600


class PendingOutcomeKind(enum.StrEnum):
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class PendingState(enum.StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    pending_transfer_id: uuid.UUID
    kind: PendingOutcomeKind
    amount_posted: int
    transfer_id: uuid.UUID | None
    recorded_at: datetime
    actor: str


@dataclass(frozen=True, slots=True)
class PendingTransfer:
    id: uuid.UUID
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    description: str
    metadata: Mapping[str, Any]
    created_at: datetime
    actor: str
    expires_at: datetime | None = None
    outcome: PendingOutcome | None = None
    kind: TransferKind = TransferKind.TRANSFER

    @property
    def state(self) -> PendingState:
        if self.outcome is None:
            return PendingState.PENDING
        return PendingState(self.outcome.kind.value)

    def is_due_to_expire(self, now: datetime) -> bool:
        return self.outcome is None and self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class PendingDraft:
    ledger_id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: int | None = None

    def validate(self) -> None:
        validate_amount(self.amount)
        if self.debit_account_id == self.credit_account_id:
            raise InvalidRequest("an account appears twice in one transfer", code="duplicate_account")
        if self.timeout_seconds is not None and not 1 <= self.timeout_seconds <= MAX_PENDING_SECONDS:
            raise InvalidRequest(
                f"timeout_seconds is between 1 and {MAX_PENDING_SECONDS}", code="invalid_pending_timeout"
            )


def reserve(
    ledger: Ledger, accounts: Mapping[uuid.UUID, Account], pending: PendingTransfer
) -> dict[uuid.UUID, Account]:
    """The accounts after reserving ``pending``; raises before anything changes."""
    debit = _usable(ledger, accounts, pending.debit_account_id)
    credit = _usable(ledger, accounts, pending.credit_account_id)
    updated = {
        debit.id: _with_pending(debit, debit_delta=pending.amount),
        credit.id: _with_pending(credit, credit_delta=pending.amount),
    }
    for before in (debit, credit):
        after = updated[before.id]
        lowers = after.available_balance < before.available_balance
        if after.prevent_overdraft and lowers and after.available_balance < 0:
            raise insufficient_funds(after)
    return updated


def release(accounts: Mapping[uuid.UUID, Account], pending: PendingTransfer) -> dict[uuid.UUID, Account]:
    """The accounts after the reservation of ``pending`` is lifted (before posting, voiding or expiring it)."""
    debit = accounts[pending.debit_account_id]
    credit = accounts[pending.credit_account_id]
    return {
        debit.id: _with_pending(debit, debit_delta=-pending.amount),
        credit.id: _with_pending(credit, credit_delta=-pending.amount),
    }


def require_open(pending: PendingTransfer) -> None:
    if pending.outcome is not None:
        raise LedgerRuleViolation(
            f"the pending transfer is already {pending.outcome.kind.value}", code=f"pending_transfer_{pending.state}"
        )


def _usable(ledger: Ledger, accounts: Mapping[uuid.UUID, Account], account_id: uuid.UUID) -> Account:
    from ledger.domain.errors import NotFound

    account = accounts.get(account_id)
    if account is None or account.tenant_id != ledger.tenant_id:
        raise NotFound("account not found", code="account_not_found")
    if account.ledger_id != ledger.id:
        raise InvalidRequest("all accounts of a transfer must be in its ledger", code="ledger_mismatch")
    if account.status is AccountStatus.CLOSED:
        raise LedgerRuleViolation(f"account {account.code!r} is closed", code="account_closed")
    return account


def _with_pending(account: Account, *, debit_delta: int = 0, credit_delta: int = 0) -> Account:
    return replace(
        account,
        pending_debits=account.pending_debits + debit_delta,
        pending_credits=account.pending_credits + credit_delta,
    )


class HoldOutcomeKind(enum.StrEnum):
    CLEARED = "cleared"
    RETURNED = "returned"
    REVERSED = "reversed"


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    deposit_transfer_id: uuid.UUID
    kind: HoldOutcomeKind
    recorded_at: datetime
    actor: str
    transfer_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class ClearanceHold:
    deposit_transfer_id: uuid.UUID
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    client_account_id: uuid.UUID
    amount: int
    created_at: datetime
    outcome: HoldOutcome | None = None

    @property
    def cleared(self) -> bool:
        return self.outcome is not None and self.outcome.kind is HoldOutcomeKind.CLEARED


def hold_uncleared(account: Account, amount: int) -> Account:
    return replace(account, uncleared_credits=account.uncleared_credits + amount)


def lift_hold(account: Account, hold: ClearanceHold) -> Account:
    if hold.outcome is not None:
        raise LedgerRuleViolation(
            f"the deposit is already {hold.outcome.kind.value}", code=f"deposit_already_{hold.outcome.kind.value}"
        )
    return replace(account, uncleared_credits=account.uncleared_credits - hold.amount)
