"""The coalescing writer: concurrent single transfers share one transaction, each with its own result.

Each test builds its own writer with one writer thread and a long wait that ends as soon as the group is full, so the
transfers it sends at once are known to share one group; the writer's statistics and the transfers' common recording
time (one clock reading per transaction) show that they did.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from ledger.container import Container
from ledger.domain.errors import DomainError, InvalidRequest
from ledger.domain.idempotency import IdempotentRequest, RecordedResponse
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, Ledger
from ledger.domain.transfer_coalescing import CoalescingTransferWriter
from ledger.domain.transfers import LedgerRuleViolation, PostingDraft, Side, Transfer, TransferDraft
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.infrastructure.settings import LedgerSettings

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:coalescing"
WAIT_FOR_FULL_GROUP_SECONDS = 10.0


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

    def writer(self, group: int) -> CoalescingTransferWriter:
        return CoalescingTransferWriter(
            self.container.transfer_service(),
            self.container.trust_service(),
            self.container.transaction_runner(),
            max_group=group,
            max_wait_seconds=WAIT_FOR_FULL_GROUP_SECONDS,
            writer_threads=1,
        )


@pytest.fixture
def books(any_container: Container) -> Iterator[Books]:
    ledger = any_container.ledger_service().open_ledger(TENANT, name=f"group {uuid.uuid4().hex[:6]}", currency="USD")
    accounts = any_container.account_service()
    bank = accounts.open_account(TENANT, ledger.id, code="bank", name="Bank", kind=AccountKind.BANK).id
    clients = [
        accounts.open_account(TENANT, ledger.id, code=f"c{index}", name=f"C{index}", kind=AccountKind.CLIENT).id
        for index in range(6)
    ]
    trust = any_container.trust_service()
    for client in clients:
        trust.execute(
            TENANT, ACTOR, TrustOperation(TrustOperationKind.DEPOSIT, ledger.id, 1_000, client_account_id=client)
        )
    yield Books(any_container, ledger, bank, clients)


def _request(key: str, fingerprint: str = "body", render: Callable[[Any], RecordedResponse] | None = None) -> Any:
    def render_outcome(outcome: Transfer | Exception) -> RecordedResponse:
        if isinstance(outcome, DomainError):
            return RecordedResponse(status_code=422, body={"code": outcome.code})
        assert isinstance(outcome, Transfer)
        return RecordedResponse(status_code=201, body={"id": str(outcome.id), "at": outcome.recorded_at.isoformat()})

    return IdempotentRequest(TENANT, key, fingerprint, render or render_outcome)


def _all_at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Runs the calls in threads released together; each result, or the exception it raised."""
    gate = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        gate.wait(timeout=10)
        try:
            return call()
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls, timeout=60))


def test_one_refused_transfer_in_a_group_leaves_the_others_committed_and_correct(books: Books) -> None:
    writer = books.writer(group=5)
    try:
        keys = [f"group-{uuid.uuid4()}" for _ in range(5)]
        drafts = [
            books.move(0, 1, 300),
            books.move(2, 3, 5_000),  # client 2 holds 1,000: refused
            books.move(4, 5, 1_000),
            books.move(1, 0, 50),
            books.move(3, 2, 999),
        ]
        calls = [
            lambda key=key, draft=draft: writer.post_idempotently(_request(key), TENANT, ACTOR, draft)
            for key, draft in zip(keys, drafts, strict=True)
        ]
        responses = _all_at_once(calls)

        statistics = writer.statistics()
        assert (statistics.groups, statistics.largest_group, statistics.run_singly) == (1, 5, 0)
        assert [response.status_code for response in responses] == [201, 422, 201, 201, 201]
        assert responses[1].body == {"code": "insufficient_funds"}
        # One transaction: one clock reading for every transfer of the group.
        assert len({response.body["at"] for response in responses if response.status_code == 201}) == 1
        assert [books.balance(client) for client in books.clients] == [750, 1_250, 1_999, 1, 0, 2_000]
        report = books.container.ledger_verification_service().verify(TENANT, books.ledger.id)
        assert report.findings == ()

        # Idempotency per request: each key replays its own response, the refusal included, through the single path.
        runner = books.container.transaction_runner()
        for key, draft, response in zip(keys, drafts, responses, strict=True):
            command = books.container.transfer_service().post_transfer_command(TENANT, ACTOR, draft)
            assert runner.run_idempotently(_request(key), command) == response
        assert [books.balance(client) for client in books.clients] == [750, 1_250, 1_999, 1, 0, 2_000]
    finally:
        writer.close()


def test_transfers_in_one_group_see_each_other_so_a_client_is_never_overdrawn(books: Books) -> None:
    writer = books.writer(group=8)
    try:
        # Eight disbursements of 400 from a client holding 1,000, all in one group: exactly two fit.
        calls = [lambda: writer.post(TENANT, ACTOR, books.move(0, 1, 400)) for _ in range(8)]
        outcomes = _all_at_once(calls)
        posted = [outcome for outcome in outcomes if isinstance(outcome, Transfer)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, LedgerRuleViolation)]
        assert (len(posted), len(refused)) == (2, 6), outcomes
        assert {refusal.code for refusal in refused} == {"insufficient_funds"}
        assert writer.statistics().largest_group == 8
        assert books.balance(books.clients[0]) == 200
        # The client's chain runs through the group in order: versions follow each other.
        lines = books.container.transfer_service().statement(TENANT, books.clients[0]).items
        assert [line.account_version for line in lines] == [1, 2, 3]
        assert books.container.ledger_verification_service().verify(TENANT, books.ledger.id).findings == ()
    finally:
        writer.close()


