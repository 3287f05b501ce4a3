"""Surviving faults: a connection killed mid-transaction or lost during COMMIT, a row lock held elsewhere, Secrets
Manager gone, and a short fault run (PostgreSQL restarted and its connections killed under load).

A write interrupted by a fault answers 503 with Retry-After; the client retries with the same Idempotency-Key and gets
exactly one transfer, whether or not the interrupted attempt had committed.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx2 import Response
from structlog.testing import capture_logs

from ledger.api.app import create_app
from ledger.container import Container, build_container
from ledger.infrastructure.database_credentials import DatabaseCredentials
from tests.conftest import free_port, settings_with_secret_file
from tests.fault_scenario import RECOVERY_LIMIT_SECONDS, FaultPlan, FaultRun
from tests.http_clients import AuthorizedTestClient
from tests.postgres_admin import PostgresAdmin
from tests.secret_canaries import canaries

REQUEST_DEADLINE_SECONDS = 20.0
LOCK_TIMEOUT_MS = 300
KEY_METADATA = "test_key"


@dataclass
class TrustWorld:
    container: Container
    client: TestClient
    ledger_id: str
    alice: str
    bob: str

    def transfer(self, key: str, amount: int = 100) -> Response:
        return self.client.post(
            f"/v1/ledgers/{self.ledger_id}/client-transfers",
            json={
                "from_client_account_id": self.alice,
                "to_client_account_id": self.bob,
                "amount": amount,
                "metadata": {KEY_METADATA: key},
            },
            headers={"Idempotency-Key": key},
        )


@contextlib.contextmanager
def trust_world(container: Container) -> Iterator[TrustWorld]:
    """A served app on ``container`` with a trust ledger: a bank, Alice (funded with 10 000) and Bob."""
    try:
        with AuthorizedTestClient(create_app(container), raise_server_exceptions=False) as client:

            def created(path: str, body: dict[str, Any]) -> str:
                response = client.post(path, json=body, headers={"Idempotency-Key": f"setup-{uuid.uuid4()}"})
                assert response.status_code == 201, response.text
                return str(response.json()["id"])

            ledger_id = created("/v1/ledgers", {"name": "Faults", "currency": "USD"})
            accounts = f"/v1/ledgers/{ledger_id}/accounts"
            created(accounts, {"code": "bank", "name": "Trust bank", "kind": "bank"})
            alice = created(accounts, {"code": "alice", "name": "Alice", "kind": "client"})
            bob = created(accounts, {"code": "bob", "name": "Bob", "kind": "client"})
            created(f"/v1/ledgers/{ledger_id}/deposits", {"client_account_id": alice, "amount": 10_000})
            yield TrustWorld(container, client, ledger_id, alice, bob)
    finally:
        container.shutdown_resources()


def send_in_background(send: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Runs ``send()`` in a daemon thread; the outcome dict gets "response" (or "error") and "seconds"."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["response"] = send()
        except BaseException as error:
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def answered(thread: threading.Thread, outcome: dict[str, Any]) -> Response:
    thread.join(REQUEST_DEADLINE_SECONDS)
    if thread.is_alive():
        pytest.fail(f"no answer within {REQUEST_DEADLINE_SECONDS} s: the service hangs")
    if "error" in outcome:
        raise outcome["error"]
    response: Response = outcome["response"]
    return response


def assert_retryable(response: Response, code: str) -> None:
    assert response.status_code == 503, f"{response.status_code} {response.text}"
    retry_after = response.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, retry_after
    assert response.json()["code"] == code, response.text


def transfers_with_key(admin: PostgresAdmin, dbname: str, key: str) -> list[str]:
    rows = admin.execute("SELECT id::text FROM transfers WHERE metadata ->> %s = %s", (KEY_METADATA, key), dbname)
    return [str(row[0]) for row in rows]


def idempotency_records(admin: PostgresAdmin, dbname: str, key: str) -> int:
    rows = admin.execute("SELECT count(*) FROM idempotency_records WHERE key = %s", (key,), dbname)
    return int(str(rows[0][0]))


@contextlib.contextmanager
def row_locked(admin: PostgresAdmin, dbname: str, account_id: str) -> Iterator[None]:
    """Holds a lock on the account's row from another session (as an operator's open transaction would)."""
    with admin.connection(dbname) as connection:
        connection.autocommit = False
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
        try:
            yield
        finally:
            connection.rollback()


def wait_for_lock_waiter(admin: PostgresAdmin, credentials: DatabaseCredentials) -> int:
    """The pid of the service's session that waits for a row lock."""
    give_up_at = time.monotonic() + REQUEST_DEADLINE_SECONDS
    while time.monotonic() < give_up_at:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = %s AND wait_event_type = 'Lock'",
            (credentials.dbname, credentials.username),
        )
        if rows:
            return int(str(rows[0][0]))
        time.sleep(0.02)
    pytest.fail("the transfer never waited for the locked row")


