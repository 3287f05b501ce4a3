"""Sessions and connections over the life of the service, on a real PostgreSQL.

Every request returns its connection to the pool whatever happens inside the unit of work; a unit of work that is
not committed, or that raises, writes nothing; an exhausted pool or a database that dies mid-flight answers 503 with
Retry-After (never 500, never a hang); readiness follows the database.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from dependency_injector import providers
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ledger.api.app import create_app
from ledger.container import Container, build_container
from ledger.domain.errors import Conflict, StartupCheckFailed
from ledger.domain.model import DEFAULT_TENANT_ID, NORMAL_SIDE_OF_KIND, Account, AccountKind, Ledger
from ledger.domain.money import Currency
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.secret_providers import DatabaseUrlProvider
from tests.conftest import free_port, settings_with_secret_file
from tests.http_clients import KeyedTestClient
from tests.postgres_admin import PostgresAdmin

PROBLEM_JSON = "application/problem+json"
REQUEST_DEADLINE_SECONDS = 15.0
CONCURRENT_CLIENTS = 8
LOAD_DEADLINE_SECONDS = 60.0


@pytest.fixture
def client(pg_container: Container) -> Iterator[TestClient]:
    with KeyedTestClient(create_app(pg_container), raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass
class TimedResponse:
    response: httpx.Response
    seconds: float


def _request_within(
    client: TestClient, method: str, url: str, deadline_seconds: float = REQUEST_DEADLINE_SECONDS, **kwargs: Any
) -> TimedResponse:
    """Sends the request from a daemon thread so that a hanging service fails the test instead of stalling it."""
    outcome: dict[str, Any] = {}

    def send() -> None:
        started = time.perf_counter()
        try:
            outcome["response"] = client.request(method, url, **kwargs)
        except BaseException as error:
            outcome["error"] = error
        outcome["seconds"] = time.perf_counter() - started

    sender = threading.Thread(target=send, name=f"request {method} {url}", daemon=True)
    sender.start()
    sender.join(deadline_seconds)
    if sender.is_alive():
        pytest.fail(f"{method} {url} did not answer within {deadline_seconds} s: the service hangs")
    if "error" in outcome:
        raise outcome["error"]
    return TimedResponse(outcome["response"], outcome["seconds"])


def _assert_retryable_problem(response: httpx.Response, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == 503, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    retry_after = response.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, retry_after
    body: dict[str, Any] = response.json()
    assert body["status"] == 503
    if code is not None:
        assert body["code"] == code, body
    return body


def _scalar(engine: sa.Engine, statement: str, **parameters: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(sa.text(statement), parameters).scalar_one()


def _rows_seen_from_outside(admin: PostgresAdmin, dbname: str, statement: str, *parameters: object) -> int:
    """Counts through the superuser's own connection: not the engine, not its pool."""
    rows = admin.execute(statement, tuple(parameters), dbname=dbname)
    count = rows[0][0]
    assert isinstance(count, int)
    return count


# --- connections always go back ---------------------------------------------------------------------------------


