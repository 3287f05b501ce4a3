"""The ``ledger`` command (also ``python -m ledger``)."""

from __future__ import annotations

import getpass
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
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
from ledger.domain.trust_reports import Report
from ledger.infrastructure.database_privileges import LeastPrivilegeFailed, migrate_with_least_privilege
from ledger.infrastructure.embedded_postgres import EmbeddedPostgres
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
        # The owner's secret (for migrating) stays in this process's settings, out of the workers' environment.
        os.environ["LEDGER_SECRET_FILE"] = str(info.secret_file)
        yield settings.model_copy(update={"secret_file": info.secret_file, "owner_secret_file": info.owner_secret_file})
    finally:
        embedded.stop()


def _migrate(settings: LedgerSettings) -> None:
    """Migrate as the schema owner, then grant the service role its least privileges. Without owner credentials
    (development only) the service's own role migrates, with a warning."""
    log = structlog.get_logger("ledger.cli")
    if settings.environment == "production" and settings.owner_credential_source is None:
        log.error(
            "owner_credentials_required",
            hint="production migrates as the schema owner: set LEDGER_OWNER_AWS_SECRET_ID or LEDGER_OWNER_SECRET_FILE",
        )
        raise typer.Exit(EXIT_BAD_SETTINGS)
    container = build_container(settings)
    try:
        owner_engine = (
            container.database_engine()
            if settings.owner_credential_source is None
            else container.owner_database_engine()
        )
        outcome = migrate_with_least_privilege(owner_engine, container.secret_provider().current().username)
    except LeastPrivilegeFailed as error:
        log.error("least_privilege_failed", reason=str(error))
        raise typer.Exit(EXIT_CHECK_FAILED) from None
    finally:
        container.shutdown_resources()
    log.info("schema_migrated", revision_before=outcome.revision_before, revision_after=outcome.revision_after)


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
        # Workers serve as the service role: they are not told where the owner's credentials are.
        for name in [name for name in os.environ if name.startswith("LEDGER_OWNER_")]:
            del os.environ[name]
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


report_app = typer.Typer(help="Trust-accounting reports as JSON, CSV or a printable HTML page.")
app.add_typer(report_app, name="report")

FormatOption = Annotated[str, typer.Option("--format", help="json, csv or html")]
OutputOption = Annotated[
    Path | None, typer.Option("--output", help="write the report to this file [default: standard output]")
]
TenantOption = Annotated[uuid.UUID, typer.Option(help="the tenant that owns the ledger")]
LedgerOption = Annotated[uuid.UUID, typer.Option("--ledger", help="the ledger id")]
DateOption = Annotated[str, typer.Option(help="a date, YYYY-MM-DD")]