# --- a connection killed mid-transaction --------------------------------------------------------------------------


def test_connection_killed_mid_transaction_answers_503_and_the_retry_posts_once(
    service_database: DatabaseCredentials, postgres_admin: PostgresAdmin, tmp_path: Path
) -> None:
    settings = settings_with_secret_file(service_database, tmp_path, lock_timeout_ms=15_000, startup_deadline_seconds=3)
    dbname = service_database.dbname
    with trust_world(build_container(settings)) as world:
        key = f"killed-{uuid.uuid4()}"
        with row_locked(postgres_admin, dbname, world.alice):
            thread, outcome = send_in_background(lambda: world.transfer(key))
            # The transfer has claimed its key and waits for Alice's row: kill its session there.
            waiter = wait_for_lock_waiter(postgres_admin, service_database)
            postgres_admin.execute("SELECT pg_terminate_backend(%s)", (waiter,))
            interrupted = answered(thread, outcome)
        assert_retryable(interrupted, "database_unavailable")
        assert transfers_with_key(postgres_admin, dbname, key) == []
        assert idempotency_records(postgres_admin, dbname, key) == 0

        retried = world.transfer(key)
        assert retried.status_code == 201, retried.text
        replayed = world.transfer(key)
        assert replayed.status_code == 201
        assert replayed.json() == retried.json()
        assert transfers_with_key(postgres_admin, dbname, key) == [retried.json()["id"]]


def test_connection_killed_after_the_work_of_a_read_does_not_fail_the_read(
    pg_container: Container, postgres_admin: PostgresAdmin, service_database: DatabaseCredentials
) -> None:
    """A read's unit of work ends with a rollback. When the connection died after the work was done, PostgreSQL has
    already dropped the transaction: the read stands (it used to surface as a raw driver error, a 500)."""
    from ledger.domain.model import DEFAULT_TENANT_ID

    dbname = service_database.dbname
    with pg_container.unit_of_work() as uow:
        found = uow.ledgers.get(DEFAULT_TENANT_ID, uuid.uuid4())
        killed = postgres_admin.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND state = 'idle in transaction'",
            (dbname,),
        )
        assert len(killed) == 1, killed
        wait_until_gone(postgres_admin, int(str(killed[0][0])))
    assert found is None
    with pg_container.unit_of_work() as uow:  # the pool replaced the dead connection
        assert uow.ledgers.get(DEFAULT_TENANT_ID, uuid.uuid4()) is None
    pool = pg_container.database_engine().pool
    assert isinstance(pool, sa.pool.QueuePool)
    assert pool.checkedout() == 0


def wait_until_gone(admin: PostgresAdmin, pid: int) -> None:
    give_up_at = time.monotonic() + REQUEST_DEADLINE_SECONDS
    while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
        if time.monotonic() > give_up_at:
            pytest.fail(f"backend {pid} still there {REQUEST_DEADLINE_SECONDS} s after it was terminated")
        time.sleep(0.02)


# --- a connection lost during COMMIT: the outcome is unknown to the service ------------------------------------------


