"""The benchmark's ledgers: one trust ledger per measured path, 10,000 funded client accounts and one hot one.

Account ids are derived from an integer, so pgbench can name an account with nothing but ``random()`` and a string
expression: ``account_uuid(namespace, n)`` is ``00000000-0000-4000-<namespace:04x>-<n:012d>``. Number 0 is the hot
account, 1..ACCOUNTS the uniform ones. Ids sort like their numbers, so locking in id order is locking in number order.

Seeding goes through the domain (``uow.accounts.add`` with the chosen ids, then funding deposits posted by the batch
service, 1,000 per transaction), as the service role, so the rows, postings and chains are what the service writes.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.container import Container
from ledger.domain.model import DEFAULT_TENANT_ID, Account, AccountKind, NormalSide
from ledger.domain.ports import UnitOfWork
from ledger.domain.transfer_batches import MAX_BATCH_TRANSFERS, BatchMode
from ledger.domain.transfers import PostingDraft, Side, TransferDraft

ACCOUNTS = 10_000
HOT_ACCOUNT = 0
# Funding: nothing in a run of any length here can exhaust these (amounts are 1..MAX_TRANSFER_AMOUNT).
CLIENT_FUNDING = 10**9
HOT_FUNDING = 10**13
MAX_TRANSFER_AMOUNT = 100
ACTOR = "bench"
BANK_NUMBER = 999_999_999_999

Progress = Callable[[str], None]


def account_uuid(namespace: int, number: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-{namespace:04x}-{number:012d}")


def account_uuid_sql(namespace: int, number_expression: str) -> str:
    """The same id as a SQL expression of an integer (a pgbench variable such as ``:f1``)."""
    return f"('00000000-0000-4000-{namespace:04x}-' || lpad(({number_expression})::text, 12, '0'))::uuid"


@dataclass(frozen=True)
class BenchLedger:
    namespace: int
    ledger_id: uuid.UUID
    accounts: int = ACCOUNTS
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID

    def account(self, number: int) -> uuid.UUID:
        return account_uuid(self.namespace, number)

    @property
    def hot(self) -> uuid.UUID:
        return self.account(HOT_ACCOUNT)


def transfer_pair(rng: random.Random, hot: bool, accounts: int = ACCOUNTS) -> tuple[int, int]:
    """(debited, credited) account numbers: uniform over the 10,000, or the hot one debited every time."""
    credited = rng.randint(1, accounts)
    if hot:
        return HOT_ACCOUNT, credited
    debited = rng.randint(1, accounts - 1)
    return (debited + 1 if debited >= credited else debited), credited


def transfer_draft(ledger: BenchLedger, rng: random.Random, hot: bool) -> TransferDraft:
    debited, credited = transfer_pair(rng, hot, ledger.accounts)
    amount = rng.randint(1, MAX_TRANSFER_AMOUNT)
    return TransferDraft(
        ledger_id=ledger.ledger_id,
        postings=(
            PostingDraft(account_id=ledger.account(debited), side=Side.DEBIT, amount=amount),
            PostingDraft(account_id=ledger.account(credited), side=Side.CREDIT, amount=amount),
        ),
        description="bench",
    )


def seed_ledger(
    container: Container, namespace: int, name: str, progress: Progress, accounts: int = ACCOUNTS
) -> BenchLedger:
    """A trust ledger with a bank, the hot client and ``accounts`` clients, every client funded by a deposit."""
    ledger = container.ledger_service().open_ledger(DEFAULT_TENANT_ID, name=name, currency="USD")
    bench = BenchLedger(namespace=namespace, ledger_id=ledger.id, accounts=accounts)
    created_at = datetime.now(UTC)
    bank_id = account_uuid(namespace, BANK_NUMBER)

    def client(number: int) -> Account:
        return Account(
            id=bench.account(number),
            tenant_id=DEFAULT_TENANT_ID,
            ledger_id=ledger.id,
            code=f"client-{number}",
            name="Hot client" if number == HOT_ACCOUNT else f"Client {number}",
            kind=AccountKind.CLIENT,
            normal_side=NormalSide.CREDIT,
            created_at=created_at,
        )

    def open_accounts(uow: UnitOfWork) -> None:
        uow.accounts.add(
            Account(
                id=bank_id,
                tenant_id=DEFAULT_TENANT_ID,
                ledger_id=ledger.id,
                code="bank",
                name="Trust bank",
                kind=AccountKind.BANK,
                normal_side=NormalSide.DEBIT,
                created_at=created_at,
            )
        )
        for number in range(accounts + 1):
            uow.accounts.add(client(number))

    runner = container.transaction_runner()
    runner.run(open_accounts)
    batches = container.transfer_batch_service()
    deposits = [
        TransferDraft(
            ledger_id=ledger.id,
            postings=(
                PostingDraft(account_id=bank_id, side=Side.DEBIT, amount=funding),
                PostingDraft(account_id=bench.account(number), side=Side.CREDIT, amount=funding),
            ),
            description="bench funding",
        )
        for number in range(accounts + 1)
        for funding in [HOT_FUNDING if number == HOT_ACCOUNT else CLIENT_FUNDING]
    ]
    for start in range(0, len(deposits), MAX_BATCH_TRANSFERS):
        result = batches.post_batch(
            DEFAULT_TENANT_ID, ACTOR, ledger.id, deposits[start : start + MAX_BATCH_TRANSFERS], BatchMode.ATOMIC
        )
        if result.refused:
            raise RuntimeError(f"seeding {name}: {result.refused} funding deposits refused")
    progress(f"seeded {name}: {accounts:,} funded clients, one hot client, ledger {ledger.id}")
    return bench
