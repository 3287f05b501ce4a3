"""Liveness and readiness. ``/healthz``: the process answers. ``/readyz``: the store answers too."""

from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ledger.api.problems import problem_response, problem_responses
from ledger.domain.ports import StoreHealth

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The process is alive and its database answers",
    responses=problem_responses(503),
)
@inject
def readyz(store_health: Annotated[StoreHealth, Depends(Provide["store_health"])]) -> Any:
    if store_health.is_ready():
        return {"status": "ready"}
    response: JSONResponse = problem_response(
        503, "database_unavailable", "the database does not answer", headers={"Retry-After": "1"}
    )
    return response
