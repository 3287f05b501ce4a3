"""Ledgers and their accounts: open, list, read, balances at a point in time, statements, close."""

import uuid
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse

from ledger.api.authentication import Reader, Writer
from ledger.api.idempotent_writes import idempotency_key, idempotent_request, recorded_response
from ledger.api.problems import ApiProblem, problem_responses
from ledger.api.schemas import (
    AccountCreate,
    AccountOut,
    AccountPage,
    IsoDate,
    IsoDateTime,
    LedgerCreate,
    LedgerOut,
    LedgerPage,
    PointInTimeBalanceOut,
    StatementLineOut,
    StatementPage,
)
from ledger.domain.ledgers import MAX_PAGE_SIZE, AccountService, LedgerService
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_service import TransferService

router = APIRouter(prefix="/v1", tags=["ledgers and accounts"])

LedgerServiceDependency = Annotated[LedgerService, Depends(Provide["ledger_service"])]
AccountServiceDependency = Annotated[AccountService, Depends(Provide["account_service"])]
TransferServiceDependency = Annotated[TransferService, Depends(Provide["transfer_service"])]
RunnerDependency = Annotated[TransactionRunner, Depends(Provide["transaction_runner"])]
IdempotencyKey = Annotated[str, Depends(idempotency_key)]


def page_size(
    request: Request,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size: at most 500, or the service's lower limit")
    ] = 100,
) -> int:
    configured: int = request.app.state.max_page_size
    if limit > configured:
        raise ApiProblem(422, "invalid_page_size", f"page size must be between 1 and {configured}")
    return limit


PageSize = Annotated[int, Depends(page_size)]
Cursor = Annotated[
    str | None, Query(max_length=64, pattern=r"^[0-9a-f-]+$", description="next_cursor of the previous page")
]


@router.post(
    "/ledgers",
    status_code=status.HTTP_201_CREATED,
    summary="Open a ledger",
    response_model=LedgerOut,
    responses=problem_responses(400, 409, 413, 415, 422, 503),
)
@inject
def open_ledger(
    request: Request,
    principal: Writer,
    body: LedgerCreate,
    key: IdempotencyKey,
    ledgers: LedgerServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = ledgers.open_ledger_command(
        principal.tenant_id, name=body.name, currency=body.currency, time_zone=body.time_zone, kind=body.kind
    )
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=LedgerOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.get("/ledgers", summary="List ledgers", responses=problem_responses(422, 503))
@inject
def list_ledgers(
    principal: Reader, ledgers: LedgerServiceDependency, limit: PageSize, after: Cursor = None
) -> LedgerPage:
    page = ledgers.list_ledgers(principal.tenant_id, after=after, limit=limit)
    return LedgerPage(items=[LedgerOut.of(ledger) for ledger in page.items], next_cursor=page.next_cursor)


@router.get("/ledgers/{ledger_id}", summary="Get a ledger", responses=problem_responses(404, 503))
@inject
def get_ledger(principal: Reader, ledger_id: uuid.UUID, ledgers: LedgerServiceDependency) -> LedgerOut:
    return LedgerOut.of(ledgers.get_ledger(principal.tenant_id, ledger_id))


@router.post(
    "/ledgers/{ledger_id}/accounts",
    status_code=status.HTTP_201_CREATED,
    summary="Open an account in a ledger",
    response_model=AccountOut,
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
)
@inject
def open_account(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: AccountCreate,
    key: IdempotencyKey,
    accounts: AccountServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = accounts.open_account_command(
        principal.tenant_id,
        ledger_id,
        code=body.code,
        name=body.name,
        kind=body.kind,
        prevent_overdraft=body.prevent_overdraft,
    )
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=AccountOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.get(
    "/ledgers/{ledger_id}/accounts",
    summary="List the accounts of a ledger",
    responses=problem_responses(404, 422, 503),
)
@inject
def list_accounts(
    principal: Reader,
    ledger_id: uuid.UUID,
    accounts: AccountServiceDependency,
    limit: PageSize,
    after: Cursor = None,
) -> AccountPage:
    page = accounts.list_accounts(principal.tenant_id, ledger_id, after=after, limit=limit)
    return AccountPage(items=[AccountOut.of(account) for account in page.items], next_cursor=page.next_cursor)


@router.get(
    "/accounts/{account_id}",
    summary="Get an account with its current balances (O(1) at any history length)",
    responses=problem_responses(404, 503),
)
@inject
def get_account(principal: Reader, account_id: uuid.UUID, accounts: AccountServiceDependency) -> AccountOut:
    return AccountOut.of(accounts.get_account(principal.tenant_id, account_id))


@router.post(
    "/accounts/{account_id}/close",
    summary="Close an account with a zero balance",
    response_model=AccountOut,
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
)
@inject
def close_account(
    request: Request,
    principal: Writer,
    account_id: uuid.UUID,
    key: IdempotencyKey,
    accounts: AccountServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = accounts.close_account_command(principal.tenant_id, account_id)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=None, success_status=200, to_body=AccountOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.get(
    "/accounts/{account_id}/balance",
    summary="An account's balance at a point in time",
    description="From the postings effective on or before `as_of_date` (the ledger's dates), as they were recorded "
    "no later than `known_at`. Without parameters: the balance from every posting so far.",
    responses=problem_responses(404, 422, 503),
)
@inject
def balance_at(
    principal: Reader,
    account_id: uuid.UUID,
    transfers: TransferServiceDependency,
    as_of_date: Annotated[IsoDate | None, Query(description="effective on or before this date (YYYY-MM-DD)")] = None,
    known_at: Annotated[
        IsoDateTime | None, Query(description="as recorded by this moment (ISO 8601 with offset)")
    ] = None,
) -> PointInTimeBalanceOut:
    balance = transfers.balance_at(
        principal.tenant_id, account_id, effective_on_or_before=as_of_date, known_at=known_at
    )
    return PointInTimeBalanceOut.of(balance)


@router.get(
    "/accounts/{account_id}/statement",
    summary="An account's postings in the order recorded, with the running balance",
    responses=problem_responses(404, 422, 503),
)
@inject
def statement(
    principal: Reader,
    account_id: uuid.UUID,
    transfers: TransferServiceDependency,
    limit: PageSize,
    after: Annotated[str | None, Query(max_length=18, pattern=r"^[0-9]+$")] = None,
) -> StatementPage:
    page = transfers.statement(principal.tenant_id, account_id, after=after, limit=limit)
    return StatementPage(
        account_id=account_id,
        items=[StatementLineOut.of(line) for line in page.items],
        next_cursor=page.next_cursor,
    )
