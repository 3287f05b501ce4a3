"""In-memory repositories and unit of work: product code, held to the same contract suite as PostgreSQL.

A unit of work holds the store's lock from enter to exit (so use cases are serializable, like a transaction
holding its row locks), stages its writes, and applies them only on commit: a rollback leaves no trace.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from ledger.domain.api_keys import ApiKey
from ledger.domain.bank_statements import (
    BankEntry,
    BankStatement,
    BankStatementLine,
    StatementMatch,
    entry_reference,
)
from ledger.domain.errors import Conflict
from ledger.domain.idempotency import IdempotencyRecord
from ledger.domain.model import Account, AccountKind, Ledger
from ledger.domain.pending_transfers import ClearanceHold, HoldOutcome, PendingOutcome, PendingTransfer
from ledger.domain.ports import (
    AccountRepository,
    ApiKeyRepository,
    BankStatementRepository,
    ClearanceHoldRepository,
    IdempotencyRepository,
    LedgerRepository,
    PendingTransferRepository,
    PeriodLockRepository,
    StoreStatus,
    TransferRepository,
    UnitOfWork,
)
from ledger.domain.reconciliation import ReconciliationSignOff
from ledger.domain.transfers import LedgerRuleViolation, Posting, Side, StatementLine, Transfer

K = TypeVar("K")
# Inside a repository class, `list` names its own method.
_List = list
V = TypeVar("V")


class InMemoryStore:
    """The committed state. One per container (a thread-safe singleton), never module-level."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ledgers: dict[uuid.UUID, Ledger] = {}
        self.accounts: dict[uuid.UUID, Account] = {}
        self.transfers: dict[uuid.UUID, Transfer] = {}
        self.reversals: dict[uuid.UUID, uuid.UUID] = {}
        self.statements: dict[uuid.UUID, list[StatementLine]] = {}
        self.idempotency: dict[tuple[uuid.UUID, str], IdempotencyRecord] = {}
        self.api_keys: dict[str, ApiKey] = {}
        self.pending_transfers: dict[uuid.UUID, PendingTransfer] = {}
        self.pending_outcomes: dict[uuid.UUID, PendingOutcome] = {}
        self.clearance_holds: dict[uuid.UUID, ClearanceHold] = {}
        self.hold_outcomes: dict[uuid.UUID, HoldOutcome] = {}
        self.sign_offs: dict[uuid.UUID, ReconciliationSignOff] = {}
        self.bank_statements: dict[uuid.UUID, BankStatement] = {}
        self.bank_statement_lines: dict[uuid.UUID, BankStatementLine] = {}
        self.statement_matches: dict[tuple[uuid.UUID, uuid.UUID], StatementMatch] = {}


class _Staged(Protocol):
    def apply(self) -> None: ...

    def discard(self) -> None: ...


class _StagedTable(Generic[K, V]):
    def __init__(self, committed: dict[K, V]) -> None:
        self.committed = committed
        self.staged: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        if key in self.staged:
            return self.staged[key]
        return self.committed.get(key)

    def values(self) -> list[V]:
        merged = dict(self.committed)
        merged.update(self.staged)
        return list(merged.values())

    def put(self, key: K, value: V) -> None:
        self.staged[key] = value

    def apply(self) -> None:
        self.committed.update(self.staged)
        self.staged.clear()

    def discard(self) -> None:
        self.staged.clear()


class _StagedLists(Generic[K, V]):
    """Append-only lists per key (an account's statement), with appends staged until commit."""

    def __init__(self, committed: dict[K, list[V]]) -> None:
        self.committed = committed
        self.staged: dict[K, list[V]] = {}

    def items(self, key: K) -> list[V]:
        return self.committed.get(key, []) + self.staged.get(key, [])

    def append(self, key: K, value: V) -> None:
        self.staged.setdefault(key, []).append(value)

    def apply(self) -> None:
        for key, values in self.staged.items():
            self.committed.setdefault(key, []).extend(values)
        self.staged.clear()

    def discard(self) -> None:
        self.staged.clear()


