"""Concurrency on PostgreSQL: conservation under many processes, no double spend, one posting per idempotency key.

Each test is bounded: processes, threads and the server subprocess are all waited for with timeouts and stopped in
``finally``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

import ledger
from ledger.container import build_container
from ledger.domain.errors import ServiceUnavailable
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, LedgerKind
from ledger.domain.transfers import LedgerRuleViolation, PostingDraft, Side, TransferDraft
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import write_private_file
from tests.concurrency_workers import snapshot_reader, transfer_worker
from tests.conftest import credentials_url, free_port, settings_with_secret_url
from tests.postgres_admin import PostgresAdmin

CORE_DIR = Path(__file__).resolve().parent.parent

# --- 1. conservation --------------------------------------------------------------------------------------------
# Each writer process posts through its coalescing writer from several threads: concurrent transfers share
# transactions, and the invariants below must hold all the same.
WRITER_PROCESSES = 4
THREADS_PER_WRITER = 4
TRANSFERS_PER_THREAD = 320  # 5,120 in all
READER_PROCESSES = 1
ACCOUNTS = 8
INITIAL_BALANCE = 100_000
MAX_AMOUNT = 40_000  # large enough that some transfers are refused for insufficient funds
# Bounds, not targets: on an idle 2-core machine the processes start in about 15 s and the writes take about 40 s;
# the bounds leave room for a machine shared with other test runs.
READY_TIMEOUT_SECONDS = 90.0
RUN_TIMEOUT_SECONDS = 180.0


def test_concurrent_transfers_from_many_processes_conserve_the_total(service_database: DatabaseCredentials) -> None:
    container = build_container(settings_with_secret_url(service_database, pool_size=2, max_overflow=0))
    try:
        engine: sa.Engine = container.database_engine()
        ledger_id, account_ids = _funded_general_ledger(container)
        total = ACCOUNTS * INITIAL_BALANCE
        assert _asset_snapshot(engine, ledger_id) == (ACCOUNTS, total, INITIAL_BALANCE)

        results, timings = _run_workers(credentials_url(service_database), ledger_id, account_ids, total)
        writers = [result for result in results if result["role"] == "writer"]
        readers = [result for result in results if result["role"] == "reader"]

        acknowledged = [transfer_id for writer in writers for transfer_id in writer["acknowledged"]]
        refusals: Counter[str] = Counter()
        for writer in writers:
            refusals.update(writer["refusals"])
        unavailable = Counter(code for writer in writers for code in writer["unavailable"])
        unexpected = [error for writer in writers for error in writer["unexpected"]]
        attempted = WRITER_PROCESSES * THREADS_PER_WRITER * TRANSFERS_PER_THREAD
        groups = sum(writer["groups"] for writer in writers)
        largest_group = max(writer["largest_group"] for writer in writers)
        writer_seconds = timings["write"]
        print(
            f"\nconservation: {attempted} transfers by {WRITER_PROCESSES} processes x {THREADS_PER_WRITER} threads"
            f" in {writer_seconds:.2f} s, {groups} transactions (largest group {largest_group})"
            f" = {attempted / writer_seconds:.0f} transfers/s ({len(acknowledged) / writer_seconds:.0f} posted/s);"
            f" {len(acknowledged)} posted, refusals {dict(refusals)},"
            f" unavailable {dict(unavailable)}; reads {[reader['reads'] for reader in readers]}"
            f" ({[reader['distinct_snapshots'] for reader in readers]} distinct snapshots);"
            f" processes started in {timings['start']:.1f} s, joined in {timings['join']:.1f} s"
        )

        # The workers ran this tree's code, not the editable install's.
        assert {writer["ledger_package"] for writer in writers} == {ledger.__file__}
        # No conflict or deadlock reached a caller: the runner's retries absorb 40001/40P01.
        assert not unavailable, f"ServiceUnavailable surfaced to workers: {dict(unavailable)}"
        assert not unexpected, unexpected[:10]
        assert set(refusals) <= {"insufficient_funds"}, dict(refusals)
        assert len(acknowledged) + sum(refusals.values()) == attempted
        assert acknowledged, "no transfer was posted at all"
        assert refusals["insufficient_funds"] > 0, "the amounts never overdrew an account: the test proves too little"
        assert largest_group > 1, "no two transfers ever shared a transaction: the writer was not coalescing"

        for reader in readers:
            assert reader["isolation_seen"] == ["repeatable read/on"]
            assert reader["mismatch_count"] == 0, reader["mismatches"]
            assert reader["negative_reads"] == 0
            assert reader["stopped_by_signal"], "the reader ran out of time before the writers finished"
            assert reader["reads"] >= 10
            assert reader["distinct_snapshots"] > 1, "the reader never saw a transfer happen"

        with engine.connect() as connection:
            posted = connection.execute(
                sa.text("SELECT count(*) FROM transfers WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": acknowledged}
            ).scalar_one()
            in_ledger = connection.execute(
                sa.text("SELECT count(*) FROM transfers WHERE ledger_id = :ledger_id"), {"ledger_id": ledger_id}
            ).scalar_one()
            mismatched_counters = connection.execute(_COUNTERS_VERSUS_POSTINGS_SQL, {"ledger_id": ledger_id}).all()
            negative = connection.execute(
                sa.text(
                    "SELECT count(*) FROM accounts WHERE ledger_id = :ledger_id AND kind = 'asset'"
                    " AND posted_debits - posted_credits < 0"
                ),
                {"ledger_id": ledger_id},
            ).scalar_one()
        assert posted == len(acknowledged), "an acknowledged transfer is missing"
        # The funding transfers plus the acknowledged ones: a refused transfer left nothing behind.
        assert in_ledger == ACCOUNTS + len(acknowledged)
        assert mismatched_counters == [], mismatched_counters
        assert negative == 0
        count, final_total, minimum = _asset_snapshot(engine, ledger_id)
        assert (count, final_total) == (ACCOUNTS, total)
        assert minimum >= 0

        assert [result["checked_out"] for result in results] == [0] * len(results)
        assert engine.pool.checkedout() == 0
    finally:
        container.shutdown_resources()


# Per account: counters against the sums of its postings, version against their number, and the last posting's
# balance_after against the balance. Any row returned is a mismatch.
_COUNTERS_VERSUS_POSTINGS_SQL = sa.text(
    """
    SELECT a.code, a.posted_debits, a.posted_credits, a.version, p.debits, p.credits, p.n, p.last_balance
    FROM accounts a
    LEFT JOIN LATERAL (
        SELECT coalesce(sum(amount) FILTER (WHERE side = 'debit'), 0) AS debits,
               coalesce(sum(amount) FILTER (WHERE side = 'credit'), 0) AS credits,
               count(*) AS n,
               (SELECT balance_after FROM postings last WHERE last.account_id = a.id
                ORDER BY account_version DESC LIMIT 1) AS last_balance
        FROM postings WHERE account_id = a.id
    ) p ON true
    WHERE a.ledger_id = :ledger_id
      AND (a.posted_debits <> p.debits OR a.posted_credits <> p.credits OR a.version <> p.n
           OR p.last_balance IS DISTINCT FROM
              CASE WHEN a.normal_side = 'debit' THEN a.posted_debits - a.posted_credits
                   ELSE a.posted_credits - a.posted_debits END)
    """
)


def _funded_general_ledger(container: Any) -> tuple[str, list[str]]:
    """A general ledger: 8 no-overdraft asset accounts, each funded from an equity account that may go negative."""
    ledger_ = container.ledger_service().open_ledger(
        DEFAULT_TENANT_ID, name="Concurrency", currency="USD", kind=LedgerKind.GENERAL
    )
    accounts = container.account_service()
    equity = accounts.open_account(
        DEFAULT_TENANT_ID, ledger_.id, code="equity", name="Equity", kind=AccountKind.EQUITY, prevent_overdraft=False
    )
    assets = [
        accounts.open_account(
            DEFAULT_TENANT_ID,
            ledger_.id,
            code=f"asset-{n}",
            name=f"Asset {n}",
            kind=AccountKind.ASSET,
            prevent_overdraft=True,
        )
        for n in range(ACCOUNTS)
    ]
    transfers = container.transfer_service()
    for asset in assets:
        transfers.post_transfer(
            DEFAULT_TENANT_ID,
            "concurrency-test",
            TransferDraft(
                ledger_id=ledger_.id,
                postings=(
                    PostingDraft(account_id=asset.id, side=Side.DEBIT, amount=INITIAL_BALANCE),
                    PostingDraft(account_id=equity.id, side=Side.CREDIT, amount=INITIAL_BALANCE),
                ),
                description="opening balance",
            ),
        )
    return str(ledger_.id), [str(asset.id) for asset in assets]


def _asset_snapshot(engine: sa.Engine, ledger_id: str) -> tuple[int, int, int]:
    with engine.connect() as connection:
        count, total, minimum = connection.execute(
            sa.text(
                "SELECT count(*), sum(posted_debits - posted_credits), min(posted_debits - posted_credits)"
                " FROM accounts WHERE ledger_id = :ledger_id AND kind = 'asset'"
            ),
            {"ledger_id": ledger_id},
        ).one()
    return int(count), int(total), int(minimum)


def _run_workers(
    database_url: str, ledger_id: str, account_ids: list[str], total: int
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Starts the writers and readers (spawned), releases them together, collects one result from each.
    Returns the results and the seconds spent starting, writing, and joining."""
    context = multiprocessing.get_context("spawn")
    results_queue: Any = context.Queue()
    go = context.Event()
    stop = context.Event()
    processes = [
        context.Process(
            target=transfer_worker,
            args=(
                index,
                database_url,
                ledger_id,
                account_ids,
                THREADS_PER_WRITER,
                TRANSFERS_PER_THREAD,
                MAX_AMOUNT,
                1000 + index,
                go,
                results_queue,
            ),
            name=f"ledger-writer-{index}",
        )
        for index in range(WRITER_PROCESSES)
    ] + [
        context.Process(
            target=snapshot_reader,
            args=(index, database_url, ledger_id, ACCOUNTS, total, go, stop, RUN_TIMEOUT_SECONDS + 30, results_queue),
            name=f"ledger-reader-{index}",
        )
        for index in range(READER_PROCESSES)
    ]
    timings: dict[str, float] = {}
    try:
        spawned = time.monotonic()
        for process in processes:
            process.start()
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while ready < len(processes):
            message = _next_message(results_queue, deadline, "workers to start")
            assert "fatal" not in message, message["fatal"]
            assert message.get("ready"), message
            ready += 1
        started = time.monotonic()
        timings["start"] = started - spawned
        go.set()
        results: list[dict[str, Any]] = []
        writers_done = 0
        deadline = started + RUN_TIMEOUT_SECONDS
        while len(results) < len(processes):
            message = _next_message(results_queue, deadline, "workers to finish")
            assert "fatal" not in message, f"{message['role']} {message['index']} failed:\n{message['fatal']}"
            results.append(message)
            if message["role"] == "writer":
                writers_done += 1
                if writers_done == WRITER_PROCESSES:
                    timings["write"] = time.monotonic() - started
                    stop.set()
        joining = time.monotonic()
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"
        timings["join"] = time.monotonic() - joining
        return results, timings
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
        results_queue.close()


