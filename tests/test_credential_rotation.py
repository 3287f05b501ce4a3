"""Credential rotation end to end: real PostgreSQL, AWS Secrets Manager through moto's server mode.

A rotated password (single user, or alternating users) must take effect for new connections of the running
process: no restart, no redeploy, and one secret read for all the threads that hit the refused login together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from ledger.api.app import create_app
from ledger.container import Container, build_container
from ledger.domain.errors import StartupCheckFailed
from ledger.domain.model import DEFAULT_TENANT_ID
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.database_engine import CredentialedConnector
from ledger.infrastructure.secret_providers import (
    AwsSecretsManagerProvider,
)
from ledger.infrastructure.settings import LedgerSettings
from tests.http_clients import KeyedTestClient
from tests.postgres_admin import PostgresAdmin
from tests.secret_canaries import canaries
from tests.secrets_manager_rotation import (
    REGION,
    GetSecretValueCalls,
    create_secret,
    new_password,
    promote,
    put_pending,
    rotate_secret,
    secrets_client,
    with_password,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

TTL_SECONDS = 300.0


class ManualClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_password(credentials: DatabaseCredentials, expected: str) -> None:
    """Compares without letting pytest print either value."""
    if credentials.password.get_secret_value() != expected:
        pytest.fail(f"{credentials.username}: the password is not the expected one (values withheld)")


def fresh_database(postgres_admin: PostgresAdmin) -> DatabaseCredentials:
    """A new password role owning a new database migrated to head."""
    return postgres_admin.create_migrated_database()


def aws_settings(secret_id: str, moto_endpoint: str, **overrides: object) -> LedgerSettings:
    values: dict[str, object] = {
        "environment": "test",
        "aws_secret_id": secret_id,
        "aws_region": REGION,
        "aws_endpoint_url": moto_endpoint,
        "startup_deadline_seconds": 3,
        "startup_retry_interval_seconds": 0.2,
        "pool_timeout_seconds": 10,
        **overrides,
    }
    return LedgerSettings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@dataclass
class Rig:
    """A container whose secret provider reads moto through a client the test counts, on a clock the test moves."""

    container: Container
    provider: AwsSecretsManagerProvider
    client: SecretsManagerClient
    calls: GetSecretValueCalls
    clock: ManualClock
    secret_id: str

    @property
    def engine(self) -> Engine:
        engine: Engine = self.container.database_engine()
        return engine

    @property
    def connector(self) -> CredentialedConnector:
        connector: CredentialedConnector = self.container.database_connector()
        return connector


@pytest.fixture
def make_rig(moto_endpoint: str) -> Iterator[Any]:
    containers: list[Container] = []

    def make(credentials: DatabaseCredentials, **overrides: object) -> Rig:
        client = secrets_client(moto_endpoint)
        secret_id = create_secret(client, credentials)
        calls = GetSecretValueCalls(client)
        clock = ManualClock()
        provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)
        container = build_container(aws_settings(secret_id, moto_endpoint, **overrides))
        container.secret_provider.override(providers.Object(provider))
        containers.append(container)
        return Rig(container, provider, client, calls, clock, secret_id)

    yield make
    for container in containers:
        container.shutdown_resources()


def current_user(engine: Engine) -> str:
    with engine.connect() as connection:
        user: str = connection.exec_driver_sql("SELECT current_user").scalar_one()
    return user


def open_ledger(client: TestClient, name: str) -> str:
    response = client.post("/v1/ledgers", json={"name": name, "currency": "USD"})
    assert response.status_code == 201, response.text
    ledger_id: str = response.json()["id"]
    return ledger_id


# --- the app on AWS Secrets Manager -------------------------------------------------------------------------------


def test_app_reads_its_credentials_from_secrets_manager(
    service_database: DatabaseCredentials, moto_endpoint: str
) -> None:
    client = secrets_client(moto_endpoint)
    secret_id = create_secret(client, service_database)
    container = build_container(aws_settings(secret_id, moto_endpoint))
    try:
        assert isinstance(container.secret_provider(), AwsSecretsManagerProvider)
        with KeyedTestClient(create_app(container)) as http:
            assert http.get("/readyz").status_code == 200
            ledger_id = open_ledger(http, "Client trust (IOLTA)")
            fetched = http.get(f"/v1/ledgers/{ledger_id}")
            assert fetched.status_code == 200
            assert fetched.json()["name"] == "Client trust (IOLTA)"
            assert current_user(container.database_engine()) == service_database.username
    finally:
        container.shutdown_resources()


def test_wrong_password_in_the_secret_is_refused(
    service_database: DatabaseCredentials, postgres_admin: PostgresAdmin, moto_endpoint: str
) -> None:
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so a wrong password cannot be refused")
    wrong = new_password()
    client = secrets_client(moto_endpoint)
    secret_id = create_secret(client, with_password(service_database, wrong))
    container = build_container(aws_settings(secret_id, moto_endpoint))
    try:
        with capture_logs() as events, pytest.raises(StartupCheckFailed) as failure:
            with KeyedTestClient(create_app(container)):
                pass
    finally:
        container.shutdown_resources()

    assert failure.value.cause == "authentication_failed"
    assert wrong not in str(failure.value)
    reported = [event for event in events if event["event"] == "startup_check_failed"]
    assert len(reported) == 1
    assert reported[0]["cause"] == "authentication_failed"
    assert wrong not in repr(events)


# --- single-user rotation -----------------------------------------------------------------------------------------


def test_single_user_rotation_takes_effect_without_a_restart(postgres_admin: PostgresAdmin, make_rig: Any) -> None:
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so an old password is never refused")
    credentials = fresh_database(postgres_admin)
    rig: Rig = make_rig(credentials)
    with KeyedTestClient(create_app(rig.container)) as http:
        first_ledger = open_ledger(http, "Before rotation")
        rig.clock.advance(5)  # the cache is a few seconds old, well within its TTL

        rotated = new_password()
        postgres_admin.set_password(credentials.username, rotated)
        rotate_secret(rig.client, rig.secret_id, with_password(credentials, rotated))
        opened_before = rig.connector.connections_opened
        refreshes_before = rig.connector.credential_refreshes
        assert refreshes_before == 0

        for round_number in range(3):
            rig.engine.dispose()  # every round needs new physical connections
            assert http.get("/readyz").status_code == 200
            open_ledger(http, f"After rotation {round_number}")
            assert http.get(f"/v1/ledgers/{first_ledger}").status_code == 200

        assert rig.connector.connections_opened >= opened_before + 3
        assert rig.connector.credential_refreshes == 1
        assert_password(rig.provider.current(), rotated)


def test_rotation_right_after_the_cache_filled_takes_effect(postgres_admin: PostgresAdmin, make_rig: Any) -> None:
    """The rotation lands less than a second after the credentials were read. The refused login must still
    re-read the store instead of retrying the very credentials it was refused with."""
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so an old password is never refused")
    credentials = fresh_database(postgres_admin)
    rig: Rig = make_rig(credentials)
    assert current_user(rig.engine) == credentials.username  # fills the cache; the clock does not move after this

    rotated = new_password()
    postgres_admin.set_password(credentials.username, rotated)
    rotate_secret(rig.client, rig.secret_id, with_password(credentials, rotated))
    rig.engine.dispose()

    assert current_user(rig.engine) == credentials.username
    assert rig.connector.credential_refreshes == 1


def test_password_changed_before_promotion_connects_with_the_pending_version(
    postgres_admin: PostgresAdmin, make_rig: Any
) -> None:
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so an old password is never refused")
    credentials = fresh_database(postgres_admin)
    rig: Rig = make_rig(credentials)
    assert current_user(rig.engine) == credentials.username
    rig.clock.advance(5)

    rotated = new_password()
    postgres_admin.set_password(credentials.username, rotated)  # the rotation's "set secret" step ran...
    put_pending(rig.client, rig.secret_id, with_password(credentials, rotated))  # ...but AWSCURRENT did not move
    rig.engine.dispose()

    with capture_logs() as events:
        assert current_user(rig.engine) == credentials.username

    assert any(event["event"] == "database_login_trying_pending_credentials" for event in events)
    assert rig.connector.credential_refreshes == 1
    # AWSCURRENT still holds the old password.
    assert_password(rig.provider.current(), credentials.password.get_secret_value())
    assert rotated not in repr(events)


def test_rotation_finishing_between_the_current_and_the_pending_read_still_connects(
    postgres_admin: PostgresAdmin, make_rig: Any, moto_endpoint: str
) -> None:
    """The race a rotation under load hit: the old password is refused, AWSCURRENT is re-read and still holds it
    (finishSecret has not run), then finishSecret runs before AWSPENDING is read, so there is no pending version
    any more. Only a read of AWSCURRENT made after that one has the new password, and the login must make it."""
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so an old password is never refused")
    credentials = fresh_database(postgres_admin)
    rig: Rig = make_rig(credentials)
    assert current_user(rig.engine) == credentials.username
    rig.clock.advance(5)

    rotated = new_password()
    canaries.register(rotated)
    version = put_pending(rig.client, rig.secret_id, with_password(credentials, rotated))  # createSecret
    postgres_admin.set_password(credentials.username, rotated)  # setSecret
    lambda_client = secrets_client(moto_endpoint)
    finished: list[bool] = []

    def finish_right_before_the_pending_read(params: dict[str, Any], **_: Any) -> None:
        if params.get("VersionStage") == "AWSPENDING" and not finished:
            promote(lambda_client, rig.secret_id, version)  # finishSecret
            finished.append(True)

    rig.client.meta.events.register(
        "before-parameter-build.secrets-manager.GetSecretValue", finish_right_before_the_pending_read
    )
    rig.engine.dispose()

    assert current_user(rig.engine) == credentials.username
    assert finished == [True]
    assert rig.connector.credential_refreshes == 1
    assert_password(rig.provider.current(), rotated)


# --- alternating users --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("switch", ["cache_expires", "old_user_refused"])
def test_alternating_users_new_connections_log_in_as_the_new_user(
    postgres_admin: PostgresAdmin, make_rig: Any, switch: str
) -> None:
    role_a = fresh_database(postgres_admin)
    role_b_name, role_b_password = postgres_admin.create_role()
    postgres_admin.grant_role(role_a.username, to=role_b_name)  # B may use A's tables
    role_b = postgres_admin.credentials(role_b_name, role_b_password, role_a.dbname)
    if switch == "old_user_refused" and not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so the old user is never refused")

    rig: Rig = make_rig(role_a)
    ledgers = rig.container.ledger_service()
    created_by_a = ledgers.open_ledger(DEFAULT_TENANT_ID, name="Opened by A", currency="USD")
    assert current_user(rig.engine) == role_a.username

    rotate_secret(rig.client, rig.secret_id, role_b)
    if switch == "cache_expires":
        rig.clock.advance(TTL_SECONDS + 1)  # A still works: B takes over when the cache expires
    else:
        rig.clock.advance(5)
        postgres_admin.set_password(role_a.username, new_password())  # the next rotation changes A's password
    rig.engine.dispose()

    assert current_user(rig.engine) == role_b_name
    assert ledgers.get_ledger(DEFAULT_TENANT_ID, created_by_a.id) == created_by_a
    created_by_b = ledgers.open_ledger(DEFAULT_TENANT_ID, name="Opened by B", currency="EUR")
    assert ledgers.get_ledger(DEFAULT_TENANT_ID, created_by_b.id) == created_by_b
    assert rig.connector.credential_refreshes == (0 if switch == "cache_expires" else 1)


# --- how often the store is read ----------------------------------------------------------------------------------


def test_a_thousand_new_connections_read_the_secret_at_most_twice(
    service_database: DatabaseCredentials, make_rig: Any
) -> None:
    workers, per_worker = 4, 250
    rig: Rig = make_rig(service_database, pool_size=workers, max_overflow=0)
    engine = rig.engine
    opened_before = rig.connector.connections_opened
    deadline = time.monotonic() + 30

    def open_new_connections() -> None:
        for _ in range(per_worker):
            assert time.monotonic() < deadline, "1,000 connections took too long"
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
                connection.invalidate()  # closes the physical connection: the next checkout opens a new one

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(open_new_connections) for _ in range(workers)]
        for future in futures:
            future.result(timeout=40)

    assert rig.connector.connections_opened - opened_before == workers * per_worker == 1_000
    assert 1 <= rig.calls.count <= 2


def test_sixteen_threads_refused_together_share_one_secret_read(postgres_admin: PostgresAdmin, make_rig: Any) -> None:
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so an old password is never refused")
    threads = 16
    credentials = fresh_database(postgres_admin)
    rig: Rig = make_rig(credentials, pool_size=threads + 4, max_overflow=0)
    engine = rig.engine
    assert current_user(engine) == credentials.username
    rig.clock.advance(5)  # cached, within the TTL, soon stale

    rotated = new_password()
    postgres_admin.set_password(credentials.username, rotated)
    rotate_secret(rig.client, rig.secret_id, with_password(credentials, rotated))
    engine.dispose()
    reads_before = rig.calls.count
    opened_before = rig.connector.connections_opened
    together = threading.Barrier(threads)
    all_connected = threading.Barrier(threads)

    def connect() -> str:
        together.wait(timeout=10)
        with engine.connect() as connection:
            user: str = connection.exec_driver_sql("SELECT current_user").scalar_one()
            all_connected.wait(timeout=20)  # hold the connection so that every thread opens its own
        return user

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(connect) for _ in range(threads)]
        users = [future.result(timeout=40) for future in futures]

    assert users == [credentials.username] * threads
    assert rig.connector.connections_opened - opened_before == threads
    assert rig.calls.count - reads_before == 1
    assert rig.connector.credential_refreshes >= 1
    assert_password(rig.provider.current(), rotated)
