"""Transfers (journal entries) and the pure function that applies them to locked accounts.

``apply_transfer`` takes account states and a draft and returns the posted transfer and the new account states,
or raises. It does no I/O, so the same code serves one request in one transaction, many requests coalesced into one
transaction, and the in-memory adapter.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.model import Account, AccountStatus, Ledger
from ledger.domain.money import MAX_AMOUNT_MINOR_UNITS
from ledger.domain.posting_chain import genesis_hash, next_chain_hash, posting_link_bytes

MAX_POSTINGS_PER_TRANSFER = 64
MAX_METADATA_BYTES = 4096
MAX_DESCRIPTION_LENGTH = 500


class Side(enum.StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class TransferKind(enum.StrEnum):
    TRANSFER = "transfer"
    DEPOSIT = "deposit"
    DISBURSEMENT = "disbursement"
    CLIENT_TRANSFER = "client_transfer"
    FEE = "fee"
    FIRM_DEPOSIT = "firm_deposit"
    BANK_CHARGE = "bank_charge"
    REVERSAL = "reversal"
    RETURNED_DEPOSIT = "returned_deposit"


class LedgerRuleViolation(InvalidRequest):
    """A refusal by a rule of the ledger that depends on its state (funds, a closed account, a reversal already
    made). Unlike a malformed request, it is recorded with its idempotency key and replayed like a success."""


@dataclass(frozen=True, slots=True)
class PostingDraft:
    account_id: uuid.UUID
    side: Side
    amount: int


@dataclass(frozen=True, slots=True)
class TransferDraft:
    ledger_id: uuid.UUID
    postings: tuple[PostingDraft, ...]
    kind: TransferKind = TransferKind.TRANSFER
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    effective_date: date | None = None
    # Involuntary entries (a returned deposit, a bank charge) are booked even when they overdraw an account.
    voluntary: bool = True
    reverses_transfer_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Posting:
    account_id: uuid.UUID
    side: Side
    amount: int
    account_version: int
    balance_after: int
    # SHA-256 chained to the account's previous posting (see ledger.domain.posting_chain).
    chain_hash: bytes = b""


@dataclass(frozen=True, slots=True)
class Transfer:
    id: uuid.UUID
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    kind: TransferKind
    description: str
    metadata: Mapping[str, Any]
    effective_date: date
    recorded_at: datetime
    actor: str
    postings: tuple[Posting, ...]
    reverses_transfer_id: uuid.UUID | None = None

    @property
    def amount(self) -> int:
        return sum(posting.amount for posting in self.postings if posting.side is Side.DEBIT)


@dataclass(frozen=True, slots=True)
class StatementLine:
    transfer_id: uuid.UUID
    kind: TransferKind
    description: str
    side: Side
    amount: int
    account_version: int
    balance_after: int
    effective_date: date
    recorded_at: datetime


def validate_draft(draft: TransferDraft, *, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
    """Checks that need no state: run before any lock is taken."""
    if len(draft.postings) < 2:
        raise InvalidRequest("a transfer needs at least two postings", code="too_few_postings")
    if len(draft.postings) > MAX_POSTINGS_PER_TRANSFER:
        raise InvalidRequest(f"a transfer has at most {MAX_POSTINGS_PER_TRANSFER} postings", code="too_many_postings")
    seen: set[uuid.UUID] = set()
    debits = credits = 0
    for posting in draft.postings:
        validate_amount(posting.amount)
        if posting.account_id in seen:
            raise InvalidRequest("an account appears twice in one transfer", code="duplicate_account")
        seen.add(posting.account_id)
        if posting.side is Side.DEBIT:
            debits += posting.amount
        else:
            credits += posting.amount
    if debits != credits:
        raise InvalidRequest("debits and credits of a transfer must be equal", code="unbalanced_transfer")
    validate_description(draft.description)
    validate_metadata(draft.metadata, max_bytes=max_metadata_bytes)


def validate_amount(amount: int) -> None:
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT_MINOR_UNITS:
        raise InvalidRequest(
            f"amounts are integers in minor units between 1 and {MAX_AMOUNT_MINOR_UNITS}", code="invalid_amount"
        )


def validate_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION_LENGTH or "\x00" in description:
        raise InvalidRequest(
            f"description: at most {MAX_DESCRIPTION_LENGTH} characters, no NUL", code="invalid_description"
        )


def validate_metadata(metadata: Mapping[str, Any], *, max_bytes: int = MAX_METADATA_BYTES) -> None:
    try:
        encoded = json.dumps(metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidRequest("metadata must be a JSON object", code="invalid_metadata") from None
    if len(encoded.encode("utf-8")) > max_bytes:
        raise InvalidRequest(f"metadata is larger than {max_bytes} bytes", code="metadata_too_large")
    if "\x00" in encoded or "\\u0000" in encoded:
        raise InvalidRequest("metadata contains a NUL character", code="invalid_metadata")


def apply_transfer(
    ledger: Ledger,
    accounts: Mapping[uuid.UUID, Account],
    draft: TransferDraft,
    *,
    transfer_id: uuid.UUID,
    actor: str,
    recorded_at: datetime,
    effective_date: date,
) -> tuple[Transfer, dict[uuid.UUID, Account]]:
    """Applies one draft to the locked accounts. Raises before changing anything; returns new states only."""
    validate_draft(draft)
    if draft.ledger_id != ledger.id:
        raise InvalidRequest("the transfer names another ledger", code="ledger_mismatch")
    updated: dict[uuid.UUID, Account] = {}
    postings: list[Posting] = []
    for leg in draft.postings:
        account = accounts.get(leg.account_id)
        if account is None or account.tenant_id != ledger.tenant_id:
            raise NotFound("account not found", code="account_not_found")
        if account.ledger_id != ledger.id:
            raise InvalidRequest("all accounts of a transfer must be in its ledger", code="ledger_mismatch")
        if account.status is AccountStatus.CLOSED:
            raise LedgerRuleViolation(f"account {account.code!r} is closed", code="account_closed")
        after = _post(account, leg)
        # Only a voluntary debit is refused: a posting that raises an overdrawn account (curing part of a
        # shortfall) lowers nothing and is booked.
        lowers = after.available_balance < account.available_balance
        if draft.voluntary and after.prevent_overdraft and lowers and after.available_balance < 0:
            raise insufficient_funds(after)
        updated[account.id] = after
        postings.append(
            Posting(
                account_id=account.id,
                side=leg.side,
                amount=leg.amount,
                account_version=after.version,
                balance_after=after.posted_balance,
            )
        )
    transfer = Transfer(
        id=transfer_id,
        tenant_id=ledger.tenant_id,
        ledger_id=ledger.id,
        kind=draft.kind,
        description=draft.description,
        metadata=dict(draft.metadata),
        effective_date=effective_date,
        recorded_at=recorded_at,
        actor=actor,
        postings=tuple(postings),
        reverses_transfer_id=draft.reverses_transfer_id,
    )
    return _chained(transfer, accounts, updated)


def chain_link(transfer: Transfer, posting: Posting) -> bytes:
    """The bytes one posting of ``transfer`` adds to its account's chain."""
    return posting_link_bytes(
        tenant_id=transfer.tenant_id,
        ledger_id=transfer.ledger_id,
        account_id=posting.account_id,
        account_version=posting.account_version,
        side=posting.side.value,
        amount=posting.amount,
        balance_after=posting.balance_after,
        transfer_id=transfer.id,
        transfer_kind=transfer.kind.value,
        description=transfer.description,
        metadata=transfer.metadata,
        effective_date=transfer.effective_date,
        recorded_at=transfer.recorded_at,
        actor=transfer.actor,
        reverses_transfer_id=transfer.reverses_transfer_id,
    )


