"""The ``ledger`` command (also ``python -m ledger``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import pydantic
import structlog
import typer

from ledger.api.app import report_startup_check
from ledger.container import build_container
from ledger.domain.errors import StartupCheckFailed
from ledger.infrastructure.embedded_postgres import EmbeddedPostgres
from ledger.infrastructure.schema_migrations import upgrade_to_head
from ledger.infrastructure.settings import CredentialSource, LedgerSettings
from ledger.infrastructure.structured_logging import configure_logging

app = typer.Typer(
    help="Trust Ledger Service: a double-entry ledger for money held in trust.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_CHECK_FAILED = 1
EXIT_BAD_SETTINGS = 2


def load_settings() -> LedgerSettings:
    """Settings from the environment; a bad value is reported without echoing any input (it may be a secret)."""
    try:
        settings = LedgerSettings()
    except pydantic.ValidationError as error:
        configure_logging()
        problems = [
            f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        ]
        structlog.get_logger("ledger.cli").error("invalid_settings", problems=problems)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


@contextmanager
def database_available(settings: LedgerSettings) -> Iterator[LedgerSettings]:
    """Yields settings that point at a database: the configured one, or the embedded default started here
    (in this parent process, never in a server worker) and stopped on the way out."""
    if settings.credential_source is not CredentialSource.EMBEDDED:
        yield settings
        return
    if settings.environment == "production":
        structlog.get_logger("ledger.cli").error(
            "embedded_database_refused_in_production",
            hint="configure LEDGER_AWS_SECRET_ID (or LEDGER_SECRET_FILE) for a production database",
        )
        raise typer.Exit(EXIT_BAD_SETTINGS)
    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        info = embedded.start()
        # Server workers read their settings from the environment: point them at the embedded server's secret.
        os.environ["LEDGER_SECRET_FILE"] = str(info.secret_file)
        yield settings.model_copy(update={"secret_file": info.secret_file})
    finally:
        embedded.stop()


def _migrate(settings: LedgerSettings) -> None:
    container = build_container(settings)
    try:
        before, after = upgrade_to_head(container.database_engine())
    finally:
        container.shutdown_resources()
    structlog.get_logger("ledger.cli").info("schema_migrated", revision_before=before, revision_after=after)


def _check(settings: LedgerSettings) -> None:
    container = build_container(settings)
    try:
        report_startup_check(container.store_health())
    except StartupCheckFailed:
        raise typer.Exit(EXIT_CHECK_FAILED) from None
    finally:
        container.shutdown_resources()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to listen on [default: LEDGER_HOST or 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on [default: LEDGER_PORT or 8000]")] = None,
    workers: Annotated[int | None, typer.Option(help="server processes [default: LEDGER_WORKERS or 1]")] = None,
) -> None:
    """Serve the HTTP API. With no database configured, start the embedded PostgreSQL, migrate it, and serve."""
    import uvicorn

    settings = load_settings()
    with database_available(settings) as usable:
        if settings.credential_source is CredentialSource.EMBEDDED:
            _migrate(usable)
        # The check runs here, before any worker starts: uvicorn exits 0 when a worker's start-up fails.
        _check(usable)
        uvicorn.run(
            "ledger.container:create_app",
            factory=True,
            host=host or usable.host,
            port=port if port is not None else usable.port,
            workers=workers or usable.workers,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    settings = load_settings()
    with database_available(settings) as usable:
        _migrate(usable)


@app.command()
def check() -> None:
    """Connect and check the schema. Exit 0 when ready, 1 naming the cause otherwise."""
    settings = load_settings()
    with database_available(settings) as usable:
        _check(usable)


@app.command()
def demo(
    in_memory: Annotated[bool, typer.Option("--in-memory", help="use the in-memory adapters, no database")] = False,
) -> None:
    """Create a demo trust ledger, post deposits, disbursements and transfers, show a refused overdraft, and print
    the balances and one client's statement."""
    from rich.console import Console

    from ledger.container import use_in_memory_adapters
    from ledger.demo import run_demo

    settings = load_settings()
    if in_memory:
        container = build_container(settings)
        use_in_memory_adapters(container)
        run_demo(container, Console(width=max(Console().width, 110)))
        return
    with database_available(settings) as usable:
        if settings.credential_source is CredentialSource.EMBEDDED:
            _migrate(usable)
        container = build_container(usable)
        try:
            report_startup_check(container.store_health())
            run_demo(container, Console(width=max(Console().width, 110)))
        except StartupCheckFailed:
            raise typer.Exit(EXIT_CHECK_FAILED) from None
        finally:
            container.shutdown_resources()


def main() -> None:
    app(prog_name="ledger")


if __name__ == "__main__":
    main()