def test_a_thousand_requests_leave_no_connection_checked_out_and_no_partial_write(
    pg_container: Container, client: TestClient
) -> None:
    """Successes and use cases that raise inside the unit of work (code taken: 409, unknown ledger: 404), sent by
    several threads at once so that connections are checked out concurrently."""
    engine: sa.Engine = pg_container.database_engine()
    ledger = client.post("/v1/ledgers", json={"name": "Load", "currency": "USD"})
    assert ledger.status_code == 201, ledger.text
    ledger_id = ledger.json()["id"]
    taken = client.post(f"/v1/ledgers/{ledger_id}/accounts", json={"code": "taken", "name": "First", "kind": "client"})
    assert taken.status_code == 201, taken.text
    account_id = taken.json()["id"]
    accounts_before = _scalar(engine, "SELECT count(*) FROM accounts")

    requests: list[tuple[str, str, dict[str, Any] | None, int]] = []
    for number in range(1000):
        kind = number % 5
        if kind == 0:
            body = {"code": f"c{number}", "name": f"Client {number}", "kind": "client"}
            requests.append(("POST", f"/v1/ledgers/{ledger_id}/accounts", body, 201))
        elif kind == 1:  # the repository refuses inside the unit of work
            body = {"code": "taken", "name": "Again", "kind": "bank"}
            requests.append(("POST", f"/v1/ledgers/{ledger_id}/accounts", body, 409))
        elif kind == 2:  # the use case raises inside the unit of work
            body = {"code": f"x{number}", "name": "Lost", "kind": "client"}
            requests.append(("POST", f"/v1/ledgers/{uuid.uuid4()}/accounts", body, 404))
        elif kind == 3:
            requests.append(("GET", f"/v1/ledgers/{ledger_id}/accounts?limit=10", None, 200))
        else:
            requests.append(("GET", f"/v1/accounts/{account_id}", None, 200))

    def send(request: tuple[str, str, dict[str, Any] | None, int]) -> tuple[int, int, str]:
        method, url, body, expected = request
        response = client.request(method, url, json=body)
        return expected, response.status_code, response.text

    with ThreadPoolExecutor(max_workers=CONCURRENT_CLIENTS) as pool:
        outcomes = list(pool.map(send, requests, timeout=LOAD_DEADLINE_SECONDS))

    unexpected = [(expected, status, text) for expected, status, text in outcomes if status != expected]
    assert not unexpected, f"{len(unexpected)} unexpected answers, first: {unexpected[:3]}"
    checked_out = engine.pool.checkedout()
    assert checked_out == 0, f"{checked_out} connections never returned: {engine.pool.status()}"

    created_codes = {"taken"} | {f"c{number}" for number in range(0, 1000, 5)}
    assert _scalar(engine, "SELECT count(*) FROM accounts") - accounts_before == len(created_codes) - 1
    with engine.connect() as connection:
        codes = set(
            connection.execute(
                sa.text("SELECT code FROM accounts WHERE ledger_id = :ledger_id"), {"ledger_id": ledger_id}
            ).scalars()
        )
    assert codes == created_codes
    assert engine.pool.checkedout() == 0


# --- the unit of work -------------------------------------------------------------------------------------------


def _new_ledger() -> Ledger:
    return Ledger(
        id=uuid.uuid4(),
        tenant_id=DEFAULT_TENANT_ID,
        name="Unit of work",
        currency=Currency.of("EUR"),
        time_zone="Europe/Berlin",
        created_at=datetime.now(UTC),
    )


def _new_account(ledger: Ledger, code: str) -> Account:
    return Account(
        id=uuid.uuid4(),
        tenant_id=ledger.tenant_id,
        ledger_id=ledger.id,
        code=code,
        name=f"Account {code}",
        kind=AccountKind.CLIENT,
        normal_side=NORMAL_SIDE_OF_KIND[AccountKind.CLIENT],
        created_at=datetime.now(UTC),
    )


def _written(admin: PostgresAdmin, dbname: str, ledger: Ledger) -> tuple[int, int]:
    ledgers = _rows_seen_from_outside(admin, dbname, "SELECT count(*) FROM ledgers WHERE id = %s", str(ledger.id))
    accounts = _rows_seen_from_outside(
        admin, dbname, "SELECT count(*) FROM accounts WHERE ledger_id = %s", str(ledger.id)
    )
    return ledgers, accounts


def test_committed_unit_of_work_is_seen_from_another_connection(
    pg_container: Container, postgres_admin: PostgresAdmin, service_database: DatabaseCredentials
) -> None:
    ledger = _new_ledger()
    with pg_container.unit_of_work() as uow:
        uow.ledgers.add(ledger)
        uow.accounts.add(_new_account(ledger, "a"))
        uow.commit()
    assert _written(postgres_admin, service_database.dbname, ledger) == (1, 1)
    assert pg_container.database_engine().pool.checkedout() == 0


def test_unit_of_work_left_without_commit_writes_nothing(
    pg_container: Container, postgres_admin: PostgresAdmin, service_database: DatabaseCredentials
) -> None:
    ledger = _new_ledger()
    with pg_container.unit_of_work() as uow:
        uow.ledgers.add(ledger)
        uow.accounts.add(_new_account(ledger, "a"))
        assert uow.ledgers.get(DEFAULT_TENANT_ID, ledger.id) == ledger  # visible inside, to itself only
        assert _written(postgres_admin, service_database.dbname, ledger) == (0, 0)
    assert _written(postgres_admin, service_database.dbname, ledger) == (0, 0)
    assert pg_container.database_engine().pool.checkedout() == 0


