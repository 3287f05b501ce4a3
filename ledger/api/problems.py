"""RFC 9457 problem+json bodies with a stable ``code``. The one place that maps domain errors to HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ledger.domain.api_keys import Forbidden, Unauthenticated
from ledger.domain.errors import Conflict, DomainError, InvalidRequest, NotFound, ServiceUnavailable

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ApiProblem(Exception):
    """A refusal decided by the HTTP layer itself (a missing header, a wrong content type, a body too large)."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


_STATUS_OF_ERROR: tuple[tuple[type[DomainError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 422),
    (ServiceUnavailable, 503),
)

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(BaseModel):
    """RFC 9457 problem details, with the service's stable machine-readable ``code``."""

    type: str = Field(examples=["urn:trust-ledger:problem:account_not_found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    code: str = Field(description="stable machine-readable error code", examples=["account_not_found"])
    detail: str = Field(examples=["account not found"])
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="validation errors, for code validation_error"
    )


_DOCUMENTED_STATUSES = {
    400: "A write without a usable Idempotency-Key. Codes: `idempotency_key_required`, `invalid_idempotency_key`",
    401: "No API key, or one that is unknown, malformed or revoked. Codes: `unauthenticated`, `invalid_api_key`",
    403: "The API key's role may not do this. Code: `forbidden`",
    404: "No such resource for this tenant (another tenant's ids answer the same). Codes: `ledger_not_found`, "
    "`account_not_found`, `transfer_not_found`, `not_found`",
    405: "The path does not take this method (see Allow). Code: `method_not_allowed`",
    409: "A conflict with the current state. Codes: `idempotency_key_in_flight` (same key still running; retry "
    "later), `account_code_taken`",
    413: "The body is larger than the service accepts. Code: `body_too_large`",
    415: "The body is not application/json. Code: `unsupported_media_type`",
    422: "Malformed, or refused by a ledger rule (rule refusals are recorded with the Idempotency-Key and replayed). "
    "Codes: `validation_error`, `invalid_amount`, `unbalanced_transfer`, `too_few_postings`, `too_many_postings`, "
    "`duplicate_account`, `ledger_mismatch`, `invalid_description`, `invalid_metadata`, `metadata_too_large`, "
    "`effective_date_in_future`, `invalid_page_size`, `invalid_cursor`, `invalid_timestamp`, `unknown_currency`, "
    "`invalid_time_zone`, `account_kind_not_allowed`, `overdraft_not_allowed`, `not_a_trust_ledger`, "
    "`not_a_client_account`, `client_account_required`, `bank_account_missing`, `bank_account_ambiguous`, "
    "`firm_funds_account_missing`, `idempotency_key_reused`; rules: `insufficient_funds`, `account_closed`, "
    "`account_not_empty`, `transfer_already_reversed`, `cannot_reverse_reversal`",
    429: "Too many requests for this API key (per server process); wait Retry-After seconds. Code: `rate_limited`",
    503: "The database is unavailable, busy or timed out; retry after Retry-After seconds (a write with the same "
    "Idempotency-Key is safe). Codes: `database_unavailable`, `database_pool_exhausted`, `lock_timeout`, "
    "`statement_timeout`, `transaction_retries_exhausted`",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem statuses a route can answer."""
    return {
        status: {
            "description": _DOCUMENTED_STATUSES[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def problem_body(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"urn:trust-ledger:problem:{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }


def problem_response(
    status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = problem_body(status, code, detail, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DomainError)
    status = next((status for kind, status in _STATUS_OF_ERROR if isinstance(error, kind)), 422)
    headers = None
    if isinstance(error, Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="trust-ledger"'}
    if isinstance(error, ServiceUnavailable):
        headers = {"Retry-After": str(error.retry_after_seconds)}
        structlog.get_logger(__name__).warning("request_refused_store_unavailable", code=error.code)
    return problem_response(status, error.code, error.message, headers=headers)


def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {
            "location": [str(part) for part in item.get("loc", ())],
            "message": item.get("msg", ""),
            "type": item.get("type"),
        }
        for item in error.errors()
    ]
    return problem_response(422, "validation_error", "the request is not valid", errors=errors)


def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, f"http_{error.status_code}")
    headers = dict(error.headers or {})
    if error.status_code == 405:
        # Starlette names only the methods of the first route that matched the path; list every route's.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(error.status_code, code, str(error.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route answers fully for this path."""
    allowed = []
    for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _api_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiProblem)
    return problem_response(error.status, error.code, error.message, headers=error.headers)


def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    structlog.get_logger(__name__).exception("request_failed_unexpectedly", error_type=type(error).__name__)
    return problem_response(500, "internal_error", "the service failed to handle the request")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(Exception, _unexpected_error)


def install_problem_schema(app: FastAPI) -> None:
    """Adds the ``Problem`` schema that every documented error response refers to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            # The key is enforced by a dependency (so its absence is a 400 problem, not a 422): document it as required.
            for path, path_item in schema.get("paths", {}).items():
                for parameter in path_item.get("post", {}).get("parameters", []):
                    if parameter.get("in") == "header" and parameter.get("name") == "Idempotency-Key":
                        parameter["required"] = True
                for operation in path_item.values():
                    # FastAPI documents its own 422 body; the service answers every 422 as a problem.
                    if operation.get("parameters") or operation.get("requestBody"):
                        operation.setdefault("responses", {})["422"] = problem_responses(422)[422]
                if path.startswith("/v1/"):
                    # Every /v1 operation needs an API key: document what a key problem answers.
                    for operation in path_item.values():
                        for status, response in problem_responses(401, 403, 429).items():
                            operation.setdefault("responses", {}).setdefault(str(status), response)
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
