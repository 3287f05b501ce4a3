"""Property-based test of a trust ledger: random sequences of trust operations and reversals over a few clients.

A small model predicts every outcome (posted, or refused with which code) and every balance. After every step the
invariants are checked against the real adapter: postings sum to zero (per transfer and over the whole ledger), no
client is below zero, bank = sum of clients + firm funds, and each statement's last running balance is the account's
posted balance. Each example opens a fresh ledger, so PostgreSQL needs no cleanup.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from ledger.container import Container
from ledger.domain.errors import DomainError, InvalidRequest
from ledger.domain.model import DEFAULT_TENANT_ID, Account, AccountKind, NormalSide
from ledger.domain.transfers import LedgerRuleViolation, Side, StatementLine, Transfer, TransferKind
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind

TENANT = DEFAULT_TENANT_ID
ACTOR = "property-test"
CLIENTS = 3
MAX_STEPS = 20


@dataclass(frozen=True)
class Step:
    kind: str  # a TrustOperationKind value, or "reversal"
    client: int = 0  # for a client's debit: an index into the clients that hold money when it runs
    offset: int = 0  # the other client of a transfer between clients: (client + offset) modulo CLIENTS
    amount: int = 1
    share: int = 0  # for a client's debit: the amount is this many thousandths of the client's balance (at least 1)
    pick: int = 0  # which earlier transfer a reversal names (modulo how many there are)


clients = st.integers(0, CLIENTS - 1)
# Another client, now and then the same one (a transfer to oneself is refused as a duplicate account).
offsets = st.integers(0, 7).map(lambda n: 0 if n == 0 else 1 + n % (CLIENTS - 1))
credits_in = st.integers(1, 5_000)
# A client's voluntary debit is a share (per mille) of what the client holds when it runs: mostly within the funds,
# exactly all of them now and then, sometimes more (refused).
shares = st.one_of(st.integers(1, 1_000), st.just(1_000), st.integers(1_001, 1_500))
deposits = st.builds(Step, kind=st.just("deposit"), client=clients, amount=credits_in)
client_debits = st.one_of(
    st.builds(Step, kind=st.just("disbursement"), client=clients, share=shares),
    st.builds(Step, kind=st.just("client_transfer"), client=clients, offset=offsets, share=shares),
    st.builds(Step, kind=st.just("earned_fee"), client=clients, share=shares),
)
firm_and_reversals = st.one_of(
    st.builds(Step, kind=st.just("firm_deposit"), amount=credits_in),
    st.builds(Step, kind=st.just("bank_charge"), amount=st.integers(1, 300)),
    st.builds(Step, kind=st.just("reversal"), pick=st.integers(0, 1_000)),
)
# A third each: money in, clients' money out, and the rest.
steps = st.one_of(deposits, client_debits, firm_and_reversals)
scenarios = st.lists(steps, min_size=4, max_size=MAX_STEPS)  # about 9 steps on average


@dataclass
class Model:
    """What the ledger should hold: balances in each account's normal direction, and the transfers made."""

    normal: dict[uuid.UUID, NormalSide]
    balances: dict[uuid.UUID, int]
    transfers: list[Transfer] = field(default_factory=list)
    reversed: set[uuid.UUID] = field(default_factory=set)

    def change(self, account_id: uuid.UUID, side: Side, amount: int) -> int:
        same = (self.normal[account_id] is NormalSide.DEBIT) == (side is Side.DEBIT)
        return amount if same else -amount

    def refusal(self, legs: list[tuple[uuid.UUID, Side, int]], *, voluntary: bool) -> str | None:
        """A voluntary entry may not take an account below zero by lowering it; credits that raise an overdrawn
        account are always fine, and involuntary entries are always booked."""
        if not voluntary:
            return None
        for account_id, side, amount in legs:
            delta = self.change(account_id, side, amount)
            if delta < 0 and self.balances[account_id] + delta < 0:
                return "insufficient_funds"
        return None

    def apply(self, transfer: Transfer) -> None:
        for posting in transfer.postings:
            self.balances[posting.account_id] += self.change(posting.account_id, posting.side, posting.amount)
        self.transfers.append(transfer)
        if transfer.reverses_transfer_id is not None:
            self.reversed.add(transfer.reverses_transfer_id)


