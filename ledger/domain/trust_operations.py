"""The operations of a client trust account, built on transfers.

A trust ledger holds only bank, client and firm-funds accounts, so every balanced entry keeps
"bank = sum of clients + firm funds". Voluntary debits (disbursements, transfers between clients, earned fees) never
take a client below zero available, whatever the pooled bank balance; involuntary ones (a bank charge) are booked.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.ledgers import Command, require_ledger
from ledger.domain.model import Account, AccountKind, Ledger, LedgerKind
from ledger.domain.pending_transfers import ClearanceHold, HoldOutcome, HoldOutcomeKind, hold_uncleared, lift_hold
from ledger.domain.ports import UnitOfWork
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_service import check_actor, post_in_unit_of_work
from ledger.domain.transfers import (
    MAX_METADATA_BYTES,
    LedgerRuleViolation,
    PostingDraft,
    Side,
    Transfer,
    TransferDraft,
    TransferKind,
    reversal_of,
    sorted_account_ids,
    validate_amount,
    validate_description,
    validate_metadata,
)


class TrustOperationKind(enum.StrEnum):
    DEPOSIT = "deposit"
    DISBURSEMENT = "disbursement"
    CLIENT_TRANSFER = "client_transfer"
    EARNED_FEE = "earned_fee"
    FIRM_DEPOSIT = "firm_deposit"
    BANK_CHARGE = "bank_charge"


@dataclass(frozen=True, slots=True)
class TrustOperation:
    kind: TrustOperationKind
    ledger_id: uuid.UUID
    amount: int
    client_account_id: uuid.UUID | None = None
    to_client_account_id: uuid.UUID | None = None
    bank_account_id: uuid.UUID | None = None
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    effective_date: date | None = None
    # A deposit the bank has not cleared yet (a cheque): booked, but not in the client's available funds until
    # `clear_deposit`. Only for deposits.
    cleared: bool = True


# Which accounts each operation debits and credits, and whether the debit is voluntary.
_SHAPES: dict[TrustOperationKind, tuple[str, str, TransferKind, bool]] = {
    TrustOperationKind.DEPOSIT: ("bank", "client", TransferKind.DEPOSIT, True),
    TrustOperationKind.DISBURSEMENT: ("client", "bank", TransferKind.DISBURSEMENT, True),
    TrustOperationKind.CLIENT_TRANSFER: ("client", "to_client", TransferKind.CLIENT_TRANSFER, True),
    TrustOperationKind.EARNED_FEE: ("client", "bank", TransferKind.FEE, True),
    TrustOperationKind.FIRM_DEPOSIT: ("bank", "firm_funds", TransferKind.FIRM_DEPOSIT, True),
    TrustOperationKind.BANK_CHARGE: ("firm_funds", "bank", TransferKind.BANK_CHARGE, False),
}

_NEEDS_CLIENT = {
    TrustOperationKind.DEPOSIT,
    TrustOperationKind.DISBURSEMENT,
    TrustOperationKind.CLIENT_TRANSFER,
    TrustOperationKind.EARNED_FEE,
}


class TrustService:
    def __init__(self, runner: TransactionRunner, *, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
        self._runner = runner
        self._max_metadata_bytes = max_metadata_bytes

    def check_operation(self, actor: str, operation: TrustOperation) -> None:
        """Checks that need no state: run before any lock is taken."""
        check_actor(actor)
        _check_shape(operation)
        validate_amount(operation.amount)
        validate_description(operation.description)
        validate_metadata(operation.metadata, max_bytes=self._max_metadata_bytes)

    def command(self, tenant_id: uuid.UUID, actor: str, operation: TrustOperation) -> Command[Transfer]:
        self.check_operation(actor, operation)
        transfer_id = uuid.uuid4()

        def run_trust_operation(uow: UnitOfWork) -> Transfer:
            ledger = _trust_ledger(uow, tenant_id, operation.ledger_id)
            roles = _resolve_roles(uow, ledger, operation)
            draft = _draft(operation, roles)
            if operation.cleared:
                return post_in_unit_of_work(uow, ledger, draft, transfer_id=transfer_id, actor=actor)
            client_id = roles["client"]
            locked = uow.accounts.lock(tenant_id, sorted_account_ids([draft]))
            if client_id not in locked:
                raise NotFound("account not found", code="account_not_found")
            # Held before it is booked: the credit raises the book balance, the hold keeps it out of the available.
            locked[client_id] = hold_uncleared(locked[client_id], operation.amount)
            transfer = post_in_unit_of_work(uow, ledger, draft, transfer_id=transfer_id, actor=actor, locked=locked)
            uow.clearance_holds.add(
                ClearanceHold(
                    deposit_transfer_id=transfer.id,
                    tenant_id=tenant_id,
                    ledger_id=ledger.id,
                    client_account_id=client_id,
                    amount=operation.amount,
                    created_at=transfer.recorded_at,
                )
            )
            return transfer

        return run_trust_operation

    def execute(self, tenant_id: uuid.UUID, actor: str, operation: TrustOperation) -> Transfer:
        return self._runner.run(self.command(tenant_id, actor, operation))

    def clear_deposit_command(
        self, tenant_id: uuid.UUID, actor: str, deposit_transfer_id: uuid.UUID
    ) -> Command[ClearanceHold]:
        """The bank cleared the deposit: its amount joins the client's available funds."""
        check_actor(actor)

        def clear_deposit(uow: UnitOfWork) -> ClearanceHold:
            hold = _hold(uow, tenant_id, deposit_transfer_id)
            locked = uow.accounts.lock(tenant_id, [hold.client_account_id])
            hold = _hold(uow, tenant_id, deposit_transfer_id)
            lifted = lift_hold(locked[hold.client_account_id], hold)
            outcome = HoldOutcome(deposit_transfer_id, HoldOutcomeKind.CLEARED, uow.now(), actor)
            uow.accounts.save([lifted])
            uow.clearance_holds.add_outcome(outcome)
            return replace(hold, outcome=outcome)

        return clear_deposit

    def clear_deposit(self, tenant_id: uuid.UUID, actor: str, deposit_transfer_id: uuid.UUID) -> ClearanceHold:
        return self._runner.run(self.clear_deposit_command(tenant_id, actor, deposit_transfer_id))

    def return_deposit_command(
        self,
        tenant_id: uuid.UUID,
        actor: str,
        deposit_transfer_id: uuid.UUID,
        *,
        description: str = "",
        effective_date: date | None = None,
    ) -> Command[Transfer]:
        """The bank returned the deposit (a bounced cheque): booked even when it overdraws the client, who is then
        short in trust until cured; an uncleared hold on it ends."""
        check_actor(actor)
        validate_description(description)
        transfer_id = uuid.uuid4()

        def return_deposit(uow: UnitOfWork) -> Transfer:
            deposit = uow.transfers.get(tenant_id, deposit_transfer_id)
            if deposit is None:
                raise NotFound("transfer not found", code="transfer_not_found")
            if deposit.kind is not TransferKind.DEPOSIT:
                raise InvalidRequest("only a deposit can be returned", code="not_a_deposit")
            ledger = _trust_ledger(uow, tenant_id, deposit.ledger_id)
            draft = replace(
                reversal_of(deposit, description=description or f"returned deposit {deposit.id}"),
                kind=TransferKind.RETURNED_DEPOSIT,
                voluntary=False,
                effective_date=effective_date,
            )
            locked = uow.accounts.lock(tenant_id, sorted_account_ids([draft]))
            if uow.transfers.reversal_of(tenant_id, deposit.id) is not None:
                raise LedgerRuleViolation(
                    "the deposit has already been returned or reversed", code="transfer_already_reversed"
                )
            hold = uow.clearance_holds.get(tenant_id, deposit.id)
            if hold is not None and hold.outcome is None:
                locked[hold.client_account_id] = lift_hold(locked[hold.client_account_id], hold)
            transfer = post_in_unit_of_work(uow, ledger, draft, transfer_id=transfer_id, actor=actor, locked=locked)
            if hold is not None and hold.outcome is None:
                uow.clearance_holds.add_outcome(
                    HoldOutcome(deposit.id, HoldOutcomeKind.RETURNED, transfer.recorded_at, actor, transfer.id)
                )
            return transfer

        return return_deposit

    def return_deposit(
        self,
        tenant_id: uuid.UUID,
        actor: str,
        deposit_transfer_id: uuid.UUID,
        *,
        description: str = "",
        effective_date: date | None = None,
    ) -> Transfer:
        return self._runner.run(
            self.return_deposit_command(
                tenant_id, actor, deposit_transfer_id, description=description, effective_date=effective_date
            )
        )


