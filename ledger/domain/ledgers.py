"""Use cases for ledgers and their accounts.

Every write is a *command*: validated when it is built (a malformed request fails before any transaction), then run
against a unit of work by the ``TransactionRunner``, plainly or idempotently.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Generic, TypeVar

from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.model import (
    MAX_CODE_LENGTH,
    MAX_NAME_LENGTH,
    NORMAL_SIDE_OF_KIND,
    TRUST_ACCOUNT_KINDS,
    Account,
    AccountKind,
    AccountStatus,
    Ledger,
    LedgerKind,
    clean_text,
    validate_time_zone,
)
from ledger.domain.money import Currency
from ledger.domain.ports import UnitOfWork
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfers import LedgerRuleViolation

MAX_PAGE_SIZE = 500
Clock = Callable[[], datetime]
Item = TypeVar("Item")
Result = TypeVar("Result")
Command = Callable[[UnitOfWork], Result]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    items: Sequence[Item]
    next_cursor: str | None


def check_page_size(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page size must be between 1 and {MAX_PAGE_SIZE}", code="invalid_page_size")


def require_ledger(uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger:
    ledger = uow.ledgers.get(tenant_id, ledger_id)
    if ledger is None:
        raise NotFound("ledger not found", code="ledger_not_found")
    return ledger


class LedgerService:
    def __init__(self, runner: TransactionRunner, clock: Clock = utc_now) -> None:
        self._runner = runner
        self._clock = clock

    def open_ledger_command(
        self,
        tenant_id: uuid.UUID,
        *,
        name: str,
        currency: str,
        time_zone: str = "UTC",
        kind: LedgerKind = LedgerKind.TRUST,
    ) -> Command[Ledger]:
        ledger = Ledger(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            name=clean_text(name, field_name="name", max_length=MAX_NAME_LENGTH),
            currency=Currency.of(currency),
            time_zone=validate_time_zone(time_zone),
            created_at=self._clock(),
            kind=kind,
        )

        def open_ledger(uow: UnitOfWork) -> Ledger:
            uow.ledgers.add(ledger)
            return ledger

        return open_ledger

    def open_ledger(
        self,
        tenant_id: uuid.UUID,
        *,
        name: str,
        currency: str,
        time_zone: str = "UTC",
        kind: LedgerKind = LedgerKind.TRUST,
    ) -> Ledger:
        return self._runner.run(
            self.open_ledger_command(tenant_id, name=name, currency=currency, time_zone=time_zone, kind=kind)
        )

    def get_ledger(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger:
        return self._runner.read(lambda uow: require_ledger(uow, tenant_id, ledger_id))

    def list_ledgers(self, tenant_id: uuid.UUID, *, after: str | None = None, limit: int = 100) -> Page[Ledger]:
        check_page_size(limit)
        cursor = parse_uuid_cursor(after)
        items = self._runner.read(lambda uow: uow.ledgers.list(tenant_id, after=cursor, limit=limit + 1))
        return _page(items, limit, lambda ledger: str(ledger.id))


class AccountService:
    def __init__(self, runner: TransactionRunner, clock: Clock = utc_now) -> None:
        self._runner = runner
        self._clock = clock

    def open_account_command(
        self,
        tenant_id: uuid.UUID,
        ledger_id: uuid.UUID,
        *,
        code: str,
        name: str,
        kind: AccountKind,
        prevent_overdraft: bool | None = None,
    ) -> Command[Account]:
        account = Account(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            ledger_id=ledger_id,
            code=clean_text(code, field_name="code", max_length=MAX_CODE_LENGTH),
            name=clean_text(name, field_name="name", max_length=MAX_NAME_LENGTH),
            kind=kind,
            normal_side=NORMAL_SIDE_OF_KIND[kind],
            created_at=self._clock(),
            prevent_overdraft=kind in TRUST_ACCOUNT_KINDS if prevent_overdraft is None else prevent_overdraft,
        )

        def open_account(uow: UnitOfWork) -> Account:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            if ledger.kind is LedgerKind.TRUST:
                if kind not in TRUST_ACCOUNT_KINDS:
                    raise InvalidRequest(
                        "a trust ledger holds only bank, client and firm_funds accounts",
                        code="account_kind_not_allowed",
                    )
                if not account.prevent_overdraft:
                    raise InvalidRequest(
                        "accounts of a trust ledger may never be overdrawn by a voluntary debit",
                        code="overdraft_not_allowed",
                    )
            uow.accounts.add(account)
            return account

        return open_account

    def open_account(
        self,
        tenant_id: uuid.UUID,
        ledger_id: uuid.UUID,
        *,
        code: str,
        name: str,
        kind: AccountKind,
        prevent_overdraft: bool | None = None,
    ) -> Account:
        return self._runner.run(
            self.open_account_command(
                tenant_id, ledger_id, code=code, name=name, kind=kind, prevent_overdraft=prevent_overdraft
            )
        )

    def close_account_command(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Command[Account]:
        def close_account(uow: UnitOfWork) -> Account:
            account = uow.accounts.lock(tenant_id, [account_id]).get(account_id)
            if account is None:
                raise NotFound("account not found", code="account_not_found")
            if account.status is AccountStatus.CLOSED:
                raise LedgerRuleViolation("the account is already closed", code="account_closed")
            if account.posted_balance != 0 or account.pending_debits or account.pending_credits:
                raise LedgerRuleViolation("only an account with a zero balance can be closed", code="account_not_empty")
            closed = replace(account, status=AccountStatus.CLOSED, version=account.version + 1)
            uow.accounts.save([closed])
            return closed

        return close_account

    def close_account(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Account:
        return self._runner.run(self.close_account_command(tenant_id, account_id))

    def get_account(self, tenant_id: uuid.UUID, account_id: uuid.UUID) -> Account:
        account = self._runner.read(lambda uow: uow.accounts.get(tenant_id, account_id))
        if account is None:
            raise NotFound("account not found", code="account_not_found")
        return account

    def list_accounts(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: str | None = None, limit: int = 100
    ) -> Page[Account]:
        check_page_size(limit)
        cursor = parse_uuid_cursor(after)

        def list_accounts(uow: UnitOfWork) -> Sequence[Account]:
            require_ledger(uow, tenant_id, ledger_id)
            return uow.accounts.list(tenant_id, ledger_id, after=cursor, limit=limit + 1)

        items = self._runner.read(list_accounts)
        return _page(items, limit, lambda account: str(account.id))


def parse_uuid_cursor(cursor: str | None) -> uuid.UUID | None:
    if cursor is None:
        return None
    try:
        return uuid.UUID(cursor)
    except ValueError:
        raise InvalidRequest("the cursor is not one this service handed out", code="invalid_cursor") from None


def _page(items: Sequence[Item], limit: int, cursor_of: Callable[[Item], str]) -> Page[Item]:
    if len(items) > limit:
        kept = items[:limit]
        return Page(items=kept, next_cursor=cursor_of(kept[-1]))
    return Page(items=items, next_cursor=None)


def every_account(uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Iterator[Account]:
    """Every account of a ledger in id order, read page by page (for reports and verification, not the API)."""
    after: uuid.UUID | None = None
    while True:
        page = uow.accounts.list(tenant_id, ledger_id, after=after, limit=MAX_PAGE_SIZE)
        yield from page
        if len(page) < MAX_PAGE_SIZE:
            return
        after = page[-1].id
