"""Ports: what the domain needs from the outside world. Adapters live in ``ledger.infrastructure``."""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from ledger.domain.model import Account, Ledger


class LedgerRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, ledger: Ledger) -> None: ...

    @abc.abstractmethod
    def get(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger | None:
        """None for an unknown id and for another tenant's id alike."""

    @abc.abstractmethod
    def list(self, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> Sequence[Ledger]:
        """Ledgers of one tenant in ascending id order, starting after the ``after`` cursor."""


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


class UnitOfWork(abc.ABC):
    """One transaction per use case. Leaving the block without ``commit()`` rolls everything back."""

    ledgers: LedgerRepository
    accounts: AccountRepository

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
    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


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
