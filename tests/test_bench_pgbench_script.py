"""The throughput benchmark's raw-SQL ceiling replays our write path's statements with pgbench
(``scripts/throughput/raw_sql.py``). Not a timed test: a few transactions of each script shape, run against the
migrated schema as the service role, must pass the balance trigger and the constraints and leave every account's
counters and version agreeing with its postings, so the ceiling measures work our service would accept."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger.container import Container
from ledger.domain.model import NormalSide
from ledger.domain.transfers import Side
from ledger.infrastructure.database_credentials import DatabaseCredentials
from scripts.throughput.raw_sql import PgbenchTarget, find_pgbench, pgbench_script, run_pgbench
from scripts.throughput.workload import HOT_ACCOUNT, seed_ledger

ACCOUNTS = 8
CLIENTS = 2
TRANSACTIONS_PER_CLIENT = 3


def test_pgbench_scripts_post_transfers_the_service_would_accept(
    pg_container: Container, service_database: DatabaseCredentials, tmp_path: Path
) -> None:
    with pg_container.database_engine().connect() as connection:
        server_version = str(connection.execute(sa.text("SHOW server_version")).scalar_one())
    try:
        binary = find_pgbench(server_version)
    except RuntimeError as missing:
        pytest.skip(str(missing))
    ledger = seed_ledger(pg_container, random.randrange(0x1000, 0xFFFF), "pgbench script", lambda _: None, ACCOUNTS)
    target = PgbenchTarget(
        binary=binary,
        host=service_database.host,
        port=service_database.port,
        user=service_database.username,
        password=service_database.password.get_secret_value(),
        dbname=service_database.dbname,
    )
    for per_transaction in (1, 3):
        for hot in (False, True):
            script = tmp_path / f"{per_transaction}-{hot}.sql"
            script.write_text(pgbench_script(ledger, per_transaction, hot), encoding="utf-8")
            result = run_pgbench(
                target,
                script,
                name=script.stem,
                clients=CLIENTS,
                seconds=1,
                transfers_per_transaction=per_transaction,
                hot=hot,
                transactions=TRANSACTIONS_PER_CLIENT,
            )
            assert (result.failed, result.transactions) == (0, CLIENTS * TRANSACTIONS_PER_CLIENT), script.stem

    accounts = pg_container.account_service()
    transfers = pg_container.transfer_service()
    hot_postings = 0
    for number in range(ACCOUNTS + 1):
        account = accounts.get_account(ledger.tenant_id, ledger.account(number))
        lines = transfers.statement(ledger.tenant_id, account.id, limit=500).items
        debits = sum(line.amount for line in lines if line.side is Side.DEBIT)
        credits = sum(line.amount for line in lines if line.side is Side.CREDIT)
        assert (account.posted_debits, account.posted_credits) == (debits, credits)
        assert [line.account_version for line in lines] == list(range(1, account.version + 1))
        assert account.normal_side is NormalSide.CREDIT
        assert lines[-1].balance_after == account.posted_balance
        if number == HOT_ACCOUNT:
            hot_postings = len(lines) - 1  # less its funding deposit
    # The hot scripts debited the hot account in every transfer: 1 + 3 per transaction.
    assert hot_postings == CLIENTS * TRANSACTIONS_PER_CLIENT * (1 + 3)