class InMemoryLedgerRepository(LedgerRepository):
    def __init__(self, table: _StagedTable[uuid.UUID, Ledger]) -> None:
        self._table = table

    def add(self, ledger: Ledger) -> None:
        if self._table.get(ledger.id) is not None:
            raise Conflict("ledger id already exists", code="ledger_exists")
        self._table.put(ledger.id, ledger)

    def get(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger | None:
        ledger = self._table.get(ledger_id)
        return ledger if ledger is not None and ledger.tenant_id == tenant_id else None

    def list(self, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> Sequence[Ledger]:
        chosen = [
            ledger
            for ledger in self._table.values()
            if ledger.tenant_id == tenant_id and (after is None or ledger.id > after)
        ]
        return sorted(chosen, key=lambda ledger: ledger.id)[:limit]

    def list_all(self, tenant_id: uuid.UUID | None, *, after: uuid.UUID | None, limit: int) -> Sequence[Ledger]:
        if tenant_id is not None:
            return self.list(tenant_id, after=after, limit=limit)
        chosen = [ledger for ledger in self._table.values() if after is None or ledger.id > after]
        return sorted(chosen, key=lambda ledger: ledger.id)[:limit]

    def find_any_tenant(self, ledger_id: uuid.UUID) -> Ledger | None:
        return self._table.get(ledger_id)


class InMemoryAccountRepository(AccountRepository):
    def __init__(self, table: _StagedTable[uuid.UUID, Account]) -> None:
        self._table = table

    def add(self, account: Account) -> None:
        if any(
            existing.ledger_id == account.ledger_id and existing.code == account.code
            for existing in self._table.values()
        ):
            raise Conflict(f"the ledger already has an account with code {account.code!r}", code="account_code_taken")
        self._table.put(account.id, account)

    def get(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Account | None:
        account = self._table.get(account_id)
        return account if account is not None and account.tenant_id == tenant_id else None

    def list(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
    ) -> Sequence[Account]:
        chosen = [
            account
            for account in self._table.values()
            if account.tenant_id == tenant_id
            and account.ledger_id == ledger_id
            and (after is None or account.id > after)
        ]
        return sorted(chosen, key=lambda account: account.id)[:limit]

    def lock(self, tenant_id: uuid.UUID, account_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Account]:
        # The unit of work already holds the store's lock: every account is as good as locked.
        found = {}
        for account_id in sorted(set(account_ids)):
            account = self.get(tenant_id, account_id)
            if account is not None:
                found[account_id] = account
        return found

    def save(self, accounts: Sequence[Account]) -> None:
        for account in accounts:
            self._table.put(account.id, account)

    def of_kind(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, kind: AccountKind) -> Sequence[Account]:
        chosen = [
            account
            for account in self._table.values()
            if account.tenant_id == tenant_id and account.ledger_id == ledger_id and account.kind is kind
        ]
        return sorted(chosen, key=lambda account: account.id)


class InMemoryTransferRepository(TransferRepository):
    def __init__(
        self,
        transfers: _StagedTable[uuid.UUID, Transfer],
        reversals: _StagedTable[uuid.UUID, uuid.UUID],
        statements: _StagedLists[uuid.UUID, StatementLine],
    ) -> None:
        self._transfers = transfers
        self._reversals = reversals
        self._statements = statements

    def add(self, transfer: Transfer) -> None:
        if transfer.reverses_transfer_id is not None:
            if self._reversals.get(transfer.reverses_transfer_id) is not None:
                raise LedgerRuleViolation("the transfer has already been reversed", code="transfer_already_reversed")
            self._reversals.put(transfer.reverses_transfer_id, transfer.id)
        self._transfers.put(transfer.id, transfer)
        for posting in transfer.postings:
            self._statements.append(
                posting.account_id,
                StatementLine(
                    transfer_id=transfer.id,
                    kind=transfer.kind,
                    description=transfer.description,
                    side=posting.side,
                    amount=posting.amount,
                    account_version=posting.account_version,
                    balance_after=posting.balance_after,
                    effective_date=transfer.effective_date,
                    recorded_at=transfer.recorded_at,
                ),
            )

    def get(self, tenant_id: uuid.UUID, transfer_id: uuid.UUID) -> Transfer | None:
        transfer = self._transfers.get(transfer_id)
        return transfer if transfer is not None and transfer.tenant_id == tenant_id else None

    def reversal_of(self, tenant_id: uuid.UUID, transfer_id: uuid.UUID) -> uuid.UUID | None:
        if self.get(tenant_id, transfer_id) is None:
            return None
        return self._reversals.get(transfer_id)

    def statement(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, *, after_version: int, limit: int
    ) -> Sequence[StatementLine]:
        lines = self._lines(tenant_id, account_id)
        return [line for line in lines if line.account_version > after_version][:limit]

    def stream_statement(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Iterator[StatementLine]:
        # The unit of work holds the store's lock throughout: the lines cannot change while they are read.
        yield from self._lines(tenant_id, account_id)

    def totals_as_of(
        self,
        tenant_id: uuid.UUID,
        account_id: uuid.UUID,
        *,
        effective_on_or_before: date | None,
        known_at: datetime | None,
    ) -> tuple[int, int]:
        debits = credits = 0
        for line in self._lines(tenant_id, account_id):
            if effective_on_or_before is not None and line.effective_date > effective_on_or_before:
                continue
            if known_at is not None and line.recorded_at > known_at:
                continue
            if line.side is Side.DEBIT:
                debits += line.amount
            else:
                credits += line.amount
        return debits, credits

    def ledger_totals_as_of(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date
    ) -> dict[uuid.UUID, tuple[int, int]]:
        totals: dict[uuid.UUID, tuple[int, int]] = {}
        for transfer in self._ledger_transfers(tenant_id, ledger_id):
            if transfer.effective_date > as_of:
                continue
            for posting in transfer.postings:
                debits, credits = totals.get(posting.account_id, (0, 0))
                if posting.side is Side.DEBIT:
                    debits += posting.amount
                else:
                    credits += posting.amount
                totals[posting.account_id] = (debits, credits)
        return totals

    def account_lines(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, *, effective_to: date
    ) -> Sequence[StatementLine]:
        lines = [line for line in self._lines(tenant_id, account_id) if line.effective_date <= effective_to]
        return sorted(lines, key=lambda line: (line.effective_date, line.account_version))

    def counterpart_accounts(
        self, tenant_id: uuid.UUID, transfer_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        found: dict[uuid.UUID, list[uuid.UUID]] = {}
        for transfer_id in transfer_ids:
            transfer = self.get(tenant_id, transfer_id)
            if transfer is not None:
                found[transfer_id] = [posting.account_id for posting in transfer.postings]
        return found

    def count_postings(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> int:
        return sum(len(transfer.postings) for transfer in self._ledger_transfers(tenant_id, ledger_id))

    def postings_in_chain_order(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Iterator[tuple[Transfer, Posting]]:
        pairs = [
            (replace(transfer, postings=()), posting)
            for transfer in self._ledger_transfers(tenant_id, ledger_id)
            for posting in transfer.postings
        ]
        pairs.sort(key=lambda pair: (pair[1].account_id, pair[1].account_version))
        return iter(pairs)

    def unbalanced_transfers(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Sequence[tuple[uuid.UUID, int]]:
        found = []
        for transfer in self._ledger_transfers(tenant_id, ledger_id):
            difference = sum(p.amount if p.side is Side.DEBIT else -p.amount for p in transfer.postings)
            if difference:
                found.append((transfer.id, difference))
        return sorted(found)

    def _ledger_transfers(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> list[Transfer]:
        return [
            transfer
            for transfer in self._transfers.values()
            if transfer.tenant_id == tenant_id and transfer.ledger_id == ledger_id
        ]

    def _lines(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> list[StatementLine]:
        lines = self._statements.items(account_id)
        if lines and self.get(tenant_id, lines[0].transfer_id) is None:
            return []
        return lines


class InMemoryPendingTransferRepository(PendingTransferRepository):
    def __init__(
        self,
        pending: _StagedTable[uuid.UUID, PendingTransfer],
        outcomes: _StagedTable[uuid.UUID, PendingOutcome],
    ) -> None:
        self._pending = pending
        self._outcomes = outcomes

    def add(self, pending: PendingTransfer) -> None:
        if self._pending.get(pending.id) is not None:
            raise Conflict("pending transfer id already exists", code="pending_transfer_exists")
        self._pending.put(pending.id, replace(pending, outcome=None))

    def get(self, tenant_id: uuid.UUID, pending_id: uuid.UUID) -> PendingTransfer | None:
        pending = self._pending.get(pending_id)
        if pending is None or pending.tenant_id != tenant_id:
            return None
        return replace(pending, outcome=self._outcomes.get(pending_id))

    def add_outcome(self, outcome: PendingOutcome) -> None:
        if self._outcomes.get(outcome.pending_transfer_id) is not None:
            raise LedgerRuleViolation("the pending transfer is already resolved", code="pending_transfer_resolved")
        self._outcomes.put(outcome.pending_transfer_id, outcome)

    def due_to_expire(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, now: datetime, *, limit: int
    ) -> Sequence[PendingTransfer]:
        due = [
            pending
            for pending in self._ledger_pending(tenant_id, ledger_id)
            if pending.outcome is None and pending.expires_at is not None and pending.expires_at <= now
        ]
        return sorted(due, key=lambda pending: (pending.expires_at, pending.id))[:limit]

    def open_amounts(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> dict[uuid.UUID, tuple[int, int]]:
        amounts: dict[uuid.UUID, tuple[int, int]] = {}
        for pending in self._ledger_pending(tenant_id, ledger_id):
            if pending.outcome is not None:
                continue
            debits, credits = amounts.get(pending.debit_account_id, (0, 0))
            amounts[pending.debit_account_id] = (debits + pending.amount, credits)
            debits, credits = amounts.get(pending.credit_account_id, (0, 0))
            amounts[pending.credit_account_id] = (debits, credits + pending.amount)
        return amounts

    def _ledger_pending(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> list[PendingTransfer]:
        return [
            replace(pending, outcome=self._outcomes.get(pending.id))
            for pending in self._pending.values()
            if pending.tenant_id == tenant_id and pending.ledger_id == ledger_id
        ]


class InMemoryClearanceHoldRepository(ClearanceHoldRepository):
    def __init__(
        self, holds: _StagedTable[uuid.UUID, ClearanceHold], outcomes: _StagedTable[uuid.UUID, HoldOutcome]
    ) -> None:
        self._holds = holds
        self._outcomes = outcomes

    def add(self, hold: ClearanceHold) -> None:
        self._holds.put(hold.deposit_transfer_id, replace(hold, outcome=None))

    def get(self, tenant_id: uuid.UUID, deposit_transfer_id: uuid.UUID) -> ClearanceHold | None:
        hold = self._holds.get(deposit_transfer_id)
        if hold is None or hold.tenant_id != tenant_id:
            return None
        return replace(hold, outcome=self._outcomes.get(deposit_transfer_id))

    def add_outcome(self, outcome: HoldOutcome) -> None:
        if self._outcomes.get(outcome.deposit_transfer_id) is not None:
            raise LedgerRuleViolation("the deposit's hold is already resolved", code="deposit_hold_resolved")
        self._outcomes.put(outcome.deposit_transfer_id, outcome)

    def open_amounts(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> dict[uuid.UUID, int]:
        amounts: dict[uuid.UUID, int] = {}
        for hold in self._holds.values():
            if hold.tenant_id != tenant_id or hold.ledger_id != ledger_id:
                continue
            if self._outcomes.get(hold.deposit_transfer_id) is None:
                amounts[hold.client_account_id] = amounts.get(hold.client_account_id, 0) + hold.amount
        return amounts


class InMemoryPeriodLockRepository(PeriodLockRepository):
    def __init__(self, sign_offs: _StagedTable[uuid.UUID, ReconciliationSignOff]) -> None:
        self._sign_offs = sign_offs

    def locked_through(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> date | None:
        # The unit of work holds the store's lock: no sign-off can interleave.
        dates = [sign_off.as_of for sign_off in self.sign_offs(tenant_id, ledger_id)]
        return max(dates) if dates else None

    def lock_for_sign_off(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> None:
        return None

    def add_sign_off(self, sign_off: ReconciliationSignOff) -> None:
        if any(existing.as_of == sign_off.as_of for existing in self.sign_offs(sign_off.tenant_id, sign_off.ledger_id)):
            raise LedgerRuleViolation("this date is already signed off", code="reconciliation_already_signed_off")
        self._sign_offs.put(sign_off.id, sign_off)

    def sign_offs(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Sequence[ReconciliationSignOff]:
        chosen = [
            sign_off
            for sign_off in self._sign_offs.values()
            if sign_off.tenant_id == tenant_id and sign_off.ledger_id == ledger_id
        ]
        return sorted(chosen, key=lambda sign_off: sign_off.as_of)


class InMemoryIdempotencyRepository(IdempotencyRepository):
    def __init__(self, table: _StagedTable[tuple[uuid.UUID, str], IdempotencyRecord]) -> None:
        self._table = table

    def try_claim(self, tenant_id: uuid.UUID, key: str) -> bool:
        # Units of work are serialized by the store's lock, so a key is never seen in flight here.
        return True

    def get(self, tenant_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
        return self._table.get((tenant_id, key))

    def add(self, record: IdempotencyRecord) -> None:
        if self._table.get((record.tenant_id, record.key)) is not None:
            raise Conflict("the Idempotency-Key is already recorded", code="idempotency_key_in_flight")
        self._table.put((record.tenant_id, record.key), record)


class InMemoryApiKeyRepository(ApiKeyRepository):
    def __init__(self, table: _StagedTable[str, ApiKey]) -> None:
        self._table = table

    def add(self, key: ApiKey) -> None:
        if self._table.get(key.id) is not None:
            raise Conflict("API key id already exists", code="api_key_exists")
        self._table.put(key.id, key)

    def get(self, key_id: str) -> ApiKey | None:
        return self._table.get(key_id)

    def list(self, tenant_id: uuid.UUID | None) -> Sequence[ApiKey]:
        chosen = [key for key in self._table.values() if tenant_id is None or key.tenant_id == tenant_id]
        return sorted(chosen, key=lambda key: (key.created_at, key.id))

    def save(self, key: ApiKey) -> None:
        self._table.put(key.id, key)


class InMemoryUnitOfWork(UnitOfWork):
    def __init__(
        self, store: InMemoryStore, clock: Callable[[], datetime] | None = None, *, snapshot: bool = False
    ) -> None:
        # Every in-memory unit of work holds the store's lock throughout, so each one already reads one snapshot.
        del snapshot
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._staged: list[_Staged] | None = None
        self.committed = False

    def __enter__(self) -> Self:
        self._store.lock.acquire()
        ledgers = _StagedTable(self._store.ledgers)
        accounts = _StagedTable(self._store.accounts)
        transfers = _StagedTable(self._store.transfers)
        reversals = _StagedTable(self._store.reversals)
        statements = _StagedLists(self._store.statements)
        idempotency = _StagedTable(self._store.idempotency)
        api_keys = _StagedTable(self._store.api_keys)
        pending = _StagedTable(self._store.pending_transfers)
        pending_outcomes = _StagedTable(self._store.pending_outcomes)
        holds = _StagedTable(self._store.clearance_holds)
        hold_outcomes = _StagedTable(self._store.hold_outcomes)
        sign_offs = _StagedTable(self._store.sign_offs)
        bank_statements = _StagedTable(self._store.bank_statements)
        bank_statement_lines = _StagedTable(self._store.bank_statement_lines)
        statement_matches = _StagedTable(self._store.statement_matches)
        self._staged = [
            ledgers,
            accounts,
            transfers,
            reversals,
            statements,
            idempotency,
            api_keys,
            pending,
            pending_outcomes,
            holds,
            hold_outcomes,
            sign_offs,
            bank_statements,
            bank_statement_lines,
            statement_matches,
        ]
        self.ledgers = InMemoryLedgerRepository(ledgers)
        self.accounts = InMemoryAccountRepository(accounts)
        self.transfers = InMemoryTransferRepository(transfers, reversals, statements)
        self.idempotency = InMemoryIdempotencyRepository(idempotency)
        self.api_keys = InMemoryApiKeyRepository(api_keys)
        self.pending_transfers = InMemoryPendingTransferRepository(pending, pending_outcomes)
        self.clearance_holds = InMemoryClearanceHoldRepository(holds, hold_outcomes)
        self.period_locks = InMemoryPeriodLockRepository(sign_offs)
        self.bank_statements = InMemoryBankStatementRepository(
            bank_statements, bank_statement_lines, statement_matches, transfers, statements
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.rollback()
        finally:
            self._staged = None
            self._store.lock.release()

    def commit(self) -> None:
        for staged in self._require_staged():
            staged.apply()
        self.committed = True

    def rollback(self) -> None:
        for staged in self._require_staged():
            staged.discard()

    def now(self) -> datetime:
        return self._clock()

    def _require_staged(self) -> list[_Staged]:
        if self._staged is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._staged


class InMemoryStoreHealth:
    def startup_check(self) -> StoreStatus:
        return StoreStatus(server_version="in-memory", schema_revision=None, details={"adapter": "in-memory"})

    def is_ready(self) -> bool:
        return True


class InMemoryBankStatementRepository(BankStatementRepository):
    def __init__(
        self,
        statements: _StagedTable[uuid.UUID, BankStatement],
        lines: _StagedTable[uuid.UUID, BankStatementLine],
        matches: _StagedTable[tuple[uuid.UUID, uuid.UUID], StatementMatch],
        transfers: _StagedTable[uuid.UUID, Transfer],
        account_statements: _StagedLists[uuid.UUID, StatementLine],
    ) -> None:
        self._statements = statements
        self._lines = lines
        self._matches = matches
        self._transfers = transfers
        self._account_statements = account_statements

    def add(self, statement: BankStatement) -> None:
        if self._statements.get(statement.id) is not None:
            raise Conflict("bank statement id already exists", code="bank_statement_exists")
        self._statements.put(statement.id, replace(statement, lines=(), matched_line_count=0))
        for line in statement.lines:
            self._lines.put(line.id, replace(line, matches=()))

    def get(self, tenant_id: uuid.UUID, statement_id: uuid.UUID) -> BankStatement | None:
        statement = self._statements.get(statement_id)
        if statement is None or statement.tenant_id != tenant_id:
            return None
        matches = self._matches_by_line()
        lines = sorted(
            (line for line in self._lines.values() if line.statement_id == statement_id),
            key=lambda line: line.line_number,
        )
        with_matches = tuple(replace(line, matches=tuple(matches.get(line.id, ()))) for line in lines)
        return replace(
            statement, lines=with_matches, matched_line_count=sum(1 for line in with_matches if line.matches)
        )

    def latest(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> BankStatement | None:
        chosen = self._of_bank(tenant_id, bank_account_id)
        return self._counted(max(chosen, key=lambda statement: statement.period_end)) if chosen else None

    def first(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> BankStatement | None:
        chosen = self._of_bank(tenant_id, bank_account_id)
        return self._counted(min(chosen, key=lambda statement: statement.period_start)) if chosen else None

    def latest_ending_on_or_before(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, day: date
    ) -> BankStatement | None:
        chosen = [statement for statement in self._of_bank(tenant_id, bank_account_id) if statement.period_end <= day]
        return self._counted(max(chosen, key=lambda statement: statement.period_end)) if chosen else None

    def list(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: tuple[date, uuid.UUID] | None, limit: int
    ) -> Sequence[BankStatement]:
        chosen = [
            statement
            for statement in self._statements.values()
            if statement.tenant_id == tenant_id
            and statement.ledger_id == ledger_id
            and (after is None or (statement.period_start, statement.id) > after)
        ]
        chosen.sort(key=lambda statement: (statement.period_start, statement.id))
        return [self._counted(statement) for statement in chosen[:limit]]

    def add_matches(self, matches: Sequence[StatementMatch]) -> None:
        keys = [(match.bank_account_id, match.transfer_id) for match in matches]
        if len(set(keys)) != len(keys) or any(self._matches.get(key) is not None for key in keys):
            raise LedgerRuleViolation("a ledger entry is already matched to a bank line", code="entry_already_matched")
        for key, match in zip(keys, matches, strict=True):
            self._matches.put(key, match)

    def unmatched_lines(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, dated_on_or_before: date | None
    ) -> Sequence[BankStatementLine]:
        matched = {match.line_id for match in self._matches.values()}
        return [
            line
            for line in self._lines_of_bank(tenant_id, bank_account_id)
            if line.id not in matched and (dated_on_or_before is None or line.date <= dated_on_or_before)
        ]

    def unmatched_entries(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, effective_from: date | None, effective_to: date
    ) -> Sequence[BankEntry]:
        return [
            entry
            for entry in self._entries(tenant_id, bank_account_id)
            if entry.matched_line_id is None
            and (effective_from is None or effective_from <= entry.effective_date)
            and entry.effective_date <= effective_to
        ]

    def entries_not_matched_by(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, effective_to: date, line_dated_on_or_before: date
    ) -> Sequence[BankEntry]:
        found = []
        for entry in self._entries(tenant_id, bank_account_id):
            if entry.effective_date > effective_to:
                continue
            line = None if entry.matched_line_id is None else self._lines.get(entry.matched_line_id)
            if line is None or line.date > line_dated_on_or_before:
                found.append(entry)
        return found

    def lines_matched_to_entries_after(
        self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, *, dated_on_or_before: date, effective_after: date
    ) -> Sequence[tuple[BankStatementLine, Sequence[BankEntry]]]:
        entries_by_line: dict[uuid.UUID, _List[BankEntry]] = {}
        for entry in self._entries(tenant_id, bank_account_id):
            if entry.matched_line_id is not None:
                entries_by_line.setdefault(entry.matched_line_id, []).append(entry)
        found: _List[tuple[BankStatementLine, Sequence[BankEntry]]] = []
        for line in self._lines_of_bank(tenant_id, bank_account_id):
            entries = entries_by_line.get(line.id, [])
            if line.date <= dated_on_or_before and any(entry.effective_date > effective_after for entry in entries):
                found.append((line, entries))
        return found

    def _of_bank(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> _List[BankStatement]:
        return [
            statement
            for statement in self._statements.values()
            if statement.tenant_id == tenant_id and statement.bank_account_id == bank_account_id
        ]

    def _lines_of_bank(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> _List[BankStatementLine]:
        statements = {statement.id for statement in self._of_bank(tenant_id, bank_account_id)}
        lines = [line for line in self._lines.values() if line.statement_id in statements]
        return sorted(lines, key=lambda line: (line.date, line.statement_id, line.line_number))

    def _matches_by_line(self) -> dict[uuid.UUID, _List[StatementMatch]]:
        found: dict[uuid.UUID, _List[StatementMatch]] = {}
        for match in sorted(self._matches.values(), key=lambda match: match.transfer_id):
            found.setdefault(match.line_id, []).append(match)
        return found

    def _counted(self, statement: BankStatement) -> BankStatement:
        matched = {match.line_id for match in self._matches.values() if match.statement_id == statement.id}
        return replace(statement, matched_line_count=len(matched))

    def _entries(self, tenant_id: uuid.UUID, bank_account_id: uuid.UUID) -> _List[BankEntry]:
        matched = {
            match.transfer_id: match.line_id
            for match in self._matches.values()
            if match.bank_account_id == bank_account_id
        }
        entries = []
        for posting in self._account_statements.items(bank_account_id):
            transfer = self._transfers.get(posting.transfer_id)
            if transfer is None or transfer.tenant_id != tenant_id:
                continue
            entries.append(
                BankEntry(
                    transfer_id=transfer.id,
                    kind=transfer.kind,
                    effective_date=transfer.effective_date,
                    recorded_at=transfer.recorded_at,
                    amount=posting.amount if posting.side is Side.DEBIT else -posting.amount,
                    description=transfer.description,
                    reference=entry_reference(transfer.metadata),
                    matched_line_id=matched.get(transfer.id),
                )
            )
        return entries
