"""Transfers (journal entries) and the trust operations built on them."""

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ledger.api.authentication import Reader, Writer
from ledger.api.idempotent_writes import idempotency_key, idempotent_request, recorded_response
from ledger.api.problems import problem_responses
from ledger.api.schemas import (
    ClientDeposit,
    ClientDisbursement,
    ClientTransfer,
    EarnedFee,
    FirmFundsMovement,
    ReversalCreate,
    TransferBatchCreate,
    TransferBatchOut,
    TransferCreate,
    TransferOut,
    TrustOperationBase,
)
from ledger.domain.api_keys import Principal
from ledger.domain.idempotency import RecordedResponse
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_batches import TransferBatchService
from ledger.domain.transfer_coalescing import (
    MAX_WAIT_FOR_OUTCOME_SECONDS,
    PendingWrite,
    TransferWriter,
    outcome_unknown,
)
from ledger.domain.transfer_service import TransferService
from ledger.domain.transfers import PostingDraft, TransferDraft
from ledger.domain.trust_operations import TrustOperationKind

router = APIRouter(prefix="/v1", tags=["transfers"])

TransferServiceDependency = Annotated[TransferService, Depends(Provide["transfer_service"])]
TransferBatchServiceDependency = Annotated[TransferBatchService, Depends(Provide["transfer_batch_service"])]


async def _transfer_writer(request: Request) -> TransferWriter:
    """The container's one writer (an async dependency: no thread hop to hand it over)."""
    writer: TransferWriter = request.app.state.container.transfer_writer()
    return writer


TransferWriterDependency = Annotated[TransferWriter, Depends(_transfer_writer)]
RunnerDependency = Annotated[TransactionRunner, Depends(Provide["transaction_runner"])]
IdempotencyKey = Annotated[str, Depends(idempotency_key)]
_WRITE_PROBLEMS = problem_responses(400, 404, 409, 413, 415, 422, 503)


@router.post(
    "/transfers",
    status_code=status.HTTP_201_CREATED,
    summary="Post a transfer of two or more postings that sum to zero",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
)
async def post_transfer(
    request: Request,
    principal: Writer,
    body: TransferCreate,
    key: IdempotencyKey,
    writer: TransferWriterDependency,
) -> JSONResponse:
    """Goes through the coalescing writer: concurrent requests share one transaction, each with its own result. The
    request waits on the event loop, not in a thread."""
    draft = TransferDraft(
        ledger_id=body.ledger_id,
        postings=tuple(
            PostingDraft(account_id=posting.account_id, side=posting.side, amount=posting.amount)
            for posting in body.postings
        ),
        description=body.description,
        metadata=body.metadata,
        effective_date=body.effective_date,
    )
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=TransferOut.of
    )
    tenant_id, actor = principal.tenant_id, principal.actor
    return recorded_response(
        await _written(lambda on_done: writer.enqueue_transfer(idempotent, tenant_id, actor, draft, on_done))
    )


@router.post(
    "/ledgers/{ledger_id}/transfers/batch",
    status_code=status.HTTP_201_CREATED,
    summary="Post up to 1,000 transfers in one transaction: atomic (all or none) or independent (a result per item)",
    response_model=TransferBatchOut,
    responses=_WRITE_PROBLEMS,
)
@inject
def post_transfer_batch(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: TransferBatchCreate,
    key: IdempotencyKey,
    batches: TransferBatchServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    drafts = [
        TransferDraft(
            ledger_id=ledger_id,
            postings=tuple(
                PostingDraft(account_id=posting.account_id, side=posting.side, amount=posting.amount)
                for posting in item.postings
            ),
            description=item.description,
            metadata=item.metadata,
            effective_date=item.effective_date,
        )
        for item in body.transfers
    ]
    command = batches.post_batch_command(principal.tenant_id, principal.actor, ledger_id, drafts, body.mode)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=TransferBatchOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


@router.get("/transfers/{transfer_id}", summary="Get a transfer", responses=problem_responses(404, 503))
@inject
def get_transfer(principal: Reader, transfer_id: uuid.UUID, transfers: TransferServiceDependency) -> TransferOut:
    return TransferOut.of(transfers.get_transfer(principal.tenant_id, transfer_id))


@router.post(
    "/transfers/{transfer_id}/reversal",
    status_code=status.HTTP_201_CREATED,
    summary="Reverse a transfer (once) with a new entry that negates it",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
)
@inject
def reverse_transfer(
    request: Request,
    principal: Writer,
    transfer_id: uuid.UUID,
    body: ReversalCreate,
    key: IdempotencyKey,
    transfers: TransferServiceDependency,
    runner: RunnerDependency,
) -> JSONResponse:
    command = transfers.reverse_transfer_command(
        principal.tenant_id, principal.actor, transfer_id, description=body.description
    )
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=TransferOut.of
    )
    return recorded_response(runner.run_idempotently(idempotent, command))


