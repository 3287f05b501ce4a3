"""`ledger statements import`: an operator imports a bank statement from a CSV file (the CLI's wiring is in
ledger.cli)."""

from __future__ import annotations

import uuid
from pathlib import Path

import structlog
import typer

from ledger.container import Container
from ledger.domain.bank_statements import format_amount
from ledger.domain.errors import DomainError, NotFound

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_NOT_FOUND = 2


def import_statement_file(
    container: Container, path: Path, *, ledger_id: uuid.UUID, bank_account_id: uuid.UUID | None, actor: str
) -> int:
    """Imports the file into the ledger (whatever its tenant) and prints a summary: lines, matched, unmatched, and
    each unmatched line. A refusal is printed on standard error, naming the line of the file where it is one."""
    log = structlog.get_logger("ledger.cli")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        log.error("statement_file_unreadable", path=str(path), reason=str(error))
        typer.echo(f"{path}: cannot read the file as UTF-8 text ({error})", err=True)
        return EXIT_REFUSED
    try:
        ledger = container.ledger_verification_service().find_ledger(ledger_id)
    except NotFound:
        log.error("ledger_not_found", ledger_id=str(ledger_id))
        typer.echo(f"no ledger {ledger_id}", err=True)
        return EXIT_NOT_FOUND
    service = container.bank_statement_service()
    try:
        statement = service.import_statement(ledger.tenant_id, ledger.id, text, actor, bank_account_id=bank_account_id)
    except DomainError as refusal:
        log.error("statement_refused", ledger_id=str(ledger.id), path=str(path), code=refusal.code)
        typer.echo(f"{path}: refused ({refusal.code}): {refusal.message}", err=True)
        return EXIT_NOT_FOUND if isinstance(refusal, NotFound) else EXIT_REFUSED
    log.info(
        "statement_imported",
        ledger_id=str(ledger.id),
        statement_id=str(statement.id),
        lines=statement.line_count,
        matched=statement.matched_line_count,
        actor=actor,
    )
    currency = ledger.currency
    typer.echo(
        f"statement {statement.id}: {statement.period_start} to {statement.period_end}, "
        f"opening {format_amount(statement.opening_balance, currency)}, "
        f"closing {format_amount(statement.closing_balance, currency)} {currency.code}"
    )
    typer.echo(
        f"lines: {statement.line_count}, matched: {statement.matched_line_count}, "
        f"unmatched: {statement.unmatched_line_count}"
    )
    for line in statement.lines:
        if not line.matched:
            typer.echo(
                f"  unmatched line {line.line_number}: {line.date} {format_amount(line.amount, currency)} "
                f"{line.reference} {line.description}".rstrip()
            )
    return EXIT_OK
