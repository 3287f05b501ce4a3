"""Use cases of the three-way reconciliation: compute it as of a date, report it, sign it off (locking the period)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from ledger.domain.bank_statement_service import resolve_bank_account, unmatched_in_unit_of_work
from ledger.domain.errors import InvalidRequest
from ledger.domain.ledgers import Command, require_ledger
from ledger.domain.model import AccountKind, Ledger
from ledger.domain.ports import UnitOfWork
from ledger.domain.reconciliation import (
    ClientBalance,
    ReconciliationSignOff,
    ReconcilingItem,
    ReconcilingItemKind,
    ThreeWayReconciliation,
    UnmatchedBankLine,
    UnmatchedEntry,
    reconciling_items,
)
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_service import check_actor, ledger_today
from ledger.domain.transfers import LedgerRuleViolation
from ledger.domain.trust_reports import (
    Column,
    ColumnKind,
    Figure,
    Report,
    ReportKind,
    ReportTable,
    account_balances_as_of,
    report_document,
    shortfall_flags,
)


def reconcile_in_unit_of_work(
    uow: UnitOfWork, ledger: Ledger, as_of: date, bank_account_id: uuid.UUID | None = None
) -> ThreeWayReconciliation:
    bank = resolve_bank_account(uow, ledger, bank_account_id)
    unmatched = unmatched_in_unit_of_work(uow, ledger, bank.id, as_of)
    items = list(
        reconciling_items(
            [
                UnmatchedBankLine(line.id, line.date, line.amount, line.reference, line.description)
                for line in unmatched.bank_lines
            ],
            [
                UnmatchedEntry(
                    entry.transfer_id, entry.effective_date, entry.amount, entry.kind.value, entry.description
                )
                for entry in unmatched.ledger_entries
            ],
        )
    )
    statement = unmatched.statement
    if statement is not None and statement.first_opening_balance:
        # The bank account held money before its first imported statement began, which the books do not show.
        items.append(
            ReconcilingItem(
                ReconcilingItemKind.BANK_CREDIT_NOT_IN_BOOKS,
                statement.first_period_start,
                -statement.first_opening_balance,
                "opening balance of the first imported statement",
            )
        )
    balances = account_balances_as_of(uow, ledger.tenant_id, ledger.id, as_of)
    clients = tuple(
        ClientBalance(account.id, account.code, account.name, balance)
        for account, balance in balances
        if account.kind is AccountKind.CLIENT
    )
    return ThreeWayReconciliation(
        ledger_id=ledger.id,
        as_of=as_of,
        bank_account_id=bank.id,
        statement_id=None if statement is None else statement.statement_id,
        statement_end=None if statement is None else statement.period_end,
        statement_balance=0 if statement is None else statement.closing_balance,
        deposits_in_transit=sum(item.amount for item in items if item.kind is ReconcilingItemKind.DEPOSIT_IN_TRANSIT),
        outstanding_disbursements=-sum(
            item.amount for item in items if item.kind is ReconcilingItemKind.OUTSTANDING_DISBURSEMENT
        ),
        book_balance=sum(balance for account, balance in balances if account.id == bank.id),
        client_total=sum(client.balance for client in clients),
        firm_total=sum(balance for account, balance in balances if account.kind is AccountKind.FIRM_FUNDS),
        items=tuple(sorted(items, key=lambda item: (item.date, item.kind.value))),
        clients=clients,
    )


def reconciliation_report(
    ledger: Ledger,
    reconciliation: ThreeWayReconciliation,
    generated_at: datetime,
    sign_off: ReconciliationSignOff | None,
) -> Report:
    r = reconciliation
    flags = list(shortfall_flags((client.code, client.name, client.balance) for client in r.clients))
    if not r.balanced:
        flags.insert(0, "NOT BALANCED: see the reconciling items")
    if r.statement_end is None:
        flags.insert(0, "No bank statement ends on or before this date: every book entry is a reconciling item")
    if sign_off is not None:
        flags.append(f"Signed off by {sign_off.signed_off_by} at {sign_off.signed_off_at.isoformat()}")
    statement_label = "Bank statement balance" + (f" ({r.statement_end.isoformat()})" if r.statement_end else "")
    return Report(
        kind=ReportKind.RECONCILIATION.value,
        title="Three-way reconciliation",
        ledger_id=ledger.id,
        ledger_name=ledger.name,
        currency=ledger.currency.code,
        currency_exponent=ledger.currency.exponent,
        period_start=None,
        period_end=r.as_of,
        generated_at=generated_at,
        figures=(
            Figure(statement_label, r.statement_balance),
            Figure("Deposits in transit", r.deposits_in_transit),
            Figure("Outstanding disbursements", r.outstanding_disbursements),
            Figure("Adjusted bank balance", r.adjusted_bank_balance),
            Figure("Trust book balance", r.book_balance),
            Figure("Client ledgers total", r.client_total),
            Figure("Firm funds in trust", r.firm_total),
            Figure("Client ledgers + firm funds", r.client_ledgers_and_firm),
            Figure("Difference: adjusted bank - book", r.bank_to_book_difference),
            Figure("Difference: book - client ledgers and firm funds", r.book_to_clients_difference),
        ),
        tables=(
            ReportTable(
                "Reconciling items",
                (
                    Column("date", ColumnKind.DATE),
                    Column("item"),
                    Column("description"),
                    Column("entry"),
                    Column("statement line"),
                    Column("amount", ColumnKind.MONEY),
                ),
                tuple(
                    (
                        item.date,
                        item.kind.value,
                        item.description,
                        "" if item.transfer_id is None else str(item.transfer_id),
                        "" if item.statement_line_id is None else str(item.statement_line_id),
                        item.amount,
                    )
                    for item in r.items
                ),
                (None, "Total", "", "", "", sum(item.amount for item in r.items)),
            ),
            ReportTable(
                "Client ledgers",
                (Column("code"), Column("client"), Column("balance", ColumnKind.MONEY), Column("flag")),
                tuple(
                    (client.code, client.name, client.balance, "SHORTFALL" if client.balance < 0 else "")
                    for client in r.clients
                ),
                ("", "Total", r.client_total, ""),
            ),
        ),
        flags=tuple(flags),
    )


class ReconciliationService:
    def __init__(self, runner: TransactionRunner) -> None:
        self._runner = runner

    def reconcile(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date, *, bank_account_id: uuid.UUID | None = None
    ) -> ThreeWayReconciliation:
        def read(uow: UnitOfWork) -> ThreeWayReconciliation:
            return reconcile_in_unit_of_work(uow, require_ledger(uow, tenant_id, ledger_id), as_of, bank_account_id)

        return self._runner.read_snapshot(read)

    def report(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date) -> Report:
        def read(uow: UnitOfWork) -> Report:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            reconciliation = reconcile_in_unit_of_work(uow, ledger, as_of)
            signed = [item for item in uow.period_locks.sign_offs(tenant_id, ledger_id) if item.as_of == as_of]
            return reconciliation_report(ledger, reconciliation, uow.now(), signed[0] if signed else None)

        return self._runner.read_snapshot(read)

    def sign_off_command(
        self, tenant_id: uuid.UUID, actor: str, ledger_id: uuid.UUID, as_of: date
    ) -> Command[ReconciliationSignOff]:
        """Signs off a balanced reconciliation of a day that has ended, and locks every entry effective on or
        before it."""
        check_actor(actor)
        sign_off_id = uuid.uuid4()

        def sign_off(uow: UnitOfWork) -> ReconciliationSignOff:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            # Exclusive: back-dated writes in flight finish first, new ones wait until this commits.
            uow.period_locks.lock_for_sign_off(tenant_id, ledger_id)
            now = uow.now()
            if as_of >= ledger_today(ledger, now):
                raise InvalidRequest("only a day that has ended can be signed off", code="reconciliation_date_not_past")
            locked = uow.period_locks.locked_through(tenant_id, ledger_id)
            if locked is not None and as_of <= locked:
                raise LedgerRuleViolation(
                    f"the period through {locked.isoformat()} is already signed off", code="period_locked"
                )
            reconciliation = reconcile_in_unit_of_work(uow, ledger, as_of)
            if not reconciliation.balanced:
                raise LedgerRuleViolation(
                    "the reconciliation does not balance: resolve its reconciling items first",
                    code="reconciliation_not_balanced",
                )
            record = ReconciliationSignOff(
                id=sign_off_id,
                tenant_id=tenant_id,
                ledger_id=ledger_id,
                as_of=as_of,
                report=report_document(reconciliation_report(ledger, reconciliation, now, None)),
                signed_off_at=now,
                signed_off_by=actor,
            )
            uow.period_locks.add_sign_off(record)
            return record

        return sign_off

    def sign_off(self, tenant_id: uuid.UUID, actor: str, ledger_id: uuid.UUID, as_of: date) -> ReconciliationSignOff:
        return self._runner.run(self.sign_off_command(tenant_id, actor, ledger_id, as_of))