class _UseCaseFailed(Exception):
    pass


def test_exception_inside_unit_of_work_leaves_no_partial_write(
    pg_container: Container, postgres_admin: PostgresAdmin, service_database: DatabaseCredentials
) -> None:
    ledger = _new_ledger()
    with pytest.raises(_UseCaseFailed), pg_container.unit_of_work() as uow:
        uow.ledgers.add(ledger)
        uow.accounts.add(_new_account(ledger, "a"))
        uow.accounts.add(_new_account(ledger, "b"))
        raise _UseCaseFailed("the use case failed half way")
    assert _written(postgres_admin, service_database.dbname, ledger) == (0, 0)
    assert pg_container.database_engine().pool.checkedout() == 0


def test_repository_refusal_half_way_writes_nothing(
    pg_container: Container, postgres_admin: PostgresAdmin, service_database: DatabaseCredentials
) -> None:
    """A repository refusal half way (the code is taken inside the same transaction) takes the ledger and the first
    account with it."""
    ledger = _new_ledger()
    with pytest.raises(Conflict), pg_container.unit_of_work() as uow:
        uow.ledgers.add(ledger)
        uow.accounts.add(_new_account(ledger, "a"))
        uow.accounts.add(_new_account(ledger, "a"))
        uow.commit()
    assert _written(postgres_admin, service_database.dbname, ledger) == (0, 0)
    assert pg_container.database_engine().pool.checkedout() == 0


# --- an exhausted pool ------------------------------------------------------------------------------------------


def test_exhausted_pool_answers_503_with_retry_after_within_the_pool_timeout(
    service_database: DatabaseCredentials, tmp_path: Path
) -> None:
    pool_timeout = 1.0
    settings = settings_with_secret_file(
        service_database,
        tmp_path,
        pool_size=2,
        max_overflow=0,
        pool_timeout_seconds=pool_timeout,
        startup_deadline_seconds=3,
    )
    container = build_container(settings)
    try:
        with KeyedTestClient(create_app(container), raise_server_exceptions=False) as client:
            assert _request_within(client, "GET", "/v1/ledgers").response.status_code == 200
            engine: sa.Engine = container.database_engine()
            held = [engine.connect(), engine.connect()]
            try:
                assert engine.pool.checkedout() == 2
                refused = _request_within(client, "GET", "/v1/ledgers")
                body = _assert_retryable_problem(refused.response, "database_pool_exhausted")
                assert refused.seconds < pool_timeout + 1.0, f"took {refused.seconds:.2f} s"
                assert "detail" in body
                # Liveness does not need the database.
                assert _request_within(client, "GET", "/healthz", deadline_seconds=2).response.status_code == 200
            finally:
                for connection in held:
                    connection.close()
            assert engine.pool.checkedout() == 0
            released = _request_within(client, "GET", "/v1/ledgers")
            assert released.response.status_code == 200, released.response.text
            assert engine.pool.checkedout() == 0
    finally:
        container.shutdown_resources()


# --- a database that dies mid-flight ----------------------------------------------------------------------------


def test_terminated_backends_answer_200_or_503_never_500_and_then_recover(
    pg_container: Container, client: TestClient, postgres_admin: PostgresAdmin, service_database: DatabaseCredentials
) -> None:
    engine: sa.Engine = pg_container.database_engine()
    # Fill the pool with several idle connections, all of which will be killed.
    warm = [engine.connect() for _ in range(3)]
    for connection in warm:
        connection.execute(sa.text("SELECT 1"))
        connection.close()
    assert engine.pool.checkedin() >= 3

    killed = postgres_admin.terminate_backends(service_database.dbname)
    assert killed >= 3, f"only {killed} backends terminated"

    for method, url, payload in (
        ("GET", "/v1/ledgers", None),
        ("POST", "/v1/ledgers", {"name": "After the crash", "currency": "USD"}),
    ):
        first = _request_within(client, method, url, json=payload).response
        assert first.status_code in {200, 201, 503}, f"{method} {url}: {first.status_code} {first.text}"
        if first.status_code == 503:
            _assert_retryable_problem(first)
    for _ in range(5):
        after = _request_within(client, "GET", "/v1/ledgers").response
        assert after.status_code == 200, after.text
    assert _request_within(client, "GET", "/readyz").response.status_code == 200
    assert engine.pool.checkedout() == 0