async def _written(enqueue: Callable[[Callable[[], None]], PendingWrite]) -> RecordedResponse:
    """Hands a write to the writer and waits for its outcome on the event loop (the writer's thread wakes it); only
    a write that still has database work to do (the single-transfer path) takes a thread of the pool."""
    loop = asyncio.get_running_loop()
    written = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(written.set)

    pending = enqueue(wake)
    try:
        await asyncio.wait_for(written.wait(), MAX_WAIT_FOR_OUTCOME_SECONDS)
    except TimeoutError:
        raise outcome_unknown() from None
    if pending.blocking():
        return await run_in_threadpool(pending.outcome)
    return pending.outcome()


async def _run_trust_operation(
    request: Request,
    principal: Principal,
    key: str,
    body: TrustOperationBase,
    kind: TrustOperationKind,
    ledger_id: uuid.UUID,
    writer: TransferWriter,
) -> JSONResponse:
    """Through the coalescing writer: deposits and disbursements all touch the trust bank account, so concurrent
    ones share a transaction instead of queueing for its row lock one commit at a time."""
    operation = body.to_operation(kind, ledger_id)
    idempotent = idempotent_request(
        request, tenant_id=principal.tenant_id, key=key, payload=body, success_status=201, to_body=TransferOut.of
    )
    tenant_id, actor = principal.tenant_id, principal.actor
    return recorded_response(
        await _written(lambda on_done: writer.enqueue_operation(idempotent, tenant_id, actor, operation, on_done))
    )


@router.post(
    "/ledgers/{ledger_id}/deposits",
    status_code=status.HTTP_201_CREATED,
    summary="Deposit client money: debit the trust bank account, credit the client",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
async def deposit(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: ClientDeposit,
    key: IdempotencyKey,
    writer: TransferWriterDependency,
) -> JSONResponse:
    return await _run_trust_operation(request, principal, key, body, TrustOperationKind.DEPOSIT, ledger_id, writer)


@router.post(
    "/ledgers/{ledger_id}/disbursements",
    status_code=status.HTTP_201_CREATED,
    summary="Disburse client money: refused (insufficient_funds) beyond the client's available funds",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
async def disburse(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: ClientDisbursement,
    key: IdempotencyKey,
    writer: TransferWriterDependency,
) -> JSONResponse:
    return await _run_trust_operation(request, principal, key, body, TrustOperationKind.DISBURSEMENT, ledger_id, writer)


@router.post(
    "/ledgers/{ledger_id}/client-transfers",
    status_code=status.HTTP_201_CREATED,
    summary="Move money from one client's sub-ledger to another's",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
async def transfer_between_clients(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: ClientTransfer,
    key: IdempotencyKey,
    writer: TransferWriterDependency,
) -> JSONResponse:
    return await _run_trust_operation(
        request, principal, key, body, TrustOperationKind.CLIENT_TRANSFER, ledger_id, writer
    )


@router.post(
    "/ledgers/{ledger_id}/earned-fees",
    status_code=status.HTTP_201_CREATED,
    summary="Pay an earned fee out of trust to the firm: a disbursement from the client, categorised as a fee",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
async def earned_fee(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: EarnedFee,
    key: IdempotencyKey,
    writer: TransferWriterDependency,
) -> JSONResponse:
    return await _run_trust_operation(request, principal, key, body, TrustOperationKind.EARNED_FEE, ledger_id, writer)


@router.post(
    "/ledgers/{ledger_id}/firm-deposits",
    status_code=status.HTTP_201_CREATED,
    summary="Deposit the firm's own money to cover bank charges",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
async def firm_deposit(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: FirmFundsMovement,
    key: IdempotencyKey,
    writer: TransferWriterDependency,
) -> JSONResponse:
    return await _run_trust_operation(request, principal, key, body, TrustOperationKind.FIRM_DEPOSIT, ledger_id, writer)


@router.post(
    "/ledgers/{ledger_id}/bank-charges",
    status_code=status.HTTP_201_CREATED,
    summary="Book a bank charge against firm funds (involuntary: booked even if it overdraws them)",
    response_model=TransferOut,
    responses=_WRITE_PROBLEMS,
    tags=["trust operations"],
)
async def bank_charge(
    request: Request,
    principal: Writer,
    ledger_id: uuid.UUID,
    body: FirmFundsMovement,
    key: IdempotencyKey,
    writer: TransferWriterDependency,
) -> JSONResponse:
    return await _run_trust_operation(request, principal, key, body, TrustOperationKind.BANK_CHARGE, ledger_id, writer)
