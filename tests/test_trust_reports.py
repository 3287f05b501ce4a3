"""Trust reports: the figures (on both adapters), CSV that parses back to the same figures, and HTML that renders
in headless Chromium."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ledger.container import Container
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, Ledger
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.domain.trust_reports import Report
from ledger.report_formats import report_as_csv, report_as_html, report_as_json

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:reports"


@dataclass
class Month:
    ledger: Ledger
    bank: uuid.UUID
    firm: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    carol: uuid.UUID
    start: date
    end: date


def record_month(container: Container) -> Month:
    """A month of activity (UTC dates) ending today: deposits (one uncleared, then cleared), disbursements, a fee,
    a transfer between clients, a bank charge, a reversal, and a bounced deposit that leaves Carol overdrawn."""
    ledgers, accounts = container.ledger_service(), container.account_service()
    trust, transfers = container.trust_service(), container.transfer_service()
    ledger = ledgers.open_ledger(TENANT, name=f"Reports {uuid.uuid4().hex[:6]}", currency="USD")
    bank = accounts.open_account(TENANT, ledger.id, code="bank", name="Trust bank", kind=AccountKind.BANK)
    firm = accounts.open_account(TENANT, ledger.id, code="firm", name="Firm funds", kind=AccountKind.FIRM_FUNDS)
    alice = accounts.open_account(TENANT, ledger.id, code="c-1", name="Alice <Estate> & Co", kind=AccountKind.CLIENT)
    bob = accounts.open_account(TENANT, ledger.id, code="c-2", name="Bob", kind=AccountKind.CLIENT)
    carol = accounts.open_account(TENANT, ledger.id, code="c-3", name="Carol", kind=AccountKind.CLIENT)
    end = datetime.now(UTC).date()  # the bounced cheque is booked today (the ledger keeps UTC dates)
    start = end - timedelta(days=29)

    def operate(kind: TrustOperationKind, amount: int, day: int, **extra: Any) -> Any:
        return trust.execute(
            TENANT,
            ACTOR,
            TrustOperation(
                kind=kind,
                ledger_id=ledger.id,
                amount=amount,
                description=f"{kind.value} day {day}",
                effective_date=start + timedelta(days=day),
                **extra,
            ),
        )

    operate(TrustOperationKind.FIRM_DEPOSIT, 50_00, 0)
    operate(TrustOperationKind.DEPOSIT, 10_000_00, 1, client_account_id=alice.id)
    uncleared = operate(TrustOperationKind.DEPOSIT, 2_500_00, 3, client_account_id=bob.id, cleared=False)
    trust.clear_deposit(TENANT, ACTOR, uncleared.id)
    bounced = operate(TrustOperationKind.DEPOSIT, 700_00, 4, client_account_id=carol.id)
    operate(TrustOperationKind.DISBURSEMENT, 400_00, 5, client_account_id=carol.id)
    operate(TrustOperationKind.DISBURSEMENT, 1_250_00, 8, client_account_id=alice.id)
    operate(TrustOperationKind.EARNED_FEE, 900_00, 12, client_account_id=alice.id)
    operate(TrustOperationKind.CLIENT_TRANSFER, 300_00, 15, client_account_id=alice.id, to_client_account_id=bob.id)
    operate(TrustOperationKind.BANK_CHARGE, 15_00, 20)
    mistake = operate(TrustOperationKind.DISBURSEMENT, 99_00, 22, client_account_id=bob.id)
    transfers.reverse_transfer(TENANT, ACTOR, mistake.id)
    trust.return_deposit(TENANT, ACTOR, bounced.id, description="cheque returned unpaid")
    return Month(ledger, bank.id, firm.id, alice.id, bob.id, carol.id, start, end)


def figures(report: Report) -> dict[str, int]:
    return {figure.label: figure.amount for figure in report.figures}


def test_trust_listing_ties_clients_and_firm_funds_to_the_bank_and_flags_the_shortfall(
    any_container: Container,
) -> None:
    month = record_month(any_container)
    report = any_container.trust_report_service().trust_listing(TENANT, month.ledger.id, month.end)
    listed = {row[0]: row[2] for row in report.tables[0].rows}
    # Alice 10,000 - 1,250 - 900 - 300; Bob 2,500 + 300 (the reversed 99 nets out); Carol 700 - 400 - 700 returned.
    assert listed == {"c-1": 7_550_00, "c-2": 2_800_00, "c-3": -400_00}
    assert figures(report) == {
        "Client ledgers total": 9_950_00,
        "Firm funds in trust": 35_00,
        "Clients + firm funds": 9_985_00,
        "Trust bank book balance": 9_985_00,
        "Difference": 0,
    }
    assert [row[3] for row in report.tables[0].rows] == ["", "", "SHORTFALL"]
    assert len(report.flags) == 1 and "c-3" in report.flags[0]

    before_returned = any_container.trust_report_service().trust_listing(
        TENANT, month.ledger.id, month.start + timedelta(days=10)
    )
    assert {row[0]: row[2] for row in before_returned.tables[0].rows}["c-3"] == 300_00  # before the cheque bounced
    assert before_returned.flags == ()


def test_trial_balance_balances_and_the_journal_splits_receipts_from_disbursements(any_container: Container) -> None:
    month = record_month(any_container)
    service = any_container.trust_report_service()
    trial = service.trial_balance(TENANT, month.ledger.id, month.end)
    assert figures(trial)["Debits"] == figures(trial)["Credits"] == 9_985_00 + 400_00
    journal = service.journal(TENANT, month.ledger.id, month.start, month.end)
    receipts, payments = journal.tables
    assert figures(journal)["Receipts"] == 50_00 + 10_000_00 + 2_500_00 + 700_00 + 99_00
    assert figures(journal)["Disbursements"] == 400_00 + 1_250_00 + 900_00 + 15_00 + 99_00 + 700_00
    assert any("c-1 (Alice <Estate> & Co)" in str(row[3]) for row in payments.rows)
    assert len(receipts.rows) == 5
    # The shortfall is flagged in every report until it is cured.
    assert len(journal.flags) == 1 and "c-3" in journal.flags[0]
    assert len(trial.flags) == 1 and "c-3" in trial.flags[0]


def test_client_ledger_runs_the_balance_within_the_period(any_container: Container) -> None:
    month = record_month(any_container)
    report = any_container.trust_report_service().client_ledger(
        TENANT, month.alice, month.start + timedelta(days=5), month.end
    )
    assert figures(report) == {"Opening balance": 10_000_00, "Closing balance": 7_550_00}
    assert [row[6] for row in report.tables[0].rows] == [8_750_00, 7_850_00, 7_550_00]


def parse_report_csv(text: str) -> tuple[dict[str, int], dict[str, list[list[str]]]]:
    """Figures (back to minor units) and every table's rows, from the CSV a user would open in a spreadsheet."""
    rows = list(csv.reader(io.StringIO(text)))
    exponent = 2
    found: dict[str, int] = {}
    tables: dict[str, list[list[str]]] = {}
    section = None
    for row in rows:
        if not row:
            section = None
            continue
        if row == ["figure", "amount"]:
            section = "figures"
            continue
        if row[0] == "table":
            section = row[1]
            tables[section] = []
            continue
        if section == "figures":
            found[row[0]] = int(Decimal(row[1]).scaleb(exponent))
        elif section is not None:
            tables[section].append(row)
    return found, tables


