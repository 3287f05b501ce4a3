"""The ledger contract: one suite, run against both adapters (in-memory and PostgreSQL), at the service level.

Every test asserts the same things on both adapters (``any_container`` is parametrised), so the in-memory adapter is
held to exactly what PostgreSQL does. Errors are checked by exact exception type and ``code``: whether a refusal is a
``LedgerRuleViolation`` (recorded with its idempotency key) or a plain ``InvalidRequest`` (stores nothing) matters.
"""

from __future__ import annotations

import hashlib
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from ledger.container import Container
from ledger.domain.errors import Conflict, DomainError, InvalidRequest, NotFound
from ledger.domain.idempotency import IdempotentRequest, RecordedResponse
from ledger.domain.model import (
    DEFAULT_TENANT_ID,
    Account,
    AccountKind,
    AccountStatus,
    Ledger,
    LedgerKind,
    NormalSide,
)
from ledger.domain.money import MAX_AMOUNT_MINOR_UNITS, Currency
from ledger.domain.transfer_service import post_in_unit_of_work
from ledger.domain.transfers import (
    MAX_METADATA_BYTES,
    LedgerRuleViolation,
    PostingDraft,
    Side,
    StatementLine,
    Transfer,
    TransferDraft,
    TransferKind,
)
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.infrastructure.in_memory import InMemoryUnitOfWork

TENANT = DEFAULT_TENANT_ID
ACTOR = "contract-test"
GENERAL_KINDS = (AccountKind.ASSET, AccountKind.LIABILITY, AccountKind.EQUITY, AccountKind.INCOME, AccountKind.EXPENSE)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def posted_balance_change(normal_side: NormalSide, side: Side, amount: int) -> int:
    """How a posting moves a balance kept in the account's normal direction."""
    same = (normal_side is NormalSide.DEBIT) == (side is Side.DEBIT)
    return amount if same else -amount


@contextmanager
def refused(error_type: type[DomainError], code: str) -> Iterator[None]:
    """The block must raise exactly ``error_type`` (not a subclass: a rule violation is not a validation error)."""
    with pytest.raises(DomainError) as caught:
        yield
    assert type(caught.value) is error_type, f"expected {error_type.__name__}, got {type(caught.value).__name__}"
    assert caught.value.code == code


def utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class TrustBook:
    ledger: Ledger
    bank: uuid.UUID
    firm: uuid.UUID
    clients: tuple[uuid.UUID, ...]

    @property
    def all_accounts(self) -> tuple[uuid.UUID, ...]:
        return (self.bank, self.firm, *self.clients)


def open_trust_book(
    container: Container,
    *,
    tenant_id: uuid.UUID = TENANT,
    clients: int = 2,
    currency: str = "USD",
    time_zone: str = "UTC",
) -> TrustBook:
    ledger = container.ledger_service().open_ledger(
        tenant_id, name="Client trust", currency=currency, time_zone=time_zone
    )
    accounts = container.account_service()
    bank = accounts.open_account(tenant_id, ledger.id, code="bank", name="Trust bank", kind=AccountKind.BANK)
    firm = accounts.open_account(tenant_id, ledger.id, code="firm", name="Firm funds", kind=AccountKind.FIRM_FUNDS)
    client_ids = tuple(
        accounts.open_account(
            tenant_id, ledger.id, code=f"client-{index}", name=f"Client {index}", kind=AccountKind.CLIENT
        ).id
        for index in range(clients)
    )
    return TrustBook(ledger=ledger, bank=bank.id, firm=firm.id, clients=client_ids)


@dataclass(frozen=True)
class GeneralBook:
    ledger: Ledger
    cash: uuid.UUID
    revenue: uuid.UUID
    tax: uuid.UUID
    fees: uuid.UUID
    equity: uuid.UUID


def open_general_book(container: Container, *, tenant_id: uuid.UUID = TENANT) -> GeneralBook:
    ledger = container.ledger_service().open_ledger(
        tenant_id, name="Operating", currency="EUR", time_zone="Europe/Paris", kind=LedgerKind.GENERAL
    )
    accounts = container.account_service()

    def open_account(code: str, kind: AccountKind) -> uuid.UUID:
        return accounts.open_account(tenant_id, ledger.id, code=code, name=code.title(), kind=kind).id

    return GeneralBook(
        ledger=ledger,
        cash=open_account("cash", AccountKind.ASSET),
        revenue=open_account("revenue", AccountKind.INCOME),
        tax=open_account("tax", AccountKind.LIABILITY),
        fees=open_account("fees", AccountKind.EXPENSE),
        equity=open_account("equity", AccountKind.EQUITY),
    )


def trust_op(
    container: Container,
    book: TrustBook,
    kind: TrustOperationKind,
    amount: int,
    *,
    client: uuid.UUID | None = None,
    to_client: uuid.UUID | None = None,
    tenant_id: uuid.UUID = TENANT,
    **extra: Any,
) -> Transfer:
    return container.trust_service().execute(
        tenant_id,
        ACTOR,
        TrustOperation(
            kind=kind,
            ledger_id=book.ledger.id,
            amount=amount,
            client_account_id=client,
            to_client_account_id=to_client,
            **extra,
        ),
    )


def deposit(container: Container, book: TrustBook, client: uuid.UUID, amount: int, **extra: Any) -> Transfer:
    return trust_op(container, book, TrustOperationKind.DEPOSIT, amount, client=client, **extra)


def disburse(container: Container, book: TrustBook, client: uuid.UUID, amount: int, **extra: Any) -> Transfer:
    return trust_op(container, book, TrustOperationKind.DISBURSEMENT, amount, client=client, **extra)


def post(container: Container, ledger_id: uuid.UUID, *legs: tuple[uuid.UUID, Side, Any], **extra: Any) -> Transfer:
    draft = TransferDraft(
        ledger_id=ledger_id,
        postings=tuple(PostingDraft(account_id=account, side=side, amount=amount) for account, side, amount in legs),
        **extra,
    )
    return container.transfer_service().post_transfer(TENANT, ACTOR, draft)


def account(container: Container, account_id: uuid.UUID, tenant_id: uuid.UUID = TENANT) -> Account:
    return container.account_service().get_account(tenant_id, account_id)


def balance(container: Container, account_id: uuid.UUID) -> int:
    return account(container, account_id).posted_balance


def balances(container: Container, book: TrustBook) -> dict[uuid.UUID, int]:
    return {account_id: balance(container, account_id) for account_id in book.all_accounts}


def full_statement(container: Container, account_id: uuid.UUID, tenant_id: uuid.UUID = TENANT) -> list[StatementLine]:
    lines: list[StatementLine] = []
    cursor: str | None = None
    for _ in range(100):  # bounded: 100 pages of 500
        page = container.transfer_service().statement(tenant_id, account_id, after=cursor, limit=500)
        lines.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return lines
    raise AssertionError("statement paging did not end")


def assert_conserved(container: Container, book: TrustBook) -> None:
    """bank book balance = sum of client balances + firm funds, posted and available."""
    bank = account(container, book.bank)
    firm = account(container, book.firm)
    clients = [account(container, client) for client in book.clients]
    assert bank.posted_balance == sum(client.posted_balance for client in clients) + firm.posted_balance
    assert bank.available_balance == sum(client.available_balance for client in clients) + firm.available_balance


def is_memory(container: Container) -> bool:
    return isinstance(container.unit_of_work(), InMemoryUnitOfWork)


def stored_counts(container: Container, ledger_id: uuid.UUID) -> tuple[int, int]:
    """(transfers, postings) actually stored for a ledger, read from the store itself, not through the services."""
    if is_memory(container):
        store = container.in_memory_store()
        transfers = [transfer for transfer in store.transfers.values() if transfer.ledger_id == ledger_id]
        account_ids = [acc.id for acc in store.accounts.values() if acc.ledger_id == ledger_id]
        lines = sum(len(store.statements.get(account_id, [])) for account_id in account_ids)
        assert lines == sum(len(transfer.postings) for transfer in transfers)
        return len(transfers), lines
    with container.database_engine().connect() as connection:
        transfers = connection.execute(
            sa.text("SELECT count(*) FROM transfers WHERE ledger_id = :ledger"), {"ledger": ledger_id}
        ).scalar_one()
        postings = connection.execute(
            sa.text("SELECT count(*) FROM postings WHERE ledger_id = :ledger"), {"ledger": ledger_id}
        ).scalar_one()
    return int(transfers), int(postings)


