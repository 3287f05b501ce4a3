"""Integrity of a ledger's history, checked on demand."""

import uuid
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends

from ledger.api.authentication import Reader
from ledger.api.problems import problem_responses
from ledger.api.schemas import VerificationReportOut
from ledger.domain.ledger_verification import LedgerVerificationService

router = APIRouter(prefix="/v1", tags=["integrity"])

VerificationDependency = Annotated[LedgerVerificationService, Depends(Provide["ledger_verification_service"])]


@router.get(
    "/ledgers/{ledger_id}/verification",
    summary="Verify a ledger's history",
    description=(
        "Recomputes every account's posting chain and balance counters from the postings and checks that every "
        "entry balances, in one consistent snapshot. `ok` is false when anything does not hold; each finding "
        "names the account and the entry. Signed checkpoints are checked by `ledger verify`, which holds the "
        "checkpoint key: the API process never does. Reads the whole history of the ledger: an audit call, "
        "not one for every request."
    ),
    response_model=VerificationReportOut,
    responses=problem_responses(404, 503),
)
@inject
def verify_ledger(
    principal: Reader, ledger_id: uuid.UUID, verification: VerificationDependency
) -> VerificationReportOut:
    return VerificationReportOut.of(verification.verify(principal.tenant_id, ledger_id))
