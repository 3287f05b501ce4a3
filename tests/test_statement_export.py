"""`ledger export statement`: an account's whole statement streamed from one snapshot, as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.container import Container
from ledger.domain.errors import NotFound
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, Ledger, LedgerKind
from ledger.domain.transfer_batches import BatchMode
from ledger.domain.transfer_service import StatementExport
from ledger.domain.transfers import PostingDraft, Side, TransferDraft
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import write_private_file
from ledger.progress_printer import ProgressPrinter
from ledger.statement_export_commands import STATEMENT_COLUMNS, StatementFormat, write_statement

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:export"
# A description a CSV writer must quote: a comma, a quote, a line break and a non-ASCII letter.
AWKWARD = 'rent, "May"\nRéf. 7'


@dataclass
class History:
    ledger: Ledger
    cash: uuid.UUID
    client: uuid.UUID


def record_history(container: Container, transfers: int = 5) -> History:
    """``transfers`` deposits into a client account (credit normal) from cash, then one refund back: amounts
    1.01, 2.02, ... and a final debit of 0.50."""
    ledger = container.ledger_service().open_ledger(
        TENANT, name=f"export {uuid.uuid4().hex[:6]}", currency="USD", kind=LedgerKind.GENERAL
    )
    accounts = container.account_service()
    cash = accounts.open_account(
        TENANT, ledger.id, code="cash", name="Cash", kind=AccountKind.ASSET, prevent_overdraft=False
    ).id
    client = accounts.open_account(TENANT, ledger.id, code="client", name="Client", kind=AccountKind.LIABILITY).id

    def move(debit: uuid.UUID, credit: uuid.UUID, amount: int, description: str) -> TransferDraft:
        return TransferDraft(
            ledger_id=ledger.id,
            postings=(
                PostingDraft(account_id=debit, side=Side.DEBIT, amount=amount),
                PostingDraft(account_id=credit, side=Side.CREDIT, amount=amount),
            ),
            description=description,
        )

    drafts = [move(cash, client, 101 * number, f"deposit {number}") for number in range(1, transfers + 1)]
    drafts.append(move(client, cash, 50, AWKWARD))
    container.transfer_batch_service().post_batch(TENANT, ACTOR, ledger.id, drafts, BatchMode.ATOMIC)
    return History(ledger, cash, client)


def exported(container: Container, account_id: uuid.UUID, statement_format: StatementFormat) -> tuple[str, int]:
    out = io.StringIO()
    written = container.transfer_service().export_statement(
        TENANT, account_id, lambda export: write_statement(export, out, statement_format)
    )
    return out.getvalue(), written


def test_csv_export_has_every_line_in_order_with_exact_decimals(any_container: Container) -> None:
    history = record_history(any_container)
    text, written = exported(any_container, history.client, StatementFormat.CSV)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(STATEMENT_COLUMNS)
    assert written == len(rows) - 1 == 6
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [row["account_version"] for row in body] == ["1", "2", "3", "4", "5", "6"]
    assert [row["amount"] for row in body] == ["1.01", "2.02", "3.03", "4.04", "5.05", "0.50"]
    assert [row["side"] for row in body] == ["credit"] * 5 + ["debit"]
    assert [row["running_balance"] for row in body] == ["1.01", "3.03", "6.06", "10.10", "15.15", "14.65"]
    assert body[-1]["description"] == AWKWARD
    assert body[0]["description"] == "deposit 1"
    assert len({row["transfer_id"] for row in body}) == 6
    statement = any_container.transfer_service().statement(TENANT, history.client, limit=10).items
    assert [row["transfer_id"] for row in body] == [str(line.transfer_id) for line in statement]
    assert [row["recorded_at"] for row in body] == [line.recorded_at.isoformat() for line in statement]


def test_json_lines_export_carries_minor_units(any_container: Container) -> None:
    history = record_history(any_container, transfers=2)
    text, written = exported(any_container, history.cash, StatementFormat.JSONL)
    lines = [json.loads(line) for line in text.splitlines()]
    assert written == len(lines) == 3
    assert [(line["side"], line["amount"], line["running_balance"]) for line in lines] == [
        ("debit", 101, 101),
        ("debit", 202, 303),
        ("credit", 50, 253),
    ]
    assert lines[-1]["description"] == AWKWARD


def test_unknown_account_is_refused(any_container: Container) -> None:
    with pytest.raises(NotFound):
        exported(any_container, uuid.uuid4(), StatementFormat.CSV)


def test_export_reads_one_snapshot_while_entries_are_posted(pg_container: Container) -> None:
    history = record_history(pg_container, transfers=3)
    transfers = pg_container.transfer_service()

    def consume(export: StatementExport) -> list[int]:
        # Committed by another transaction after the export's snapshot was taken, before its lines are read.
        transfers.post_transfer(
            TENANT,
            ACTOR,
            TransferDraft(
                ledger_id=history.ledger.id,
                postings=(
                    PostingDraft(account_id=history.cash, side=Side.DEBIT, amount=7),
                    PostingDraft(account_id=history.client, side=Side.CREDIT, amount=7),
                ),
            ),
        )
        return [line.account_version for line in export.lines]

    assert transfers.export_statement(TENANT, history.client, consume) == [1, 2, 3, 4]
    assert pg_container.account_service().get_account(TENANT, history.client).version == 5


def test_progress_shows_count_share_and_rate_about_once_a_second() -> None:
    now = [0.0]
    printed: list[str] = []
    progress = ProgressPrinter("export", unit="lines", clock=lambda: now[0], echo=printed.append)
    for done in range(1_000, 10_001, 1_000):
        now[0] += 0.25
        progress(done, 10_000)
    assert printed == [
        "export: 4,000 of 10,000 lines (40%), 4,000 lines/s",
        "export: 8,000 of 10,000 lines (80%), 4,000 lines/s",
        "export: 10,000 of 10,000 lines (100%), 4,000 lines/s",
    ]


def test_the_command_writes_the_file_and_shows_progress(
    pg_container: Container, service_database: DatabaseCredentials, tmp_path: Path
) -> None:
    history = record_history(pg_container)
    secret_file = tmp_path / "secrets" / "service.json"
    write_private_file(secret_file, json.dumps(service_database.to_document()))
    environment = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    environment.update(LEDGER_ENVIRONMENT="test", LEDGER_SECRET_FILE=str(secret_file), LEDGER_LOG_FORMAT="json")

    def ledger(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger", "export", "statement", *arguments],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    target = tmp_path / "statement.csv"
    done = ledger("--account", str(history.client), "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"statement of account {history.client}: 6 of 6 lines (100%)" in done.stderr
    rows = list(csv.reader(target.open(encoding="utf-8", newline="")))
    assert len(rows) == 7
    assert rows[-1][STATEMENT_COLUMNS.index("description")] == AWKWARD
    assert not target.with_name("statement.csv.partial").exists()

    streamed = ledger("--account", str(history.cash), "--format", "jsonl")
    assert streamed.returncode == 0, streamed.stderr
    assert [json.loads(line)["account_version"] for line in streamed.stdout.splitlines()] == [1, 2, 3, 4, 5, 6]

    missing = ledger("--account", str(uuid.uuid4()), "--output", str(tmp_path / "missing.csv"))
    assert missing.returncode == 2
    assert not (tmp_path / "missing.csv").exists()
    assert not (tmp_path / "missing.csv.partial").exists()


def test_a_reader_that_stops_early_ends_the_export_quietly(
    pg_container: Container, service_database: DatabaseCredentials, tmp_path: Path
) -> None:
    history = record_history(pg_container, transfers=999)  # about 110 kB: more than a pipe holds
    secret_file = tmp_path / "secrets" / "service.json"
    write_private_file(secret_file, json.dumps(service_database.to_document()))
    environment = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    environment.update(LEDGER_ENVIRONMENT="test", LEDGER_SECRET_FILE=str(secret_file), LEDGER_LOG_FORMAT="json")
    process = subprocess.Popen(
        [sys.executable, "-m", "ledger", "export", "statement", "--account", str(history.client)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith(b"account_version,")
    process.stdout.close()
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 1, errors
    assert b"statement_export_stopped" in errors
    assert b"Traceback" not in errors