def test_backends_terminated_during_a_request_stream_never_answer_500(
    pg_container: Container, client: TestClient, postgres_admin: PostgresAdmin, service_database: DatabaseCredentials
) -> None:
    """Kill the backends repeatedly while requests keep coming: every answer is 2xx or 503 with Retry-After."""
    engine: sa.Engine = pg_container.database_engine()
    ledger = client.post("/v1/ledgers", json={"name": "Crashing", "currency": "USD"})
    assert ledger.status_code == 201
    ledger_id = ledger.json()["id"]
    seen: dict[int, int] = {}
    for number in range(30):
        if number % 3 == 0:
            postgres_admin.terminate_backends(service_database.dbname)
        response = _request_within(
            client,
            "POST",
            f"/v1/ledgers/{ledger_id}/accounts",
            json={"code": f"c{number}", "name": "Client", "kind": "client"},
        ).response
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code in {201, 503}, f"{response.status_code} {response.text}"
        if response.status_code == 503:
            _assert_retryable_problem(response)
    assert _request_within(client, "GET", "/v1/ledgers").response.status_code == 200
    assert engine.pool.checkedout() == 0
    assert seen.get(201, 0) > 0


# --- liveness and readiness -------------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_200_with_a_database(client: TestClient) -> None:
    assert _request_within(client, "GET", "/healthz").response.json() == {"status": "ok"}
    ready = _request_within(client, "GET", "/readyz").response
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def _unreachable_container(service_database: DatabaseCredentials, tmp_path: Path) -> tuple[Container, str]:
    password = "Unreachable-" + uuid.uuid4().hex
    url = f"postgresql://nobody:{password}@127.0.0.1:{free_port()}/nowhere"
    container = build_container(settings_with_secret_file(service_database, tmp_path, startup_deadline_seconds=1))
    container.secret_provider.override(providers.Object(DatabaseUrlProvider(SecretStr(url))))
    return container, password


def test_readyz_is_503_when_the_database_cannot_be_reached(
    service_database: DatabaseCredentials, tmp_path: Path
) -> None:
    container, password = _unreachable_container(service_database, tmp_path)
    try:
        client = KeyedTestClient(create_app(container), raise_server_exceptions=False)  # no lifespan: no start-up check
        health = _request_within(client, "GET", "/healthz")
        assert health.response.status_code == 200
        not_ready = _request_within(client, "GET", "/readyz")
        body = _assert_retryable_problem(not_ready.response, "database_unavailable")
        assert not_ready.seconds < 6, f"readiness took {not_ready.seconds:.2f} s"
        assert password not in not_ready.response.text
        assert password not in str(body)
        # A use case gets the same answer, not a 500.
        refused = _request_within(client, "GET", "/v1/ledgers").response
        _assert_retryable_problem(refused)
        assert password not in refused.text
    finally:
        container.shutdown_resources()


def test_readyz_is_503_after_a_failed_lifespan(service_database: DatabaseCredentials, tmp_path: Path) -> None:
    """The lifespan's start-up check refuses to start; the probes still answer, readiness with 503."""
    container, password = _unreachable_container(service_database, tmp_path)
    try:
        app = create_app(container)
        with pytest.raises(StartupCheckFailed) as failed, KeyedTestClient(app, raise_server_exceptions=False):
            pass
        assert failed.value.cause == "host_unreachable"
        assert password not in str(failed.value)
        client = KeyedTestClient(app, raise_server_exceptions=False)
        assert _request_within(client, "GET", "/healthz").response.status_code == 200
        _assert_retryable_problem(_request_within(client, "GET", "/readyz").response, "database_unavailable")
    finally:
        container.shutdown_resources()
