"""The reports a trust-accounting user checks every month and a regulator asks for.

Each report is a ``Report``: a few headline figures, one or more tables, and flags (a trust shortfall is flagged in
every report until it is cured). The same object is rendered as JSON, CSV and a printable HTML page
(``ledger.report_formats``), so the three always carry the same figures. Every report reads one consistent snapshot.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.ledgers import every_account, require_ledger
from ledger.domain.model import Account, AccountKind, Ledger, NormalSide
from ledger.domain.ports import UnitOfWork
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfers import Side, StatementLine


class ColumnKind(enum.StrEnum):
    TEXT = "text"
    MONEY = "money"
    DATE = "date"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind = ColumnKind.TEXT


Cell = str | int | date | None


@dataclass(frozen=True, slots=True)
class ReportTable:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    totals: tuple[Cell, ...] | None = None


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    amount: int


@dataclass(frozen=True, slots=True)
class Report:
    kind: str
    title: str
    ledger_id: uuid.UUID
    ledger_name: str
    currency: str
    currency_exponent: int
    period_start: date | None
    period_end: date
    generated_at: datetime
    figures: tuple[Figure, ...] = ()
    tables: tuple[ReportTable, ...] = ()
    flags: tuple[str, ...] = field(default_factory=tuple)


class ReportKind(enum.StrEnum):
    CLIENT_LEDGER = "client-ledger"
    TRUST_LISTING = "trust-listing"
    JOURNAL = "journal"
    TRIAL_BALANCE = "trial-balance"
    RECONCILIATION = "reconciliation"


def balance_in_normal_direction(normal_side: NormalSide, debits: int, credits: int) -> int:
    return debits - credits if normal_side is NormalSide.DEBIT else credits - debits


def ledger_accounts(uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> list[Account]:
    """Every account of the ledger, by kind then code: the order reports list them in."""
    return sorted(every_account(uow, tenant_id, ledger_id), key=lambda account: (account.kind.value, account.code))


def account_balances_as_of(
    uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date
) -> list[tuple[Account, int]]:
    """Every account of the ledger (in report order) with its balance from the postings effective by ``as_of``."""
    totals = uow.transfers.ledger_totals_as_of(tenant_id, ledger_id, as_of)
    return [
        (account, balance_in_normal_direction(account.normal_side, *totals.get(account.id, (0, 0))))
        for account in ledger_accounts(uow, tenant_id, ledger_id)
    ]


def shortfall_flags(clients: Iterable[tuple[str, str, int]]) -> tuple[str, ...]:
    """One flag per client (code, name, balance) whose balance is below zero: money owed back into trust."""
    return tuple(
        f"TRUST SHORTFALL: {code} ({name}) is overdrawn by {-balance} minor units"
        for code, name, balance in clients
        if balance < 0
    )


def report_document(report: Report) -> dict[str, Any]:
    """The report as plain JSON values: money in minor units, dates as ISO 8601 text."""

    def cell(value: Cell) -> Any:
        return value.isoformat() if isinstance(value, date) else value

    return {
        "kind": report.kind,
        "title": report.title,
        "ledger_id": str(report.ledger_id),
        "ledger_name": report.ledger_name,
        "currency": report.currency,
        "currency_exponent": report.currency_exponent,
        "period_start": None if report.period_start is None else report.period_start.isoformat(),
        "period_end": report.period_end.isoformat(),
        "generated_at": report.generated_at.isoformat(),
        "figures": [{"label": figure.label, "amount": figure.amount} for figure in report.figures],
        "tables": [
            {
                "title": table.title,
                "columns": [{"name": column.name, "kind": column.kind.value} for column in table.columns],
                "rows": [[cell(value) for value in row] for row in table.rows],
                "totals": None if table.totals is None else [cell(value) for value in table.totals],
            }
            for table in report.tables
        ],
        "flags": list(report.flags),
    }


class TrustReportService:
    def __init__(self, runner: TransactionRunner) -> None:
        self._runner = runner

    def trust_listing(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date) -> Report:
        """Every client's balance as of a date, with the total, firm funds and the bank book balance."""

        def build(uow: UnitOfWork) -> Report:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            balances = account_balances_as_of(uow, tenant_id, ledger_id, as_of)
            clients = [(account, balance) for account, balance in balances if account.kind is AccountKind.CLIENT]
            client_total = sum(balance for _, balance in clients)
            firm_total = sum(balance for account, balance in balances if account.kind is AccountKind.FIRM_FUNDS)
            bank_total = sum(balance for account, balance in balances if account.kind is AccountKind.BANK)
            rows = tuple(
                (account.code, account.name, balance, "SHORTFALL" if balance < 0 else "")
                for account, balance in clients
            )
            return _report(
                ledger,
                ReportKind.TRUST_LISTING,
                "Trust listing (client balances)",
                None,
                as_of,
                uow.now(),
                figures=(
                    Figure("Client ledgers total", client_total),
                    Figure("Firm funds in trust", firm_total),
                    Figure("Clients + firm funds", client_total + firm_total),
                    Figure("Trust bank book balance", bank_total),
                    Figure("Difference", bank_total - client_total - firm_total),
                ),
                tables=(
                    ReportTable(
                        "Client balances",
                        (Column("code"), Column("client"), Column("balance", ColumnKind.MONEY), Column("flag")),
                        rows,
                        ("", "Total", client_total, ""),
                    ),
                ),
                flags=shortfall_flags((account.code, account.name, balance) for account, balance in clients),
            )

        return self._runner.read_snapshot(build)

    def client_ledger(self, tenant_id: uuid.UUID, account_id: uuid.UUID, start: date, end: date) -> Report:
        """One client's entries in a period with the running balance, opening and closing balance."""
        _check_period(start, end)

        def build(uow: UnitOfWork) -> Report:
            account = uow.accounts.get(tenant_id, account_id)
            if account is None:
                raise NotFound("account not found", code="account_not_found")
            ledger = require_ledger(uow, tenant_id, account.ledger_id)
            balance = opening = 0
            rows: list[tuple[Cell, ...]] = []
            debits = credits = 0
            for line in uow.transfers.account_lines(tenant_id, account_id, effective_to=end):
                change = line.amount if (line.side.value == account.normal_side.value) else -line.amount
                balance += change
                if line.effective_date < start:
                    opening = balance
                    continue
                debit = line.amount if line.side is Side.DEBIT else None
                credit = line.amount if line.side is Side.CREDIT else None
                debits += debit or 0
                credits += credit or 0
                rows.append(
                    (
                        line.effective_date,
                        str(line.transfer_id),
                        line.kind.value,
                        line.description,
                        debit,
                        credit,
                        balance,
                    )
                )
            return _report(
                ledger,
                ReportKind.CLIENT_LEDGER,
                f"Client ledger: {account.code} ({account.name})",
                start,
                end,
                uow.now(),
                figures=(Figure("Opening balance", opening), Figure("Closing balance", balance)),
                tables=(
                    ReportTable(
                        "Entries",
                        (
                            Column("date", ColumnKind.DATE),
                            Column("entry"),
                            Column("kind"),
                            Column("description"),
                            Column("debit", ColumnKind.MONEY),
                            Column("credit", ColumnKind.MONEY),
                            Column("balance", ColumnKind.MONEY),
                        ),
                        tuple(rows),
                        (None, "", "", "Totals", debits, credits, balance),
                    ),
                ),
                flags=shortfall_flags([(account.code, account.name, balance)]),
            )

        return self._runner.read_snapshot(build)

    def journal(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, start: date, end: date) -> Report:
        """Receipts into and disbursements out of the trust bank account in a period, naming the client."""
        _check_period(start, end)

        def build(uow: UnitOfWork) -> Report:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            accounts = {account.id: account for account in ledger_accounts(uow, tenant_id, ledger_id)}
            banks = [account for account in accounts.values() if account.kind is AccountKind.BANK]
            lines = [
                line
                for bank in banks
                for line in uow.transfers.account_lines(tenant_id, bank.id, effective_to=end)
                if line.effective_date >= start
            ]
            lines.sort(key=lambda line: (line.effective_date, line.recorded_at))
            legs = uow.transfers.counterpart_accounts(tenant_id, [line.transfer_id for line in lines])
            bank_ids = {bank.id for bank in banks}

            def other_side(transfer_id: uuid.UUID) -> str:
                names = [
                    f"{accounts[account_id].code} ({accounts[account_id].name})"
                    for account_id in legs.get(transfer_id, [])
                    if account_id not in bank_ids and account_id in accounts
                ]
                return ", ".join(names)

            receipts = [line for line in lines if line.side is Side.DEBIT]
            payments = [line for line in lines if line.side is Side.CREDIT]
            columns = (
                Column("date", ColumnKind.DATE),
                Column("entry"),
                Column("kind"),
                Column("client or fund"),
                Column("description"),
                Column("amount", ColumnKind.MONEY),
            )

            def table(title: str, chosen: list[StatementLine]) -> ReportTable:
                rows = tuple(
                    (
                        line.effective_date,
                        str(line.transfer_id),
                        line.kind.value,
                        other_side(line.transfer_id),
                        line.description,
                        line.amount,
                    )
                    for line in chosen
                )
                return ReportTable(
                    title, columns, rows, (None, "", "", "", "Total", sum(line.amount for line in chosen))
                )

            received, paid = sum(line.amount for line in receipts), sum(line.amount for line in payments)
            return _report(
                ledger,
                ReportKind.JOURNAL,
                "Receipts and disbursements journal",
                start,
                end,
                uow.now(),
                figures=(
                    Figure("Receipts", received),
                    Figure("Disbursements", paid),
                    Figure("Net change of the trust bank account", received - paid),
                ),
                tables=(table("Receipts", receipts), table("Disbursements", payments)),
                flags=_shortfalls_as_of(uow, tenant_id, ledger_id, end),
            )

        return self._runner.read_snapshot(build)

    def trial_balance(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date) -> Report:
        """Every account's balance as of a date on its debit or credit side; the two columns total the same."""

        def build(uow: UnitOfWork) -> Report:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            totals = uow.transfers.ledger_totals_as_of(tenant_id, ledger_id, as_of)
            rows: list[tuple[Cell, ...]] = []
            debit_total = credit_total = 0
            clients: list[tuple[str, str, int]] = []
            for account in ledger_accounts(uow, tenant_id, ledger_id):
                debits, credits = totals.get(account.id, (0, 0))
                net = debits - credits
                debit, credit = (net, None) if net > 0 else (None, -net) if net < 0 else (None, None)
                debit_total += debit or 0
                credit_total += credit or 0
                rows.append((account.code, account.name, account.kind.value, debit, credit))
                if account.kind is AccountKind.CLIENT:
                    balance = balance_in_normal_direction(account.normal_side, debits, credits)
                    clients.append((account.code, account.name, balance))
            return _report(
                ledger,
                ReportKind.TRIAL_BALANCE,
                "Trial balance",
                None,
                as_of,
                uow.now(),
                figures=(Figure("Debits", debit_total), Figure("Credits", credit_total)),
                tables=(
                    ReportTable(
                        "Accounts",
                        (
                            Column("code"),
                            Column("account"),
                            Column("kind"),
                            Column("debit", ColumnKind.MONEY),
                            Column("credit", ColumnKind.MONEY),
                        ),
                        tuple(rows),
                        ("", "Totals", "", debit_total, credit_total),
                    ),
                ),
                flags=shortfall_flags(clients),
            )

        return self._runner.read_snapshot(build)


def _shortfalls_as_of(uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date) -> tuple[str, ...]:
    return shortfall_flags(
        (account.code, account.name, balance)
        for account, balance in account_balances_as_of(uow, tenant_id, ledger_id, as_of)
        if account.kind is AccountKind.CLIENT
    )


def _check_period(start: date, end: date) -> None:
    if start > end:
        raise InvalidRequest("the period starts after it ends", code="invalid_period")


def _report(
    ledger: Ledger,
    kind: ReportKind,
    title: str,
    start: date | None,
    end: date,
    generated_at: datetime,
    *,
    figures: tuple[Figure, ...],
    tables: tuple[ReportTable, ...],
    flags: tuple[str, ...] = (),
) -> Report:
    return Report(
        kind=kind.value,
        title=title,
        ledger_id=ledger.id,
        ledger_name=ledger.name,
        currency=ledger.currency.code,
        currency_exponent=ledger.currency.exponent,
        period_start=start,
        period_end=end,
        generated_at=generated_at,
        figures=figures,
        tables=tables,
        flags=flags,
    )