def _next_message(results_queue: Any, deadline: float, waiting_for: str) -> dict[str, Any]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AssertionError(f"timed out waiting for {waiting_for}")
    try:
        message: dict[str, Any] = results_queue.get(timeout=remaining)
    except queue_module.Empty:
        raise AssertionError(f"timed out waiting for {waiting_for}") from None
    return message


# --- 2. double spend --------------------------------------------------------------------------------------------
SPENDERS = 16
DOUBLE_SPEND_ROUNDS = 100
BARRIER_TIMEOUT_SECONDS = 20.0


def test_concurrent_disbursements_never_double_spend(service_database: DatabaseCredentials) -> None:
    container = build_container(settings_with_secret_url(service_database, pool_size=SPENDERS, max_overflow=0))
    try:
        engine: sa.Engine = container.database_engine()
        trust = container.trust_service()
        accounts = container.account_service()
        ledger_ = container.ledger_service().open_ledger(DEFAULT_TENANT_ID, name="Double spend", currency="USD")
        bank = accounts.open_account(
            DEFAULT_TENANT_ID, ledger_.id, code="bank", name="Trust bank", kind=AccountKind.BANK
        )
        outcomes_by_round: list[Counter[str]] = []
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=SPENDERS, thread_name_prefix="spender") as pool:
            for round_number in range(DOUBLE_SPEND_ROUNDS):
                client = accounts.open_account(
                    DEFAULT_TENANT_ID,
                    ledger_.id,
                    code=f"client-{round_number}",
                    name=f"Client {round_number}",
                    kind=AccountKind.CLIENT,
                )
                trust.execute(
                    DEFAULT_TENANT_ID,
                    "double-spend-test",
                    TrustOperation(
                        kind=TrustOperationKind.DEPOSIT, ledger_id=ledger_.id, amount=10, client_account_id=client.id
                    ),
                )
                barrier = threading.Barrier(SPENDERS)
                disbursement = TrustOperation(
                    kind=TrustOperationKind.DISBURSEMENT, ledger_id=ledger_.id, amount=9, client_account_id=client.id
                )

                def spend(operation: TrustOperation = disbursement, gate: threading.Barrier = barrier) -> str:
                    gate.wait(timeout=BARRIER_TIMEOUT_SECONDS)
                    try:
                        trust.execute(DEFAULT_TENANT_ID, "double-spend-test", operation)
                    except LedgerRuleViolation as refusal:
                        return refusal.code
                    except ServiceUnavailable as error:
                        return f"unavailable:{error.code}"
                    return "posted"

                futures = [pool.submit(spend) for _ in range(SPENDERS)]
                outcomes = Counter(future.result(timeout=BARRIER_TIMEOUT_SECONDS + 30) for future in futures)
                outcomes_by_round.append(outcomes)
                assert outcomes == Counter({"posted": 1, "insufficient_funds": SPENDERS - 1}), (
                    f"round {round_number}: {dict(outcomes)}"
                )
                after = accounts.get_account(DEFAULT_TENANT_ID, client.id)
                assert (after.posted_balance, after.available_balance) == (1, 1), f"round {round_number}"
        elapsed = time.monotonic() - started
        print(f"\ndouble spend: {DOUBLE_SPEND_ROUNDS} rounds of {SPENDERS} disbursements in {elapsed:.2f} s")

        assert accounts.get_account(DEFAULT_TENANT_ID, bank.id).posted_balance == DOUBLE_SPEND_ROUNDS
        with engine.connect() as connection:
            disbursements = connection.execute(
                sa.text("SELECT count(*) FROM transfers WHERE ledger_id = :ledger_id AND kind = 'disbursement'"),
                {"ledger_id": str(ledger_.id)},
            ).scalar_one()
        assert disbursements == DOUBLE_SPEND_ROUNDS
        assert engine.pool.checkedout() == 0
    finally:
        container.shutdown_resources()