class CommitReplyDropper:
    """A Unix-socket proxy in front of PostgreSQL that, once armed, forwards the COMMIT of a transaction that wrote a
    transfer, lets the server commit it, and then drops the connection instead of passing the server's reply on: the
    service sees its connection die during COMMIT, while the transfer is in fact committed."""

    _COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # a simple-query message, as psycopg2 sends it

    def __init__(self, upstream: DatabaseCredentials, directory: Path) -> None:
        self._upstream = upstream
        self.directory = directory
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(directory / f".s.PGSQL.{upstream.port}"))
        self._listener.listen(16)
        self._armed = threading.Event()
        self.dropped = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self._armed.set()

    def close(self) -> None:
        for each in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                each.close()

    def _connect_upstream(self) -> socket.socket:
        if self._upstream.host.startswith("/"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(f"{self._upstream.host}/.s.PGSQL.{self._upstream.port}")
            return server
        return socket.create_connection((self._upstream.host, self._upstream.port))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = self._connect_upstream()
            self._sockets += [client, server]
            swallow_reply = threading.Event()
            threading.Thread(target=self._to_server, args=(client, server, swallow_reply), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, swallow_reply), daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket, swallow_reply: threading.Event) -> None:
        wrote_transfer = False
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                wrote_transfer = wrote_transfer or b"INSERT INTO transfers" in data
                if self._armed.is_set() and wrote_transfer and self._COMMIT in data:
                    self._armed.clear()
                    swallow_reply.set()
                server.sendall(data)
                if self._COMMIT in data or b"ROLLBACK" in data:
                    wrote_transfer = False

    def _to_client(self, server: socket.socket, client: socket.socket, swallow_reply: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if swallow_reply.is_set():
                    # The server has answered the COMMIT: it is committed. The service never hears of it.
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    server.close()
                    self.dropped.set()
                    return
                client.sendall(data)


@pytest.fixture
def short_socket_directory() -> Iterator[Path]:
    """A socket path must fit in 107 bytes: pytest's tmp_path can be longer."""
    directory = Path(tempfile.mkdtemp(prefix="ledger-proxy-"))
    yield directory
    for leftover in directory.iterdir():
        leftover.unlink()
    directory.rmdir()


def test_connection_lost_during_commit_answers_503_and_the_retry_returns_the_committed_transfer(
    service_database: DatabaseCredentials,
    postgres_admin: PostgresAdmin,
    tmp_path: Path,
    short_socket_directory: Path,
) -> None:
    proxy = CommitReplyDropper(service_database, short_socket_directory)
    through_proxy = replace(service_database, host=str(short_socket_directory))
    settings = settings_with_secret_file(through_proxy, tmp_path, startup_deadline_seconds=3)
    dbname = service_database.dbname
    try:
        with trust_world(build_container(settings)) as world:
            key = f"commit-lost-{uuid.uuid4()}"
            proxy.arm()
            interrupted = world.transfer(key)
            assert proxy.dropped.is_set(), "the proxy never saw the transfer's COMMIT"
            assert_retryable(interrupted, "database_unavailable")
            committed = transfers_with_key(postgres_admin, dbname, key)
            assert len(committed) == 1, "the COMMIT reached the server: the transfer must be there"

            retried = world.transfer(key)
            assert retried.status_code == 201, retried.text
            assert retried.json()["id"] == committed[0]
            assert world.transfer(key).json() == retried.json()
            assert transfers_with_key(postgres_admin, dbname, key) == committed
            alice = world.client.get(f"/v1/accounts/{world.alice}").json()["balances"]["posted"]
            assert alice == 10_000 - 100, "the transfer was applied more than once"
    finally:
        proxy.close()


# --- a row lock held elsewhere --------------------------------------------------------------------------------------


def test_row_lock_held_elsewhere_answers_503_lock_timeout_within_the_lock_timeout_and_writes_nothing(
    service_database: DatabaseCredentials, postgres_admin: PostgresAdmin, tmp_path: Path
) -> None:
    settings = settings_with_secret_file(
        service_database, tmp_path, lock_timeout_ms=LOCK_TIMEOUT_MS, startup_deadline_seconds=3
    )
    dbname = service_database.dbname
    with trust_world(build_container(settings)) as world:
        key = f"locked-{uuid.uuid4()}"
        before = world.client.get(f"/v1/accounts/{world.alice}").json()
        with row_locked(postgres_admin, dbname, world.alice):
            thread, outcome = send_in_background(lambda: world.transfer(key))
            refused = answered(thread, outcome)
            seconds = outcome["seconds"]
        assert_retryable(refused, "lock_timeout")
        assert LOCK_TIMEOUT_MS / 1000 * 0.8 <= seconds < LOCK_TIMEOUT_MS / 1000 + 3.0, f"answered after {seconds:.2f} s"
        assert transfers_with_key(postgres_admin, dbname, key) == []
        assert idempotency_records(postgres_admin, dbname, key) == 0
        assert world.client.get(f"/v1/accounts/{world.alice}").json() == before

        retried = world.transfer(key)
        assert retried.status_code == 201, retried.text
        assert transfers_with_key(postgres_admin, dbname, key) == [retried.json()["id"]]


# --- Secrets Manager unreachable ------------------------------------------------------------------------------------


def test_secrets_manager_unreachable_keeps_serving_on_cached_credentials_and_warns(
    service_database: DatabaseCredentials, postgres_admin: PostgresAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider-level behaviour is in test_secret_providers.py (test_cached_credentials_outlive_an_unreachable_
    store); here the whole service: new connections (the old ones killed) log in on the cached credentials."""
    from moto.server import ThreadedMotoServer

    from ledger.infrastructure.settings import LedgerSettings
    from tests.test_credential_rotation import REGION, create_secret, secrets_client

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    running = True
    try:
        endpoint = f"http://127.0.0.1:{port}"
        secret_id = create_secret(secrets_client(endpoint), service_database)
        ttl_seconds = 0.5
        settings = LedgerSettings(
            _env_file=None,
            environment="test",
            aws_secret_id=secret_id,
            aws_region=REGION,
            aws_endpoint_url=endpoint,
            secret_cache_ttl_seconds=ttl_seconds,
            startup_deadline_seconds=3,
        )
        with trust_world(build_container(settings)) as world:
            moto.stop()
            running = False
            time.sleep(ttl_seconds + 0.1)
            assert postgres_admin.terminate_backends(service_database.dbname) >= 1
            with capture_logs() as events:
                answers = [world.transfer(f"no-secrets-manager-{number}-{uuid.uuid4()}") for number in range(3)]
                answers.append(world.client.get(f"/v1/accounts/{world.bob}"))
    finally:
        if running:
            moto.stop()
    assert [answer.status_code for answer in answers] == [201, 201, 201, 200], [a.text for a in answers]
    assert answers[-1].json()["balances"]["posted"] == 300
    warnings = [event for event in events if event["event"] == "secret_store_unreachable_using_cached_credentials"]
    assert warnings, [event["event"] for event in events]
    assert warnings[0]["log_level"] == "warning"
    assert secret_id in warnings[0]["reason"]


# --- the short fault run --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fault_run_restarts_and_killed_connections_lose_nothing_and_duplicate_nothing() -> None:
    """The scripts/fault_run.py scenario, shortened: 4 workers for 15 s, PostgreSQL (a dedicated one) restarted twice
    and the service's backends terminated six times."""
    plan = FaultPlan(seconds=15, workers=4, restarts=2, kills_per_gap=2)
    progress: list[str] = []
    figures = FaultRun(plan, progress=progress.append, on_secret=canaries.register).run()
    print("\n".join(progress))
    print(figures.table())
    assert figures.failures() == [], f"{figures.failures()} (unexpected: {figures.unexpected_samples})"
    assert len(figures.restarts) == 2
    assert figures.unavailable > 0, "no 503 seen: the restarts did not reach the clients"
    assert figures.backends_terminated > 0
    assert figures.max_recovery is not None and figures.max_recovery <= RECOVERY_LIMIT_SECONDS
    assert figures.posted > 0