def test_csv_reports_parse_back_to_the_same_figures(pg_container: Container) -> None:
    month = record_month(pg_container)
    service = pg_container.trust_report_service()
    for report in (
        service.trust_listing(TENANT, month.ledger.id, month.end),
        service.trial_balance(TENANT, month.ledger.id, month.end),
        service.journal(TENANT, month.ledger.id, month.start, month.end),
        service.client_ledger(TENANT, month.alice, month.start, month.end),
    ):
        parsed_figures, parsed_tables = parse_report_csv(report_as_csv(report))
        assert parsed_figures == figures(report), report.kind
        document = report_as_json(report)
        for table in document["tables"]:
            header, *body = parsed_tables[table["title"]]
            assert header == [column["name"] for column in table["columns"]]
            assert len(body) == len(table["rows"]) + (table["totals"] is not None)
            for index, column in enumerate(table["columns"]):
                if column["kind"] != "money":
                    continue
                from_json = [row[index] for row in table["rows"]]
                from_csv = [
                    int(Decimal(row[index]).scaleb(2)) if row[index] else None for row in body[: len(from_json)]
                ]
                assert from_csv == from_json, (report.kind, table["title"], column["name"])


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_html_reports_render_in_headless_chromium(pg_container: Container, tmp_path: Path) -> None:
    browser = chromium_binary()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the HTML rendering test cannot run here")
    from PIL import Image, ImageStat

    month = record_month(pg_container)
    service = pg_container.trust_report_service()
    for report in (
        service.trust_listing(TENANT, month.ledger.id, month.end),
        service.journal(TENANT, month.ledger.id, month.start, month.end),
    ):
        page = tmp_path / f"{report.kind}.html"
        page.write_text(report_as_html(report), encoding="utf-8")
        assert "Alice &lt;Estate&gt; &amp; Co" in page.read_text()  # names are escaped, never markup
        screenshot = tmp_path / f"{report.kind}.png"
        completed = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1200,900",
                f"--screenshot={screenshot}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        with Image.open(screenshot) as image:
            assert image.size == (1200, 900)
            grey = image.convert("L")
            stats = ImageStat.Stat(grey)
            dark_pixels = sum(grey.histogram()[:128])
        # Not blank: text and table rules make dark pixels and a spread of tones.
        assert stats.stddev[0] > 10, stats.stddev
        assert dark_pixels > 2_000, dark_pixels