@dataclass(frozen=True)
class Snapshot:
    accounts: tuple[Account, ...]
    statements: tuple[tuple[StatementLine, ...], ...]
    point_in_time: tuple[tuple[int, int, int], ...]
    stored: tuple[int, int]


def snapshot(container: Container, ledger_id: uuid.UUID) -> Snapshot:
    accounts = tuple(container.account_service().list_accounts(TENANT, ledger_id, limit=500).items)
    point_in_time = []
    for acc in accounts:
        at = container.transfer_service().balance_at(TENANT, acc.id)
        point_in_time.append((at.debits, at.credits, at.balance))
    return Snapshot(
        accounts=accounts,
        statements=tuple(tuple(full_statement(container, acc.id)) for acc in accounts),
        point_in_time=tuple(point_in_time),
        stored=stored_counts(container, ledger_id),
    )


def assert_postings_sum_to_zero(transfer: Transfer) -> None:
    debits = sum(posting.amount for posting in transfer.postings if posting.side is Side.DEBIT)
    credits = sum(posting.amount for posting in transfer.postings if posting.side is Side.CREDIT)
    assert debits == credits > 0
    assert len(transfer.postings) >= 2


# --------------------------------------------------------------------------------------------------------------------
# Ledgers and accounts
# --------------------------------------------------------------------------------------------------------------------


def test_open_and_get_ledger(any_container: Container) -> None:
    ledgers = any_container.ledger_service()
    opened = ledgers.open_ledger(TENANT, name="  Client trust  ", currency="JPY", time_zone="Asia/Tokyo")
    assert opened.name == "Client trust"
    assert opened.currency == Currency(code="JPY", exponent=0)
    assert opened.time_zone == "Asia/Tokyo"
    assert opened.kind is LedgerKind.TRUST
    assert opened.tenant_id == TENANT
    assert ledgers.get_ledger(TENANT, opened.id) == opened

    general = ledgers.open_ledger(TENANT, name="Ops", currency="KWD", kind=LedgerKind.GENERAL)
    assert general.time_zone == "UTC"
    assert general.currency.exponent == 3
    assert ledgers.get_ledger(TENANT, general.id) == general


def test_unknown_ledger_is_not_found(any_container: Container) -> None:
    with refused(NotFound, "ledger_not_found"):
        any_container.ledger_service().get_ledger(TENANT, uuid.uuid4())


@pytest.mark.parametrize(
    ("currency", "time_zone", "code"),
    [
        ("XXX", "UTC", "unknown_currency"),
        ("usd", "UTC", "unknown_currency"),
        ("", "UTC", "unknown_currency"),
        ("USD", "Mars/Olympus_Mons", "invalid_time_zone"),
        ("USD", "", "invalid_time_zone"),
        ("USD", "../../etc/passwd", "invalid_time_zone"),
    ],
)
def test_ledger_with_unknown_currency_or_time_zone_is_refused(
    any_container: Container, currency: str, time_zone: str, code: str
) -> None:
    tenant = uuid.uuid4()
    with refused(InvalidRequest, code):
        any_container.ledger_service().open_ledger(tenant, name="Trust", currency=currency, time_zone=time_zone)
    assert list(any_container.ledger_service().list_ledgers(tenant).items) == []