def _chained(
    transfer: Transfer, before: Mapping[uuid.UUID, Account], after: dict[uuid.UUID, Account]
) -> tuple[Transfer, dict[uuid.UUID, Account]]:
    """Extends each account's chain by its posting: the account row is locked, so its head is the latest."""
    postings = []
    for posting in transfer.postings:
        account = before[posting.account_id]
        previous = account.chain_head if account.chain_head is not None else genesis_hash(account.id)
        chain_hash = next_chain_hash(previous, chain_link(transfer, posting))
        postings.append(replace(posting, chain_hash=chain_hash))
        after[account.id] = replace(after[account.id], chain_head=chain_hash)
    return replace(transfer, postings=tuple(postings)), after


def insufficient_funds(after: Account) -> LedgerRuleViolation:
    """The refusal for a voluntary debit that takes ``after`` below zero available: when the uncleared deposits
    would have covered it, the client has the money on the books but not yet in the bank."""
    if after.available_balance + after.uncleared_credits >= 0:
        return LedgerRuleViolation(
            f"account {after.code!r} has the funds on its books, but not yet cleared", code="insufficient_cleared_funds"
        )
    return LedgerRuleViolation(f"account {after.code!r} has insufficient available funds", code="insufficient_funds")


def _post(account: Account, leg: PostingDraft) -> Account:
    if leg.side is Side.DEBIT:
        return replace(account, posted_debits=account.posted_debits + leg.amount, version=account.version + 1)
    return replace(account, posted_credits=account.posted_credits + leg.amount, version=account.version + 1)


def reversal_of(original: Transfer, *, description: str | None = None) -> TransferDraft:
    """The entry that negates ``original``: every posting on the other side."""
    if original.kind is TransferKind.REVERSAL:
        raise LedgerRuleViolation("a reversal cannot itself be reversed", code="cannot_reverse_reversal")
    return TransferDraft(
        ledger_id=original.ledger_id,
        postings=tuple(
            PostingDraft(
                account_id=posting.account_id,
                side=Side.CREDIT if posting.side is Side.DEBIT else Side.DEBIT,
                amount=posting.amount,
            )
            for posting in original.postings
        ),
        kind=TransferKind.REVERSAL,
        description=description or f"reversal of {original.id}",
        metadata={},
        reverses_transfer_id=original.id,
    )


def sorted_account_ids(drafts: Sequence[TransferDraft]) -> list[uuid.UUID]:
    """Every account the drafts touch, in the one order all writers lock them in (no deadlocks by construction)."""
    return sorted({posting.account_id for draft in drafts for posting in draft.postings})
