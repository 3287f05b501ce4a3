"""Two-phase transfers and deposit clearance."""

import uuid
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse

from ledger.api.authentication import Reader, Writer
from ledger.api.idempotent_writes import idempotency_key, idempotent_request, recorded_response
from ledger.api.problems import problem_responses
from ledger.api.schemas import (
    ClearanceOut,
    DepositReturn,
    ExpiryOut,
    PendingPost,
    PendingTransferCreate,
    PendingTransferOut,
    PendingVoid,
    TransferOut,
)
from ledger.domain.pending_transfer_service import PendingTransferService
from ledger.domain.pending_transfers import PendingDraft
from ledger.domain.transactions import TransactionRunner
from ledger.domain.trust_operations import TrustService

router = APIRouter(prefix="/v1", tags=["pending transfers and clearance"])

PendingServiceDependency = Annotated[PendingTransferService, Depends(Provide["pending_transfer_service"])]
TrustServiceDependency = Annotated[TrustService, Depends(Provide["trust_service"])]
RunnerDependency = Annotated[TransactionRunner, Depends(Provide["transaction_runner"])]
IdempotencyKey = Annotated[str, Depends(idempotency_key)]
_WRITE_PROBLEMS = problem_responses(400, 404, 409, 413, 415, 422, 503)


@router.post(
    "/ledgers/{ledger_id}/pending-transfers",
    status_code=status.HTTP_201_CREATED,
    summary="Reserve a transfer: the debit counts against available funds at once, the credit only when posted",
    response_model=PendingTransferOut,
    responses=_WRITE_PROBLEMS,
)
@inject
def create_pending_transfer(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: PendingTransferCreate,
    key: IdempotencyKey,
    pending: PendingServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    draft = PendingDraft(
        ledger_id=ledger_id,
        debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id,
        amount=body.amount,
        description=body.description,
        metadata=body.metadata,
        timeout_seconds=body.timeout_seconds,
    )
    command = pending.create_command(principal.tenant_id, principal.actor, draft)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=PendingTransferOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.get(
    "/pending-transfers/{pending_id}",
    summary="Get a pending transfer and its outcome",
    response_model=PendingTransferOut,
    responses=problem_responses(404, 503),
)
@inject
def get_pending_transfer(
    principal: Reader, pending_id: uuid.UUID, pending: PendingServiceDependency
) -> PendingTransferOut:
    return PendingTransferOut.of(pending.get(principal.tenant_id, pending_id))


@router.post(
    "/pending-transfers/{pending_id}/post",
    summary="Post a pending transfer, in full or in part (the rest is released)",
    response_model=PendingTransferOut,
    responses=_WRITE_PROBLEMS,
)
@inject
def post_pending_transfer(
    request: Request,
    principal: Writer,
    pending_id: uuid.UUID,
    body: PendingPost,
    key: IdempotencyKey,
    pending: PendingServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = pending.post_command(principal.tenant_id, principal.actor, pending_id, amount=body.amount)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=200, to_body=PendingTransferOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.post(
    "/pending-transfers/{pending_id}/void",
    summary="Void a pending transfer: release its reservation",
    response_model=PendingTransferOut,
    responses=_WRITE_PROBLEMS,
)
@inject
def void_pending_transfer(
    request: Request,
    principal: Writer,
    pending_id: uuid.UUID,
    body: PendingVoid,
    key: IdempotencyKey,
    pending: PendingServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = pending.void_command(principal.tenant_id, principal.actor, pending_id)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=200, to_body=PendingTransferOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.post(
    "/ledgers/{ledger_id}/pending-transfers/expiry",
    summary="Release every pending transfer of the ledger whose time is up",
    response_model=ExpiryOut,
    responses=problem_responses(400, 404, 409, 413, 415, 503),
)
@inject
def expire_pending_transfers(
    principal: Writer, ledger_id: uuid.UUID, key: IdempotencyKey, pending: PendingServiceDependency
) -> ExpiryOut:
    # Naturally idempotent (a second sweep finds nothing more due), so nothing is recorded under the key.
    return ExpiryOut(expired=pending.expire_due(principal.tenant_id, ledger_id, principal.actor))


@router.post(
    "/deposits/{transfer_id}/clearance",
    summary="The bank cleared an uncleared deposit: its amount joins the client's available funds",
    response_model=ClearanceOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
@inject
def clear_deposit(
    request: Request,
    principal: Writer,
    transfer_id: uuid.UUID,
    body: PendingVoid,
    key: IdempotencyKey,
    trust: TrustServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = trust.clear_deposit_command(principal.tenant_id, principal.actor, transfer_id)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=200, to_body=ClearanceOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.post(
    "/deposits/{transfer_id}/return",
    status_code=status.HTTP_201_CREATED,
    summary="The bank returned a deposit (bounced): booked even if it overdraws the client (a trust shortfall)",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
@inject
def return_deposit(
    request: Request,
    principal: Writer,
    transfer_id: uuid.UUID,
    body: DepositReturn,
    key: IdempotencyKey,
    trust: TrustServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = trust.return_deposit_command(
        principal.tenant_id,
        principal.actor,
        transfer_id,
        description=body.description,
        effective_date=body.effective_date,
    )
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=TransferOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))