def test_reports_over_http_in_every_format(pg_container: Container) -> None:
    from ledger.api.app import create_app
    from tests.http_clients import AuthorizedTestClient

    month = record_month(pg_container)
    with AuthorizedTestClient(create_app(pg_container)) as client:
        base = f"/v1/ledgers/{month.ledger.id}/reports/trust-listing?as_of={month.end.isoformat()}"
        as_json = client.get(base)
        assert as_json.status_code == 200, as_json.text
        assert as_json.json()["figures"][4] == {"label": "Difference", "amount": 0}
        as_csv = client.get(base + "&format=csv")
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert parse_report_csv(as_csv.text)[0]["Trust bank book balance"] == 9_985_00
        as_html = client.get(base + "&format=html")
        assert as_html.headers["content-type"].startswith("text/html")
        assert "TRUST SHORTFALL" in as_html.text
        bad = client.get(f"/v1/ledgers/{month.ledger.id}/reports/journal?start=2026-02-01&end=2026-01-01")
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_period")
        missing = client.get(f"/v1/ledgers/{uuid.uuid4()}/reports/trial-balance?as_of=2026-01-01")
        assert missing.status_code == 404


def test_report_commands_write_every_format(pg_container: Container, service_database: Any, tmp_path: Path) -> None:
    import json
    import os
    import sys

    from ledger.infrastructure.embedded_postgres import write_private_file

    month = record_month(pg_container)
    secret_file = tmp_path / "secrets" / "service.json"
    write_private_file(secret_file, json.dumps(service_database.to_document()))
    environment = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    environment.update(LEDGER_ENVIRONMENT="test", LEDGER_SECRET_FILE=str(secret_file), LEDGER_LOG_FORMAT="json")

    def ledger(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger", *arguments],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listing = tmp_path / "listing.csv"
    done = ledger(
        "report", "trust-listing", "--ledger", str(month.ledger.id), "--as-of", month.end.isoformat(),
        "--format", "csv", "--output", str(listing),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert parse_report_csv(listing.read_text())[0]["Difference"] == 0
    done = ledger(
        "report", "client-ledger", "--account", str(month.alice), "--start", month.start.isoformat(),
        "--end", month.end.isoformat(), "--format", "html",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!doctype html>") and "Client ledger: c-1" in done.stdout
    refused = ledger("report", "trial-balance", "--ledger", str(month.ledger.id), "--as-of", "31/12/2026")
    assert refused.returncode == 2
    assert "invalid_date" in refused.stdout + refused.stderr
