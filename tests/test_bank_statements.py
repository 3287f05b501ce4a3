"""Bank statements: the CSV format and its refusals, continuity, matching (single receipts, a deposit slip,
payments, a bank charge) and the unmatched items on both sides, on both adapters; the matcher on its own; the API
and the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ledger.api.app import create_app
from ledger.api.schemas import STATEMENT_EXAMPLE
from ledger.container import Container
from ledger.domain.bank_statements import (
    BankEntry,
    BankStatement,
    BankStatementLine,
    MatchingRules,
    MatchKind,
    UnmatchedItems,
    format_amount,
    match_lines,
    parse_statement,
)
from ledger.domain.errors import DomainError
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, Ledger, LedgerKind
from ledger.domain.money import Currency
from ledger.domain.transfers import Transfer, TransferKind
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import write_private_file
from tests.http_clients import AuthorizedTestClient

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:statements"
USD = Currency.of("USD")
CORE_DIR = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_SECONDS = 120.0

Row = tuple[str, int, str, str]


def statement_csv(start: str, end: str, opening: int, rows: Sequence[Row], *, closing: int | None = None) -> str:
    """A statement in the documented format; the closing balance is computed unless given."""
    total = opening + sum(amount for _, amount, _, _ in rows) if closing is None else closing
    text = [
        f"period_start,{start}",
        f"period_end,{end}",
        f"opening_balance,{format_amount(opening, USD)}",
        f"closing_balance,{format_amount(total, USD)}",
        "date,amount,reference,description",
    ]
    text += [
        f"{day},{format_amount(amount, USD)},{reference},{description}" for day, amount, reference, description in rows
    ]
    return "\n".join(text) + "\n"


def refusal(call) -> DomainError:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as refused:
        call()
    return refused.value


@dataclass
class TrustBooks:
    container: Container
    ledger: Ledger
    bank: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    carol: uuid.UUID

    def operate(
        self,
        kind: TrustOperationKind,
        amount: int,
        on: str,
        client: uuid.UUID | None = None,
        *,
        reference: str | None = None,
        description: str = "",
    ) -> Transfer:
        operation = TrustOperation(
            kind=kind,
            ledger_id=self.ledger.id,
            amount=amount,
            client_account_id=client,
            description=description,
            metadata={} if reference is None else {"reference": reference},
            effective_date=date.fromisoformat(on),
        )
        return self.container.trust_service().execute(TENANT, ACTOR, operation)

    def deposit(self, amount: int, on: str, client: uuid.UUID, **extra: Any) -> Transfer:
        return self.operate(TrustOperationKind.DEPOSIT, amount, on, client, **extra)

    def import_statement(self, text: str) -> BankStatement:
        return self.container.bank_statement_service().import_statement(TENANT, self.ledger.id, text, ACTOR)

    def statements(self) -> list[BankStatement]:
        return list(self.container.bank_statement_service().list_statements(TENANT, self.ledger.id, limit=500).items)

    def unmatched(self, as_of: str) -> UnmatchedItems:
        items = self.container.bank_statement_service().unmatched(TENANT, self.ledger.id, date.fromisoformat(as_of))
        self.assert_reconciles(items)
        return items

    def assert_reconciles(self, items: UnmatchedItems) -> None:
        """Book balance = statement closing - first opening + unmatched entries - unmatched bank lines."""
        book = self.container.transfer_service().balance_at(TENANT, self.bank, effective_on_or_before=items.as_of)
        if items.statement is None:
            assert book.balance == items.ledger_entries_total
            return
        statement = items.statement
        assert book.balance == (
            statement.closing_balance
            - statement.first_opening_balance
            + items.ledger_entries_total
            - items.bank_lines_total
        ), items


@pytest.fixture
def books(any_container: Container) -> TrustBooks:
    ledgers, accounts = any_container.ledger_service(), any_container.account_service()
    ledger = ledgers.open_ledger(TENANT, name=f"statements {uuid.uuid4().hex[:6]}", currency="USD")

    def open_account(code: str, kind: AccountKind) -> uuid.UUID:
        return accounts.open_account(TENANT, ledger.id, code=code, name=code, kind=kind).id

    bank = open_account("bank", AccountKind.BANK)
    open_account("firm", AccountKind.FIRM_FUNDS)
    return TrustBooks(
        any_container,
        ledger,
        bank,
        open_account("c-alice", AccountKind.CLIENT),
        open_account("c-bob", AccountKind.CLIENT),
        open_account("c-carol", AccountKind.CLIENT),
    )


# ---------------------------------------------------------------------------------------------------------------
# The format: a bad row refuses everything, naming its line


GOOD_ROWS: list[Row] = [
    ("2026-09-02", 1_000_00, "DEP-1", "Deposit"),
    ("2026-09-03", -200_00, "CHQ-1", "Cheque 1"),
    ("2026-09-04", 50_00, "", "Interest"),
]


@pytest.mark.parametrize(
    ("bad_row", "problem"),
    [
        ("2026-09-05,12.3x,REF,Deposit", "amount '12.3x' is not a number in USD"),
        ("2026-09-05,12.3,REF,Deposit", "amount '12.3' is not a number in USD"),
        ("2026-09-31,12.30,REF,Deposit", "date '2026-09-31' is not a date"),
        ("2026-10-01,12.30,REF,Deposit", "date 2026-10-01 is outside the statement period"),
        ("2026-09-05,12.30,REF", "expected 4 fields"),
        ("2026-09-05,0.00,REF,Nothing", "amount must not be zero"),
        ('2026-09-05,12.30,REF,"unterminated', "not valid CSV"),
    ],
)
def test_a_bad_line_refuses_the_whole_statement_naming_its_line(books: TrustBooks, bad_row: str, problem: str) -> None:
    deposit = books.deposit(1_000_00, "2026-09-01", books.alice, reference="DEP-1")
    lines = statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS).splitlines()
    # Line 9 of the file: four balance rows, the header, three good lines, then the bad one, then a good one.
    text = "\n".join([*lines, bad_row, "2026-09-06,1.00,,Late"]) + "\n"
    error = refusal(lambda: books.import_statement(text))
    assert error.code == "invalid_statement_line"
    assert error.message.startswith("line 9: "), error.message
    assert problem in error.message, error.message

    assert books.statements() == []
    unmatched = books.unmatched("2026-09-30")
    assert unmatched.statement is None
    assert [entry.transfer_id for entry in unmatched.ledger_entries] == [deposit.id]


def test_the_documented_examples_are_valid_statements() -> None:
    parsed = parse_statement(STATEMENT_EXAMPLE, USD)
    assert (parsed.opening_balance, parsed.closing_balance, len(parsed.lines)) == (10_000_00, 12_405_00, 4)
    documented = (CORE_DIR / "docs" / "bank-statements.md").read_text()
    example = documented.split("```\n", 2)[1]
    assert parse_statement(example, USD) == parsed
    # Other currencies: exactly their number of fraction digits.
    yen = "period_start,2026-10-01\nperiod_end,2026-10-31\nopening_balance,0\nclosing_balance,1250\n" + (
        "date,amount,reference,description\n2026-10-02,1250,,Deposit\n"
    )
    assert parse_statement(yen, Currency.of("JPY")).closing_balance == 1250
    dinar = yen.replace("1250", "1.250").replace("balance,0", "balance,0.000")
    assert parse_statement(dinar, Currency.of("BHD")).lines[0].amount == 1250
    assert refusal(lambda: parse_statement(yen, USD)).code == "invalid_statement_line"


def test_statement_level_refusals(books: TrustBooks) -> None:
    good = statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS)
    not_balancing = statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS, closing=851_00)
    error = refusal(lambda: books.import_statement(not_balancing))
    assert error.code == "statement_does_not_balance"
    assert "850.00" in error.message and "851.00" in error.message

    cases = {
        "line 1: the statement is empty": "",
        "line 2: period_end is given twice (first on line 1)": "period_end,2026-09-30\nperiod_end,2026-09-30\n",
        "line 3: opening_balance, closing_balance must come before the header row": (
            "period_start,2026-09-01\nperiod_end,2026-09-30\ndate,amount,reference,description\n"
        ),
        "line 2: period_end 2026-08-31 is before period_start 2026-09-01": good.replace(
            "period_end,2026-09-30", "period_end,2026-08-31"
        ),
        "line 4: no header row date,amount,reference,description": "\n".join(good.splitlines()[:4]),
        "line 3: opening_balance '10' is not a number in USD": good.replace(
            "opening_balance,0.00", "opening_balance,10"
        ),
        "line 5: the header row must be exactly date,amount,reference,description": good.replace(
            "date,amount,reference,description", "date,amount,reference,description,balance"
        ),
    }
    for expected, text in cases.items():
        error = refusal(lambda text=text: books.import_statement(text))
        assert error.code == "invalid_statement_line", (expected, error.message)
        assert error.message.startswith(expected), (expected, error.message)

    after_tomorrow = (datetime.now(UTC) + timedelta(days=2)).date()
    future = statement_csv((after_tomorrow - timedelta(days=9)).isoformat(), after_tomorrow.isoformat(), 0, [])
    assert refusal(lambda: books.import_statement(future)).code == "statement_in_future"
    assert books.statements() == []


def test_a_statement_continues_the_previous_one(books: TrustBooks) -> None:
    september = books.import_statement(statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS))
    assert (september.closing_balance, september.previous_statement_id) == (850_00, None)

    not_continuous = statement_csv("2026-10-01", "2026-10-31", 800_00, [("2026-10-02", 1_00, "", "x")])
    error = refusal(lambda: books.import_statement(not_continuous))
    assert error.code == "statement_not_continuous"
    assert "800.00" in error.message and "850.00" in error.message
    overlapping = statement_csv("2026-09-30", "2026-10-31", 850_00, [])
    assert refusal(lambda: books.import_statement(overlapping)).code == "statement_overlaps"
    again = statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS)
    assert refusal(lambda: books.import_statement(again)).code == "statement_overlaps"
    assert [statement.id for statement in books.statements()] == [september.id]

    october = books.import_statement(statement_csv("2026-10-01", "2026-10-31", 850_00, []))
    assert october.previous_statement_id == september.id
    assert [statement.id for statement in books.statements()] == [september.id, october.id]
    read = books.container.bank_statement_service().get_statement(TENANT, september.id)
    assert [line.line_number for line in read.lines] == [6, 7, 8]
    assert [line.amount for line in read.lines] == [1_000_00, -200_00, 50_00]
    balance = books.container.bank_statement_service().statement_balance(TENANT, books.ledger.id, date(2026, 10, 30))
    assert balance is not None
    assert (balance.statement_id, balance.period_end, balance.closing_balance) == (
        september.id,
        date(2026, 9, 30),
        850_00,
    )
    assert (balance.first_opening_balance, balance.first_period_start) == (0, date(2026, 9, 1))


# ---------------------------------------------------------------------------------------------------------------
# A month's statement matched to the books


def test_a_months_statement_is_matched_and_the_rest_is_listed_on_each_side(books: TrustBooks) -> None:
    firm = books.operate(TrustOperationKind.FIRM_DEPOSIT, 100_00, "2026-10-01")
    retainer = books.deposit(1_000_00, "2026-10-02", books.alice, reference="DEP-1001")
    # A deposit slip: three cheques paid in together; the bank shows one line.
    slip = [
        books.deposit(200_00, "2026-10-06", books.bob, reference="SLIP-77"),
        books.deposit(300_00, "2026-10-06", books.carol, reference="SLIP-77"),
        books.deposit(450_00, "2026-10-07", books.alice, reference="SLIP-77"),
    ]
    # A receipt of the same size as one of the slip's, on another day: it must not be taken into the slip.
    other = books.deposit(300_00, "2026-10-08", books.bob)
    cheque = books.operate(TrustOperationKind.DISBURSEMENT, 250_00, "2026-10-09", books.alice, reference="CHQ-1187")
    fee = books.operate(TrustOperationKind.EARNED_FEE, 100_00, "2026-10-15", books.bob)
    charge = books.operate(TrustOperationKind.BANK_CHARGE, 12_00, "2026-10-31")
    transposed = books.deposit(1_250_00, "2026-10-20", books.carol, description="Okafor settlement")
    in_transit = books.deposit(700_00, "2026-10-30", books.bob)

    rows: list[Row] = [
        ("2026-10-01", 100_00, "", "Firm funds"),
        ("2026-10-03", 1_000_00, "DEP-1001", "Deposit"),
        ("2026-10-08", 950_00, "SLIP-77", "Deposit slip 77"),
        ("2026-10-09", 300_00, "", "Counter deposit"),
        ("2026-10-15", -100_00, "", "Transfer to operating"),
        # Cashed eleven days after it was written: outside the plain window, found by its reference.
        ("2026-10-20", -250_00, "1187", "Cheque 1187"),
        ("2026-10-21", 1_520_00, "", "Okafor settlement"),
        ("2026-10-31", -12_00, "", "Wire fee"),
        ("2026-10-31", -25_00, "", "Monthly account fee"),
    ]
    statement = books.import_statement(statement_csv("2026-10-01", "2026-10-31", 0, rows))
    assert (statement.line_count, statement.matched_line_count, statement.unmatched_line_count) == (9, 7, 2)
    matched = {
        line.line_number: ({match.transfer_id for match in line.matches}, line.matches) for line in statement.lines
    }
    assert matched[6][0] == {firm.id}
    assert matched[7][0] == {retainer.id}
    assert matched[8][0] == {receipt.id for receipt in slip}
    assert {match.kind for match in matched[8][1]} == {MatchKind.DEPOSIT_SLIP}
    assert matched[9][0] == {other.id}
    assert matched[10][0] == {fee.id}
    assert matched[11][0] == {cheque.id}
    assert matched[11][1][0].kind is MatchKind.REFERENCE
    assert matched[13][0] == {charge.id}
    assert matched[12][0] == matched[14][0] == set()
    assert statement == books.container.bank_statement_service().get_statement(TENANT, statement.id)

    october = books.unmatched("2026-10-31")
    assert october.statement is not None and october.statement.statement_id == statement.id
    assert [(line.line_number, line.amount) for line in october.bank_lines] == [(12, 1_520_00), (14, -25_00)]
    assert [(entry.transfer_id, entry.amount) for entry in october.ledger_entries] == [
        (transposed.id, 1_250_00),
        (in_transit.id, 700_00),
    ]
    assert [entry.kind for entry in october.ledger_entries] == [TransferKind.DEPOSIT, TransferKind.DEPOSIT]

    # The fee is booked after all: matching again takes it; the transposed pair stays apart.
    booked_fee = books.operate(TrustOperationKind.BANK_CHARGE, 25_00, "2026-10-31", description="Monthly account fee")
    again = books.container.bank_statement_service().match_again(TENANT, books.ledger.id, ACTOR)
    assert [(match.transfer_id, match.kind) for match in again] == [(booked_fee.id, MatchKind.AMOUNT_AND_DATE)]
    assert books.container.bank_statement_service().match_again(TENANT, books.ledger.id, ACTOR) == []
    after_fee = books.unmatched("2026-10-31")
    assert [line.amount for line in after_fee.bank_lines] == [1_520_00]
    assert [entry.transfer_id for entry in after_fee.ledger_entries] == [transposed.id, in_transit.id]

    # November: the deposit in transit arrives; the same retainer line again finds nothing (an entry matches once).
    november = books.import_statement(
        statement_csv(
            "2026-11-01",
            "2026-11-10",
            statement.closing_balance,
            [("2026-11-02", 700_00, "", "Deposit"), ("2026-11-03", 1_000_00, "DEP-1001", "Deposit")],
        )
    )
    assert [line.matched for line in november.lines] == [True, False]
    assert november.lines[0].matches[0].transfer_id == in_transit.id
    # As of October 31 the deposit was still in transit, whatever was learnt since.
    still_october = books.unmatched("2026-10-31")
    assert [entry.transfer_id for entry in still_october.ledger_entries] == [transposed.id, in_transit.id]
    assert still_october.ledger_entries[1].matched_line_id == november.lines[0].id
    as_of_november = books.unmatched("2026-11-10")
    assert [entry.transfer_id for entry in as_of_november.ledger_entries] == [transposed.id]
    assert [line.amount for line in as_of_november.bank_lines] == [1_520_00, 1_000_00]


def test_a_deposit_slip_with_a_receipt_booked_after_the_date_is_not_matched_as_of_then(books: TrustBooks) -> None:
    early = books.deposit(400_00, "2026-10-30", books.alice)
    late = books.deposit(600_00, "2026-11-01", books.bob)
    statement = books.import_statement(
        statement_csv("2026-10-01", "2026-10-31", 0, [("2026-10-31", 1_000_00, "", "Deposit slip")])
    )
    assert {match.transfer_id for match in statement.lines[0].matches} == {early.id, late.id}
    october = books.unmatched("2026-10-31")
    assert [line.id for line in october.bank_lines] == [statement.lines[0].id]
    assert [entry.transfer_id for entry in october.ledger_entries] == [early.id]
    november = books.unmatched("2026-11-01")
    assert (november.bank_lines, november.ledger_entries) == ((), ())


def test_an_entry_is_matched_at_most_once_by_the_store_itself(books: TrustBooks) -> None:
    deposit = books.deposit(1_000_00, "2026-09-02", books.alice)
    first = books.import_statement(statement_csv("2026-09-01", "2026-09-30", 0, [("2026-09-02", 1_000_00, "", "")]))
    [match] = first.lines[0].matches
    assert match.transfer_id == deposit.id
    second = books.import_statement(statement_csv("2026-10-01", "2026-10-31", 1_000_00, [("2026-10-01", 5_00, "", "")]))
    with books.container.unit_of_work() as uow:
        duplicate = replace(match, line_id=second.lines[0].id, statement_id=second.id)
        error = refusal(lambda: uow.bank_statements.add_matches([duplicate]))
    assert error.code == "entry_already_matched"
    assert books.container.bank_statement_service().get_statement(TENANT, second.id).matched_line_count == 0


def test_unmatched_needs_a_bank_account(any_container: Container) -> None:
    general = any_container.ledger_service().open_ledger(TENANT, name="ops", currency="USD", kind=LedgerKind.GENERAL)
    service = any_container.bank_statement_service()
    assert refusal(lambda: service.unmatched(TENANT, general.id, date(2026, 10, 31))).code == "bank_account_missing"
    assert refusal(lambda: service.unmatched(TENANT, uuid.uuid4(), date(2026, 10, 31))).code == "ledger_not_found"
    assert refusal(lambda: service.get_statement(TENANT, uuid.uuid4())).code == "bank_statement_not_found"


def test_statement_history_cannot_be_changed_in_the_database(pg_container: Container) -> None:
    ledger = pg_container.ledger_service().open_ledger(TENANT, name="history", currency="USD")
    pg_container.account_service().open_account(TENANT, ledger.id, code="bank", name="bank", kind=AccountKind.BANK)
    service = pg_container.bank_statement_service()
    service.import_statement(TENANT, ledger.id, statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS), ACTOR)
    engine = pg_container.database_engine()
    for statement in (
        "UPDATE bank_statements SET closing_balance = 0",
        "DELETE FROM bank_statement_lines",
        "UPDATE bank_statement_lines SET amount = 1",
    ):
        with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError, match="permission denied"):
            connection.execute(sa.text(statement))


# ---------------------------------------------------------------------------------------------------------------
# The matcher on its own


STATEMENT_ID = uuid.UUID(int=1)


def bank_line(number: int, on: str, amount: int, reference: str = "", description: str = "") -> BankStatementLine:
    return BankStatementLine(
        uuid.UUID(int=1_000 + number), STATEMENT_ID, number, date.fromisoformat(on), amount, reference, description
    )


def entry(number: int, on: str, amount: int, reference: str | None = None, description: str = "") -> BankEntry:
    return BankEntry(
        transfer_id=uuid.UUID(int=2_000 + number),
        kind=TransferKind.DEPOSIT if amount > 0 else TransferKind.DISBURSEMENT,
        effective_date=date.fromisoformat(on),
        recorded_at=datetime(2026, 10, 1, tzinfo=UTC),
        amount=amount,
        description=description,
        reference=reference,
    )


def matched_pairs(lines: list[BankStatementLine], entries: list[BankEntry]) -> set[tuple[int, tuple[int, ...], str]]:
    return {
        (match.line_id.int - 1_000, tuple(sorted(t.int - 2_000 for t in match.transfer_ids)), match.kind.value)
        for match in match_lines(lines, entries)
    }


def test_matching_is_deterministic_and_prefers_references_then_closer_dates() -> None:
    lines = [
        bank_line(1, "2026-10-11", 100_00),
        bank_line(2, "2026-10-16", 100_00, "INV-9"),
        bank_line(3, "2026-10-20", -40_00, description="card fee ref 5512"),
        bank_line(4, "2026-10-25", 500_00),
    ]
    entries = [
        entry(1, "2026-10-09", 100_00),
        # The same day as line 1, but its reference belongs to line 2: agreeing references go first.
        entry(2, "2026-10-11", 100_00, "inv-9"),
        # Then the closest date: one day from line 1 (entry 1 is two).
        entry(3, "2026-10-12", 100_00),
        entry(4, "2026-10-19", -40_00, "5512"),
        # Out of the window (6 days before), no reference: stays unmatched.
        entry(5, "2026-10-19", 500_00),
        # Same amount, after the line by more than two days.
        entry(6, "2026-10-28", 500_00),
    ]
    expected = {(1, (3,), "amount_and_date"), (2, (2,), "reference"), (3, (4,), "reference")}
    assert matched_pairs(lines, entries) == expected
    shuffler = random.Random(7)
    for _ in range(5):
        shuffled_lines, shuffled_entries = lines[:], entries[:]
        shuffler.shuffle(shuffled_lines)
        shuffler.shuffle(shuffled_entries)
        assert matched_pairs(shuffled_lines, shuffled_entries) == expected


def test_a_deposit_slip_takes_the_receipts_sharing_its_reference_and_is_bounded() -> None:
    line = bank_line(1, "2026-10-10", 600_00, "SLIP-3")
    entries = [
        entry(1, "2026-10-09", 100_00),
        entry(2, "2026-10-09", 500_00),
        entry(3, "2026-10-08", 200_00, "SLIP-3"),
        entry(4, "2026-10-08", 150_00, "SLIP-3"),
        entry(5, "2026-10-07", 250_00, "SLIP-3"),
    ]
    assert matched_pairs([line], entries) == {(1, (3, 4, 5), "deposit_slip")}
    # Without references, the smallest set wins (two receipts before three).
    plain = [entry(number, day.isoformat(), amount) for number, day, amount in _receipts_without_references()]
    assert matched_pairs([bank_line(1, "2026-10-10", 600_00)], plain) == {(1, (1, 2), "deposit_slip")}
    # At most six receipts to a slip; no subset found among many: a bounded search gives up quickly.
    seven = [entry(number, "2026-10-09", 100_00) for number in range(1, 8)]
    assert matched_pairs([bank_line(1, "2026-10-10", 700_00)], seven) == set()
    many = [entry(number, "2026-10-09", 2 * number + 1) for number in range(1, 200)]
    started = time.monotonic()
    assert matched_pairs([bank_line(1, "2026-10-10", 2)], many) == set()
    assert matched_pairs([bank_line(1, "2026-10-10", 10**9)], many) == set()
    assert time.monotonic() - started < 5.0
    # Payments never form a slip.
    assert (
        matched_pairs(
            [bank_line(1, "2026-10-10", -300_00)], [entry(1, "2026-10-09", -100_00), entry(2, "2026-10-09", -200_00)]
        )
        == set()
    )
    with pytest.raises(ValueError, match="deposit slip"):
        MatchingRules(max_slip_receipts=1)


def _receipts_without_references() -> list[tuple[int, date, int]]:
    return [
        (1, date(2026, 10, 9), 100_00),
        (2, date(2026, 10, 9), 500_00),
        (3, date(2026, 10, 8), 200_00),
        (4, date(2026, 10, 8), 150_00),
        (5, date(2026, 10, 7), 250_00),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Over HTTP


@pytest.fixture
def client(any_container: Container) -> Iterator[TestClient]:
    with AuthorizedTestClient(create_app(any_container)) as test_client:
        yield test_client


def test_api_round_trip(client: TestClient, books: TrustBooks) -> None:
    deposit = books.deposit(1_000_00, "2026-10-02", books.alice, reference="DEP-1")
    path = f"/v1/ledgers/{books.ledger.id}/bank-statements"
    text = statement_csv(
        "2026-10-01", "2026-10-31", 0, [("2026-10-02", 1_000_00, "DEP-1", "Deposit"), ("2026-10-31", -5_00, "", "Fee")]
    )
    key = uuid.uuid4().hex
    created = client.post(path, json={"csv": text}, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["line_count"], body["matched_line_count"], body["unmatched_line_count"]) == (2, 1, 1)
    assert body["lines"][0]["matches"][0]["transfer_id"] == str(deposit.id)
    assert body["lines"][0]["matches"][0]["kind"] == "reference"
    assert body["lines"][1]["matched"] is False
    replay = client.post(path, json={"csv": text}, headers={"Idempotency-Key": key})
    assert (replay.status_code, replay.json()) == (201, body)

    assert client.get(f"/v1/bank-statements/{body['id']}").json() == body
    listed = client.get(path).json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert "lines" not in listed["items"][0]

    unmatched = client.get(f"/v1/ledgers/{books.ledger.id}/unmatched", params={"as_of": "2026-10-31"})
    assert unmatched.status_code == 200, unmatched.text
    items = unmatched.json()
    assert items["statement"]["closing_balance"] == 995_00
    assert [line["amount"] for line in items["bank_lines"]] == [-5_00]
    assert (items["bank_lines_total"], items["ledger_entries"], items["ledger_entries_total"]) == (-5_00, [], 0)

    bad = text.replace("-5.00", "-5.0")
    refused = client.post(path, json={"csv": bad}, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert refused.status_code == 422
    assert refused.json()["code"] == "invalid_statement_line"
    assert refused.json()["detail"].startswith("line 7: amount '-5.0'")

    # A refusal by the stored state is recorded with its key and replayed.
    overlap_key = uuid.uuid4().hex
    overlapping = client.post(path, json={"csv": text}, headers={"Idempotency-Key": overlap_key})
    assert (overlapping.status_code, overlapping.json()["code"]) == (422, "statement_overlaps")
    assert client.post(path, json={"csv": text}, headers={"Idempotency-Key": overlap_key}).json() == overlapping.json()

    books.operate(TrustOperationKind.BANK_CHARGE, 5_00, "2026-10-31")
    rematch = client.post(f"{path}/matching", json={}, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert (rematch.status_code, rematch.json()) == (200, {"matched_entries": 1, "matched_lines": 1})
    assert (
        client.get(f"/v1/ledgers/{books.ledger.id}/unmatched", params={"as_of": "2026-10-31"}).json()["bank_lines"]
        == []
    )


# ---------------------------------------------------------------------------------------------------------------
# The CLI


@pytest.mark.slow
def test_statements_import_cli(pg_container: Container, service_database: DatabaseCredentials, tmp_path: Path) -> None:
    ledger = pg_container.ledger_service().open_ledger(TENANT, name="cli statements", currency="USD")
    pg_container.account_service().open_account(TENANT, ledger.id, code="bank", name="bank", kind=AccountKind.BANK)
    client_id = (
        pg_container.account_service()
        .open_account(TENANT, ledger.id, code="c-1", name="c-1", kind=AccountKind.CLIENT)
        .id
    )
    pg_container.trust_service().execute(
        TENANT,
        ACTOR,
        TrustOperation(
            kind=TrustOperationKind.DEPOSIT,
            ledger_id=ledger.id,
            amount=1_000_00,
            client_account_id=client_id,
            effective_date=date(2026, 9, 2),
        ),
    )
    secret_file = tmp_path / "secret.json"
    write_private_file(secret_file, json.dumps(service_database.to_document()))
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LEDGER_", "AWS_"))}
    env.update(
        PYTHONPATH=str(CORE_DIR),
        LEDGER_SECRET_FILE=str(secret_file),
        LEDGER_ENVIRONMENT="test",
        LEDGER_LOG_FORMAT="json",
        LEDGER_DATA_DIR=str(tmp_path / "no-embedded-database"),
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS).replace("-200.00", "-200"))
    good = tmp_path / "september.csv"
    good.write_text(statement_csv("2026-09-01", "2026-09-30", 0, GOOD_ROWS))

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger", "statements", "import", "--ledger", str(ledger.id), str(path)],
            env=env,
            cwd=CORE_DIR,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )

    refused = run(bad)
    assert refused.returncode == 1, refused
    assert "line 7: amount '-200'" in refused.stderr
    assert pg_container.bank_statement_service().list_statements(TENANT, ledger.id).items == []

    imported = run(good)
    assert imported.returncode == 0, imported
    assert "lines: 3, matched: 1, unmatched: 2" in imported.stdout
    assert "unmatched line 7: 2026-09-03 -200.00 CHQ-1 Cheque 1" in imported.stdout
    [statement] = pg_container.bank_statement_service().list_statements(TENANT, ledger.id).items
    assert statement.actor.startswith("operator:")
