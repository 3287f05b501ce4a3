"""API keys on every /v1 request: who is calling (401), may they (403), not too often (429)."""

import threading
import time
from typing import Annotated

import structlog
from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from ledger.api.problems import ApiProblem
from ledger.domain.api_keys import ApiKeyRole, ApiKeyService, Principal

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key as a bearer token: `Authorization: Bearer tlk_<id>.<secret>` (created with "
    "`ledger keys create`). Keys belong to one tenant and carry a role: read, write or admin.",
)


class RateLimiter:
    """A token bucket per API key, in this process only (a global limit belongs at the gateway)."""

    def __init__(self, per_second: float, burst: int) -> None:
        self._per_second = per_second
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key_id: str) -> float | None:
        """Takes a token; None when one was free, else the seconds until one will be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._per_second)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return None
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / self._per_second


async def authenticated_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """Runs on the event loop: a key looked up in the last few seconds is checked from the cache with no thread
    hop; only a cache miss reads the store, in the thread pool."""
    token = credentials.credentials if credentials is not None else x_api_key
    keys: ApiKeyService = request.app.state.container.api_key_service()
    principal = keys.authenticate_from_cache(token)
    if principal is None:
        principal = await run_in_threadpool(keys.authenticate, token)
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.retry_after(principal.key_id)
    if wait is not None:
        raise ApiProblem(
            429,
            "rate_limited",
            "too many requests for this API key; slow down",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    structlog.contextvars.bind_contextvars(api_key_id=principal.key_id)
    return principal


async def reader(principal: Annotated[Principal, Depends(authenticated_principal)]) -> Principal:
    principal.require(ApiKeyRole.READ)
    return principal


async def writer(principal: Annotated[Principal, Depends(authenticated_principal)]) -> Principal:
    principal.require(ApiKeyRole.WRITE)
    return principal


Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
