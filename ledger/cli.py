"""The ``ledger`` command (also ``python -m ledger``)."""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pydantic
import structlog
import typer

from ledger.api.app import report_startup_check
from ledger.container import Container, build_container
from ledger.domain.api_keys import ApiKeyRole
from ledger.domain.errors import StartupCheckFailed
from ledger.domain.model import DEFAULT_TENANT_ID
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


keys_app = typer.Typer(help="Create, list and revoke API keys (each shown once, stored only as a hash).")
app.add_typer(keys_app, name="keys")


@contextmanager
def _service_container() -> Iterator[Container]:
    with _service_container_for(load_settings()) as container:
        yield container


@contextmanager
def _service_container_for(settings: LedgerSettings) -> Iterator[Container]:
    with database_available(settings) as usable:
        if settings.credential_source is CredentialSource.EMBEDDED:
            _migrate(usable)
        container = build_container(usable)
        try:
            yield container
        finally:
            container.shutdown_resources()


def _operator() -> str:
    return f"operator:{getpass.getuser()}"


@keys_app.command("create")
def create_key(
    role: Annotated[ApiKeyRole, typer.Option(help="read, write (read + post) or admin")] = ApiKeyRole.WRITE,
    name: Annotated[str, typer.Option(help="what the key is for")] = "api key",
    tenant: Annotated[uuid.UUID, typer.Option(help="the tenant whose ledgers the key may use")] = DEFAULT_TENANT_ID,
) -> None:
    """Create a key and print it once (on standard output; it is never logged or stored)."""
    with _service_container() as container:
        key, token = container.api_key_service().create_key(tenant, role=role, name=name, created_by=_operator())
    structlog.get_logger("ledger.cli").info(
        "api_key_created", key_id=key.id, tenant_id=str(key.tenant_id), role=key.role.value, actor=key.created_by
    )
    typer.echo(token)


@keys_app.command("list")
def list_keys(
    tenant: Annotated[uuid.UUID | None, typer.Option(help="only this tenant's keys")] = None,
) -> None:
    """List keys (ids, tenants, roles, states; never secrets)."""
    with _service_container() as container:
        keys = container.api_key_service().list_keys(tenant)
    for key in keys:
        state = f"revoked {key.revoked_at.isoformat()} by {key.revoked_by}" if key.revoked_at else "active"
        typer.echo(f"{key.id}  tenant={key.tenant_id}  role={key.role.value}  {state}  name={key.name!r}")


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="the key id (the part after tlk_ and before the dot)")],
) -> None:
    """Revoke a key: requests with it answer 401 from then on (within the API's key cache time)."""
    from ledger.domain.errors import NotFound

    with _service_container() as container:
        try:
            key = container.api_key_service().revoke_key(key_id, revoked_by=_operator())
        except NotFound:
            structlog.get_logger("ledger.cli").error("api_key_not_found", key_id=key_id)
            raise typer.Exit(EXIT_BAD_SETTINGS) from None
    structlog.get_logger("ledger.cli").info("api_key_revoked", key_id=key.id, actor=key.revoked_by)


@app.command()
def verify(
    ledger_id: Annotated[
        uuid.UUID | None, typer.Option("--ledger", help="only this ledger [default: every ledger]")
    ] = None,
    use_checkpoint: Annotated[
        bool, typer.Option("--checkpoint/--no-checkpoint", help="check against the latest signed checkpoint")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the reports as JSON on standard output (logs go to standard error)")
    ] = False,
) -> None:
    """Recompute every posting chain and balance counter from the postings, check every entry balances and,
    where a signed checkpoint exists, that history still matches it. Exit 3 on any mismatch."""
    import sys

    from ledger.ledger_integrity_commands import verify_ledgers

    settings = load_settings()
    if as_json:
        configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    with _service_container_for(settings) as container:
        code = verify_ledgers(container, settings, ledger_id=ledger_id, use_checkpoint=use_checkpoint, as_json=as_json)
    raise typer.Exit(code)


@app.command()
def checkpoint(
    ledger_id: Annotated[
        uuid.UUID | None, typer.Option("--ledger", help="only this ledger [default: every ledger]")
    ] = None,
) -> None:
    """Sign every account's chain head with the checkpoint key (held outside the database) and write the
    checkpoint to LEDGER_CHECKPOINT_DIR, for `ledger verify` to check history against."""
    from ledger.ledger_integrity_commands import write_checkpoints

    settings = load_settings()
    with _service_container_for(settings) as container:
        code = write_checkpoints(container, settings, ledger_id=ledger_id)
    raise typer.Exit(code)


statements_app = typer.Typer(help="Bank statements of trust bank accounts (format: docs/bank-statements.md).")
app.add_typer(statements_app, name="statements")


@statements_app.command("import")
def import_statement(
    file: Annotated[Path, typer.Argument(help="the statement as CSV", dir_okay=False)],
    ledger_id: Annotated[uuid.UUID, typer.Option("--ledger", help="the trust ledger")],
    bank_account_id: Annotated[
        uuid.UUID | None, typer.Option("--bank-account", help="the bank account [default: the ledger's only one]")
    ] = None,
) -> None:
    """Import a bank statement and match its lines to ledger entries; print lines, matched and unmatched. Exit 1
    when the statement is refused (the message names the line), 2 for an unknown ledger or bank account."""
    from ledger.bank_statement_commands import import_statement_file

    with _service_container() as container:
        code = import_statement_file(
            container, file, ledger_id=ledger_id, bank_account_id=bank_account_id, actor=_operator()
        )
    raise typer.Exit(code)


def main() -> None:
    app(prog_name="ledger")


if __name__ == "__main__":
    main()