@dataclass(frozen=True)
class Book:
    ledger_id: uuid.UUID
    bank: uuid.UUID
    firm: uuid.UUID
    clients: tuple[uuid.UUID, ...]


def open_book(container: Container) -> Book:
    ledger = container.ledger_service().open_ledger(TENANT, name="Property trust", currency="USD")
    accounts = container.account_service()
    bank = accounts.open_account(TENANT, ledger.id, code="bank", name="Bank", kind=AccountKind.BANK).id
    firm = accounts.open_account(TENANT, ledger.id, code="firm", name="Firm", kind=AccountKind.FIRM_FUNDS).id
    client_ids = tuple(
        accounts.open_account(TENANT, ledger.id, code=f"c{index}", name=f"Client {index}", kind=AccountKind.CLIENT).id
        for index in range(CLIENTS)
    )
    return Book(ledger_id=ledger.id, bank=bank, firm=firm, clients=client_ids)


# Which accounts each operation debits and credits (by role), and whether it is voluntary.
SHAPES: dict[str, tuple[str, str, bool]] = {
    "deposit": ("bank", "client", True),
    "disbursement": ("client", "bank", True),
    "client_transfer": ("client", "other", True),
    "earned_fee": ("client", "bank", True),
    "firm_deposit": ("bank", "firm", True),
    "bank_charge": ("firm", "bank", False),  # involuntary, and on firm funds only: clients never go negative
}


