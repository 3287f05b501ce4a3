"""Trust-accounting reports, each as JSON, CSV or a printable HTML page (`format`)."""

import uuid
from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ledger.api.authentication import Reader, Writer
from ledger.api.idempotent_writes import idempotency_key, idempotent_request, recorded_response
from ledger.api.problems import problem_responses
from ledger.api.schemas import IsoDate, SignOffCreate, SignOffOut
from ledger.domain.reconciliation_service import ReconciliationService
from ledger.domain.transactions import TransactionRunner
from ledger.domain.trust_reports import Report, TrustReportService
from ledger.report_formats import MEDIA_TYPES, ReportFormat, report_as_csv, report_as_html, report_as_json

router = APIRouter(prefix="/v1", tags=["reports"])

ReportServiceDependency = Annotated[TrustReportService, Depends(Provide["trust_report_service"])]
RunnerDependency = Annotated[TransactionRunner, Depends(Provide["transaction_runner"])]
IdempotencyKey = Annotated[str, Depends(idempotency_key)]
Format = Annotated[
    ReportFormat, Query(description="json (figures in minor units), csv (decimals) or html (a printable page)")
]
AsOf = Annotated[IsoDate, Query(description="the report date (YYYY-MM-DD, the ledger's dates)")]
PeriodStart = Annotated[IsoDate, Query(description="first day of the period (YYYY-MM-DD)")]
PeriodEnd = Annotated[IsoDate, Query(description="last day of the period (YYYY-MM-DD)")]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the report",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
        },
    },
    **problem_responses(404, 422, 503),
}


def rendered(report: Report, report_format: ReportFormat) -> Response:
    if report_format is ReportFormat.CSV:
        filename = f"{report.kind}-{report.period_end.isoformat()}.csv"
        return Response(
            report_as_csv(report),
            media_type=MEDIA_TYPES[ReportFormat.CSV],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    if report_format is ReportFormat.HTML:
        return HTMLResponse(report_as_html(report))
    return JSONResponse(report_as_json(report))


@router.get(
    "/ledgers/{ledger_id}/reports/trust-listing",
    summary="Trust listing: every client's balance as of a date, the total, and the bank book balance",
    responses=_RESPONSES,
    response_class=Response,
)
@inject
def trust_listing(
    principal: Reader,
    ledger_id: uuid.UUID,
    as_of: AsOf,
    reports: ReportServiceDependency,
    format: Format = ReportFormat.JSON,
) -> Response:
    return rendered(reports.trust_listing(principal.tenant_id, ledger_id, as_of), format)


@router.get(
    "/ledgers/{ledger_id}/reports/journal",
    summary="Receipts and disbursements journal of the trust bank account for a period",
    responses=_RESPONSES,
    response_class=Response,
)
@inject
def journal(
    principal: Reader,
    ledger_id: uuid.UUID,
    start: PeriodStart,
    end: PeriodEnd,
    reports: ReportServiceDependency,
    format: Format = ReportFormat.JSON,
) -> Response:
    return rendered(reports.journal(principal.tenant_id, ledger_id, start, end), format)


@router.get(
    "/ledgers/{ledger_id}/reports/trial-balance",
    summary="Trial balance as of a date",
    responses=_RESPONSES,
    response_class=Response,
)
@inject
def trial_balance(
    principal: Reader,
    ledger_id: uuid.UUID,
    as_of: AsOf,
    reports: ReportServiceDependency,
    format: Format = ReportFormat.JSON,
) -> Response:
    return rendered(reports.trial_balance(principal.tenant_id, ledger_id, as_of), format)


@router.get(
    "/accounts/{account_id}/reports/client-ledger",
    summary="Client ledger: one client's entries in a period with the running balance",
    responses=_RESPONSES,
    response_class=Response,
)
@inject
def client_ledger(
    principal: Reader,
    account_id: uuid.UUID,
    start: PeriodStart,
    end: PeriodEnd,
    reports: ReportServiceDependency,
    format: Format = ReportFormat.JSON,
) -> Response:
    return rendered(reports.client_ledger(principal.tenant_id, account_id, start, end), format)


ReconciliationServiceDependency = Annotated[ReconciliationService, Depends(Provide["reconciliation_service"])]


@router.get(
    "/ledgers/{ledger_id}/reconciliation",
    summary="Three-way reconciliation as of a date: adjusted bank balance, trust book balance, client ledgers",
    description=(
        "Adjusted bank balance (the latest statement ending by `as_of` + deposits in transit - outstanding "
        "disbursements) = trust book balance = client ledgers + firm funds, each difference, and every reconciling "
        "item (deposits in transit, outstanding disbursements, bank items not in the books, transposed amounts)."
    ),
    responses=_RESPONSES,
    response_class=Response,
    tags=["reconciliation"],
)
@inject
def reconciliation(
    principal: Reader,
    ledger_id: uuid.UUID,
    as_of: AsOf,
    reconciliations: ReconciliationServiceDependency,
    format: Format = ReportFormat.JSON,
) -> Response:
    return rendered(reconciliations.report(principal.tenant_id, ledger_id, as_of), format)


@router.post(
    "/ledgers/{ledger_id}/reconciliation/sign-offs",
    status_code=status.HTTP_201_CREATED,
    summary="Sign off a balanced reconciliation: entries effective on or before its date are refused from then on",
    response_model=SignOffOut,
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
    tags=["reconciliation"],
)
@inject
def sign_off_reconciliation(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: SignOffCreate,
    key: IdempotencyKey,
    reconciliations: ReconciliationServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = reconciliations.sign_off_command(principal.tenant_id, principal.actor, ledger_id, body.as_of)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=SignOffOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))
