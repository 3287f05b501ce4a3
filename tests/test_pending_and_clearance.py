"""Two-phase transfers and cleared funds, on both adapters (the in-memory one must behave exactly the same)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest

from ledger.container import Container
from ledger.domain.errors import DomainError
from ledger.domain.model import DEFAULT_TENANT_ID, Account, AccountKind, Ledger
from ledger.domain.pending_transfers import PendingDraft, PendingOutcomeKind, PendingState
from ledger.domain.transfers import TransferKind
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:pending"


@dataclass
class TrustBooks:
    container: Container
    ledger: Ledger
    bank: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID

    def account(self, account_id: uuid.UUID) -> Account:
        return self.container.account_service().get_account(TENANT, account_id)

    def operate(self, kind: TrustOperationKind, amount: int, client: uuid.UUID | None = None, **extra: object):  # type: ignore[no-untyped-def]
        return self.container.trust_service().execute(
            TENANT,
            ACTOR,
            TrustOperation(kind=kind, ledger_id=self.ledger.id, amount=amount, client_account_id=client, **extra),  # type: ignore[arg-type]
        )

    def statement_length(self, account_id: uuid.UUID) -> int:
        return len(self.container.transfer_service().statement(TENANT, account_id, limit=500).items)

    def verified(self) -> bool:
        report = self.container.ledger_verification_service().verify(TENANT, self.ledger.id)
        assert report.findings == ()
        return report.ok


@pytest.fixture
def books(any_container: Container) -> TrustBooks:
    ledgers, accounts = any_container.ledger_service(), any_container.account_service()
    ledger = ledgers.open_ledger(TENANT, name=f"pending {uuid.uuid4().hex[:6]}", currency="USD")
    bank = accounts.open_account(TENANT, ledger.id, code="bank", name="Bank", kind=AccountKind.BANK)
    alice = accounts.open_account(TENANT, ledger.id, code="c-a", name="Alice", kind=AccountKind.CLIENT)
    bob = accounts.open_account(TENANT, ledger.id, code="c-b", name="Bob", kind=AccountKind.CLIENT)
    return TrustBooks(any_container, ledger, bank.id, alice.id, bob.id)


def refusal_code(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as refused:
        call()
    return refused.value.code


def test_a_pending_transfer_reserves_the_debit_but_not_the_credit(books: TrustBooks) -> None:
    books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice)
    pending = books.container.pending_transfer_service().create(
        TENANT,
        ACTOR,
        PendingDraft(books.ledger.id, debit_account_id=books.alice, credit_account_id=books.bob, amount=600),
    )
    alice, bob = books.account(books.alice), books.account(books.bob)
    assert (alice.posted_balance, alice.available_balance, alice.pending_debits) == (1_000, 400, 600)
    assert (bob.posted_balance, bob.available_balance, bob.pending_credits) == (0, 0, 600)
    assert pending.state is PendingState.PENDING

    code = refusal_code(
        lambda: books.container.pending_transfer_service().create(
            TENANT, ACTOR, PendingDraft(books.ledger.id, books.alice, books.bob, amount=401)
        )
    )
    assert code == "insufficient_funds"
    assert books.account(books.alice).pending_debits == 600
    assert books.verified()


def test_posting_in_part_books_that_amount_and_releases_the_rest_exactly_once(books: TrustBooks) -> None:
    books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice)
    service = books.container.pending_transfer_service()
    pending = service.create(TENANT, ACTOR, PendingDraft(books.ledger.id, books.alice, books.bob, amount=600))
    posted = service.post(TENANT, ACTOR, pending.id, amount=450)
    assert posted.outcome is not None
    assert (posted.state, posted.outcome.amount_posted) == (PendingState.POSTED, 450)
    transfer = books.container.transfer_service().get_transfer(TENANT, posted.outcome.transfer_id)  # type: ignore[arg-type]
    assert transfer.amount == 450
    alice, bob = books.account(books.alice), books.account(books.bob)
    assert (alice.posted_balance, alice.pending_debits, alice.available_balance) == (550, 0, 550)
    assert (bob.posted_balance, bob.pending_credits) == (450, 0)
    assert refusal_code(lambda: service.post(TENANT, ACTOR, pending.id)) == "pending_transfer_posted"
    assert refusal_code(lambda: service.void(TENANT, ACTOR, pending.id)) == "pending_transfer_posted"
    assert service.get(TENANT, pending.id).outcome == posted.outcome
    assert books.verified()


def test_post_more_than_reserved_is_refused_and_changes_nothing(books: TrustBooks) -> None:
    books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice)
    service = books.container.pending_transfer_service()
    pending = service.create(TENANT, ACTOR, PendingDraft(books.ledger.id, books.alice, books.bob, amount=600))
    assert refusal_code(lambda: service.post(TENANT, ACTOR, pending.id, amount=601)) == "amount_exceeds_pending"
    assert service.get(TENANT, pending.id).state is PendingState.PENDING
    assert books.account(books.alice).pending_debits == 600


def test_void_releases_the_reservation(books: TrustBooks) -> None:
    books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice)
    service = books.container.pending_transfer_service()
    pending = service.create(TENANT, ACTOR, PendingDraft(books.ledger.id, books.alice, books.bob, amount=600))
    voided = service.void(TENANT, ACTOR, pending.id)
    assert voided.state is PendingState.VOIDED
    alice = books.account(books.alice)
    assert (alice.posted_balance, alice.available_balance, alice.pending_debits) == (1_000, 1_000, 0)
    assert books.statement_length(books.bob) == 0
    assert books.verified()


def test_an_expired_pending_transfer_cannot_be_posted_and_the_sweep_releases_it(books: TrustBooks) -> None:
    books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice)
    service = books.container.pending_transfer_service()
    pending = service.create(
        TENANT, ACTOR, PendingDraft(books.ledger.id, books.alice, books.bob, amount=600, timeout_seconds=1)
    )
    time.sleep(1.2)
    assert refusal_code(lambda: service.post(TENANT, ACTOR, pending.id)) == "pending_transfer_expired"
    assert service.expire_due(TENANT, books.ledger.id, ACTOR) == 1
    assert service.expire_due(TENANT, books.ledger.id, ACTOR) == 0
    expired = service.get(TENANT, pending.id)
    assert expired.outcome is not None and expired.outcome.kind is PendingOutcomeKind.EXPIRED
    assert books.account(books.alice).available_balance == 1_000
    assert books.verified()


def test_uncleared_deposit_counts_in_the_books_but_not_in_available_funds(books: TrustBooks) -> None:
    deposit = books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice, cleared=False)
    alice = books.account(books.alice)
    assert (alice.posted_balance, alice.available_balance, alice.uncleared_credits) == (1_000, 0, 1_000)
    lines = books.statement_length(books.alice)
    code = refusal_code(lambda: books.operate(TrustOperationKind.DISBURSEMENT, 100, books.alice))
    assert code == "insufficient_cleared_funds"
    assert books.statement_length(books.alice) == lines
    assert books.account(books.alice) == alice

    books.container.trust_service().clear_deposit(TENANT, ACTOR, deposit.id)
    assert books.account(books.alice).available_balance == 1_000
    books.operate(TrustOperationKind.DISBURSEMENT, 100, books.alice)
    assert books.account(books.alice).posted_balance == 900
    assert (
        refusal_code(lambda: books.container.trust_service().clear_deposit(TENANT, ACTOR, deposit.id))
        == "deposit_already_cleared"
    )
    assert books.verified()


def test_more_than_book_funds_is_plain_insufficient_funds(books: TrustBooks) -> None:
    books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice, cleared=False)
    code = refusal_code(lambda: books.operate(TrustOperationKind.DISBURSEMENT, 1_001, books.alice))
    assert code == "insufficient_funds"


def test_a_returned_deposit_is_booked_even_when_it_overdraws_and_shows_a_shortfall(books: TrustBooks) -> None:
    deposit = books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice)
    books.operate(TrustOperationKind.DEPOSIT, 5_000, books.bob)
    books.operate(TrustOperationKind.DISBURSEMENT, 800, books.alice)
    trust = books.container.trust_service()
    returned = trust.return_deposit(TENANT, ACTOR, deposit.id)
    assert returned.kind is TransferKind.RETURNED_DEPOSIT
    alice = books.account(books.alice)
    assert (alice.posted_balance, alice.shortfall) == (-800, 800)
    assert books.account(books.bob).posted_balance == 5_000
    assert refusal_code(lambda: trust.return_deposit(TENANT, ACTOR, deposit.id)) == "transfer_already_reversed"
    # Curing the shortfall: a deposit raises the overdrawn client.
    books.operate(TrustOperationKind.DEPOSIT, 800, books.alice)
    assert books.account(books.alice).shortfall == 0
    assert books.verified()


def test_returning_or_reversing_an_uncleared_deposit_ends_its_hold(books: TrustBooks) -> None:
    trust = books.container.trust_service()
    first = books.operate(TrustOperationKind.DEPOSIT, 700, books.alice, cleared=False)
    second = books.operate(TrustOperationKind.DEPOSIT, 300, books.alice, cleared=False)
    trust.return_deposit(TENANT, ACTOR, first.id)
    assert books.account(books.alice).uncleared_credits == 300
    books.container.transfer_service().reverse_transfer(TENANT, ACTOR, second.id)
    alice = books.account(books.alice)
    assert (alice.posted_balance, alice.uncleared_credits, alice.available_balance) == (0, 0, 0)
    assert refusal_code(lambda: trust.clear_deposit(TENANT, ACTOR, first.id)) == "deposit_already_returned"
    assert refusal_code(lambda: trust.clear_deposit(TENANT, ACTOR, second.id)) == "deposit_already_reversed"
    assert books.verified()


def test_only_deposits_can_be_uncleared_or_returned(books: TrustBooks) -> None:
    books.operate(TrustOperationKind.DEPOSIT, 1_000, books.alice)
    code = refusal_code(lambda: books.operate(TrustOperationKind.DISBURSEMENT, 10, books.alice, cleared=False))
    assert code == "invalid_clearance"
    disbursement = books.operate(TrustOperationKind.DISBURSEMENT, 10, books.alice)
    code = refusal_code(lambda: books.container.trust_service().return_deposit(TENANT, ACTOR, disbursement.id))
    assert code == "not_a_deposit"
    assert refusal_code(lambda: books.container.trust_service().clear_deposit(TENANT, ACTOR, disbursement.id)) == (
        "uncleared_deposit_not_found"
    )
