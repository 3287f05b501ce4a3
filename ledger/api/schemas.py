"""Request and response bodies. Requests forbid unknown fields; amounts are strict integers."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ledger.domain.bank_statements import (
    BankEntry,
    BankStatement,
    BankStatementLine,
    MatchKind,
    StatementBalance,
    StatementMatch,
    UnmatchedItems,
)
from ledger.domain.ledger_verification import VerificationReport
from ledger.domain.model import (
    MAX_CODE_LENGTH,
    MAX_NAME_LENGTH,
    Account,
    AccountKind,
    AccountStatus,
    Ledger,
    LedgerKind,
    NormalSide,
)
from ledger.domain.money import MAX_AMOUNT_MINOR_UNITS
from ledger.domain.pending_transfers import MAX_PENDING_SECONDS, ClearanceHold, PendingTransfer
from ledger.domain.reconciliation import ReconciliationSignOff
from ledger.domain.transfer_batches import MAX_BATCH_TRANSFERS, BatchMode, BatchResult
from ledger.domain.transfer_service import PointInTimeBalance
from ledger.domain.transfers import (
    MAX_DESCRIPTION_LENGTH,
    MAX_METADATA_BYTES,
    MAX_POSTINGS_PER_TRANSFER,
    Side,
    StatementLine,
    Transfer,
    TransferKind,
)
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind

NoNulText = r"^[^\x00]*$"


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LedgerCreate(StrictRequest):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NoNulText, examples=["Client trust (IOLTA)"])
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    time_zone: str = Field(default="UTC", min_length=1, max_length=64, examples=["America/New_York"])
    kind: LedgerKind = Field(
        default=LedgerKind.TRUST,
        description="trust: only bank, client and firm_funds accounts; general: an operating book",
    )

    model_config = ConfigDict(extra="forbid", strict=False)


class LedgerOut(BaseModel):
    id: uuid.UUID
    name: str
    currency: str
    currency_exponent: int
    time_zone: str
    kind: LedgerKind
    created_at: datetime

    @classmethod
    def of(cls, ledger: Ledger) -> LedgerOut:
        return cls(
            id=ledger.id,
            kind=ledger.kind,
            name=ledger.name,
            currency=ledger.currency.code,
            currency_exponent=ledger.currency.exponent,
            time_zone=ledger.time_zone,
            created_at=ledger.created_at,
        )


class LedgerPage(BaseModel):
    items: list[LedgerOut]
    next_cursor: str | None


class AccountCreate(StrictRequest):
    code: str = Field(min_length=1, max_length=MAX_CODE_LENGTH, pattern=NoNulText, examples=["client-1042"])
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NoNulText, examples=["Smith estate"])
    kind: AccountKind = Field(examples=[AccountKind.CLIENT])
    prevent_overdraft: bool | None = Field(
        default=None,
        strict=True,
        description="refuse voluntary debits below zero available (always true in a trust ledger; default by kind)",
    )

    model_config = ConfigDict(extra="forbid", strict=False)


class Balances(BaseModel):
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int
    uncleared: int = Field(description="deposits booked but not yet cleared by the bank, minor units")
    posted: int = Field(description="balance in the account's normal direction, minor units")
    available: int = Field(
        description="posted balance less pending debits against it and uncleared deposits, minor units"
    )
    shortfall: int = Field(description="how far the posted balance is below zero (a trust shortfall), minor units")


class AccountOut(BaseModel):
    id: uuid.UUID
    ledger_id: uuid.UUID
    code: str
    name: str
    kind: AccountKind
    normal_side: NormalSide
    balances: Balances
    status: AccountStatus
    prevent_overdraft: bool
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
                uncleared=account.uncleared_credits,
                posted=account.posted_balance,
                available=account.available_balance,
                shortfall=account.shortfall,
            ),
            status=account.status,
            prevent_overdraft=account.prevent_overdraft,
            version=account.version,
            created_at=account.created_at,
        )


class AccountPage(BaseModel):
    items: list[AccountOut]
    next_cursor: str | None


Amount = Annotated[
    int,
    Field(
        strict=True,
        gt=0,
        le=MAX_AMOUNT_MINOR_UNITS,
        description="integer minor units (cents for USD); no floats, no exponents",
        examples=[125_00],
    ),
]
Description = Annotated[str, Field(default="", max_length=MAX_DESCRIPTION_LENGTH, pattern=NoNulText)]
Metadata = Annotated[
    dict[str, Any], Field(default_factory=dict, description=f"a JSON object of at most {MAX_METADATA_BYTES} bytes")
]
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _iso_date_text(value: object) -> object:
    """Dates only as YYYY-MM-DD: pydantic would otherwise read 0 or "86400" as a Unix time."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        return value
    raise ValueError("a date as YYYY-MM-DD")


