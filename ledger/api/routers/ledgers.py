"""Ledgers and their accounts."""

import uuid
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Query, status

from ledger.api.problems import problem_responses
from ledger.api.schemas import AccountCreate, AccountOut, AccountPage, LedgerCreate, LedgerOut, LedgerPage
from ledger.domain.ledgers import MAX_PAGE_SIZE, AccountService, LedgerService
from ledger.domain.model import DEFAULT_TENANT_ID

router = APIRouter(prefix="/v1", tags=["ledgers"])

LedgerServiceDependency = Annotated[LedgerService, Depends(Provide["ledger_service"])]
AccountServiceDependency = Annotated[AccountService, Depends(Provide["account_service"])]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size, at most 500")]
Cursor = Annotated[uuid.UUID | None, Query(description="the next_cursor of the previous page")]


@router.post(
    "/ledgers",
    status_code=status.HTTP_201_CREATED,
    summary="Open a ledger",
    responses=problem_responses(422, 503),
)
@inject
def open_ledger(body: LedgerCreate, ledgers: LedgerServiceDependency) -> LedgerOut:
    ledger = ledgers.open_ledger(DEFAULT_TENANT_ID, name=body.name, currency=body.currency, time_zone=body.time_zone)
    return LedgerOut.of(ledger)


@router.get("/ledgers", summary="List ledgers", responses=problem_responses(422, 503))
@inject
def list_ledgers(ledgers: LedgerServiceDependency, limit: PageSize = 100, after: Cursor = None) -> LedgerPage:
    page = ledgers.list_ledgers(DEFAULT_TENANT_ID, after=after, limit=limit)
    return LedgerPage(items=[LedgerOut.of(ledger) for ledger in page.items], next_cursor=page.next_cursor)


@router.get("/ledgers/{ledger_id}", summary="Get a ledger", responses=problem_responses(404, 503))
@inject
def get_ledger(ledger_id: uuid.UUID, ledgers: LedgerServiceDependency) -> LedgerOut:
    return LedgerOut.of(ledgers.get_ledger(DEFAULT_TENANT_ID, ledger_id))


@router.post(
    "/ledgers/{ledger_id}/accounts",
    status_code=status.HTTP_201_CREATED,
    summary="Open an account in a ledger",
    responses=problem_responses(404, 409, 422, 503),
)
@inject
def open_account(ledger_id: uuid.UUID, body: AccountCreate, accounts: AccountServiceDependency) -> AccountOut:
    account = accounts.open_account(DEFAULT_TENANT_ID, ledger_id, code=body.code, name=body.name, kind=body.kind)
    return AccountOut.of(account)


@router.get(
    "/ledgers/{ledger_id}/accounts",
    summary="List the accounts of a ledger",
    responses=problem_responses(404, 422, 503),
)
@inject
def list_accounts(
    ledger_id: uuid.UUID, accounts: AccountServiceDependency, limit: PageSize = 100, after: Cursor = None
) -> AccountPage:
    page = accounts.list_accounts(DEFAULT_TENANT_ID, ledger_id, after=after, limit=limit)
    return AccountPage(items=[AccountOut.of(account) for account in page.items], next_cursor=page.next_cursor)


@router.get(
    "/accounts/{account_id}",
    summary="Get an account with its balances",
    responses=problem_responses(404, 503),
)
@inject
def get_account(account_id: uuid.UUID, accounts: AccountServiceDependency) -> AccountOut:
    return AccountOut.of(accounts.get_account(DEFAULT_TENANT_ID, account_id))
