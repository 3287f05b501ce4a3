"""Use cases for ledgers and their accounts. Each runs in exactly one unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.model import (
    MAX_CODE_LENGTH,
    MAX_NAME_LENGTH,
    NORMAL_SIDE_OF_KIND,
    Account,
    AccountKind,
    Ledger,
    clean_text,
    validate_time_zone,
)
from ledger.domain.money import Currency
from ledger.domain.ports import UnitOfWorkFactory

MAX_PAGE_SIZE = 500
Clock = Callable[[], datetime]
Item = TypeVar("Item", Ledger, Account)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    items: Sequence[Item]
    next_cursor: uuid.UUID | None


def check_page_size(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page size must be between 1 and {MAX_PAGE_SIZE}", code="invalid_page_size")


class LedgerService:
    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock = utc_now) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def open_ledger(self, tenant_id: uuid.UUID, *, name: str, currency: str, time_zone: str = "UTC") -> Ledger:
        ledger = Ledger(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            name=clean_text(name, field_name="name", max_length=MAX_NAME_LENGTH),
            currency=Currency.of(currency),
            time_zone=validate_time_zone(time_zone),
            created_at=self._clock(),
        )
        with self._uow_factory() as uow:
            uow.ledgers.add(ledger)
            uow.commit()
        return ledger

    def get_ledger(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger:
        with self._uow_factory() as uow:
            ledger = uow.ledgers.get(tenant_id, ledger_id)
        if ledger is None:
            raise NotFound("ledger not found", code="ledger_not_found")
        return ledger

    def list_ledgers(self, tenant_id: uuid.UUID, *, after: uuid.UUID | None = None, limit: int = 100) -> Page[Ledger]:
        check_page_size(limit)
        with self._uow_factory() as uow:
            items = uow.ledgers.list(tenant_id, after=after, limit=limit + 1)
        return _page(items, limit)


class AccountService:
    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock = utc_now) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    def open_account(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, code: str, name: str, kind: AccountKind
    ) -> Account:
        account = Account(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            ledger_id=ledger_id,
            code=clean_text(code, field_name="code", max_length=MAX_CODE_LENGTH),
            name=clean_text(name, field_name="name", max_length=MAX_NAME_LENGTH),
            kind=kind,
            normal_side=NORMAL_SIDE_OF_KIND[kind],
            created_at=self._clock(),
        )
        with self._uow_factory() as uow:
            if uow.ledgers.get(tenant_id, ledger_id) is None:
                raise NotFound("ledger not found", code="ledger_not_found")
            uow.accounts.add(account)
            uow.commit()
        return account

    def get_account(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Account:
        with self._uow_factory() as uow:
            account = uow.accounts.get(tenant_id, account_id)
        if account is None:
            raise NotFound("account not found", code="account_not_found")
        return account

    def list_accounts(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: uuid.UUID | None = None, limit: int = 100
    ) -> Page[Account]:
        check_page_size(limit)
        with self._uow_factory() as uow:
            if uow.ledgers.get(tenant_id, ledger_id) is None:
                raise NotFound("ledger not found", code="ledger_not_found")
            items = uow.accounts.list(tenant_id, ledger_id, after=after, limit=limit + 1)
        return _page(items, limit)


def _page(items: Sequence[Item], limit: int) -> Page[Item]:
    if len(items) > limit:
        kept = items[:limit]
        return Page(items=kept, next_cursor=kept[-1].id)
    return Page(items=items, next_cursor=None)