def _iso_datetime_text(value: object) -> object:
    """Moments only as ISO 8601 with an offset, never a bare number."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATETIME.match(value):
        return value
    raise ValueError("a moment as ISO 8601 with an offset, e.g. 2026-11-20T17:00:00Z")


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime_text)]

EffectiveDate = Annotated[
    IsoDate | None,
    Field(default=None, description="the date the entry takes effect, in the ledger's time zone (default: today)"),
]


class PostingIn(StrictRequest):
    account_id: uuid.UUID
    side: Side
    amount: Amount

    model_config = ConfigDict(extra="forbid", strict=False)


class TransferCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ledger_id": "6f1c2a52-8a0e-4a4e-9d1e-0a6f2b1b9c11",
                    "postings": [
                        {"account_id": "0b9e5c1e-4c43-4b0c-9a55-3a8e3b8d2f01", "side": "debit", "amount": 50000},
                        {"account_id": "3c7d2f4a-1b2c-4d5e-8f90-a1b2c3d4e5f6", "side": "credit", "amount": 50000},
                    ],
                    "description": "retainer received",
                    "metadata": {"matter": "2026-114"},
                }
            ]
        },
    )

    ledger_id: uuid.UUID
    postings: list[PostingIn] = Field(min_length=2, max_length=MAX_POSTINGS_PER_TRANSFER)
    description: Description
    metadata: Metadata
    effective_date: EffectiveDate


class ReversalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH, pattern=NoNulText)


class PostingOut(BaseModel):
    account_id: uuid.UUID
    side: Side
    amount: int
    account_version: int
    balance_after: int = Field(description="the account's posted balance after this posting, in its normal direction")


class TransferOut(BaseModel):
    id: uuid.UUID
    ledger_id: uuid.UUID
    kind: TransferKind
    amount: int
    description: str
    metadata: dict[str, Any]
    effective_date: date
    recorded_at: datetime
    actor: str
    reverses_transfer_id: uuid.UUID | None
    postings: list[PostingOut]

    @classmethod
    def of(cls, transfer: Transfer) -> TransferOut:
        return cls(
            id=transfer.id,
            ledger_id=transfer.ledger_id,
            kind=transfer.kind,
            amount=transfer.amount,
            description=transfer.description,
            metadata=dict(transfer.metadata),
            effective_date=transfer.effective_date,
            recorded_at=transfer.recorded_at,
            actor=transfer.actor,
            reverses_transfer_id=transfer.reverses_transfer_id,
            postings=[
                PostingOut(
                    account_id=posting.account_id,
                    side=posting.side,
                    amount=posting.amount,
                    account_version=posting.account_version,
                    balance_after=posting.balance_after,
                )
                for posting in transfer.postings
            ],
        )


class TrustOperationBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    description: Description
    metadata: Metadata
    effective_date: EffectiveDate

    def to_operation(self, kind: TrustOperationKind, ledger_id: uuid.UUID) -> TrustOperation:
        return self._operation(kind, ledger_id)

    def _operation(
        self,
        kind: TrustOperationKind,
        ledger_id: uuid.UUID,
        *,
        client: uuid.UUID | None = None,
        to_client: uuid.UUID | None = None,
        bank: uuid.UUID | None = None,
    ) -> TrustOperation:
        return TrustOperation(
            kind=kind,
            ledger_id=ledger_id,
            amount=self.amount,
            description=self.description,
            metadata=self.metadata,
            effective_date=self.effective_date,
            client_account_id=client,
            to_client_account_id=to_client,
            bank_account_id=bank,
        )


class ClientMovement(TrustOperationBase):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "client_account_id": "3c7d2f4a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
                    "amount": 250000,
                    "description": "retainer, cheque 1187",
                    "metadata": {"matter": "2026-114"},
                    "effective_date": "2026-11-20",
                }
            ]
        },
    )

    client_account_id: uuid.UUID
    bank_account_id: uuid.UUID | None = Field(default=None, description="default: the ledger's one bank account")

    def to_operation(self, kind: TrustOperationKind, ledger_id: uuid.UUID) -> TrustOperation:
        return self._operation(kind, ledger_id, client=self.client_account_id, bank=self.bank_account_id)


class ClientDeposit(ClientMovement):
    cleared: bool = Field(
        default=True,
        strict=True,
        description="false for funds the bank has not cleared yet (a cheque): booked at once, but not in the "
        "client's available funds until POST /v1/deposits/{id}/clearance",
    )

    def to_operation(self, kind: TrustOperationKind, ledger_id: uuid.UUID) -> TrustOperation:
        return replace(super().to_operation(kind, ledger_id), cleared=self.cleared)


class ClientDisbursement(ClientMovement):
    pass


class EarnedFee(ClientMovement):
    pass


class DepositReturn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Description
    effective_date: EffectiveDate


class ClearanceOut(BaseModel):
    deposit_transfer_id: uuid.UUID
    client_account_id: uuid.UUID
    amount: int
    state: str = Field(description="uncleared, cleared, returned or reversed")
    resolved_at: datetime | None
    resolved_by: str | None

    @classmethod
    def of(cls, hold: ClearanceHold) -> ClearanceOut:
        return cls(
            deposit_transfer_id=hold.deposit_transfer_id,
            client_account_id=hold.client_account_id,
            amount=hold.amount,
            state="uncleared" if hold.outcome is None else hold.outcome.kind.value,
            resolved_at=None if hold.outcome is None else hold.outcome.recorded_at,
            resolved_by=None if hold.outcome is None else hold.outcome.actor,
        )


class PendingTransferCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "debit_account_id": "3c7d2f4a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
                    "credit_account_id": "7a1b2c3d-4e5f-4a6b-9c8d-0e1f2a3b4c5d",
                    "amount": 120000,
                    "description": "escrow for closing",
                    "timeout_seconds": 86400,
                }
            ]
        },
    )

    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: Amount
    description: Description
    metadata: Metadata
    timeout_seconds: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_PENDING_SECONDS,
        description="after this many seconds it can no longer be posted, and the expiry sweep releases it",
    )


class PendingPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount | None = Field(default=None, description="post this much (default: all of it); the rest is released")


class PendingVoid(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PendingOutcomeOut(BaseModel):
    kind: str
    amount_posted: int
    transfer_id: uuid.UUID | None
    recorded_at: datetime
    actor: str


class PendingTransferOut(BaseModel):
    id: uuid.UUID
    ledger_id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    description: str
    metadata: dict[str, Any]
    state: str = Field(description="pending, posted, voided or expired")
    created_at: datetime
    expires_at: datetime | None
    actor: str
    outcome: PendingOutcomeOut | None

    @classmethod
    def of(cls, pending: PendingTransfer) -> PendingTransferOut:
        outcome = pending.outcome
        return cls(
            id=pending.id,
            ledger_id=pending.ledger_id,
            debit_account_id=pending.debit_account_id,
            credit_account_id=pending.credit_account_id,
            amount=pending.amount,
            description=pending.description,
            metadata=dict(pending.metadata),
            state=pending.state.value,
            created_at=pending.created_at,
            expires_at=pending.expires_at,
            actor=pending.actor,
            outcome=None
            if outcome is None
            else PendingOutcomeOut(
                kind=outcome.kind.value,
                amount_posted=outcome.amount_posted,
                transfer_id=outcome.transfer_id,
                recorded_at=outcome.recorded_at,
                actor=outcome.actor,
            ),
        )


class ExpiryOut(BaseModel):
    expired: int = Field(description="pending transfers whose time was up and were released now")


class ClientTransfer(TrustOperationBase):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "from_client_account_id": "3c7d2f4a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
                    "to_client_account_id": "7a1b2c3d-4e5f-4a6b-9c8d-0e1f2a3b4c5d",
                    "amount": 50000,
                    "description": "settlement share",
                }
            ]
        },
    )

    from_client_account_id: uuid.UUID
    to_client_account_id: uuid.UUID

    def to_operation(self, kind: TrustOperationKind, ledger_id: uuid.UUID) -> TrustOperation:
        return self._operation(kind, ledger_id, client=self.from_client_account_id, to_client=self.to_client_account_id)


class FirmFundsMovement(TrustOperationBase):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"amount": 2500, "description": "monthly account fee"}]}
    )

    bank_account_id: uuid.UUID | None = Field(default=None, description="default: the ledger's one bank account")

    def to_operation(self, kind: TrustOperationKind, ledger_id: uuid.UUID) -> TrustOperation:
        return self._operation(kind, ledger_id, bank=self.bank_account_id)


class PointInTimeBalanceOut(BaseModel):
    account_id: uuid.UUID
    effective_on_or_before: date | None
    known_at: datetime | None
    debits: int
    credits: int
    balance: int = Field(description="in the account's normal direction, minor units")

    @classmethod
    def of(cls, balance: PointInTimeBalance) -> PointInTimeBalanceOut:
        return cls(
            account_id=balance.account_id,
            effective_on_or_before=balance.effective_on_or_before,
            known_at=balance.known_at,
            debits=balance.debits,
            credits=balance.credits,
            balance=balance.balance,
        )


class StatementLineOut(BaseModel):
    transfer_id: uuid.UUID
    kind: TransferKind
    description: str
    side: Side
    amount: int
    account_version: int
    running_balance: int
    effective_date: date
    recorded_at: datetime

    @classmethod
    def of(cls, line: StatementLine) -> StatementLineOut:
        return cls(
            transfer_id=line.transfer_id,
            kind=line.kind,
            description=line.description,
            side=line.side,
            amount=line.amount,
            account_version=line.account_version,
            running_balance=line.balance_after,
            effective_date=line.effective_date,
            recorded_at=line.recorded_at,
        )


class StatementPage(BaseModel):
    account_id: uuid.UUID
    items: list[StatementLineOut]
    next_cursor: str | None


class VerificationFindingOut(BaseModel):
    kind: str = Field(description="what does not hold, e.g. chain_hash_mismatch, counter_mismatch, unbalanced_entry")
    detail: str
    account_id: uuid.UUID | None
    account_code: str | None
    transfer_id: uuid.UUID | None = Field(description="the entry where the problem shows")
    account_version: int | None


class VerificationReportOut(BaseModel):
    ledger_id: uuid.UUID
    ok: bool
    accounts_checked: int
    postings_checked: int
    findings: list[VerificationFindingOut]

    @classmethod
    def of(cls, report: VerificationReport) -> VerificationReportOut:
        return cls(
            ledger_id=report.ledger_id,
            ok=report.ok,
            accounts_checked=report.accounts_checked,
            postings_checked=report.postings_checked,
            findings=[
                VerificationFindingOut(
                    kind=finding.kind.value,
                    detail=finding.detail,
                    account_id=finding.account_id,
                    account_code=finding.account_code,
                    transfer_id=finding.transfer_id,
                    account_version=finding.account_version,
                )
                for finding in report.findings
            ],
        )


class SignOffCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"as_of": "2026-10-31"}]})

    as_of: IsoDate = Field(description="the reconciliation date to sign off (a day that has ended)")


class SignOffOut(BaseModel):
    id: uuid.UUID
    ledger_id: uuid.UUID
    as_of: date
    signed_off_at: datetime
    signed_off_by: str
    report: dict[str, Any] = Field(
        description="the reconciliation as it stood when signed off (figures in minor units)"
    )

    @classmethod
    def of(cls, sign_off: ReconciliationSignOff) -> SignOffOut:
        return cls(
            id=sign_off.id,
            ledger_id=sign_off.ledger_id,
            as_of=sign_off.as_of,
            signed_off_at=sign_off.signed_off_at,
            signed_off_by=sign_off.signed_off_by,
            report=dict(sign_off.report),
        )


STATEMENT_EXAMPLE = (
    "period_start,2026-10-01\n"
    "period_end,2026-10-31\n"
    "opening_balance,10000.00\n"
    "closing_balance,12405.00\n"
    "date,amount,reference,description\n"
    "2026-10-02,1250.00,DEP-1001,Deposit slip 1001\n"
    "2026-10-06,1520.00,,Wire from Garcia\n"
    "2026-10-19,-340.00,CHQ-1187,Cheque 1187\n"
    "2026-10-31,-25.00,,Monthly account fee\n"
)


class BankStatementImport(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"csv": STATEMENT_EXAMPLE}]},
    )

    csv: str = Field(
        min_length=1,
        description="the statement as CSV text (UTF-8, in the JSON string): four rows period_start, period_end, "
        "opening_balance, closing_balance (name,value), then the header row date,amount,reference,description and "
        "one row per bank line; dates YYYY-MM-DD, amounts with exactly the currency's fraction digits (1250.00), "
        "positive into the bank, negative out of it. See docs/bank-statements.md.",
    )
    bank_account_id: uuid.UUID | None = Field(default=None, description="default: the ledger's one bank account")


class StatementRematch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})

    bank_account_id: uuid.UUID | None = Field(default=None, description="default: the ledger's one bank account")


class StatementMatchOut(BaseModel):
    transfer_id: uuid.UUID
    kind: MatchKind = Field(description="amount_and_date, reference, or deposit_slip (one of several receipts)")
    matched_at: datetime
    actor: str

    @classmethod
    def of(cls, match: StatementMatch) -> StatementMatchOut:
        return cls(transfer_id=match.transfer_id, kind=match.kind, matched_at=match.matched_at, actor=match.actor)


class BankStatementLineOut(BaseModel):
    id: uuid.UUID
    statement_id: uuid.UUID
    line_number: int = Field(description="the line of the CSV it came from (1-based)")
    date: date
    amount: int = Field(description="minor units: positive into the bank, negative out of it")
    reference: str
    description: str
    matched: bool
    matches: list[StatementMatchOut]

    @classmethod
    def of(cls, line: BankStatementLine) -> BankStatementLineOut:
        return cls(
            id=line.id,
            statement_id=line.statement_id,
            line_number=line.line_number,
            date=line.date,
            amount=line.amount,
            reference=line.reference,
            description=line.description,
            matched=line.matched,
            matches=[StatementMatchOut.of(match) for match in line.matches],
        )


class BankStatementSummaryOut(BaseModel):
    id: uuid.UUID
    ledger_id: uuid.UUID
    bank_account_id: uuid.UUID
    previous_statement_id: uuid.UUID | None
    period_start: date
    period_end: date
    opening_balance: int
    closing_balance: int
    line_count: int
    matched_line_count: int
    unmatched_line_count: int
    imported_at: datetime
    actor: str

    @classmethod
    def of(cls, statement: BankStatement) -> BankStatementSummaryOut:
        return cls(
            id=statement.id,
            ledger_id=statement.ledger_id,
            bank_account_id=statement.bank_account_id,
            previous_statement_id=statement.previous_statement_id,
            period_start=statement.period_start,
            period_end=statement.period_end,
            opening_balance=statement.opening_balance,
            closing_balance=statement.closing_balance,
            line_count=statement.line_count,
            matched_line_count=statement.matched_line_count,
            unmatched_line_count=statement.unmatched_line_count,
            imported_at=statement.imported_at,
            actor=statement.actor,
        )


class BankStatementOut(BankStatementSummaryOut):
    lines: list[BankStatementLineOut]

    @classmethod
    def of(cls, statement: BankStatement) -> BankStatementOut:
        return cls(
            **BankStatementSummaryOut.of(statement).model_dump(),
            lines=[BankStatementLineOut.of(line) for line in statement.lines],
        )


class BankStatementPage(BaseModel):
    items: list[BankStatementSummaryOut]
    next_cursor: str | None


class RematchOut(BaseModel):
    matched_entries: int = Field(description="ledger entries matched to earlier unmatched bank lines now")
    matched_lines: int


class StatementBalanceOut(BaseModel):
    statement_id: uuid.UUID
    period_end: date = Field(description="the bank's cut-off: the closing balance covers every line up to this day")
    closing_balance: int
    first_opening_balance: int = Field(description="the opening balance of the bank account's first statement")
    first_period_start: date

    @classmethod
    def of(cls, balance: StatementBalance) -> StatementBalanceOut:
        return cls(
            statement_id=balance.statement_id,
            period_end=balance.period_end,
            closing_balance=balance.closing_balance,
            first_opening_balance=balance.first_opening_balance,
            first_period_start=balance.first_period_start,
        )


class UnmatchedEntryOut(BaseModel):
    transfer_id: uuid.UUID
    kind: TransferKind
    effective_date: date
    amount: int = Field(description="minor units from the bank's view: a receipt positive, a payment negative")
    reference: str | None
    description: str
    recorded_at: datetime
    matched_line_id: uuid.UUID | None = Field(
        description="set when the entry is matched to a line after the statement's cut-off, or to a deposit slip "
        "with a receipt booked after as_of"
    )

    @classmethod
    def of(cls, entry: BankEntry) -> UnmatchedEntryOut:
        return cls(
            transfer_id=entry.transfer_id,
            kind=entry.kind,
            effective_date=entry.effective_date,
            amount=entry.amount,
            reference=entry.reference,
            description=entry.description,
            recorded_at=entry.recorded_at,
            matched_line_id=entry.matched_line_id,
        )


class UnmatchedOut(BaseModel):
    ledger_id: uuid.UUID
    bank_account_id: uuid.UUID
    as_of: date
    statement: StatementBalanceOut | None = Field(
        description="the latest statement ending on or before as_of (null: none yet)"
    )
    bank_lines: list[BankStatementLineOut] = Field(
        description="bank lines up to the statement's cut-off with no entry in the books as of as_of"
    )
    bank_lines_total: int
    ledger_entries: list[UnmatchedEntryOut] = Field(
        description="bank-account entries effective on or before as_of that the statement does not show: deposits "
        "in transit (positive), outstanding payments (negative)"
    )
    ledger_entries_total: int

    @classmethod
    def of(cls, items: UnmatchedItems) -> UnmatchedOut:
        return cls(
            ledger_id=items.ledger_id,
            bank_account_id=items.bank_account_id,
            as_of=items.as_of,
            statement=None if items.statement is None else StatementBalanceOut.of(items.statement),
            bank_lines=[BankStatementLineOut.of(line) for line in items.bank_lines],
            bank_lines_total=items.bank_lines_total,
            ledger_entries=[UnmatchedEntryOut.of(entry) for entry in items.ledger_entries],
            ledger_entries_total=items.ledger_entries_total,
        )


class BatchTransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    postings: list[PostingIn] = Field(min_length=2, max_length=MAX_POSTINGS_PER_TRANSFER)
    description: Description
    metadata: Metadata
    effective_date: EffectiveDate


class TransferBatchCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "mode": "independent",
                    "transfers": [
                        {
                            "postings": [
                                {"account_id": "0b9e5c1e-4c43-4b0c-9a55-3a8e3b8d2f01", "side": "debit", "amount": 500},
                                {"account_id": "3c7d2f4a-1b2c-4d5e-8f90-a1b2c3d4e5f6", "side": "credit", "amount": 500},
                            ],
                            "description": "payout 1",
                        }
                    ],
                }
            ]
        },
    )

    mode: BatchMode = Field(
        description="atomic: all transfers or none (a refusal answers 422 naming the item); "
        "independent: each transfer posted or refused on its own, with a result per item"
    )
    transfers: list[BatchTransferIn] = Field(min_length=1, max_length=MAX_BATCH_TRANSFERS)


class BatchItemOut(BaseModel):
    index: int
    status: str = Field(description="posted or refused")
    transfer: TransferOut | None = None
    code: str | None = Field(default=None, description="why it was refused")
    detail: str | None = None


class TransferBatchOut(BaseModel):
    mode: BatchMode
    posted: int
    refused: int
    items: list[BatchItemOut]

    @classmethod
    def of(cls, result: BatchResult) -> TransferBatchOut:
        return cls(
            mode=result.mode,
            posted=result.posted,
            refused=result.refused,
            items=[
                BatchItemOut(
                    index=item.index,
                    status="posted" if item.transfer is not None else "refused",
                    transfer=None if item.transfer is None else TransferOut.of(item.transfer),
                    code=item.error_code,
                    detail=item.error_message,
                )
                for item in result.items
            ],
        )