# --- 3. idempotency race over HTTP -----------------------------------------------------------------------------
SAME_KEY_CLIENTS = 8
KEYS = 20
SERVER_START_TIMEOUT_SECONDS = 45.0
HTTP_TIMEOUT_SECONDS = 20.0


def test_one_idempotency_key_sent_at_once_posts_once_over_http(
    service_database: DatabaseCredentials, postgres_admin: PostgresAdmin, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secrets" / "database.json"
    write_private_file(secret_file, json.dumps(service_database.to_document()))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    environment.update(
        PYTHONPATH=str(CORE_DIR),
        LEDGER_SECRET_FILE=str(secret_file),
        LEDGER_ENVIRONMENT="test",
        LEDGER_DATA_DIR=str(tmp_path / "data"),
        LEDGER_LOG_LEVEL="WARNING",
    )
    # The key comes from the real CLI, as an operator would make it.
    created_key = subprocess.run(
        [sys.executable, "-m", "ledger", "keys", "create", "--role", "write", "--name", "race test"],
        cwd=CORE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    auth = {"Authorization": f"Bearer {created_key.stdout.strip().splitlines()[-1]}"}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "ledger", "serve", "--port", str(port)],
            cwd=CORE_DIR,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_ready(server, base_url, log_path)
        with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_SECONDS, headers=auth) as admin:
            ledger_id = _created(admin, "/v1/ledgers", {"name": "Idempotency race", "currency": "USD"})["id"]
            _created(admin, f"/v1/ledgers/{ledger_id}/accounts", {"code": "bank", "name": "Bank", "kind": "bank"})
            client_id = _created(
                admin, f"/v1/ledgers/{ledger_id}/accounts", {"code": "client", "name": "Client", "kind": "client"}
            )["id"]

            statuses: Counter[int] = Counter()
            expected_balance = 0
            for key_number in range(KEYS):
                key = f"race-{uuid.uuid4()}"
                body = {"client_account_id": client_id, "amount": 100 + key_number, "description": f"key {key_number}"}
                responses = _send_together(base_url, f"/v1/ledgers/{ledger_id}/deposits", key, body, auth)
                statuses.update(status for status, _ in responses)
                created = [payload for status, payload in responses if status == 201]
                assert created, f"key {key_number}: no 201 among {responses}"
                assert all(payload == created[0] for payload in created), f"key {key_number}: 201 bodies differ"
                for status, payload in responses:
                    assert status in (201, 409), (key_number, status, payload)
                    if status == 409:
                        assert payload["code"] == "idempotency_key_in_flight", payload
                expected_balance += body["amount"]  # type: ignore[operator]

                rows = postgres_admin.execute(
                    "SELECT id::text FROM transfers WHERE ledger_id = %s AND kind = 'deposit' AND description = %s",
                    (ledger_id, body["description"]),
                    dbname=service_database.dbname,
                )
                assert rows == [(created[0]["id"],)], f"key {key_number}: {len(rows)} postings"

                replay = admin.post(f"/v1/ledgers/{ledger_id}/deposits", json=body, headers={"Idempotency-Key": key})
                assert replay.status_code == 201, replay.text
                assert replay.json() == created[0]

            balance = admin.get(f"/v1/accounts/{client_id}/balance")
            assert balance.status_code == 200, balance.text
            assert balance.json()["balance"] == expected_balance
            total = postgres_admin.execute(
                "SELECT count(*) FROM transfers WHERE ledger_id = %s AND kind = 'deposit'",
                (ledger_id,),
                dbname=service_database.dbname,
            )
            assert total == [(KEYS,)]
            print(f"\nidempotency race: statuses over {KEYS} keys x {SAME_KEY_CLIENTS} clients: {dict(statuses)}")
    finally:
        _stop(server)