def trust_operation_draft(uow: UnitOfWork, tenant_id: uuid.UUID, operation: TrustOperation) -> TransferDraft:
    """The entry a cleared operation makes, its accounts found by their role in the trust ledger (read, not
    locked): what the coalescing writer applies in its group."""
    ledger = _trust_ledger(uow, tenant_id, operation.ledger_id)
    return _draft(operation, _resolve_roles(uow, ledger, operation))


def _trust_ledger(uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger:
    ledger = require_ledger(uow, tenant_id, ledger_id)
    if ledger.kind is not LedgerKind.TRUST:
        raise InvalidRequest("trust operations need a trust ledger", code="not_a_trust_ledger")
    return ledger


def _hold(uow: UnitOfWork, tenant_id: uuid.UUID, deposit_transfer_id: uuid.UUID) -> ClearanceHold:
    hold = uow.clearance_holds.get(tenant_id, deposit_transfer_id)
    if hold is None:
        raise NotFound("no uncleared deposit with that id", code="uncleared_deposit_not_found")
    return hold


def _check_shape(operation: TrustOperation) -> None:
    if not operation.cleared and operation.kind is not TrustOperationKind.DEPOSIT:
        raise InvalidRequest("only a client deposit can be uncleared", code="invalid_clearance")
    if operation.kind in _NEEDS_CLIENT and operation.client_account_id is None:
        raise InvalidRequest("this operation needs client_account_id", code="client_account_required")
    if operation.kind is TrustOperationKind.CLIENT_TRANSFER:
        if operation.to_client_account_id is None:
            raise InvalidRequest(
                "a transfer between clients needs to_client_account_id", code="client_account_required"
            )
        if operation.to_client_account_id == operation.client_account_id:
            raise InvalidRequest("a client cannot transfer to itself", code="duplicate_account")


def _draft(operation: TrustOperation, roles: Mapping[str, uuid.UUID]) -> TransferDraft:
    debit_role, credit_role, transfer_kind, voluntary = _SHAPES[operation.kind]
    metadata = dict(operation.metadata)
    if operation.kind is TrustOperationKind.EARNED_FEE:
        metadata.setdefault("category", "fee")
    return TransferDraft(
        ledger_id=operation.ledger_id,
        postings=(
            PostingDraft(account_id=roles[debit_role], side=Side.DEBIT, amount=operation.amount),
            PostingDraft(account_id=roles[credit_role], side=Side.CREDIT, amount=operation.amount),
        ),
        kind=transfer_kind,
        description=operation.description,
        metadata=metadata,
        effective_date=operation.effective_date,
        voluntary=voluntary,
    )


def _resolve_roles(uow: UnitOfWork, ledger: Ledger, operation: TrustOperation) -> dict[str, uuid.UUID]:
    debit_role, credit_role, _, _ = _SHAPES[operation.kind]
    roles: dict[str, uuid.UUID] = {}
    for role in (debit_role, credit_role):
        if role == "bank":
            roles[role] = _single_account(uow, ledger, AccountKind.BANK, operation.bank_account_id).id
        elif role == "firm_funds":
            roles[role] = _single_account(uow, ledger, AccountKind.FIRM_FUNDS, None).id
        else:
            account_id = operation.client_account_id if role == "client" else operation.to_client_account_id
            assert account_id is not None
            account = uow.accounts.get(ledger.tenant_id, account_id)
            if account is None:
                raise NotFound("account not found", code="account_not_found")
            if account.ledger_id != ledger.id:
                raise InvalidRequest("all accounts of a transfer must be in its ledger", code="ledger_mismatch")
            if account.kind is not AccountKind.CLIENT:
                raise InvalidRequest(f"account {account.code!r} is not a client account", code="not_a_client_account")
            roles[role] = account.id
    return roles


def _single_account(uow: UnitOfWork, ledger: Ledger, kind: AccountKind, chosen: uuid.UUID | None) -> Account:
    candidates = uow.accounts.of_kind(ledger.tenant_id, ledger.id, kind)
    if chosen is not None:
        for account in candidates:
            if account.id == chosen:
                return account
        raise NotFound(f"no {kind.value} account with that id in the ledger", code="account_not_found")
    if len(candidates) != 1:
        raise InvalidRequest(
            f"the ledger has {len(candidates)} {kind.value} accounts; name the one to use",
            code=f"{kind.value}_account_ambiguous" if candidates else f"{kind.value}_account_missing",
        )
    return candidates[0]
