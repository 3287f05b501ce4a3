"""Three-way reconciliation of a trust ledger as of a date, and its sign-off (which locks the period).

    adjusted bank balance = statement balance + deposits in transit - outstanding disbursements
    trust book balance    = the trust bank account's balance in the ledger
    client ledgers        = the sum of every client's balance + firm funds in trust

The three must be equal. What is on the statement but not in the books (a bank fee not booked, a deposit the bank
received that nobody recorded) and what differs between the two (a transposed amount) shows as its own reconciling
item, so a difference is always explained line by line.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

TRANSPOSITION_WINDOW_DAYS = 7


class ReconcilingItemKind(enum.StrEnum):
    DEPOSIT_IN_TRANSIT = "deposit_in_transit"  # in the books, not yet on the statement
    OUTSTANDING_DISBURSEMENT = "outstanding_disbursement"  # in the books, not yet cleared by the bank
    BANK_CREDIT_NOT_IN_BOOKS = "bank_credit_not_in_books"  # e.g. a deposit nobody recorded
    BANK_DEBIT_NOT_IN_BOOKS = "bank_debit_not_in_books"  # e.g. a bank fee not booked
    TRANSPOSED_AMOUNT = "transposed_amount"  # the same item, with digits swapped on one side


@dataclass(frozen=True, slots=True)
class UnmatchedBankLine:
    line_id: uuid.UUID
    date: date
    amount: int  # signed from the bank's view: + money in, - money out
    reference: str
    description: str


@dataclass(frozen=True, slots=True)
class UnmatchedEntry:
    transfer_id: uuid.UUID
    date: date
    amount: int  # signed from the bank's view: + a receipt (bank debit), - a payment (bank credit)
    kind: str
    description: str


@dataclass(frozen=True, slots=True)
class ReconcilingItem:
    kind: ReconcilingItemKind
    date: date
    amount: int  # what it adds to the adjusted bank balance to reach the book balance, signed
    description: str
    transfer_id: uuid.UUID | None = None
    statement_line_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class ClientBalance:
    account_id: uuid.UUID
    code: str
    name: str
    balance: int


@dataclass(frozen=True, slots=True)
class ThreeWayReconciliation:
    ledger_id: uuid.UUID
    as_of: date
    bank_account_id: uuid.UUID
    statement_id: uuid.UUID | None
    statement_end: date | None
    statement_balance: int
    deposits_in_transit: int
    outstanding_disbursements: int
    book_balance: int
    client_total: int
    firm_total: int
    items: tuple[ReconcilingItem, ...]
    clients: tuple[ClientBalance, ...]

    @property
    def adjusted_bank_balance(self) -> int:
        return self.statement_balance + self.deposits_in_transit - self.outstanding_disbursements

    @property
    def client_ledgers_and_firm(self) -> int:
        return self.client_total + self.firm_total

    @property
    def bank_to_book_difference(self) -> int:
        return self.adjusted_bank_balance - self.book_balance

    @property
    def book_to_clients_difference(self) -> int:
        return self.book_balance - self.client_ledgers_and_firm

    @property
    def balanced(self) -> bool:
        return self.bank_to_book_difference == 0 and self.book_to_clients_difference == 0

    @property
    def shortfalls(self) -> tuple[ClientBalance, ...]:
        return tuple(client for client in self.clients if client.balance < 0)


@dataclass(frozen=True, slots=True)
class ReconciliationSignOff:
    id: uuid.UUID
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    as_of: date
    report: Mapping[str, Any]
    signed_off_at: datetime
    signed_off_by: str


def _digits(amount: int) -> str:
    return "".join(sorted(str(abs(amount))))


def reconciling_items(
    unmatched_lines: Sequence[UnmatchedBankLine], unmatched_entries: Sequence[UnmatchedEntry]
) -> tuple[ReconcilingItem, ...]:
    """Every difference between statement and books as its own item. A statement line and a book entry in the same
    direction, a few days apart, whose amounts have the same digits in another order are one transposition."""
    lines = sorted(unmatched_lines, key=lambda line: (line.date, line.line_id))
    entries = sorted(unmatched_entries, key=lambda entry: (entry.date, entry.transfer_id))
    paired_lines: set[uuid.UUID] = set()
    paired_entries: set[uuid.UUID] = set()
    items: list[ReconcilingItem] = []
    for line in lines:
        for entry in entries:
            if entry.transfer_id in paired_entries or (line.amount > 0) != (entry.amount > 0):
                continue
            if line.amount == entry.amount or _digits(line.amount) != _digits(entry.amount):
                continue
            if abs((line.date - entry.date).days) > TRANSPOSITION_WINDOW_DAYS:
                continue
            paired_lines.add(line.line_id)
            paired_entries.add(entry.transfer_id)
            items.append(
                ReconcilingItem(
                    kind=ReconcilingItemKind.TRANSPOSED_AMOUNT,
                    date=entry.date,
                    # The books say entry.amount, the bank line.amount: the adjusted bank balance needs the books'.
                    amount=entry.amount - line.amount,
                    description=f"books {entry.amount}, statement {line.amount}: {entry.description}".strip(),
                    transfer_id=entry.transfer_id,
                    statement_line_id=line.line_id,
                )
            )
            break
    for entry in entries:
        if entry.transfer_id in paired_entries:
            continue
        kind = (
            ReconcilingItemKind.DEPOSIT_IN_TRANSIT if entry.amount > 0 else ReconcilingItemKind.OUTSTANDING_DISBURSEMENT
        )
        items.append(ReconcilingItem(kind, entry.date, entry.amount, entry.description, transfer_id=entry.transfer_id))
    for line in lines:
        if line.line_id in paired_lines:
            continue
        kind = (
            ReconcilingItemKind.BANK_CREDIT_NOT_IN_BOOKS
            if line.amount > 0
            else ReconcilingItemKind.BANK_DEBIT_NOT_IN_BOOKS
        )
        text = " ".join(part for part in (line.reference, line.description) if part)
        items.append(ReconcilingItem(kind, line.date, -line.amount, text, statement_line_id=line.line_id))
    return tuple(sorted(items, key=lambda item: (item.date, item.kind.value)))


def period_locked_refusal(effective_date: date, locked_through: date | None) -> str | None:
    """The refusal message for an entry effective in a locked period, or None."""
    if locked_through is not None and effective_date <= locked_through:
        return (
            f"the period through {locked_through.isoformat()} is locked by a signed-off reconciliation; "
            f"an entry effective {effective_date.isoformat()} cannot be booked"
        )
    return None


def next_open_day(locked_through: date | None) -> date | None:
    return None if locked_through is None else locked_through + timedelta(days=1)
