"""Idempotency for every write: the key header, the payload fingerprint, and recorded responses."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ledger.api.problems import PROBLEM_MEDIA_TYPE, ApiProblem, problem_body
from ledger.domain.errors import DomainError
from ledger.domain.idempotency import IdempotentRequest, RecordedResponse, check_idempotency_key

Outcome = TypeVar("Outcome")


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required on every write: 1-255 printable ASCII characters, unique per request. A retry with "
            "the same key and body gets the first response; the same key with another body is refused (422).",
        ),
    ] = None,
) -> str:
    if key is None:
        raise ApiProblem(400, "idempotency_key_required", "this write needs an Idempotency-Key header")
    try:
        return check_idempotency_key(key)
    except DomainError as error:
        raise ApiProblem(400, error.code, error.message) from None


def fingerprint(request: Request, payload: BaseModel | None) -> str:
    """Same method, path and (validated) body give the same fingerprint."""
    body = payload.model_dump(mode="json") if payload is not None else None
    canonical = json.dumps(
        {"method": request.method, "path": request.url.path, "body": body}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def idempotent_request(
    request: Request,
    *,
    tenant_id: uuid.UUID,
    key: str,
    payload: BaseModel | None,
    success_status: int,
    to_body: Callable[[Outcome], BaseModel],
) -> IdempotentRequest[Outcome]:
    def render(outcome: Outcome | Exception) -> RecordedResponse:
        if isinstance(outcome, DomainError):
            # A refusal by a ledger rule: recorded and replayed like a success.
            return RecordedResponse(status_code=422, body=problem_body(422, outcome.code, outcome.message))
        if isinstance(outcome, Exception):
            raise outcome
        return RecordedResponse(status_code=success_status, body=to_body(outcome).model_dump(mode="json"))

    return IdempotentRequest(tenant_id=tenant_id, key=key, fingerprint=fingerprint(request, payload), render=render)


def recorded_response(recorded: RecordedResponse) -> JSONResponse:
    media_type = PROBLEM_MEDIA_TYPE if recorded.status_code >= 400 else "application/json"
    body: Any = dict(recorded.body)
    return JSONResponse(body, status_code=recorded.status_code, media_type=media_type)
