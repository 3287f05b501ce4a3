"""The FastAPI app factory. The container is handed in; the app never builds adapters itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import structlog
from dependency_injector.containers import Container
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import ledger
from ledger.api import authentication
from ledger.api.authentication import RateLimiter
from ledger.api.problems import install_problem_handlers, install_problem_schema
from ledger.api.request_context import RequestContextMiddleware
from ledger.api.request_guards import RequestGuardMiddleware
from ledger.api.routers import bank_statements, health, ledgers, pending_transfers, reports, transfers, verification
from ledger.domain.errors import StartupCheckFailed
from ledger.domain.ports import StoreHealth

ROUTER_MODULES = [health, ledgers, transfers, pending_transfers, bank_statements, reports, verification]


def report_startup_check(store_health: StoreHealth) -> None:
    """Runs the check and logs its outcome as exactly one event; re-raises a failure."""
    log = structlog.get_logger("ledger.startup")
    try:
        status = store_health.startup_check()
    except StartupCheckFailed as failure:
        log.error("startup_check_failed", cause=failure.cause, detail=failure.message, hint=failure.hint)
        raise
    log.info(
        "startup_check_passed",
        server_version=status.server_version,
        schema_revision=status.schema_revision,
        **status.details,
    )


def create_app(container: Container) -> FastAPI:
    settings: Any = container.settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync handlers run in AnyIO's thread pool: size it with the connection pool in mind.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        await run_in_threadpool(report_startup_check, container.store_health())
        try:
            yield
        finally:
            container.shutdown_resources()
            structlog.get_logger("ledger.startup").info("service_stopped")

    app = FastAPI(
        title="Trust Ledger Service",
        version=ledger.__version__,
        description="A double-entry ledger for money held in trust. Amounts are integers in minor units.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    install_problem_handlers(app)
    install_problem_schema(app)
    for module in ROUTER_MODULES:
        app.include_router(module.router)
    container.wire(modules=[*ROUTER_MODULES, authentication])
    app.state.max_page_size = settings.max_page_size
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.state.container = container
    return app
