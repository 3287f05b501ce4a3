"""Bank statements of a trust bank account: import (CSV in a JSON body), read, and the unmatched items on both sides."""

import uuid
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse

from ledger.api.authentication import Reader, Writer
from ledger.api.idempotent_writes import idempotency_key, idempotent_request, recorded_response
from ledger.api.problems import problem_responses
from ledger.api.routers.ledgers import Cursor, PageSize
from ledger.api.schemas import (
    BankStatementImport,
    BankStatementOut,
    BankStatementPage,
    BankStatementSummaryOut,
    IsoDate,
    RematchOut,
    StatementRematch,
    UnmatchedOut,
)
from ledger.domain.bank_statement_service import BankStatementService
from ledger.domain.bank_statements import StatementMatch
from ledger.domain.transactions import TransactionRunner

router = APIRouter(prefix="/v1", tags=["bank statements"])

StatementServiceDependency = Annotated[BankStatementService, Depends(Provide["bank_statement_service"])]
RunnerDependency = Annotated[TransactionRunner, Depends(Provide["transaction_runner"])]
IdempotencyKey = Annotated[str, Depends(idempotency_key)]
BankAccountQuery = Annotated[
    uuid.UUID | None, Query(description="the bank account (default: the ledger's one bank account)")
]


@router.post(
    "/ledgers/{ledger_id}/bank-statements",
    status_code=status.HTTP_201_CREATED,
    summary="Import a bank statement (CSV) and match its lines to ledger entries",
    description='The CSV travels as a JSON string (`{"csv": "..."}`), so the import is an idempotent write like '
    "every other. A bad row refuses the whole statement: `invalid_statement_line`, its detail naming the line. "
    "`statement_does_not_balance`: closing is not opening plus the lines. `statement_overlaps` / "
    "`statement_not_continuous`: the period must start after the previous statement's end and the opening balance "
    "must be its closing balance (refusals recorded with the Idempotency-Key). `statement_in_future`. The lines, "
    "and earlier unmatched lines, are matched to unmatched entries of the bank account in the same transaction.",
    response_model=BankStatementOut,
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
)
@inject
def import_bank_statement(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: BankStatementImport,
    key: IdempotencyKey,
    statements: StatementServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = statements.import_command(
        principal.tenant_id, ledger_id, body.csv, principal.actor, bank_account_id=body.bank_account_id
    )
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=BankStatementOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.get(
    "/ledgers/{ledger_id}/bank-statements",
    summary="List the bank statements of a ledger by period, without their lines",
    response_model=BankStatementPage,
    responses=problem_responses(404, 422, 503),
)
@inject
def list_bank_statements(
    principal: Reader,
    ledger_id: uuid.UUID,
    statements: StatementServiceDependency,
    limit: PageSize,
    after: Cursor = None,
) -> BankStatementPage:
    page = statements.list_statements(principal.tenant_id, ledger_id, after=after, limit=limit)
    return BankStatementPage(
        items=[BankStatementSummaryOut.of(statement) for statement in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/bank-statements/{statement_id}",
    summary="Get a bank statement with its lines and their matches",
    response_model=BankStatementOut,
    responses=problem_responses(404, 503),
)
@inject
def get_bank_statement(
    principal: Reader, statement_id: uuid.UUID, statements: StatementServiceDependency
) -> BankStatementOut:
    return BankStatementOut.of(statements.get_statement(principal.tenant_id, statement_id))


@router.post(
    "/ledgers/{ledger_id}/bank-statements/matching",
    summary="Match the unmatched bank lines again (after a missing entry was booked)",
    response_model=RematchOut,
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
)
@inject
def match_bank_lines_again(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: StatementRematch,
    key: IdempotencyKey,
    statements: StatementServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = statements.match_again_command(
        principal.tenant_id, ledger_id, principal.actor, bank_account_id=body.bank_account_id
    )

    def summary(matches: list[StatementMatch]) -> RematchOut:
        return RematchOut(matched_entries=len(matches), matched_lines=len({match.line_id for match in matches}))

    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=200, to_body=summary
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.get(
    "/ledgers/{ledger_id}/unmatched",
    summary="Unmatched bank lines and ledger entries of the bank account as of a date (reconciling items)",
    description="`statement` is the latest statement ending on or before `as_of`; its `period_end` is the bank's "
    "cut-off. `bank_lines`: lines up to the cut-off with no matching entry effective by `as_of` (bank items missing "
    "from the books). `ledger_entries`: entries on the bank account effective by `as_of` that no line up to the "
    "cut-off shows (deposits in transit, outstanding payments). Amounts are signed from the bank's view.",
    response_model=UnmatchedOut,
    responses=problem_responses(404, 422, 503),
)
@inject
def unmatched_items(
    principal: Reader,
    ledger_id: uuid.UUID,
    as_of: Annotated[IsoDate, Query(description="the reconciliation date (YYYY-MM-DD)")],
    statements: StatementServiceDependency,
    bank_account_id: BankAccountQuery = None,
) -> UnmatchedOut:
    items = statements.unmatched(principal.tenant_id, ledger_id, as_of, bank_account_id=bank_account_id)
    return UnmatchedOut.of(items)