def _wait_until_ready(server: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited with {server.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server was not ready in time:\n{log_path.read_text(errors='replace')}")


def _created(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers={"Idempotency-Key": f"setup-{uuid.uuid4()}"})
    assert response.status_code == 201, response.text
    payload: dict[str, Any] = response.json()
    return payload


def _send_together(
    base_url: str, path: str, key: str, body: dict[str, Any], auth: dict[str, str]
) -> list[tuple[int, Any]]:
    """The same request from ``SAME_KEY_CLIENTS`` clients (one connection each), released by one barrier."""
    barrier = threading.Barrier(SAME_KEY_CLIENTS)
    clients = [
        httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_SECONDS, headers=auth) for _ in range(SAME_KEY_CLIENTS)
    ]
    try:
        for client in clients:  # open each connection before the race, so the requests leave together
            assert client.get("/healthz").status_code == 200

        def send(client: httpx.Client) -> tuple[int, Any]:
            barrier.wait(timeout=BARRIER_TIMEOUT_SECONDS)
            response = client.post(path, json=body, headers={"Idempotency-Key": key})
            return response.status_code, response.json()

        with ThreadPoolExecutor(max_workers=SAME_KEY_CLIENTS) as pool:
            futures = [pool.submit(send, client) for client in clients]
            return [future.result(timeout=HTTP_TIMEOUT_SECONDS + BARRIER_TIMEOUT_SECONDS) for future in futures]
    finally:
        for client in clients:
            client.close()


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