def test_list_ledgers_in_cursor_pages_of_ascending_ids(any_container: Container) -> None:
    tenant = uuid.uuid4()  # a fresh tenant: the PostgreSQL database is shared by the whole session
    ledgers = any_container.ledger_service()
    opened = [ledgers.open_ledger(tenant, name=f"Ledger {index}", currency="USD") for index in range(5)]
    ledgers.open_ledger(uuid.uuid4(), name="Someone else's", currency="USD")

    pages: list[list[Ledger]] = []
    cursor: str | None = None
    for _ in range(10):
        page = ledgers.list_ledgers(tenant, after=cursor, limit=2)
        pages.append(list(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [ledger for page in pages for ledger in page]
    assert [ledger.id for ledger in listed] == sorted(ledger.id for ledger in opened)
    assert {ledger.id: ledger for ledger in listed} == {ledger.id: ledger for ledger in opened}

    # A page that ends exactly at the last item has no next cursor; a page with more to come has one.
    whole = ledgers.list_ledgers(tenant, limit=5)
    assert len(whole.items) == 5 and whole.next_cursor is None
    first_four = ledgers.list_ledgers(tenant, limit=4)
    assert first_four.next_cursor == str(first_four.items[-1].id)
    rest = ledgers.list_ledgers(tenant, after=first_four.next_cursor, limit=4)
    assert [ledger.id for ledger in rest.items] == [max(ledger.id for ledger in opened)]
    assert rest.next_cursor is None

    with refused(InvalidRequest, "invalid_cursor"):
        ledgers.list_ledgers(tenant, after="not-a-cursor")
    for limit in (0, 501):
        with refused(InvalidRequest, "invalid_page_size"):
            ledgers.list_ledgers(tenant, limit=limit)


def test_open_get_and_list_accounts(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=3)
    service = any_container.account_service()
    bank = service.get_account(TENANT, book.bank)
    client = service.get_account(TENANT, book.clients[0])
    assert (bank.kind, bank.normal_side, bank.code, bank.ledger_id) == (
        AccountKind.BANK,
        NormalSide.DEBIT,
        "bank",
        book.ledger.id,
    )
    assert (client.kind, client.normal_side) == (AccountKind.CLIENT, NormalSide.CREDIT)
    firm = service.get_account(TENANT, book.firm)
    assert (firm.kind, firm.normal_side) == (AccountKind.FIRM_FUNDS, NormalSide.CREDIT)
    for acc in (bank, client, firm):
        assert (acc.posted_debits, acc.posted_credits, acc.pending_debits, acc.pending_credits) == (0, 0, 0, 0)
        assert acc.version == 0
        assert acc.status is AccountStatus.OPEN
        assert acc.prevent_overdraft is True

    pages: list[list[Account]] = []
    cursor: str | None = None
    for _ in range(10):
        page = service.list_accounts(TENANT, book.ledger.id, after=cursor, limit=2)
        pages.append(list(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [acc for page in pages for acc in page]
    assert [acc.id for acc in listed] == sorted(book.all_accounts)
    assert listed == [service.get_account(TENANT, acc.id) for acc in listed]

    with refused(NotFound, "ledger_not_found"):
        service.list_accounts(TENANT, uuid.uuid4())
    with refused(NotFound, "account_not_found"):
        service.get_account(TENANT, uuid.uuid4())


def test_account_code_is_unique_per_ledger(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=1)
    service = any_container.account_service()
    with refused(Conflict, "account_code_taken"):
        service.open_account(TENANT, book.ledger.id, code="client-0", name="Again", kind=AccountKind.CLIENT)
    assert len(service.list_accounts(TENANT, book.ledger.id).items) == 3
    # The same code in another ledger is fine.
    other = open_trust_book(any_container, clients=1)
    assert service.get_account(TENANT, other.clients[0]).code == "client-0"


def test_trust_ledger_refuses_general_account_kinds(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=0)
    service = any_container.account_service()
    for kind in GENERAL_KINDS:
        with refused(InvalidRequest, "account_kind_not_allowed"):
            service.open_account(TENANT, book.ledger.id, code=f"x-{kind.value}", name="X", kind=kind)
    with refused(InvalidRequest, "overdraft_not_allowed"):
        service.open_account(
            TENANT, book.ledger.id, code="loose", name="Loose", kind=AccountKind.CLIENT, prevent_overdraft=False
        )
    assert {acc.id for acc in service.list_accounts(TENANT, book.ledger.id).items} == {book.bank, book.firm}


def test_general_ledger_accepts_every_kind(any_container: Container) -> None:
    book = open_general_book(any_container)
    listed = any_container.account_service().list_accounts(TENANT, book.ledger.id).items
    assert {acc.kind for acc in listed} == set(GENERAL_KINDS)
    assert all(acc.prevent_overdraft is False for acc in listed)


def test_tenants_are_isolated(any_container: Container) -> None:
    """Another tenant's ledger, account or transfer is as unknown as an id that does not exist."""
    book = open_trust_book(any_container, clients=1)
    transfer = deposit(any_container, book, book.clients[0], 500)
    stranger = uuid.uuid4()
    ledgers = any_container.ledger_service()
    accounts = any_container.account_service()
    transfers = any_container.transfer_service()

    for ledger_id in (book.ledger.id, uuid.uuid4()):
        with refused(NotFound, "ledger_not_found"):
            ledgers.get_ledger(stranger, ledger_id)
        with refused(NotFound, "ledger_not_found"):
            accounts.list_accounts(stranger, ledger_id)
        with refused(NotFound, "ledger_not_found"):
            accounts.open_account(stranger, ledger_id, code="intruder", name="Intruder", kind=AccountKind.CLIENT)
        with refused(NotFound, "ledger_not_found"):
            deposit(any_container, book, book.clients[0], 1, tenant_id=stranger)
    assert book.ledger.id not in {ledger.id for ledger in ledgers.list_ledgers(stranger).items}
    for account_id in (book.clients[0], uuid.uuid4()):
        with refused(NotFound, "account_not_found"):
            accounts.get_account(stranger, account_id)
        with refused(NotFound, "account_not_found"):
            transfers.statement(stranger, account_id)
        with refused(NotFound, "account_not_found"):
            transfers.balance_at(stranger, account_id)
        with refused(NotFound, "account_not_found"):
            accounts.close_account(stranger, account_id)
    for transfer_id in (transfer.id, uuid.uuid4()):
        with refused(NotFound, "transfer_not_found"):
            transfers.get_transfer(stranger, transfer_id)
        with refused(NotFound, "transfer_not_found"):
            transfers.reverse_transfer(stranger, ACTOR, transfer_id)

    # A stranger's own ledger cannot reach into ours either.
    theirs = open_trust_book(any_container, tenant_id=stranger, clients=1)
    with refused(NotFound, "account_not_found"):
        deposit(any_container, theirs, book.clients[0], 1, tenant_id=stranger)
    with refused(NotFound, "account_not_found"):
        any_container.transfer_service().post_transfer(
            stranger,
            ACTOR,
            TransferDraft(
                ledger_id=theirs.ledger.id,
                postings=(
                    PostingDraft(account_id=theirs.bank, side=Side.DEBIT, amount=1),
                    PostingDraft(account_id=book.clients[0], side=Side.CREDIT, amount=1),
                ),
            ),
        )
    assert balance(any_container, book.clients[0]) == 500
    assert stored_counts(any_container, theirs.ledger.id) == (0, 0)


# --------------------------------------------------------------------------------------------------------------------
# Transfers
# --------------------------------------------------------------------------------------------------------------------


def test_multi_posting_transfer_in_a_general_ledger(any_container: Container) -> None:
    book = open_general_book(any_container)
    first = post(
        any_container,
        book.ledger.id,
        (book.cash, Side.DEBIT, 1_000),
        (book.revenue, Side.CREDIT, 800),
        (book.tax, Side.CREDIT, 200),
        description="invoice paid",
        metadata={"invoice": "INV-1", "lines": [1, 2]},
    )
    assert first.kind is TransferKind.TRANSFER
    assert first.amount == 1_000
    assert first.description == "invoice paid"
    assert first.metadata == {"invoice": "INV-1", "lines": [1, 2]}
    assert first.actor == ACTOR
    assert first.tenant_id == TENANT and first.ledger_id == book.ledger.id
    assert first.reverses_transfer_id is None
    assert [(p.account_id, p.side, p.amount, p.account_version, p.balance_after) for p in first.postings] == [
        (book.cash, Side.DEBIT, 1_000, 1, 1_000),
        (book.revenue, Side.CREDIT, 800, 1, 800),
        (book.tax, Side.CREDIT, 200, 1, 200),
    ]
    assert_postings_sum_to_zero(first)

    second = post(
        any_container,
        book.ledger.id,
        (book.fees, Side.DEBIT, 50),
        (book.cash, Side.DEBIT, 150),
        (book.revenue, Side.CREDIT, 120),
        (book.tax, Side.CREDIT, 80),
    )
    assert [(p.account_version, p.balance_after) for p in second.postings] == [(1, 50), (2, 1_150), (2, 920), (2, 280)]
    assert_postings_sum_to_zero(second)

    cash = account(any_container, book.cash)
    assert (cash.posted_debits, cash.posted_credits, cash.posted_balance, cash.version) == (1_150, 0, 1_150, 2)
    revenue = account(any_container, book.revenue)
    assert (revenue.posted_debits, revenue.posted_credits, revenue.posted_balance, revenue.version) == (0, 920, 920, 2)
    tax = account(any_container, book.tax)
    assert (tax.posted_credits, tax.posted_balance, tax.version) == (280, 280, 2)
    fees = account(any_container, book.fees)
    assert (fees.posted_debits, fees.posted_balance, fees.version) == (50, 50, 1)
    assert account(any_container, book.equity).version == 0

    for transfer in (first, second):
        assert any_container.transfer_service().get_transfer(TENANT, transfer.id) == transfer
    assert stored_counts(any_container, book.ledger.id) == (2, 7)


def test_general_accounts_may_go_negative_and_the_largest_amount_posts(any_container: Container) -> None:
    book = open_general_book(any_container)
    transfer = post(
        any_container,
        book.ledger.id,
        (book.revenue, Side.DEBIT, MAX_AMOUNT_MINOR_UNITS),
        (book.equity, Side.CREDIT, MAX_AMOUNT_MINOR_UNITS),
    )
    assert transfer.postings[0].balance_after == -MAX_AMOUNT_MINOR_UNITS
    assert balance(any_container, book.revenue) == -MAX_AMOUNT_MINOR_UNITS
    assert balance(any_container, book.equity) == MAX_AMOUNT_MINOR_UNITS
    assert any_container.transfer_service().get_transfer(TENANT, transfer.id) == transfer


@pytest.mark.parametrize(
    ("legs", "code"),
    [
        pytest.param([("cash", Side.DEBIT, 100), ("revenue", Side.CREDIT, 99)], "unbalanced_transfer", id="unbalanced"),
        pytest.param(
            [("cash", Side.DEBIT, 100), ("revenue", Side.CREDIT, 60), ("tax", Side.CREDIT, 39)],
            "unbalanced_transfer",
            id="unbalanced-3-legs",
        ),
        pytest.param([("cash", Side.DEBIT, 100), ("revenue", Side.DEBIT, 100)], "unbalanced_transfer", id="two-debits"),
        pytest.param([("cash", Side.DEBIT, 100)], "too_few_postings", id="one-posting"),
        pytest.param([], "too_few_postings", id="no-posting"),
        pytest.param(
            [("cash", Side.DEBIT, 100), ("cash", Side.CREDIT, 100)], "duplicate_account", id="same-account-twice"
        ),
        pytest.param(
            [("cash", Side.DEBIT, 100), ("revenue", Side.CREDIT, 50), ("cash", Side.CREDIT, 50)],
            "duplicate_account",
            id="same-account-in-3-legs",
        ),
        pytest.param([("cash", Side.DEBIT, 0), ("revenue", Side.CREDIT, 0)], "invalid_amount", id="zero"),
        pytest.param([("cash", Side.DEBIT, -5), ("revenue", Side.CREDIT, -5)], "invalid_amount", id="negative"),
        pytest.param(
            [("cash", Side.DEBIT, MAX_AMOUNT_MINOR_UNITS + 1), ("revenue", Side.CREDIT, MAX_AMOUNT_MINOR_UNITS + 1)],
            "invalid_amount",
            id="too-large",
        ),
        pytest.param([("cash", Side.DEBIT, 1.0), ("revenue", Side.CREDIT, 1.0)], "invalid_amount", id="float"),
        pytest.param([("cash", Side.DEBIT, True), ("revenue", Side.CREDIT, True)], "invalid_amount", id="bool"),
        pytest.param([("cash", Side.DEBIT, "5"), ("revenue", Side.CREDIT, "5")], "invalid_amount", id="string"),
    ],
)
def test_malformed_transfers_are_refused(
    any_container: Container, legs: list[tuple[str, Side, Any]], code: str
) -> None:
    book = open_general_book(any_container)
    before = snapshot(any_container, book.ledger.id)
    resolved = [(getattr(book, name), side, amount) for name, side, amount in legs]
    with refused(InvalidRequest, code):
        post(any_container, book.ledger.id, *resolved)
    assert snapshot(any_container, book.ledger.id) == before


def test_accounts_of_another_ledger_are_refused(any_container: Container) -> None:
    book = open_general_book(any_container)
    other = open_general_book(any_container)
    before = (snapshot(any_container, book.ledger.id), snapshot(any_container, other.ledger.id))
    with refused(InvalidRequest, "ledger_mismatch"):
        post(any_container, book.ledger.id, (book.cash, Side.DEBIT, 10), (other.revenue, Side.CREDIT, 10))
    with refused(InvalidRequest, "ledger_mismatch"):
        post(any_container, other.ledger.id, (book.cash, Side.DEBIT, 10), (book.revenue, Side.CREDIT, 10))
    with refused(NotFound, "ledger_not_found"):
        post(any_container, uuid.uuid4(), (book.cash, Side.DEBIT, 10), (book.revenue, Side.CREDIT, 10))
    assert (snapshot(any_container, book.ledger.id), snapshot(any_container, other.ledger.id)) == before


def test_unknown_account_is_not_found(any_container: Container) -> None:
    book = open_general_book(any_container)
    before = snapshot(any_container, book.ledger.id)
    with refused(NotFound, "account_not_found"):
        post(any_container, book.ledger.id, (book.cash, Side.DEBIT, 10), (uuid.uuid4(), Side.CREDIT, 10))
    assert snapshot(any_container, book.ledger.id) == before


def test_metadata_and_description_limits(any_container: Container) -> None:
    book = open_general_book(any_container)
    legs = ((book.cash, Side.DEBIT, 10), (book.revenue, Side.CREDIT, 10))
    before = snapshot(any_container, book.ledger.id)
    with refused(InvalidRequest, "metadata_too_large"):
        post(any_container, book.ledger.id, *legs, metadata={"note": "x" * MAX_METADATA_BYTES})
    with refused(InvalidRequest, "invalid_metadata"):
        post(any_container, book.ledger.id, *legs, metadata={"nul": "a\x00b"})
    with refused(InvalidRequest, "invalid_description"):
        post(any_container, book.ledger.id, *legs, description="d" * 501)
    assert snapshot(any_container, book.ledger.id) == before
    # Unicode metadata just under the limit round-trips exactly.
    metadata = {"note": "é" * 2000, "nested": {"list": [1, "two", None, True]}}
    transfer = post(any_container, book.ledger.id, *legs, metadata=metadata)
    assert any_container.transfer_service().get_transfer(TENANT, transfer.id).metadata == metadata


def test_effective_date_in_the_future_is_refused(any_container: Container) -> None:
    book = open_general_book(any_container)
    legs = ((book.cash, Side.DEBIT, 10), (book.revenue, Side.CREDIT, 10))
    before = snapshot(any_container, book.ledger.id)
    with refused(InvalidRequest, "effective_date_in_future"):
        post(any_container, book.ledger.id, *legs, effective_date=utc_today() + timedelta(days=2))
    assert snapshot(any_container, book.ledger.id) == before
    back_dated = post(any_container, book.ledger.id, *legs, effective_date=date(2020, 2, 29))
    assert back_dated.effective_date == date(2020, 2, 29)


def test_today_is_the_ledgers_today(any_container: Container) -> None:
    """UTC+14: the ledger's today may be UTC's tomorrow, and is accepted; the day after is refused."""
    zone = "Pacific/Kiritimati"
    book = open_trust_book(any_container, clients=1, time_zone=zone)
    local_today = datetime.now(zoneinfo.ZoneInfo(zone)).date()
    transfer = deposit(any_container, book, book.clients[0], 5, effective_date=local_today)
    assert transfer.effective_date == local_today
    default = deposit(any_container, book, book.clients[0], 5)
    assert default.effective_date in {local_today, local_today + timedelta(days=1)}  # midnight may pass
    assert default.effective_date >= utc_today()
    with refused(InvalidRequest, "effective_date_in_future"):
        deposit(any_container, book, book.clients[0], 5, effective_date=local_today + timedelta(days=2))
    assert balance(any_container, book.clients[0]) == 10


def test_closed_account_refuses_transfers(any_container: Container) -> None:
    book = open_general_book(any_container)
    closed = any_container.account_service().close_account(TENANT, book.fees)
    assert closed.status is AccountStatus.CLOSED
    before = snapshot(any_container, book.ledger.id)
    with refused(LedgerRuleViolation, "account_closed"):
        post(any_container, book.ledger.id, (book.fees, Side.DEBIT, 10), (book.cash, Side.CREDIT, 10))
    with refused(LedgerRuleViolation, "account_closed"):
        post(any_container, book.ledger.id, (book.cash, Side.DEBIT, 10), (book.fees, Side.CREDIT, 10))
    assert snapshot(any_container, book.ledger.id) == before


def test_get_transfer_round_trips_what_post_returned(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=2)
    a, b = book.clients
    made = [
        deposit(any_container, book, a, 1_000, description="retainer", metadata={"matter": "M-1"}),
        trust_op(any_container, book, TrustOperationKind.CLIENT_TRANSFER, 300, client=a, to_client=b),
        trust_op(any_container, book, TrustOperationKind.EARNED_FEE, 100, client=b, metadata={"invoice": 7}),
        trust_op(any_container, book, TrustOperationKind.FIRM_DEPOSIT, 50),
        trust_op(any_container, book, TrustOperationKind.BANK_CHARGE, 20),
        disburse(any_container, book, a, 200, effective_date=utc_today() - timedelta(days=3)),
    ]
    made.append(any_container.transfer_service().reverse_transfer(TENANT, ACTOR, made[-1].id, description="oops"))
    for transfer in made:
        fetched = any_container.transfer_service().get_transfer(TENANT, transfer.id)
        assert fetched == transfer
        assert fetched.recorded_at.tzinfo is not None
        assert fetched.recorded_at.utcoffset() is not None
    with refused(NotFound, "transfer_not_found"):
        any_container.transfer_service().get_transfer(TENANT, uuid.uuid4())


# --------------------------------------------------------------------------------------------------------------------
# Trust operations
# --------------------------------------------------------------------------------------------------------------------


def test_trust_operations_keep_bank_equal_to_clients_plus_firm_funds(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=2)
    a, b = book.clients
    c = any_container

    def expect(bank: int, firm: int, client_a: int, client_b: int) -> None:
        assert balances(c, book) == {book.bank: bank, book.firm: firm, a: client_a, b: client_b}
        assert_conserved(c, book)

    t = deposit(c, book, a, 10_000)
    assert t.kind is TransferKind.DEPOSIT
    assert [(p.account_id, p.side, p.amount) for p in t.postings] == [
        (book.bank, Side.DEBIT, 10_000),
        (a, Side.CREDIT, 10_000),
    ]
    expect(10_000, 0, 10_000, 0)
    deposit(c, book, b, 50_000)
    expect(60_000, 0, 10_000, 50_000)

    t = disburse(c, book, a, 3_000)
    assert t.kind is TransferKind.DISBURSEMENT
    assert [(p.account_id, p.side) for p in t.postings] == [(a, Side.DEBIT), (book.bank, Side.CREDIT)]
    expect(57_000, 0, 7_000, 50_000)

    t = trust_op(c, book, TrustOperationKind.CLIENT_TRANSFER, 2_000, client=a, to_client=b)
    assert t.kind is TransferKind.CLIENT_TRANSFER
    assert [(p.account_id, p.side) for p in t.postings] == [(a, Side.DEBIT), (b, Side.CREDIT)]
    expect(57_000, 0, 5_000, 52_000)

    t = trust_op(c, book, TrustOperationKind.EARNED_FEE, 1_000, client=b, metadata={"invoice": "F-1"})
    assert t.kind is TransferKind.FEE
    assert t.metadata == {"invoice": "F-1", "category": "fee"}
    assert [(p.account_id, p.side) for p in t.postings] == [(b, Side.DEBIT), (book.bank, Side.CREDIT)]
    expect(56_000, 0, 5_000, 51_000)

    t = trust_op(c, book, TrustOperationKind.FIRM_DEPOSIT, 500)
    assert t.kind is TransferKind.FIRM_DEPOSIT
    assert [(p.account_id, p.side) for p in t.postings] == [(book.bank, Side.DEBIT), (book.firm, Side.CREDIT)]
    expect(56_500, 500, 5_000, 51_000)

    # Involuntary: booked even though it overdraws the firm's funds.
    t = trust_op(c, book, TrustOperationKind.BANK_CHARGE, 800)
    assert t.kind is TransferKind.BANK_CHARGE
    assert [(p.account_id, p.side) for p in t.postings] == [(book.firm, Side.DEBIT), (book.bank, Side.CREDIT)]
    assert t.postings[0].balance_after == -300
    expect(55_700, -300, 5_000, 51_000)

    # Client A's money is 5 000, whatever the pooled bank balance (55 700, mostly B's money).
    before = snapshot(c, book.ledger.id)
    with refused(LedgerRuleViolation, "insufficient_funds"):
        disburse(c, book, a, 5_001)
    with refused(LedgerRuleViolation, "insufficient_funds"):
        trust_op(c, book, TrustOperationKind.EARNED_FEE, 5_001, client=a)
    with refused(LedgerRuleViolation, "insufficient_funds"):
        trust_op(c, book, TrustOperationKind.CLIENT_TRANSFER, 5_001, client=a, to_client=b)
    assert snapshot(c, book.ledger.id) == before

    disburse(c, book, a, 5_000)  # exactly everything: allowed
    expect(50_700, -300, 0, 51_000)
    assert account(c, a).available_balance == 0


def test_trust_operations_need_a_trust_ledger_and_client_accounts(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=2)
    a, b = book.clients
    general = open_general_book(any_container)
    with refused(InvalidRequest, "not_a_trust_ledger"):
        any_container.trust_service().execute(
            TENANT,
            ACTOR,
            TrustOperation(kind=TrustOperationKind.DEPOSIT, ledger_id=general.ledger.id, amount=1, client_account_id=a),
        )
    with refused(InvalidRequest, "not_a_client_account"):
        deposit(any_container, book, book.firm, 1)
    with refused(InvalidRequest, "duplicate_account"):
        trust_op(any_container, book, TrustOperationKind.CLIENT_TRANSFER, 1, client=a, to_client=a)
    with refused(InvalidRequest, "client_account_required"):
        trust_op(any_container, book, TrustOperationKind.DEPOSIT, 1)
    with refused(InvalidRequest, "client_account_required"):
        trust_op(any_container, book, TrustOperationKind.CLIENT_TRANSFER, 1, client=a)
    with refused(InvalidRequest, "invalid_amount"):
        deposit(any_container, book, a, 0)
    assert stored_counts(any_container, book.ledger.id) == (0, 0)
    assert all(balance(any_container, account_id) == 0 for account_id in (*book.all_accounts, b))


def test_overdrawn_firm_funds_can_be_topped_up_partly(any_container: Container) -> None:
    """Only a voluntary *debit* may not take an account below zero: a credit that reduces a shortfall (a firm deposit
    into overdrawn firm funds, which also debits an overdrawn bank) must be booked, even if it does not cure it all."""
    book = open_trust_book(any_container, clients=1)
    trust_op(any_container, book, TrustOperationKind.BANK_CHARGE, 300)
    assert balances(any_container, book)[book.firm] == -300
    assert balances(any_container, book)[book.bank] == -300
    trust_op(any_container, book, TrustOperationKind.FIRM_DEPOSIT, 100)
    assert balances(any_container, book) == {book.bank: -200, book.firm: -200, book.clients[0]: 0}
    assert_conserved(any_container, book)


# --------------------------------------------------------------------------------------------------------------------
# Every refusal leaves no trace
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusyBook:
    """A book with history: A holds 300 (deposit 1 000, disbursement 700), B holds 50 000, firm funds 100, client C
    closed, a small deposit to B reversed, and another book of the same tenant."""

    book: TrustBook
    other: TrustBook
    spent_deposit: Transfer
    reversed_deposit: Transfer
    reversal: Transfer


def busy_book(container: Container) -> BusyBook:
    book = open_trust_book(container, clients=3)
    a, b, c = book.clients
    spent = deposit(container, book, a, 1_000)
    deposit(container, book, b, 50_000)
    trust_op(container, book, TrustOperationKind.FIRM_DEPOSIT, 100)
    disburse(container, book, a, 700)
    small = deposit(container, book, b, 10)
    reversal = container.transfer_service().reverse_transfer(TENANT, ACTOR, small.id)
    container.account_service().close_account(TENANT, c)
    return BusyBook(
        book=book,
        other=open_trust_book(container, clients=1),
        spent_deposit=spent,
        reversed_deposit=small,
        reversal=reversal,
    )


Refusal = Callable[[Container, BusyBook], object]


def _reverse(transfer_of: Callable[[BusyBook], Transfer]) -> Refusal:
    return lambda c, s: c.transfer_service().reverse_transfer(TENANT, ACTOR, transfer_of(s).id)


REFUSALS: dict[str, tuple[Refusal, type[DomainError], str]] = {
    "disbursement-beyond-client-funds": (
        lambda c, s: disburse(c, s.book, s.book.clients[0], 301),
        LedgerRuleViolation,
        "insufficient_funds",
    ),
    "client-transfer-beyond-funds": (
        lambda c, s: trust_op(
            c, s.book, TrustOperationKind.CLIENT_TRANSFER, 301, client=s.book.clients[0], to_client=s.book.clients[1]
        ),
        LedgerRuleViolation,
        "insufficient_funds",
    ),
    "fee-beyond-funds": (
        lambda c, s: trust_op(c, s.book, TrustOperationKind.EARNED_FEE, 301, client=s.book.clients[0]),
        LedgerRuleViolation,
        "insufficient_funds",
    ),
    "raw-transfer-overdrawing-a-client": (
        lambda c, s: post(
            c, s.book.ledger.id, (s.book.clients[1], Side.DEBIT, 50_001), (s.book.bank, Side.CREDIT, 50_001)
        ),
        LedgerRuleViolation,
        "insufficient_funds",
    ),
    "reversing-a-spent-deposit": (_reverse(lambda s: s.spent_deposit), LedgerRuleViolation, "insufficient_funds"),
    "second-reversal": (_reverse(lambda s: s.reversed_deposit), LedgerRuleViolation, "transfer_already_reversed"),
    "reversing-a-reversal": (_reverse(lambda s: s.reversal), LedgerRuleViolation, "cannot_reverse_reversal"),
    "deposit-to-closed-client": (
        lambda c, s: deposit(c, s.book, s.book.clients[2], 5),
        LedgerRuleViolation,
        "account_closed",
    ),
    "closing-a-non-empty-account": (
        lambda c, s: c.account_service().close_account(TENANT, s.book.clients[0]),
        LedgerRuleViolation,
        "account_not_empty",
    ),
    "closing-a-closed-account": (
        lambda c, s: c.account_service().close_account(TENANT, s.book.clients[2]),
        LedgerRuleViolation,
        "account_closed",
    ),
    "future-effective-date": (
        lambda c, s: deposit(c, s.book, s.book.clients[0], 5, effective_date=utc_today() + timedelta(days=2)),
        InvalidRequest,
        "effective_date_in_future",
    ),
    "unknown-client": (lambda c, s: deposit(c, s.book, uuid.uuid4(), 5), NotFound, "account_not_found"),
    "client-of-another-ledger": (
        lambda c, s: deposit(c, s.book, s.other.clients[0], 5),
        InvalidRequest,
        "ledger_mismatch",
    ),
    "unknown-bank-account": (
        lambda c, s: deposit(c, s.book, s.book.clients[0], 5, bank_account_id=s.other.bank),
        NotFound,
        "account_not_found",
    ),
    "unbalanced-raw-transfer": (
        lambda c, s: post(c, s.book.ledger.id, (s.book.bank, Side.DEBIT, 10), (s.book.clients[0], Side.CREDIT, 9)),
        InvalidRequest,
        "unbalanced_transfer",
    ),
    "metadata-too-large": (
        lambda c, s: deposit(c, s.book, s.book.clients[0], 5, metadata={"x": "y" * 5_000}),
        InvalidRequest,
        "metadata_too_large",
    ),
    "another-tenant": (
        lambda c, s: deposit(c, s.book, s.book.clients[0], 5, tenant_id=uuid.uuid4()),
        NotFound,
        "ledger_not_found",
    ),
    "unknown-transfer-reversal": (
        lambda c, s: c.transfer_service().reverse_transfer(TENANT, ACTOR, uuid.uuid4()),
        NotFound,
        "transfer_not_found",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refusal_leaves_no_trace(any_container: Container, name: str) -> None:
    action, error_type, code = REFUSALS[name]
    state = busy_book(any_container)
    expected = {
        state.book.bank: 50_300 + 100,
        state.book.firm: 100,
        state.book.clients[0]: 300,
        state.book.clients[1]: 50_000,
        state.book.clients[2]: 0,
    }
    assert balances(any_container, state.book) == expected
    before = snapshot(any_container, state.book.ledger.id)
    before_other = snapshot(any_container, state.other.ledger.id)
    assert before.stored == (6, 12)

    with refused(error_type, code):
        action(any_container, state)

    assert snapshot(any_container, state.book.ledger.id) == before
    assert snapshot(any_container, state.other.ledger.id) == before_other
    assert_conserved(any_container, state.book)


# --------------------------------------------------------------------------------------------------------------------
# Reversals
# --------------------------------------------------------------------------------------------------------------------


def test_reversal_negates_every_posting_once(any_container: Container) -> None:
    book = open_general_book(any_container)
    transfers = any_container.transfer_service()
    original = post(
        any_container,
        book.ledger.id,
        (book.cash, Side.DEBIT, 1_000),
        (book.fees, Side.DEBIT, 10),
        (book.revenue, Side.CREDIT, 810),
        (book.tax, Side.CREDIT, 200),
        metadata={"kept": "on the original only"},
    )
    reversal = transfers.reverse_transfer(TENANT, ACTOR, original.id, description="entered twice")
    assert reversal.kind is TransferKind.REVERSAL
    assert reversal.reverses_transfer_id == original.id
    assert reversal.description == "entered twice"
    assert reversal.id != original.id
    assert_postings_sum_to_zero(reversal)
    opposite = {Side.DEBIT: Side.CREDIT, Side.CREDIT: Side.DEBIT}
    assert [(p.account_id, p.side, p.amount) for p in reversal.postings] == [
        (p.account_id, opposite[p.side], p.amount) for p in original.postings
    ]
    assert all(p.balance_after == 0 and p.account_version == 2 for p in reversal.postings)
    for account_id, amount in ((book.cash, 1_000), (book.fees, 10), (book.revenue, 810), (book.tax, 200)):
        acc = account(any_container, account_id)
        assert (acc.posted_balance, acc.posted_debits, acc.posted_credits, acc.version) == (0, amount, amount, 2)
    assert transfers.get_transfer(TENANT, reversal.id) == reversal
    assert transfers.get_transfer(TENANT, original.id) == original  # the original is untouched

    before = snapshot(any_container, book.ledger.id)
    with refused(LedgerRuleViolation, "transfer_already_reversed"):
        transfers.reverse_transfer(TENANT, ACTOR, original.id)
    with refused(LedgerRuleViolation, "cannot_reverse_reversal"):
        transfers.reverse_transfer(TENANT, ACTOR, reversal.id)
    assert snapshot(any_container, book.ledger.id) == before


def test_reversal_of_trust_operations(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=1)
    (a,) = book.clients
    transfers = any_container.transfer_service()
    received = deposit(any_container, book, a, 1_000)
    paid = disburse(any_container, book, a, 600)

    before = snapshot(any_container, book.ledger.id)
    with refused(LedgerRuleViolation, "insufficient_funds"):  # 600 of it is already spent
        transfers.reverse_transfer(TENANT, ACTOR, received.id)
    assert snapshot(any_container, book.ledger.id) == before

    transfers.reverse_transfer(TENANT, ACTOR, paid.id)
    assert balances(any_container, book) == {book.bank: 1_000, book.firm: 0, a: 1_000}
    assert_conserved(any_container, book)
    transfers.reverse_transfer(TENANT, ACTOR, received.id)
    assert balances(any_container, book) == {book.bank: 0, book.firm: 0, a: 0}
    assert_conserved(any_container, book)

    # A reversed bank charge gives the firm its money back, and a reversal is itself final.
    charge = trust_op(any_container, book, TrustOperationKind.BANK_CHARGE, 40)
    deposit(any_container, book, a, 100)
    assert balances(any_container, book) == {book.bank: 60, book.firm: -40, a: 100}
    undo = transfers.reverse_transfer(TENANT, ACTOR, charge.id)
    assert balances(any_container, book) == {book.bank: 100, book.firm: 0, a: 100}
    with refused(LedgerRuleViolation, "cannot_reverse_reversal"):
        transfers.reverse_transfer(TENANT, ACTOR, undo.id)
    assert stored_counts(any_container, book.ledger.id) == (7, 14)


def test_the_store_itself_refuses_a_second_reversal(any_container: Container) -> None:
    """The port's own guard (the service checks first, so only a race reaches it): adding a second reversal of one
    transfer raises ``transfer_already_reversed`` and writes nothing."""
    book = open_trust_book(any_container, clients=1)
    original = deposit(any_container, book, book.clients[0], 100)
    reversal = any_container.transfer_service().reverse_transfer(TENANT, ACTOR, original.id)
    before = snapshot(any_container, book.ledger.id)
    duplicate = replace(
        reversal,
        id=uuid.uuid4(),
        postings=tuple(replace(p, account_version=p.account_version + 1) for p in reversal.postings),
    )
    with any_container.unit_of_work() as uow:
        with refused(LedgerRuleViolation, "transfer_already_reversed"):
            uow.transfers.add(duplicate)
        uow.commit()
    assert snapshot(any_container, book.ledger.id) == before
    with any_container.unit_of_work() as uow:
        assert uow.transfers.get(TENANT, duplicate.id) is None
        assert uow.transfers.reversal_of(TENANT, original.id) == reversal.id


def test_a_transfer_written_in_a_unit_of_work_that_does_not_commit_leaves_nothing(any_container: Container) -> None:
    """Below the services (which refuse before writing): a transfer fully written, then rolled back by leaving the
    unit of work without commit or with an exception, leaves no transfer, posting, statement line or balance."""
    book = open_trust_book(any_container, clients=1)
    deposit(any_container, book, book.clients[0], 100)
    before = snapshot(any_container, book.ledger.id)
    draft = TransferDraft(
        ledger_id=book.ledger.id,
        postings=(
            PostingDraft(account_id=book.bank, side=Side.DEBIT, amount=40),
            PostingDraft(account_id=book.clients[0], side=Side.CREDIT, amount=40),
        ),
    )
    written: list[uuid.UUID] = []
    with any_container.unit_of_work() as uow:
        ledger = uow.ledgers.get(TENANT, book.ledger.id)
        assert ledger is not None
        transfer = post_in_unit_of_work(uow, ledger, draft, transfer_id=uuid.uuid4(), actor=ACTOR)
        written.append(transfer.id)
        assert uow.transfers.get(TENANT, transfer.id) == transfer
        assert len(uow.transfers.statement(TENANT, book.clients[0], after_version=0, limit=10)) == 2
    with pytest.raises(RuntimeError, match="boom"):
        with any_container.unit_of_work() as uow:
            ledger = uow.ledgers.get(TENANT, book.ledger.id)
            assert ledger is not None
            written.append(post_in_unit_of_work(uow, ledger, draft, transfer_id=uuid.uuid4(), actor=ACTOR).id)
            raise RuntimeError("boom")
    assert snapshot(any_container, book.ledger.id) == before
    for transfer_id in written:
        with refused(NotFound, "transfer_not_found"):
            any_container.transfer_service().get_transfer(TENANT, transfer_id)


def test_concurrent_requests_respect_the_rules(any_container: Container) -> None:
    """Eight racing reversals of one transfer: exactly one wins. Twelve racing disbursements of 100 from a client
    holding 500: exactly five post, and the client ends at zero."""
    book = open_trust_book(any_container, clients=2)
    a, b = book.clients
    original = deposit(any_container, book, b, 1_000)
    deposit(any_container, book, a, 500)

    def outcome(work: Callable[[], Transfer]) -> str:
        try:
            work()
        except DomainError as error:
            return error.code
        return "posted"

    def reverse() -> Transfer:
        return any_container.transfer_service().reverse_transfer(TENANT, ACTOR, original.id)

    def pay() -> Transfer:
        return disburse(any_container, book, a, 100)

    with ThreadPoolExecutor(max_workers=8) as pool:
        reversals = [future.result(timeout=60) for future in [pool.submit(outcome, reverse) for _ in range(8)]]
        payments = [future.result(timeout=60) for future in [pool.submit(outcome, pay) for _ in range(12)]]
    assert sorted(reversals) == ["posted"] + ["transfer_already_reversed"] * 7
    assert sorted(payments) == ["insufficient_funds"] * 7 + ["posted"] * 5
    assert balances(any_container, book) == {book.bank: 0, book.firm: 0, a: 0, b: 0}
    assert_conserved(any_container, book)
    assert stored_counts(any_container, book.ledger.id) == (8, 16)
    for account_id in book.all_accounts:
        lines = full_statement(any_container, account_id)
        assert [line.account_version for line in lines] == list(range(1, len(lines) + 1))
        assert (lines[-1].balance_after if lines else 0) == balance(any_container, account_id)


# --------------------------------------------------------------------------------------------------------------------
# Idempotency
# --------------------------------------------------------------------------------------------------------------------


def render(outcome: Transfer | Exception) -> RecordedResponse:
    if isinstance(outcome, DomainError):
        return RecordedResponse(status_code=422, body={"code": outcome.code, "detail": outcome.message})
    if isinstance(outcome, Exception):
        raise outcome
    return RecordedResponse(
        status_code=201,
        body={
            "id": str(outcome.id),
            "kind": outcome.kind.value,
            "amount": outcome.amount,
            "postings": [
                {
                    "account_id": str(p.account_id),
                    "side": p.side.value,
                    "amount": p.amount,
                    "balance_after": p.balance_after,
                }
                for p in outcome.postings
            ],
            "recorded_at": outcome.recorded_at.isoformat(),
        },
    )


def fingerprint_of(operation: TrustOperation) -> str:
    return hashlib.sha256(repr(operation).encode()).hexdigest()


def run_idempotently(
    container: Container, key: str, operation: TrustOperation, *, tenant_id: uuid.UUID = TENANT
) -> RecordedResponse:
    """As the API does it: a new command (with a new transfer id) per request, the same key on a retry."""
    command = container.trust_service().command(tenant_id, ACTOR, operation)
    request = IdempotentRequest(tenant_id=tenant_id, key=key, fingerprint=fingerprint_of(operation), render=render)
    return container.transaction_runner().run_idempotently(request, command)


def stored_key(container: Container, key: str, tenant_id: uuid.UUID = TENANT) -> object:
    with container.unit_of_work() as uow:
        return uow.idempotency.get(tenant_id, key)


def test_idempotent_request_posts_once_and_replays_the_first_response(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=2)
    a, b = book.clients
    key = f"deposit-{uuid.uuid4()}"
    operation = TrustOperation(
        kind=TrustOperationKind.DEPOSIT, ledger_id=book.ledger.id, amount=750, client_account_id=a
    )

    first = run_idempotently(any_container, key, operation)
    assert first.status_code == 201
    assert first.body["amount"] == 750
    posted = any_container.transfer_service().get_transfer(TENANT, uuid.UUID(first.body["id"]))
    assert render(posted) == first
    after_first = snapshot(any_container, book.ledger.id)
    assert after_first.stored == (1, 2)

    for _ in range(3):
        assert run_idempotently(any_container, key, operation) == first
    assert snapshot(any_container, book.ledger.id) == after_first
    assert balance(any_container, a) == 750

    # Same key, another request: refused, nothing posted, and the first response is still what the key replays.
    other = TrustOperation(kind=TrustOperationKind.DEPOSIT, ledger_id=book.ledger.id, amount=751, client_account_id=a)
    with refused(InvalidRequest, "idempotency_key_reused"):
        run_idempotently(any_container, key, other)
    other_client = TrustOperation(
        kind=TrustOperationKind.DEPOSIT, ledger_id=book.ledger.id, amount=750, client_account_id=b
    )
    with refused(InvalidRequest, "idempotency_key_reused"):
        run_idempotently(any_container, key, other_client)
    assert snapshot(any_container, book.ledger.id) == after_first
    assert run_idempotently(any_container, key, operation) == first


def test_a_refusal_is_recorded_and_replayed_even_after_funds_arrive(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=1)
    (a,) = book.clients
    key = f"disburse-{uuid.uuid4()}"
    payout = TrustOperation(
        kind=TrustOperationKind.DISBURSEMENT, ledger_id=book.ledger.id, amount=400, client_account_id=a
    )
    refusal = run_idempotently(any_container, key, payout)
    assert refusal.status_code == 422
    assert refusal.body["code"] == "insufficient_funds"
    assert stored_key(any_container, key) is not None
    assert stored_counts(any_container, book.ledger.id) == (0, 0)

    deposit(any_container, book, a, 1_000)
    before = snapshot(any_container, book.ledger.id)
    assert run_idempotently(any_container, key, payout) == refusal  # the same answer, though A now has the funds
    assert snapshot(any_container, book.ledger.id) == before
    assert balance(any_container, a) == 1_000


def test_an_invalid_request_records_nothing(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=1)
    other = open_trust_book(any_container, clients=1)
    (a,) = book.clients
    key = f"invalid-{uuid.uuid4()}"
    before = snapshot(any_container, book.ledger.id)

    # Refused inside the transaction, but by validation, not by a ledger rule: the key stays unused.
    invalid_requests = [
        TrustOperation(
            kind=TrustOperationKind.DEPOSIT,
            ledger_id=book.ledger.id,
            amount=5,
            client_account_id=a,
            effective_date=utc_today() + timedelta(days=3),
        ),
        TrustOperation(
            kind=TrustOperationKind.DEPOSIT, ledger_id=book.ledger.id, amount=5, client_account_id=other.clients[0]
        ),
    ]
    codes = []
    for invalid in invalid_requests:
        with pytest.raises(InvalidRequest) as caught:
            run_idempotently(any_container, key, invalid)
        assert not isinstance(caught.value, LedgerRuleViolation)
        codes.append(caught.value.code)
        assert stored_key(any_container, key) is None
    assert codes == ["effective_date_in_future", "ledger_mismatch"]
    with pytest.raises(NotFound):
        run_idempotently(
            any_container,
            key,
            TrustOperation(
                kind=TrustOperationKind.DEPOSIT, ledger_id=book.ledger.id, amount=5, client_account_id=uuid.uuid4()
            ),
        )
    assert stored_key(any_container, key) is None
    assert snapshot(any_container, book.ledger.id) == before

    valid = TrustOperation(kind=TrustOperationKind.DEPOSIT, ledger_id=book.ledger.id, amount=5, client_account_id=a)
    response = run_idempotently(any_container, key, valid)
    assert response.status_code == 201
    assert balance(any_container, a) == 5
    assert run_idempotently(any_container, key, valid) == response


def test_idempotency_keys_are_per_tenant(any_container: Container) -> None:
    other_tenant = uuid.uuid4()
    ours = open_trust_book(any_container, clients=1)
    theirs = open_trust_book(any_container, tenant_id=other_tenant, clients=1)
    key = f"shared-{uuid.uuid4()}"
    mine = TrustOperation(
        kind=TrustOperationKind.DEPOSIT, ledger_id=ours.ledger.id, amount=11, client_account_id=ours.clients[0]
    )
    their = TrustOperation(
        kind=TrustOperationKind.DEPOSIT, ledger_id=theirs.ledger.id, amount=22, client_account_id=theirs.clients[0]
    )
    first = run_idempotently(any_container, key, mine)
    second = run_idempotently(any_container, key, their, tenant_id=other_tenant)
    assert first.status_code == second.status_code == 201
    assert first.body["id"] != second.body["id"]
    assert balance(any_container, ours.clients[0]) == 11
    assert account(any_container, theirs.clients[0], other_tenant).posted_balance == 22
    assert run_idempotently(any_container, key, mine) == first
    assert run_idempotently(any_container, key, their, tenant_id=other_tenant) == second
    assert stored_counts(any_container, ours.ledger.id) == (1, 2)
    assert stored_counts(any_container, theirs.ledger.id) == (1, 2)


# --------------------------------------------------------------------------------------------------------------------
# Point-in-time balances and statements
# --------------------------------------------------------------------------------------------------------------------


def test_balance_as_of_an_effective_date_and_as_known_at_a_moment(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=1)
    (a,) = book.clients
    transfers = any_container.transfer_service()
    base = utc_today()
    t1 = deposit(any_container, book, a, 1_000, effective_date=base - timedelta(days=10))
    t2 = deposit(any_container, book, a, 200, effective_date=base - timedelta(days=5))
    t3 = disburse(any_container, book, a, 30, effective_date=base)
    t4 = deposit(any_container, book, a, 4, effective_date=base - timedelta(days=20))  # back-dated, recorded last
    assert t1.recorded_at < t2.recorded_at < t3.recorded_at < t4.recorded_at
    assert [t.effective_date for t in (t1, t2, t3, t4)] == [base - timedelta(days=d) for d in (10, 5, 0, 20)]

    def at(account_id: uuid.UUID, on: date | None = None, known: datetime | None = None) -> int:
        result = transfers.balance_at(TENANT, account_id, effective_on_or_before=on, known_at=known)
        assert result.account_id == account_id
        assert (result.effective_on_or_before, result.known_at) == (on, known)
        return result.balance

    for account_id in (a, book.bank):
        assert at(account_id) == 1_174 == balance(any_container, account_id)
        assert at(account_id, base - timedelta(days=21)) == 0
        assert at(account_id, base - timedelta(days=20)) == 4
        assert at(account_id, base - timedelta(days=11)) == 4
        assert at(account_id, base - timedelta(days=10)) == 1_004
        assert at(account_id, base - timedelta(days=5)) == 1_204
        assert at(account_id, base - timedelta(days=1)) == 1_204
        assert at(account_id, base) == 1_174

        assert at(account_id, known=t1.recorded_at - timedelta(microseconds=1)) == 0
        assert at(account_id, known=t1.recorded_at) == 1_000
        assert at(account_id, known=t2.recorded_at) == 1_200
        assert at(account_id, known=t3.recorded_at) == 1_170
        assert at(account_id, known=t4.recorded_at - timedelta(microseconds=1)) == 1_170
        assert at(account_id, known=t4.recorded_at) == 1_174
        # The same moment in another offset is the same moment.
        assert at(account_id, known=t2.recorded_at.astimezone(timezone(timedelta(hours=-5)))) == 1_200

        # Both: as of ten days ago, as known before the back-dated entry was recorded.
        assert at(account_id, base - timedelta(days=10), t3.recorded_at) == 1_000
        assert at(account_id, base - timedelta(days=10), t4.recorded_at) == 1_004

    client = transfers.balance_at(TENANT, a)
    assert (client.debits, client.credits) == (30, 1_204)
    bank = transfers.balance_at(TENANT, book.bank)
    assert (bank.debits, bank.credits) == (1_204, 30)
    assert transfers.balance_at(TENANT, book.firm).balance == 0

    with refused(InvalidRequest, "invalid_timestamp"):
        transfers.balance_at(TENANT, a, known_at=datetime(2030, 1, 1))  # naive on purpose
    with refused(NotFound, "account_not_found"):
        transfers.balance_at(TENANT, uuid.uuid4())

    # The statement lists entries in the order they were recorded, with their own effective dates.
    lines = full_statement(any_container, a)
    assert [line.transfer_id for line in lines] == [t1.id, t2.id, t3.id, t4.id]
    assert [line.effective_date for line in lines] == [t.effective_date for t in (t1, t2, t3, t4)]
    assert [line.recorded_at for line in lines] == [t.recorded_at for t in (t1, t2, t3, t4)]
    assert [line.balance_after for line in lines] == [1_000, 1_200, 1_170, 1_174]


def test_statement_pages_carry_running_balances(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=2)
    a, b = book.clients
    c = any_container
    made = [
        deposit(c, book, a, 5_000, description="retainer"),
        disburse(c, book, a, 1_200),
        trust_op(c, book, TrustOperationKind.CLIENT_TRANSFER, 300, client=a, to_client=b),
        deposit(c, book, b, 7),
        trust_op(c, book, TrustOperationKind.CLIENT_TRANSFER, 100, client=b, to_client=a),
        trust_op(c, book, TrustOperationKind.EARNED_FEE, 999, client=a),
        deposit(c, book, a, 1),
    ]
    made.append(c.transfer_service().reverse_transfer(TENANT, ACTOR, made[1].id))
    touching_a = [t for t in made if any(p.account_id == a for p in t.postings)]
    assert len(touching_a) == 7

    pages: list[list[StatementLine]] = []
    cursor: str | None = None
    for _ in range(10):
        page = c.transfer_service().statement(TENANT, a, after=cursor, limit=3)
        pages.append(list(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
        assert cursor == str(page.items[-1].account_version)
    assert [len(page) for page in pages] == [3, 3, 1]
    lines = [line for page in pages for line in page]
    assert [line.transfer_id for line in lines] == [t.id for t in touching_a]
    assert [line.account_version for line in lines] == list(range(1, 8))
    assert lines[0].description == "retainer"
    assert lines[0].kind is TransferKind.DEPOSIT and lines[-1].kind is TransferKind.REVERSAL

    running = 0
    for line in lines:
        running += posted_balance_change(NormalSide.CREDIT, line.side, line.amount)
        assert line.balance_after == running
    client = account(c, a)
    assert lines[-1].balance_after == client.posted_balance == 5_000 - 300 + 100 - 999 + 1 == 3_802
    assert client.version == lines[-1].account_version

    # The bank's statement tells the same story from the other side.
    bank_lines = full_statement(c, book.bank)
    assert bank_lines[-1].balance_after == balance(c, book.bank)
    assert len(bank_lines) == 6

    whole = c.transfer_service().statement(TENANT, a, limit=7)
    assert len(whole.items) == 7 and whole.next_cursor is None
    assert list(c.transfer_service().statement(TENANT, a, after="7").items) == []
    assert list(c.transfer_service().statement(TENANT, book.firm).items) == []
    for bad_cursor in ("-1", "abc", "1" * 19):
        with refused(InvalidRequest, "invalid_cursor"):
            c.transfer_service().statement(TENANT, a, after=bad_cursor)
    for limit in (0, 501):
        with refused(InvalidRequest, "invalid_page_size"):
            c.transfer_service().statement(TENANT, a, limit=limit)


# --------------------------------------------------------------------------------------------------------------------
# Closing accounts
# --------------------------------------------------------------------------------------------------------------------


def test_only_an_empty_account_closes_and_a_closed_one_takes_nothing(any_container: Container) -> None:
    book = open_trust_book(any_container, clients=2)
    a, b = book.clients
    service = any_container.account_service()
    deposit(any_container, book, a, 250)

    before = snapshot(any_container, book.ledger.id)
    with refused(LedgerRuleViolation, "account_not_empty"):
        service.close_account(TENANT, a)
    assert snapshot(any_container, book.ledger.id) == before

    disburse(any_container, book, a, 250)
    version = account(any_container, a).version
    closed = service.close_account(TENANT, a)
    assert closed.status is AccountStatus.CLOSED
    assert closed.version == version + 1
    assert service.get_account(TENANT, a) == closed

    before = snapshot(any_container, book.ledger.id)
    deposit(any_container, book, b, 100)
    after_b = snapshot(any_container, book.ledger.id)
    with refused(LedgerRuleViolation, "account_closed"):
        deposit(any_container, book, a, 1)
    with refused(LedgerRuleViolation, "account_closed"):
        trust_op(any_container, book, TrustOperationKind.CLIENT_TRANSFER, 1, client=b, to_client=a)
    with refused(LedgerRuleViolation, "account_closed"):
        service.close_account(TENANT, a)
    assert snapshot(any_container, book.ledger.id) == after_b
    assert after_b.stored == (before.stored[0] + 1, before.stored[1] + 2)
    with refused(NotFound, "account_not_found"):
        service.close_account(TENANT, uuid.uuid4())
