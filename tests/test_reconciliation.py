"""Three-way reconciliation over a realistic month, its sign-off, and the period lock it sets.

The month: several clients, deposits cleared and uncleared, a deposit slip (two receipts, one bank line),
disbursements, a fee, a transfer between clients and its reversal, a bounced deposit, a bank charge, a deposit in
transit and an outstanding cheque. Its bank statement ties out. The same month with a second statement that carries
three seeded discrepancies (a deposit nobody booked, a bank fee not booked, a transposed cheque amount) shows each as
its own reconciling item.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.container import Container
from ledger.domain.errors import DomainError
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, Ledger
from ledger.domain.reconciliation import ReconcilingItemKind
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:reconciliation"


@dataclass
class Month:
    container: Container
    ledger: Ledger
    start: date
    end: date
    cheque_101: uuid.UUID
    clients: dict[str, uuid.UUID]

    def day(self, offset: int) -> str:
        return (self.start + timedelta(days=offset)).isoformat()


def book_month(container: Container) -> Month:
    ledgers, accounts = container.ledger_service(), container.account_service()
    trust, transfers = container.trust_service(), container.transfer_service()
    ledger = ledgers.open_ledger(TENANT, name=f"Recon {uuid.uuid4().hex[:6]}", currency="USD")
    accounts.open_account(TENANT, ledger.id, code="bank", name="Trust bank", kind=AccountKind.BANK)
    accounts.open_account(TENANT, ledger.id, code="firm", name="Firm funds", kind=AccountKind.FIRM_FUNDS)
    clients = {
        code: accounts.open_account(TENANT, ledger.id, code=code, name=code.title(), kind=AccountKind.CLIENT).id
        for code in ("adams", "baker", "chen")
    }
    start = datetime.now(UTC).date() - timedelta(days=40)

    def operate(kind: TrustOperationKind, amount: int, day: int, reference: str = "", **extra: Any) -> Any:
        return trust.execute(
            TENANT,
            ACTOR,
            TrustOperation(
                kind=kind,
                ledger_id=ledger.id,
                amount=amount,
                description=f"{kind.value} {reference}".strip(),
                metadata={"reference": reference} if reference else {},
                effective_date=start + timedelta(days=day),
                **extra,
            ),
        )

    adams, baker, chen = clients["adams"], clients["baker"], clients["chen"]
    operate(TrustOperationKind.FIRM_DEPOSIT, 100_00, 1, "FD-1")
    operate(TrustOperationKind.DEPOSIT, 5_000_00, 2, "DEP-1", client_account_id=adams)
    uncleared = operate(TrustOperationKind.DEPOSIT, 1_200_00, 3, "SLIP-7", client_account_id=baker, cleared=False)
    operate(TrustOperationKind.DEPOSIT, 800_00, 3, "SLIP-7", client_account_id=chen)
    trust.clear_deposit(TENANT, ACTOR, uncleared.id)
    cheque = operate(TrustOperationKind.DISBURSEMENT, 1_250_00, 7, "CHQ-101", client_account_id=adams)
    operate(TrustOperationKind.EARNED_FEE, 500_00, 10, "FEE-1", client_account_id=adams)
    moved = operate(TrustOperationKind.CLIENT_TRANSFER, 100_00, 12, client_account_id=adams, to_client_account_id=baker)
    transfers.reverse_transfer(TENANT, ACTOR, moved.id)
    bounced = operate(TrustOperationKind.DEPOSIT, 400_00, 16, "DEP-C2", client_account_id=chen)
    trust.return_deposit(TENANT, ACTOR, bounced.id, description="RETURN", effective_date=start + timedelta(days=20))
    operate(TrustOperationKind.BANK_CHARGE, 15_00, 25, "CHARGE")
    operate(TrustOperationKind.DISBURSEMENT, 200_00, 28, "CHQ-102", client_account_id=baker)  # not yet cashed
    operate(TrustOperationKind.DEPOSIT, 700_00, 29, "DEP-9", client_account_id=adams)  # in transit
    return Month(container, ledger, start, start + timedelta(days=30), cheque.id, clients)


def statement_csv(month: Month, *, discrepancies: bool) -> str:
    lines = [
        (1, "100.00", "FD-1", "firm deposit"),
        (2, "5000.00", "DEP-1", "deposit"),
        (4, "2000.00", "SLIP-7", "deposit slip 7"),
        (9, "-1520.00" if discrepancies else "-1250.00", "CHQ-101", "cheque 101"),
        (11, "-500.00", "FEE-1", "transfer to office account"),
        (17, "400.00", "DEP-C2", "deposit"),
        (20, "-400.00", "RETURN", "returned item"),
        (25, "-15.00", "CHARGE", "account charge"),
    ]
    if discrepancies:
        lines += [(22, "350.00", "DEP-X", "deposit"), (30, "-12.00", "SVC", "service fee")]
    closing = sum(int(amount.replace(".", "")) for _, amount, _, _ in lines)
    assert closing > 0
    rows = [
        f"period_start,{month.day(0)}",
        f"period_end,{month.day(30)}",
        "opening_balance,0.00",
        f"closing_balance,{closing // 100}.{closing % 100:02d}",
        "date,amount,reference,description",
        *(f"{month.day(day)},{amount},{reference},{text}" for day, amount, reference, text in lines),
    ]
    return "\n".join(rows) + "\n"


def import_statement(month: Month, *, discrepancies: bool) -> Any:
    return month.container.bank_statement_service().import_statement(
        TENANT, month.ledger.id, statement_csv(month, discrepancies=discrepancies), ACTOR
    )


def items_by_kind(reconciliation: Any) -> dict[ReconcilingItemKind, list[Any]]:
    grouped: dict[ReconcilingItemKind, list[Any]] = {}
    for item in reconciliation.items:
        grouped.setdefault(item.kind, []).append(item)
    return grouped


def test_a_month_with_its_statement_reconciles_three_ways(any_container: Container) -> None:
    month = book_month(any_container)
    import_statement(month, discrepancies=False)
    result = any_container.reconciliation_service().reconcile(TENANT, month.ledger.id, month.end)
    assert result.statement_balance == 5_335_00
    assert (result.deposits_in_transit, result.outstanding_disbursements) == (700_00, 200_00)
    assert result.adjusted_bank_balance == result.book_balance == result.client_ledgers_and_firm == 5_835_00
    assert result.balanced
    grouped = items_by_kind(result)
    assert sorted(grouped) == [ReconcilingItemKind.DEPOSIT_IN_TRANSIT, ReconcilingItemKind.OUTSTANDING_DISBURSEMENT]
    # The transfer between clients of day 12 is reversed today, after the month: as of its end it stands.
    assert [client.balance for client in result.clients] == [3_850_00, 1_100_00, 800_00]

    # The report carries the same figures in every format.
    from ledger.report_formats import report_as_csv, report_as_html
    from tests.test_trust_reports import parse_report_csv

    report = any_container.reconciliation_service().report(TENANT, month.ledger.id, month.end)
    figures = {figure.label: figure.amount for figure in report.figures}
    assert figures["Adjusted bank balance"] == figures["Trust book balance"] == 5_835_00
    assert parse_report_csv(report_as_csv(report))[0] == figures
    assert "Three-way reconciliation" in report_as_html(report)
    assert report.flags == ()


def test_each_seeded_discrepancy_is_its_own_reconciling_item(any_container: Container) -> None:
    month = book_month(any_container)
    import_statement(month, discrepancies=True)
    result = any_container.reconciliation_service().reconcile(TENANT, month.ledger.id, month.end)
    assert not result.balanced
    assert result.book_balance == result.client_ledgers_and_firm == 5_835_00
    grouped = items_by_kind(result)
    [missing_deposit] = grouped[ReconcilingItemKind.BANK_CREDIT_NOT_IN_BOOKS]
    assert (missing_deposit.amount, missing_deposit.description) == (-350_00, "DEP-X deposit")
    [fee] = grouped[ReconcilingItemKind.BANK_DEBIT_NOT_IN_BOOKS]
    assert (fee.amount, fee.description) == (12_00, "SVC service fee")
    [transposed] = grouped[ReconcilingItemKind.TRANSPOSED_AMOUNT]
    assert (transposed.transfer_id, transposed.amount) == (month.cheque_101, 270_00)
    assert [item.amount for item in grouped[ReconcilingItemKind.DEPOSIT_IN_TRANSIT]] == [700_00]
    assert [item.amount for item in grouped[ReconcilingItemKind.OUTSTANDING_DISBURSEMENT]] == [-200_00]
    # Every difference is explained: the adjusted bank balance plus the items is the book balance.
    explained = sum(
        item.amount
        for item in result.items
        if item.kind not in (ReconcilingItemKind.DEPOSIT_IN_TRANSIT, ReconcilingItemKind.OUTSTANDING_DISBURSEMENT)
    )
    assert result.adjusted_bank_balance + explained == result.book_balance


def refusal(call: Any) -> str:
    with pytest.raises(DomainError) as refused:
        call()
    return refused.value.code


def test_sign_off_locks_the_period_and_back_dated_entries_are_refused(any_container: Container) -> None:
    month = book_month(any_container)
    service = any_container.reconciliation_service()
    import_statement(month, discrepancies=True)
    assert refusal(lambda: service.sign_off(TENANT, ACTOR, month.ledger.id, month.end)) == "reconciliation_not_balanced"
    ledger_today = datetime.now(UTC).date()
    assert refusal(lambda: service.sign_off(TENANT, ACTOR, month.ledger.id, ledger_today)) == (
        "reconciliation_date_not_past"
    )

    clean = book_month(any_container)
    import_statement(clean, discrepancies=False)
    signed = service.sign_off(TENANT, ACTOR, clean.ledger.id, clean.end)
    assert signed.report["kind"] == "reconciliation"
    assert refusal(lambda: service.sign_off(TENANT, ACTOR, clean.ledger.id, clean.end)) == "period_locked"

    trust, accounts = any_container.trust_service(), any_container.account_service()
    adams = clean.clients["adams"]
    before = accounts.get_account(TENANT, adams)
    for day in (clean.end, clean.end - timedelta(days=3)):
        code = refusal(
            lambda day=day: trust.execute(
                TENANT,
                ACTOR,
                TrustOperation(
                    kind=TrustOperationKind.DEPOSIT,
                    ledger_id=clean.ledger.id,
                    amount=1_00,
                    client_account_id=adams,
                    effective_date=day,
                ),
            )
        )
        assert code == "period_locked"
    assert accounts.get_account(TENANT, adams) == before
    # The day after the locked period is open.
    trust.execute(
        TENANT,
        ACTOR,
        TrustOperation(
            kind=TrustOperationKind.DEPOSIT,
            ledger_id=clean.ledger.id,
            amount=1_00,
            client_account_id=adams,
            effective_date=clean.end + timedelta(days=1),
        ),
    )
    report = service.report(TENANT, clean.ledger.id, clean.end)
    assert any(flag.startswith("Signed off by test:reconciliation") for flag in report.flags)


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                TrustOperationKind.DEPOSIT,
                TrustOperationKind.DISBURSEMENT,
                TrustOperationKind.CLIENT_TRANSFER,
                TrustOperationKind.EARNED_FEE,
                TrustOperationKind.FIRM_DEPOSIT,
                TrustOperationKind.BANK_CHARGE,
                "returned_deposit",
                "reversal",
            ]
        ),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=1, max_value=5_000_00),
        st.integers(min_value=0, max_value=14),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_client_ledgers_and_firm_funds_equal_the_bank_book_balance_on_every_date(
    memory_container: Container, operations: list[tuple[Any, int, int, int, int, bool]]
) -> None:
    container = memory_container
    ledger = container.ledger_service().open_ledger(TENANT, name="property", currency="USD")
    accounts = container.account_service()
    accounts.open_account(TENANT, ledger.id, code="bank", name="Bank", kind=AccountKind.BANK)
    accounts.open_account(TENANT, ledger.id, code="firm", name="Firm", kind=AccountKind.FIRM_FUNDS)
    clients = [
        accounts.open_account(TENANT, ledger.id, code=f"c{index}", name=f"C{index}", kind=AccountKind.CLIENT).id
        for index in range(3)
    ]
    start = datetime.now(UTC).date() - timedelta(days=14)
    booked: list[Any] = []
    for kind, first, second, amount, day, cleared in operations:
        effective = start + timedelta(days=day)
        try:
            if kind == "returned_deposit":
                deposits = [transfer for transfer in booked if transfer.kind.value == "deposit"]
                if deposits:
                    deposit = deposits[first % len(deposits)]
                    container.trust_service().return_deposit(
                        TENANT, ACTOR, deposit.id, effective_date=max(effective, deposit.effective_date)
                    )
                continue
            if kind == "reversal":
                if booked:
                    container.transfer_service().reverse_transfer(TENANT, ACTOR, booked[first % len(booked)].id)
                continue
            extra: dict[str, Any] = {}
            if kind in (
                TrustOperationKind.DEPOSIT,
                TrustOperationKind.DISBURSEMENT,
                TrustOperationKind.EARNED_FEE,
                TrustOperationKind.CLIENT_TRANSFER,
            ):
                extra["client_account_id"] = clients[first]
            if kind is TrustOperationKind.CLIENT_TRANSFER:
                if first == second:
                    continue
                extra["to_client_account_id"] = clients[second]
            if kind is TrustOperationKind.DEPOSIT:
                extra["cleared"] = cleared
            booked.append(
                container.trust_service().execute(
                    TENANT,
                    ACTOR,
                    TrustOperation(kind=kind, ledger_id=ledger.id, amount=amount, effective_date=effective, **extra),
                )
            )
        except DomainError:
            continue  # a refused operation books nothing; the invariant must hold all the same
    reports = container.trust_report_service()
    for offset in range(15):
        listing = reports.trust_listing(TENANT, ledger.id, start + timedelta(days=offset))
        figures = {figure.label: figure.amount for figure in listing.figures}
        assert figures["Difference"] == 0, (offset, figures)
        assert figures["Trust bank book balance"] == figures["Clients + firm funds"]
