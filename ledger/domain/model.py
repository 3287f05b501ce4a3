"""Ledgers and accounts: the aggregates the ledger core is built on."""

from __future__ import annotations

import enum
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from ledger.domain.errors import InvalidRequest
from ledger.domain.money import Currency

DEFAULT_TENANT_ID = uuid.UUID("00000000-0000-0000-0000-000000000001")
MAX_NAME_LENGTH = 200
MAX_CODE_LENGTH = 64


class AccountKind(enum.StrEnum):
    BANK = "bank"
    CLIENT = "client"
    FIRM_FUNDS = "firm_funds"
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"


class LedgerKind(enum.StrEnum):
    TRUST = "trust"
    GENERAL = "general"


class AccountStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


TRUST_ACCOUNT_KINDS = frozenset({AccountKind.BANK, AccountKind.CLIENT, AccountKind.FIRM_FUNDS})


class NormalSide(enum.StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


NORMAL_SIDE_OF_KIND: dict[AccountKind, NormalSide] = {
    AccountKind.BANK: NormalSide.DEBIT,
    AccountKind.CLIENT: NormalSide.CREDIT,
    AccountKind.FIRM_FUNDS: NormalSide.CREDIT,
    AccountKind.ASSET: NormalSide.DEBIT,
    AccountKind.EXPENSE: NormalSide.DEBIT,
    AccountKind.LIABILITY: NormalSide.CREDIT,
    AccountKind.EQUITY: NormalSide.CREDIT,
    AccountKind.INCOME: NormalSide.CREDIT,
}


def clean_text(value: str, *, field_name: str, max_length: int) -> str:
    """Refuse what PostgreSQL cannot store (NUL) and what a person cannot read (blank, over-long)."""
    stripped = value.strip()
    if not stripped:
        raise InvalidRequest(f"{field_name} must not be blank", code="invalid_" + field_name)
    if len(stripped) > max_length:
        raise InvalidRequest(f"{field_name} is longer than {max_length} characters", code="invalid_" + field_name)
    if "\x00" in stripped:
        raise InvalidRequest(f"{field_name} contains a NUL character", code="invalid_" + field_name)
    return stripped


def validate_time_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidRequest(f"unknown time zone {name!r}", code="invalid_time_zone") from error
    return name


@dataclass(frozen=True, slots=True)
class Ledger:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    currency: Currency
    time_zone: str
    created_at: datetime
    kind: LedgerKind = LedgerKind.TRUST


@dataclass(frozen=True, slots=True)
class Account:
    id: uuid.UUID
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    code: str
    name: str
    kind: AccountKind
    normal_side: NormalSide
    created_at: datetime
    posted_debits: int = 0
    posted_credits: int = 0
    pending_debits: int = 0
    pending_credits: int = 0
    version: int = 0
    status: AccountStatus = AccountStatus.OPEN
    # A voluntary debit may never take the available balance below zero (clients, firm funds, the bank).
    prevent_overdraft: bool = True
    # The hash of the newest posting (None before the first one): see ledger.domain.posting_chain.
    chain_head: bytes | None = None
    # Deposits booked but not yet cleared by the bank: in the book balance, not in the available funds.
    uncleared_credits: int = 0

    @property
    def posted_balance(self) -> int:
        """Balance in the account's normal direction."""
        if self.normal_side is NormalSide.DEBIT:
            return self.posted_debits - self.posted_credits
        return self.posted_credits - self.posted_debits

    @property
    def available_balance(self) -> int:
        """Pending debits count against the account, pending credits and uncleared deposits do not count for it
        yet."""
        if self.normal_side is NormalSide.DEBIT:
            return self.posted_debits - self.posted_credits - self.pending_credits - self.uncleared_credits
        return self.posted_credits - self.posted_debits - self.pending_debits - self.uncleared_credits

    @property
    def shortfall(self) -> int:
        """How far a client's (or firm's) book balance is below zero: money owed back into trust."""
        return max(0, -self.posted_balance)