def _date(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        structlog.get_logger("ledger.cli").error("invalid_date", option=name, expected="YYYY-MM-DD")
        raise typer.Exit(EXIT_BAD_SETTINGS) from None


def _write_report(build: Callable[[Container], Report], report_format: str, output: Path | None) -> None:
    from ledger.domain.errors import DomainError
    from ledger.report_formats import ReportFormat, render_report

    try:
        chosen = ReportFormat(report_format)
    except ValueError:
        structlog.get_logger("ledger.cli").error(
            "invalid_report_format", format=report_format, expected="json, csv, html"
        )
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    with _service_container() as container:
        try:
            report = build(container)
        except DomainError as error:
            structlog.get_logger("ledger.cli").error("report_refused", code=error.code, reason=error.message)
            raise typer.Exit(EXIT_BAD_SETTINGS) from None
    rendered = render_report(report, chosen)
    text = json.dumps(rendered, indent=2) + "\n" if isinstance(rendered, dict) else rendered
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        structlog.get_logger("ledger.cli").info("report_written", kind=report.kind, path=str(output))


@report_app.command("trust-listing")
def report_trust_listing(
    ledger_id: LedgerOption,
    as_of: DateOption,
    tenant: TenantOption = DEFAULT_TENANT_ID,
    report_format: FormatOption = "json",
    output: OutputOption = None,
) -> None:
    """Every client's balance as of a date, the total, firm funds and the bank book balance; shortfalls flagged."""
    day = _date(as_of, "--as-of")
    _write_report(lambda c: c.trust_report_service().trust_listing(tenant, ledger_id, day), report_format, output)


@report_app.command("journal")
def report_journal(
    ledger_id: LedgerOption,
    start: DateOption,
    end: DateOption,
    tenant: TenantOption = DEFAULT_TENANT_ID,
    report_format: FormatOption = "json",
    output: OutputOption = None,
) -> None:
    """Receipts and disbursements of the trust bank account in a period."""
    first, last = _date(start, "--start"), _date(end, "--end")
    _write_report(lambda c: c.trust_report_service().journal(tenant, ledger_id, first, last), report_format, output)


@report_app.command("trial-balance")
def report_trial_balance(
    ledger_id: LedgerOption,
    as_of: DateOption,
    tenant: TenantOption = DEFAULT_TENANT_ID,
    report_format: FormatOption = "json",
    output: OutputOption = None,
) -> None:
    """Every account's debit or credit balance as of a date."""
    day = _date(as_of, "--as-of")
    _write_report(lambda c: c.trust_report_service().trial_balance(tenant, ledger_id, day), report_format, output)


@report_app.command("client-ledger")
def report_client_ledger(
    account_id: Annotated[uuid.UUID, typer.Option("--account", help="the client account id")],
    start: DateOption,
    end: DateOption,
    tenant: TenantOption = DEFAULT_TENANT_ID,
    report_format: FormatOption = "json",
    output: OutputOption = None,
) -> None:
    """One client's entries in a period with the running balance."""
    first, last = _date(start, "--start"), _date(end, "--end")
    _write_report(
        lambda c: c.trust_report_service().client_ledger(tenant, account_id, first, last), report_format, output
    )


@report_app.command("reconciliation")
def report_reconciliation(
    ledger_id: LedgerOption,
    as_of: DateOption,
    tenant: TenantOption = DEFAULT_TENANT_ID,
    report_format: FormatOption = "json",
    output: OutputOption = None,
) -> None:
    """The three-way reconciliation as of a date, with every reconciling item."""
    day = _date(as_of, "--as-of")
    _write_report(lambda c: c.reconciliation_service().report(tenant, ledger_id, day), report_format, output)


@app.command("sign-off")
def sign_off(
    ledger_id: LedgerOption,
    as_of: DateOption,
    tenant: TenantOption = DEFAULT_TENANT_ID,
) -> None:
    """Sign off the (balanced) reconciliation of a date: entries effective on or before it are refused from then on
    (`period_locked`)."""
    from ledger.domain.errors import DomainError

    day = _date(as_of, "--as-of")
    with _service_container() as container:
        try:
            record = container.reconciliation_service().sign_off(tenant, _operator(), ledger_id, day)
        except DomainError as error:
            structlog.get_logger("ledger.cli").error("sign_off_refused", code=error.code, reason=error.message)
            raise typer.Exit(EXIT_CHECK_FAILED) from None
    structlog.get_logger("ledger.cli").info(
        "reconciliation_signed_off", ledger_id=str(ledger_id), as_of=day.isoformat(), actor=record.signed_off_by
    )


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


export_app = typer.Typer(help="Streamed exports of long histories, each read in one consistent snapshot.")
app.add_typer(export_app, name="export")


@export_app.command("statement")
def export_statement(
    account_id: Annotated[uuid.UUID, typer.Option("--account", help="the account id")],
    tenant: TenantOption = DEFAULT_TENANT_ID,
    statement_format: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", help="write the statement to this file [default: standard output]")
    ] = None,
) -> None:
    """Every posting of one account, oldest first, with the running balance: read in one snapshot and written as
    the rows arrive (memory stays flat for any length of history), progress on standard error. CSV amounts are
    decimals in the ledger's currency, JSON lines amounts integers in minor units. Exit 2 for an unknown account."""
    import sys

    from ledger.statement_export_commands import StatementFormat, export_account_statement

    try:
        chosen = StatementFormat(statement_format)
    except ValueError:
        configure_logging(stream=sys.stderr)
        structlog.get_logger("ledger.cli").error(
            "invalid_statement_format", format=statement_format, expected="csv, jsonl"
        )
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    settings = load_settings()
    # The statement may go to standard output: the logs go to standard error.
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    with _service_container_for(settings) as container:
        code = export_account_statement(
            container, tenant_id=tenant, account_id=account_id, statement_format=chosen, output=output
        )
    raise typer.Exit(code)


def main() -> None:
    app(prog_name="ledger")


if __name__ == "__main__":
    main()
