"""In-memory repositories and unit of work: product code, held to the same contract suite as PostgreSQL.

A unit of work holds the store's lock from enter to exit (so use cases are serializable, like a locked
transaction), stages its writes, and applies them only on commit: a rollback leaves no trace.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

from ledger.domain.errors import Conflict
from ledger.domain.model import Account, Ledger
from ledger.domain.ports import AccountRepository, LedgerRepository, StoreStatus, UnitOfWork

K = TypeVar("K")
V = TypeVar("V")


class InMemoryStore:
    """The committed state. One per container (a thread-safe singleton), never module-level."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ledgers: dict[uuid.UUID, Ledger] = {}
        self.accounts: dict[uuid.UUID, Account] = {}


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


class InMemoryUnitOfWork(UnitOfWork):
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self._tables: tuple[_StagedTable[uuid.UUID, Ledger], _StagedTable[uuid.UUID, Account]] | None = None
        self.committed = False

    def __enter__(self) -> Self:
        self._store.lock.acquire()
        ledgers = _StagedTable(self._store.ledgers)
        accounts = _StagedTable(self._store.accounts)
        self._tables = (ledgers, accounts)
        self.ledgers = InMemoryLedgerRepository(ledgers)
        self.accounts = InMemoryAccountRepository(accounts)
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
            self._tables = None
            self._store.lock.release()

    def commit(self) -> None:
        for table in self._require_tables():
            table.apply()
        self.committed = True

    def rollback(self) -> None:
        for table in self._require_tables():
            table.discard()

    def _require_tables(
        self,
    ) -> tuple[_StagedTable[uuid.UUID, Ledger], _StagedTable[uuid.UUID, Account]]:
        if self._tables is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._tables


class InMemoryStoreHealth:
    def startup_check(self) -> StoreStatus:
        return StoreStatus(server_version="in-memory", schema_revision=None, details={"adapter": "in-memory"})

    def is_ready(self) -> bool:
        return True
