"""Batches of transfers: atomic (all or none) and independent (a result per item), on both adapters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from ledger.container import Container
from ledger.domain.errors import DomainError
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, Ledger
from ledger.domain.transfer_batches import MAX_BATCH_TRANSFERS, BatchMode
from ledger.domain.transfers import PostingDraft, Side, TransferDraft
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:batch"


@dataclass
class Books:
    container: Container
    ledger: Ledger
    bank: uuid.UUID
    clients: list[uuid.UUID]

    def balance(self, account_id: uuid.UUID) -> int:
        return self.container.account_service().get_account(TENANT, account_id).posted_balance

    def move(self, source: int, target: int, amount: int) -> TransferDraft:
        return TransferDraft(
            ledger_id=self.ledger.id,
            postings=(
                PostingDraft(account_id=self.clients[source], side=Side.DEBIT, amount=amount),
                PostingDraft(account_id=self.clients[target], side=Side.CREDIT, amount=amount),
            ),
            description=f"{source}->{target}",
        )


@pytest.fixture
def books(any_container: Container) -> Books:
    ledger = any_container.ledger_service().open_ledger(TENANT, name=f"batch {uuid.uuid4().hex[:6]}", currency="USD")
    accounts = any_container.account_service()
    bank = accounts.open_account(TENANT, ledger.id, code="bank", name="Bank", kind=AccountKind.BANK).id
    clients = [
        accounts.open_account(TENANT, ledger.id, code=f"c{index}", name=f"C{index}", kind=AccountKind.CLIENT).id
        for index in range(3)
    ]
    trust = any_container.trust_service()
    for client in clients:
        trust.execute(
            TENANT, ACTOR, TrustOperation(TrustOperationKind.DEPOSIT, ledger.id, 1_000, client_account_id=client)
        )
    return Books(any_container, ledger, bank, clients)


def test_an_independent_batch_posts_every_item_it_can_and_refuses_the_rest(books: Books) -> None:
    service = books.container.transfer_batch_service()
    drafts = [books.move(0, 1, 400), books.move(0, 2, 700), books.move(1, 2, 100), books.move(0, 1, 600)]
    result = service.post_batch(TENANT, ACTOR, books.ledger.id, drafts, BatchMode.INDEPENDENT)
    # Client 0 holds 1,000: 400 goes, 700 would overdraw (refused), 600 fits in what is left.
    assert [(item.index, item.posted, item.error_code) for item in result.items] == [
        (0, True, None),
        (1, False, "insufficient_funds"),
        (2, True, None),
        (3, True, None),
    ]
    assert [books.balance(client) for client in books.clients] == [0, 1_900, 1_100]
    report = books.container.ledger_verification_service().verify(TENANT, books.ledger.id)
    assert report.findings == ()


def test_an_atomic_batch_with_one_refusal_writes_nothing(books: Books) -> None:
    service = books.container.transfer_batch_service()
    drafts = [books.move(0, 1, 400), books.move(1, 2, 100), books.move(2, 0, 5_000)]
    with pytest.raises(DomainError) as refused:
        service.post_batch(TENANT, ACTOR, books.ledger.id, drafts, BatchMode.ATOMIC)
    assert refused.value.code == "insufficient_funds"
    assert refused.value.message.startswith("transfers[2]: ")
    assert [books.balance(client) for client in books.clients] == [1_000, 1_000, 1_000]
    result = service.post_batch(TENANT, ACTOR, books.ledger.id, drafts[:2], BatchMode.ATOMIC)
    assert (result.posted, result.refused) == (2, 0)
    assert [books.balance(client) for client in books.clients] == [600, 1_300, 1_100]


def test_malformed_items_and_sizes(books: Books) -> None:
    service = books.container.transfer_batch_service()
    unbalanced = TransferDraft(
        ledger_id=books.ledger.id,
        postings=(
            PostingDraft(account_id=books.clients[0], side=Side.DEBIT, amount=5),
            PostingDraft(account_id=books.clients[1], side=Side.CREDIT, amount=4),
        ),
    )
    with pytest.raises(DomainError) as refused:
        service.post_batch(TENANT, ACTOR, books.ledger.id, [books.move(0, 1, 1), unbalanced], BatchMode.ATOMIC)
    assert (refused.value.code, refused.value.message[:14]) == ("unbalanced_transfer", "transfers[1]: ")
    result = service.post_batch(
        TENANT, ACTOR, books.ledger.id, [books.move(0, 1, 1), unbalanced], BatchMode.INDEPENDENT
    )
    assert [item.error_code for item in result.items] == [None, "unbalanced_transfer"]
    for size in (0, MAX_BATCH_TRANSFERS + 1):
        with pytest.raises(DomainError) as refused:
            service.post_batch(TENANT, ACTOR, books.ledger.id, [books.move(0, 1, 1)] * size, BatchMode.ATOMIC)
        assert refused.value.code == "invalid_batch_size"


def test_a_thousand_transfers_through_one_hot_account_in_one_request(pg_container: Container) -> None:
    """The biggest batch on PostgreSQL: 1,000 entries of three postings through the bank. 3,000 posting rows are
    more than one INSERT page, and an entry cut between two statements would fail the database's balance check."""
    from ledger.api.app import create_app
    from tests.http_clients import KeyedTestClient

    ledger = pg_container.ledger_service().open_ledger(TENANT, name="batch http", currency="USD")
    accounts = pg_container.account_service()
    bank = accounts.open_account(TENANT, ledger.id, code="bank", name="Bank", kind=AccountKind.BANK).id
    clients = [
        accounts.open_account(TENANT, ledger.id, code=f"c{index}", name=f"C{index}", kind=AccountKind.CLIENT).id
        for index in range(10)
    ]
    transfers = [
        {
            "postings": [
                {"account_id": str(bank), "side": "debit", "amount": 2 * (1 + index % 7)},
                {"account_id": str(clients[index % 10]), "side": "credit", "amount": 1 + index % 7},
                {"account_id": str(clients[(index + 1) % 10]), "side": "credit", "amount": 1 + index % 7},
            ],
            "description": f"deposit {index}",
        }
        for index in range(MAX_BATCH_TRANSFERS)
    ]
    with KeyedTestClient(create_app(pg_container)) as client:
        key = {"Idempotency-Key": f"batch-{uuid.uuid4()}"}
        body = {"mode": "atomic", "transfers": transfers}
        response = client.post(f"/v1/ledgers/{ledger.id}/transfers/batch", json=body, headers=key)
        assert response.status_code == 201, response.text[:500]
        answer = response.json()
        assert (answer["posted"], answer["refused"]) == (MAX_BATCH_TRANSFERS, 0)
        replay = client.post(f"/v1/ledgers/{ledger.id}/transfers/batch", json=body, headers=key)
        assert replay.json() == answer
        too_many = client.post(
            f"/v1/ledgers/{ledger.id}/transfers/batch",
            json={"mode": "atomic", "transfers": [*transfers, transfers[0]]},
        )
        assert too_many.status_code == 422
    expected = sum(2 * (1 + index % 7) for index in range(MAX_BATCH_TRANSFERS))
    assert pg_container.account_service().get_account(TENANT, bank).posted_balance == expected
    assert pg_container.account_service().get_account(TENANT, bank).version == MAX_BATCH_TRANSFERS
    report = pg_container.ledger_verification_service().verify(TENANT, ledger.id)
    assert (report.findings, report.postings_checked) == ((), 3 * MAX_BATCH_TRANSFERS)
