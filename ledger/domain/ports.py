"""Ports: what the domain needs from the outside world. Adapters live in ``ledger.infrastructure``."""

from __future__ import annotations

import abc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from ledger.domain.idempotency import IdempotencyRecord
from ledger.domain.model import Account, AccountKind, Ledger
from ledger.domain.transfers import Posting, StatementLine, Transfer

if TYPE_CHECKING:
    from ledger.domain.api_keys import ApiKey
    from ledger.domain.bank_statements import BankEntry, BankStatement, BankStatementLine, StatementMatch
    from ledger.domain.pending_transfers import ClearanceHold, HoldOutcome, PendingOutcome, PendingTransfer
    from ledger.domain.reconciliation import ReconciliationSignOff


class LedgerRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, ledger: Ledger) -> None: ...

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger | None:
        """None for an unknown id and for another tenant's id alike."""

    @abc.abstractmethod
    def list(self, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> Sequence[Ledger]:
        """Ledgers of one tenant in ascending id order, starting after the ``after`` cursor."""

    @abc.abstractmethod
    def list_all(self, tenant_id: uuid.UUID | None, *, after: uuid.UUID | None, limit: int) -> Sequence[Ledger]:
        """Like ``list``, or across every tenant when ``tenant_id`` is None (operators' commands only)."""

    @abc.abstractmethod
    def find_any_tenant(self, ledger_id: uuid.UUID) -> Ledger | None:
        """A ledger by id whatever its tenant (operators' commands only; the API is always tenant-scoped)."""


class AccountRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, account: Account) -> None:
        """Raises ``Conflict`` (code ``account_code_taken``) when the ledger already has an account with that code."""

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Account | None: ...

    @abc.abstractmethod
    def list(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
    ) -> Sequence[Account]: ...

    @abc.abstractmethod
    def lock(self, tenant_id: uuid.UUID, account_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Account]:
        """Locks the accounts that exist (for this tenant) in ascending id order until the unit of work ends, and
        returns their current state. Ids of missing or foreign accounts are simply absent."""

    @abc.abstractmethod
    def save(self, accounts: Sequence[Account]) -> None:
        """Writes counters, version and status of locked accounts."""

    @abc.abstractmethod
    def of_kind(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, kind: AccountKind) -> Sequence[Account]: ...


class TransferRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, transfer: Transfer) -> None:
        """Raises ``LedgerRuleViolation`` (``transfer_already_reversed``) for a second reversal of one transfer."""

    def add_many(self, transfers: Sequence[Transfer]) -> None:
        """Several plain transfers (no reversals) at once; adapters write them with fewer statements."""
        for transfer in transfers:
            self.add(transfer)

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, transfer_id: uuid.UUID) -> Transfer | None: ...

    @abc.abstractmethod
    def reversal_of(self, tenant_id: uuid.UUID, transfer_id: uuid.UUID) -> uuid.UUID | None: ...

    @abc.abstractmethod
    def statement(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, *, after_version: int, limit: int
    ) -> Sequence[StatementLine]:
        """Postings of one account in the order they were recorded, starting after ``after_version``."""

    @abc.abstractmethod
    def stream_statement(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Iterator[StatementLine]:
        """Every posting of one account in version order, streamed (a server-side cursor, fetched in batches), never
        loaded at once: iterate it inside the unit of work, whose snapshot it reads."""

    @abc.abstractmethod
    def totals_as_of(
        self,
        tenant_id: uuid.UUID,
        account_id: uuid.UUID,
        *,
        effective_on_or_before: date | None,
        known_at: datetime | None,
    ) -> tuple[int, int]:
        """(debits, credits) of the postings effective on or before a date and recorded no later than a moment."""

    @abc.abstractmethod
    def count_postings(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> int: ...

    @abc.abstractmethod
    def ledger_totals_as_of(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date
    ) -> dict[uuid.UUID, tuple[int, int]]:
        """(debits, credits) per account of the ledger from the postings effective on or before ``as_of``; accounts
        without such postings are absent."""

    @abc.abstractmethod
    def account_lines(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, *, effective_to: date
    ) -> Sequence[StatementLine]:
        """Every posting of the account effective on or before ``effective_to``, by effective date, then in the
        order they were recorded."""

    @abc.abstractmethod
    def counterpart_accounts(
        self, tenant_id: uuid.UUID, transfer_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        """The accounts each transfer posts to."""

    @abc.abstractmethod
    def postings_in_chain_order(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Iterator[tuple[Transfer, Posting]]:
        """Every posting of the ledger with its entry's header (``Transfer.postings`` left empty), by account id
        then account version: streamed, never loaded at once."""

    @abc.abstractmethod
    def unbalanced_transfers(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Sequence[tuple[uuid.UUID, int]]:
        """(transfer id, debits - credits) of every entry of the ledger whose postings do not sum to zero."""


class PendingTransferRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, pending: PendingTransfer) -> None: ...

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, pending_id: uuid.UUID) -> PendingTransfer | None:
        """With its outcome, if it has one."""

    @abc.abstractmethod
    def add_outcome(self, outcome: PendingOutcome) -> None:
        """Raises ``LedgerRuleViolation`` (``pending_transfer_resolved``) when the transfer already has one."""

    @abc.abstractmethod
    def due_to_expire(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, now: datetime, *, limit: int
    ) -> Sequence[PendingTransfer]:
        """Open pending transfers of the ledger whose expiry has passed, oldest expiry first."""

    @abc.abstractmethod
    def open_amounts(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> dict[uuid.UUID, tuple[int, int]]:
        """(pending debits, pending credits) per account from the open pending transfers: what the account
        counters must say."""


class ClearanceHoldRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, hold: ClearanceHold) -> None: ...

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, deposit_transfer_id: uuid.UUID) -> ClearanceHold | None: ...

    @abc.abstractmethod
    def add_outcome(self, outcome: HoldOutcome) -> None:
        """Raises ``LedgerRuleViolation`` when the hold already has one."""

    @abc.abstractmethod
    def open_amounts(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> dict[uuid.UUID, int]:
        """Uncleared amount per client account from the open holds."""


class PeriodLockRepository(abc.ABC):
    @abc.abstractmethod
    def locked_through(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> date | None:
        """The newest signed-off reconciliation date of the ledger (entries effective on or before it are refused).
        Holds the ledger's period lock in shared mode until the unit of work ends, so a sign-off cannot slip in
        between this check and the write."""

    @abc.abstractmethod
    def lock_for_sign_off(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> None:
        """Takes the ledger's period lock exclusively until the unit of work ends: waits for writes in flight."""

    @abc.abstractmethod
    def add_sign_off(self, sign_off: ReconciliationSignOff) -> None:
        """Raises ``LedgerRuleViolation`` (``reconciliation_already_signed_off``) for a second one on one date."""

    @abc.abstractmethod
    def sign_offs(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Sequence[ReconciliationSignOff]:
        """Oldest first."""


class IdempotencyRepository(abc.ABC):
    @abc.abstractmethod
    def try_claim(self, tenant_id: uuid.UUID, key: str) -> bool:
        """Claims the key for this unit of work; False at once when another unit of work holds it."""

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, key: str) -> IdempotencyRecord | None: ...

    @abc.abstractmethod
    def add(self, record: IdempotencyRecord) -> None: ...

    def try_claim_many(self, keys: Sequence[tuple[uuid.UUID, str]]) -> set[tuple[uuid.UUID, str]]:
        """Claims many (tenant, key) pairs at once; returns those claimed (the others are in flight elsewhere)."""
        return {(tenant_id, key) for tenant_id, key in keys if self.try_claim(tenant_id, key)}

    def get_many(self, keys: Sequence[tuple[uuid.UUID, str]]) -> dict[tuple[uuid.UUID, str], IdempotencyRecord]:
        found = ((tenant_key, self.get(*tenant_key)) for tenant_key in keys)
        return {tenant_key: record for tenant_key, record in found if record is not None}

    def add_many(self, records: Sequence[IdempotencyRecord]) -> None:
        for record in records:
            self.add(record)


class ApiKeyRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    def get(self, key_id: str) -> ApiKey | None: ...

    @abc.abstractmethod
    def list(self, tenant_id: uuid.UUID | None) -> Sequence[ApiKey]:
        """Keys of one tenant (or of all), oldest first."""

    @abc.abstractmethod
    def save(self, key: ApiKey) -> None:
        """Records a revocation: the only change a key ever sees."""


class UnitOfWork(abc.ABC):
    """One transaction per use case. Leaving the block without ``commit()`` rolls everything back."""

    ledgers: LedgerRepository
    accounts: AccountRepository
    transfers: TransferRepository
    idempotency: IdempotencyRepository
    api_keys: ApiKeyRepository
    pending_transfers: PendingTransferRepository
    clearance_holds: ClearanceHoldRepository
    period_locks: PeriodLockRepository
    bank_statements: BankStatementRepository

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.rollback()

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def now(self) -> datetime:
        """The store's clock, read after the locks are taken: recorded times follow the order of the writes."""

    @abc.abstractmethod
    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, snapshot: bool = False) -> UnitOfWork:
        """``snapshot=True``: a read-only unit of work that sees one consistent state of the store throughout."""


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What a successful start-up check learnt about the store."""

    server_version: str
    schema_revision: str | None
    details: dict[str, object]


class StoreHealth(Protocol):
    """Start-up and readiness checks of whatever store backs the unit of work."""

    def startup_check(self) -> StoreStatus:
        """Bounded retries within a deadline; raises ``StartupCheckFailed`` naming the cause."""

    def is_ready(self) -> bool:
        """One quick probe, no retries: does the store answer right now?"""


class BankStatementRepository(abc.ABC):
    """Bank statements with their lines, and the matches between lines and ledger entries. Statements, lines and
    matches are history: inserted, never updated or deleted."""

    @abc.abstractmethod
    def add(self, statement: BankStatement) -> None:
        """Writes the statement and its lines (their ``matches`` are ignored: see ``add_matches``). The caller holds
        the bank account's row lock, so the statement it continues is still the latest."""

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, statement_id: uuid.UUID) -> BankStatement | None:
        """With its lines in line-number order, each with its matches."""

    @abc.abstractmethod
    def latest(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> BankStatement | None:
        """The statement of the bank account with the latest period (without lines)."""

    @abc.abstractmethod
    def first(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> BankStatement | None:
        """The statement of the bank account with the earliest period (without lines)."""

    @abc.abstractmethod
    def latest_ending_on_or_before(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, day: date
    ) -> BankStatement | None:
        """The statement with the latest ``period_end`` on or before ``day`` (without lines)."""

    @abc.abstractmethod
    def list(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: tuple[date, uuid.UUID] | None, limit: int
    ) -> Sequence[BankStatement]:
        """Statements of a ledger (without lines) ordered by (period start, id), after the ``after`` position."""

    @abc.abstractmethod
    def add_matches(self, matches: Sequence[StatementMatch]) -> None:
        """Raises ``LedgerRuleViolation`` (``entry_already_matched``) when an entry is already matched on its bank
        account."""

    @abc.abstractmethod
    def unmatched_lines(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, dated_on_or_before: date | None
    ) -> Sequence[BankStatementLine]:
        """Lines of the bank account's statements without any match, dated on or before a day (None: all)."""

    @abc.abstractmethod
    def unmatched_entries(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, effective_from: date | None, effective_to: date
    ) -> Sequence[BankEntry]:
        """Entries posted to the bank account, effective in the range (both ends included), never matched."""

    @abc.abstractmethod
    def entries_not_matched_by(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, effective_to: date, line_dated_on_or_before: date
    ) -> Sequence[BankEntry]:
        """Entries on the bank account effective on or before ``effective_to`` that are not matched to a line dated
        on or before ``line_dated_on_or_before``: never matched (``matched_line_id`` None) or matched to a later
        line (``matched_line_id`` set)."""

    @abc.abstractmethod
    def lines_matched_to_entries_after(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, dated_on_or_before: date, effective_after: date
    ) -> Sequence[tuple[BankStatementLine, Sequence[BankEntry]]]:
        """Lines dated on or before a day that are matched to at least one entry effective after ``effective_after``,
        each with every entry it is matched to (``matched_line_id`` set)."""
