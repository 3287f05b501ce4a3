"""Request and response bodies. Requests forbid unknown fields; amounts are strict integers."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ledger.domain.ledgers import MAX_PAGE_SIZE
from ledger.domain.model import MAX_CODE_LENGTH, MAX_NAME_LENGTH, Account, AccountKind, Ledger, NormalSide

NoNulText = r"^[^\x00]*$"


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LedgerCreate(StrictRequest):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NoNulText, examples=["Client trust (IOLTA)"])
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    time_zone: str = Field(default="UTC", min_length=1, max_length=64, examples=["America/New_York"])


class LedgerOut(BaseModel):
    id: uuid.UUID
    name: str
    currency: str
    currency_exponent: int
    time_zone: str
    created_at: datetime

    @classmethod
    def of(cls, ledger: Ledger) -> LedgerOut:
        return cls(
            id=ledger.id,
            name=ledger.name,
            currency=ledger.currency.code,
            currency_exponent=ledger.currency.exponent,
            time_zone=ledger.time_zone,
            created_at=ledger.created_at,
        )


class LedgerPage(BaseModel):
    items: list[LedgerOut]
    next_cursor: uuid.UUID | None


class AccountCreate(StrictRequest):
    code: str = Field(min_length=1, max_length=MAX_CODE_LENGTH, pattern=NoNulText, examples=["client-1042"])
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NoNulText, examples=["Smith estate"])
    kind: AccountKind = Field(examples=[AccountKind.CLIENT])

    model_config = ConfigDict(extra="forbid", strict=False)


class Balances(BaseModel):
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int
    posted: int = Field(description="balance in the account's normal direction, minor units")
    available: int = Field(description="posted balance less pending debits against it, minor units")


class AccountOut(BaseModel):
    id: uuid.UUID
    ledger_id: uuid.UUID
    code: str
    name: str
    kind: AccountKind
    normal_side: NormalSide
    balances: Balances
    version: int
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        return cls(
            id=account.id,
            ledger_id=account.ledger_id,
            code=account.code,
            name=account.name,
            kind=account.kind,
            normal_side=account.normal_side,
            balances=Balances(
                posted_debits=account.posted_debits,
                posted_credits=account.posted_credits,
                pending_debits=account.pending_debits,
                pending_credits=account.pending_credits,
                posted=account.posted_balance,
                available=account.available_balance,
            ),
            version=account.version,
            created_at=account.created_at,
        )


class AccountPage(BaseModel):
    items: list[AccountOut]
    next_cursor: uuid.UUID | None


PageLimit = Field(default=100, ge=1, le=MAX_PAGE_SIZE)
