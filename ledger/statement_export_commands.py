"""`ledger export statement`: an account's whole statement, read in one consistent snapshot and streamed to CSV or
JSON lines as the rows arrive (the CLI's wiring is in ledger.cli). Memory stays flat however long the history is.

Money is exact, as in the reports: decimals in the ledger's currency in CSV, integers in minor units in JSON lines.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import structlog
import typer

from ledger.container import Container
from ledger.domain.errors import NotFound
from ledger.domain.transfer_service import StatementExport
from ledger.domain.transfers import StatementLine
from ledger.progress_printer import ProgressPrinter
from ledger.report_formats import format_money

EXIT_OK = 0
EXIT_NOT_FOUND = 2
EXIT_OUTPUT_CLOSED = 1
PROGRESS_EVERY_LINES = 1_000

STATEMENT_COLUMNS = (
    "account_version",
    "transfer_id",
    "effective_date",
    "recorded_at",
    "kind",
    "side",
    "amount",
    "running_balance",
    "description",
)


class StatementFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


def statement_csv_row(line: StatementLine, exponent: int) -> list[str]:
    return [
        str(line.account_version),
        str(line.transfer_id),
        line.effective_date.isoformat(),
        line.recorded_at.isoformat(),
        line.kind.value,
        line.side.value,
        format_money(line.amount, exponent),
        format_money(line.balance_after, exponent),
        line.description,
    ]


def statement_json_line(line: StatementLine) -> str:
    return json.dumps(
        {
            "account_version": line.account_version,
            "transfer_id": str(line.transfer_id),
            "effective_date": line.effective_date.isoformat(),
            "recorded_at": line.recorded_at.isoformat(),
            "kind": line.kind.value,
            "side": line.side.value,
            "amount": line.amount,
            "running_balance": line.balance_after,
            "description": line.description,
        },
        ensure_ascii=False,
    )


def write_statement(
    export: StatementExport,
    out: TextIO,
    statement_format: StatementFormat,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Writes each line as it comes and returns how many were written. The total for progress is the account's
    version in the snapshot: the number of its postings."""
    total = export.account.version
    exponent = export.ledger.currency.exponent
    write_row: Callable[[StatementLine], object]
    if statement_format is StatementFormat.CSV:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATEMENT_COLUMNS)
        write_row = lambda line: writer.writerow(statement_csv_row(line, exponent))  # noqa: E731
    else:
        write_row = lambda line: out.write(statement_json_line(line) + "\n")  # noqa: E731
    written = 0
    for line in export.lines:
        write_row(line)
        written += 1
        if on_progress is not None and written % PROGRESS_EVERY_LINES == 0:
            on_progress(written, total)
    if on_progress is not None:
        on_progress(written, total)
    return written


@contextlib.contextmanager
def _destination(output: Path | None) -> Iterator[TextIO]:
    """Standard output, or the file written under a ``.partial`` name and renamed only once complete: an export
    that fails or is interrupted never looks finished."""
    if output is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as stream:
            yield stream
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


def export_account_statement(
    container: Container,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    statement_format: StatementFormat,
    output: Path | None,
) -> int:
    log = structlog.get_logger("ledger.cli")
    progress = ProgressPrinter(f"statement of account {account_id}", unit="lines")
    started = time.monotonic()
    try:
        with _destination(output) as stream:
            written = container.transfer_service().export_statement(
                tenant_id, account_id, lambda export: write_statement(export, stream, statement_format, progress)
            )
    except NotFound as error:
        log.error("statement_export_refused", account_id=str(account_id), code=error.code)
        typer.echo(f"no account {account_id} in tenant {tenant_id}", err=True)
        return EXIT_NOT_FOUND
    except BrokenPipeError:
        # The reader of standard output went away (`| head`): stop quietly, and let nothing flush into the pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        log.warning("statement_export_stopped", account_id=str(account_id), reason="standard output closed")
        return EXIT_OUTPUT_CLOSED
    seconds = time.monotonic() - started
    log.info(
        "statement_exported",
        account_id=str(account_id),
        lines=written,
        format=statement_format.value,
        path=None if output is None else str(output),
        seconds=round(seconds, 3),
    )
    return EXIT_OK