def test_deposits_and_disbursements_through_the_bank_account_share_a_group(books: Books) -> None:
    writer = books.writer(group=4)
    try:
        deposit = TrustOperation(TrustOperationKind.DEPOSIT, books.ledger.id, 500, client_account_id=books.clients[0])
        spend = TrustOperation(
            TrustOperationKind.DISBURSEMENT, books.ledger.id, 900, client_account_id=books.clients[0]
        )
        overdraw = TrustOperation(
            TrustOperationKind.DISBURSEMENT, books.ledger.id, 1_001, client_account_id=books.clients[1]
        )
        fee = TrustOperation(TrustOperationKind.EARNED_FEE, books.ledger.id, 100, client_account_id=books.clients[1])
        operations = [deposit, spend, overdraw, fee]
        calls = [
            lambda operation=operation: writer.execute_idempotently(
                _request(f"op-{uuid.uuid4()}"), TENANT, ACTOR, operation
            )
            for operation in operations
        ]
        responses = _all_at_once(calls)
        assert writer.statistics().largest_group == 4
        # Whatever their order in the group, client 1 cannot pay 1,001 out of 1,000; the others go through.
        assert [response.status_code for response in responses] == [201, 201, 422, 201]
        assert responses[2].body == {"code": "insufficient_funds"}
        assert [books.balance(client) for client in books.clients[:2]] == [600, 900]
        assert books.balance(books.bank) == 6_000 + 500 - 900 - 100
        assert books.container.ledger_verification_service().verify(TENANT, books.ledger.id).findings == ()
    finally:
        writer.close()


def test_one_key_twice_in_a_group_posts_once(books: Books) -> None:
    writer = books.writer(group=3)
    try:
        key = f"twice-{uuid.uuid4()}"
        other = f"other-{uuid.uuid4()}"
        calls = [
            lambda: writer.post_idempotently(_request(key), TENANT, ACTOR, books.move(0, 1, 100)),
            lambda: writer.post_idempotently(_request(key), TENANT, ACTOR, books.move(0, 1, 100)),
            lambda: writer.post_idempotently(_request(other), TENANT, ACTOR, books.move(2, 3, 100)),
        ]
        first, second, third = _all_at_once(calls)
        assert first == second and first.status_code == 201
        assert third.status_code == 201
        assert writer.statistics().run_singly == 1
        assert books.balance(books.clients[0]) == 900

    finally:
        writer.close()
    # The same key with another body is refused, as on the single path.
    alone = books.writer(group=1)
    try:
        with pytest.raises(InvalidRequest) as reused:
            alone.post_idempotently(_request(key, fingerprint="other"), TENANT, ACTOR, books.move(0, 1, 1))
        assert reused.value.code == "idempotency_key_reused"
    finally:
        alone.close()


def test_an_unexpected_failure_in_a_group_fails_only_the_transfer_that_caused_it(books: Books) -> None:
    writer = books.writer(group=3)
    try:

        def broken_render(outcome: Any) -> RecordedResponse:
            raise RuntimeError("the renderer broke")

        calls = [
            lambda: writer.post_idempotently(_request(f"a-{uuid.uuid4()}"), TENANT, ACTOR, books.move(0, 1, 100)),
            lambda: writer.post_idempotently(
                _request(f"b-{uuid.uuid4()}", render=broken_render), TENANT, ACTOR, books.move(2, 3, 100)
            ),
            lambda: writer.post_idempotently(_request(f"c-{uuid.uuid4()}"), TENANT, ACTOR, books.move(4, 5, 100)),
        ]
        good, broken, also_good = _all_at_once(calls)
        # The group failed as a whole, so each transfer ran again alone: only the broken one failed.
        assert writer.statistics().run_singly == 3
        assert (good.status_code, also_good.status_code) == (201, 201)
        assert isinstance(broken, RuntimeError)
        assert [books.balance(client) for client in books.clients] == [900, 1_100, 1_000, 1_000, 900, 1_100]
        assert books.container.ledger_verification_service().verify(TENANT, books.ledger.id).findings == ()
    finally:
        writer.close()


def test_a_malformed_transfer_is_refused_before_it_joins_a_group(books: Books) -> None:
    writer = books.writer(group=2)
    try:
        with pytest.raises(InvalidRequest) as refused:
            writer.post(TENANT, ACTOR, books.move(0, 0, 100))
        assert refused.value.code == "duplicate_account"
        assert writer.statistics().groups == 0
    finally:
        writer.close()


def test_the_thread_pool_must_be_larger_than_a_group() -> None:
    with pytest.raises(ValueError, match="LEDGER_THREADPOOL_SIZE"):
        LedgerSettings(_env_file=None, environment="test", threadpool_size=32, coalescing_max_group=32)  # type: ignore[call-arg]
    LedgerSettings(_env_file=None, environment="test", threadpool_size=32, coalescing_enabled=False)  # type: ignore[call-arg]


def test_a_closed_writer_writes_what_was_queued_and_starts_again_when_used(books: Books) -> None:
    writer = books.writer(group=1)
    writer.post(TENANT, ACTOR, books.move(0, 1, 10))
    writer.close()
    writer.close()  # idempotent
    # An app restarted on the same container uses the same writer again: new threads start.
    writer.post(TENANT, ACTOR, books.move(0, 1, 10))
    writer.close()
    assert books.balance(books.clients[0]) == 980
    assert writer.statistics().groups == 2