def run_step(container: Container, book: Book, model: Model, step: Step) -> Transfer | None:
    """Runs one step, checking the outcome against the model's prediction; updates the model on success and returns
    the posted transfer (None when refused)."""
    if step.kind == "reversal":
        if not model.transfers:
            return None
        original = model.transfers[step.pick % len(model.transfers)]
        if original.kind is TransferKind.REVERSAL:
            expected: tuple[type[DomainError], str] | None = (LedgerRuleViolation, "cannot_reverse_reversal")
        elif original.id in model.reversed:
            expected = (LedgerRuleViolation, "transfer_already_reversed")
        else:
            opposite = {Side.DEBIT: Side.CREDIT, Side.CREDIT: Side.DEBIT}
            legs = [(p.account_id, opposite[p.side], p.amount) for p in original.postings]
            code = model.refusal(legs, voluntary=True)
            expected = None if code is None else (LedgerRuleViolation, code)

        def action() -> Transfer:
            return container.transfer_service().reverse_transfer(TENANT, ACTOR, original.id)
    else:
        client = step.client
        if step.share:
            # A client's debit names one of the clients that hold money, if any does (otherwise it is refused).
            funded = [index for index in range(CLIENTS) if model.balances[book.clients[index]] > 0]
            client = funded[step.client % len(funded)] if funded else step.client
        roles = {
            "bank": book.bank,
            "firm": book.firm,
            "client": book.clients[client],
            "other": book.clients[(client + step.offset) % CLIENTS],
        }
        debit_role, credit_role, voluntary = SHAPES[step.kind]
        amount = step.amount
        if step.share:
            amount = max(1, model.balances[roles["client"]] * step.share // 1_000)
        if step.kind == "client_transfer" and step.offset % CLIENTS == 0:
            expected = (InvalidRequest, "duplicate_account")
        else:
            legs = [(roles[debit_role], Side.DEBIT, amount), (roles[credit_role], Side.CREDIT, amount)]
            code = model.refusal(legs, voluntary=voluntary)
            expected = None if code is None else (LedgerRuleViolation, code)
        operation = TrustOperation(
            kind=TrustOperationKind(step.kind),
            ledger_id=book.ledger_id,
            amount=amount,
            client_account_id=roles["client"],
            to_client_account_id=roles["other"] if step.kind == "client_transfer" else None,
        )

        def action() -> Transfer:
            return container.trust_service().execute(TENANT, ACTOR, operation)

    try:
        transfer = action()
    except DomainError as error:
        event(f"{step.kind}: {error.code}")
        assert expected is not None, f"{step} was refused ({error.code}) but the model expected it to post"
        assert (type(error), error.code) == expected, f"{step}: got {type(error).__name__} {error.code}"
        return None
    event(f"{step.kind}: posted")
    assert expected is None, f"{step} posted but the model expected {expected[1]}"
    debits = sum(p.amount for p in transfer.postings if p.side is Side.DEBIT)
    credits = sum(p.amount for p in transfer.postings if p.side is Side.CREDIT)
    assert debits == credits > 0
    assert container.transfer_service().get_transfer(TENANT, transfer.id) == transfer
    model.apply(transfer)
    for posting in transfer.postings:
        assert posting.balance_after == model.balances[posting.account_id]
    return transfer


def last_statement_line(container: Container, account_id: uuid.UUID) -> StatementLine | None:
    page = container.transfer_service().statement(TENANT, account_id, limit=500)
    assert page.next_cursor is None  # at most 2 * MAX_STEPS lines per account
    return page.items[-1] if page.items else None


def check_invariants(container: Container, book: Book, model: Model, statements_of: set[uuid.UUID]) -> None:
    """``statements_of``: the accounts whose statements to read (statements are append-only, so an account that a
    step did not touch keeps its last line; all of them are read at the end of each example)."""
    accounts: dict[uuid.UUID, Account] = {
        acc.id: acc for acc in container.account_service().list_accounts(TENANT, book.ledger_id, limit=500).items
    }
    assert {account_id: acc.posted_balance for account_id, acc in accounts.items()} == model.balances
    # The postings of the whole ledger sum to zero.
    assert sum(acc.posted_debits for acc in accounts.values()) == sum(acc.posted_credits for acc in accounts.values())
    # No voluntary debit takes a client below zero, and no involuntary one touches a client here.
    assert all(accounts[client].available_balance >= 0 for client in book.clients)
    # Bank book balance = client balances + firm funds.
    assert accounts[book.bank].posted_balance == (
        sum(accounts[client].posted_balance for client in book.clients) + accounts[book.firm].posted_balance
    )
    for account_id in statements_of:
        acc = accounts[account_id]
        last = last_statement_line(container, account_id)
        if last is None:
            assert (acc.posted_balance, acc.version) == (0, 0)
        else:
            assert last.balance_after == acc.posted_balance
            assert last.account_version == acc.version


def run_scenario(container: Container, scenario: list[Step]) -> None:
    book = open_book(container)
    all_accounts = (book.bank, book.firm, *book.clients)
    model = Model(
        normal={
            book.bank: NormalSide.DEBIT,
            book.firm: NormalSide.CREDIT,
            **dict.fromkeys(book.clients, NormalSide.CREDIT),
        },
        balances=dict.fromkeys(all_accounts, 0),
    )
    for step in scenario:
        transfer = run_step(container, book, model, step)
        touched = set() if transfer is None else {posting.account_id for posting in transfer.postings}
        check_invariants(container, book, model, touched)
    check_invariants(container, book, model, set(all_accounts))
    # Transfers are immutable: each one, read back at the end, is still what was posted and still sums to zero.
    for transfer in model.transfers:
        stored = container.transfer_service().get_transfer(TENANT, transfer.id)
        assert stored == transfer
        assert sum(p.amount for p in stored.postings if p.side is Side.DEBIT) == sum(
            p.amount for p in stored.postings if p.side is Side.CREDIT
        )


# The container fixture is shared by the examples of a test on purpose: each example opens its own ledger.
QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
GENERATE_ONLY = [Phase.explicit, Phase.reuse, Phase.generate]


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=QUIET)
@given(scenario=scenarios)
def test_trust_ledger_invariants_in_memory(memory_container: Container, scenario: list[Step]) -> None:
    run_scenario(memory_container, scenario)


# No shrinking on PostgreSQL (it would take minutes): the in-memory test, held to the same contract, shrinks.
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=QUIET, phases=GENERATE_ONLY)
@given(scenario=scenarios)
def test_trust_ledger_invariants_postgres(pg_container: Container, scenario: list[Step]) -> None:
    run_scenario(pg_container, scenario)
