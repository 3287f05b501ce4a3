"""The secret providers: AWS Secrets Manager (moto's server mode, real HTTP), a secret file, a plain URL.

Calls to GetSecretValue are counted with a botocore event hook on the client handed to the provider; time is a
manual clock handed to the provider, so TTL behaviour needs no sleeping.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import write_private_file
from ledger.infrastructure.secret_providers import (
    MIN_REFRESH_INTERVAL_SECONDS,
    AwsSecretsManagerProvider,
    DatabaseUrlProvider,
    SecretFileProvider,
    SecretUnavailable,
)
from ledger.infrastructure.settings import LedgerSettings
from tests.conftest import free_port

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

TTL_SECONDS = 60.0


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GetSecretValueCalls:
    """Counts GetSecretValue requests a client sends, and the VersionStage each one asked for."""

    def __init__(self, client: SecretsManagerClient) -> None:
        self.count = 0
        self.stages: list[str | None] = []
        client.meta.events.register("before-call.secrets-manager.GetSecretValue", self._count)
        client.meta.events.register("before-parameter-build.secrets-manager.GetSecretValue", self._stage)

    def _count(self, **_: Any) -> None:
        self.count += 1

    def _stage(self, params: dict[str, Any], **_: Any) -> None:
        self.stages.append(params.get("VersionStage"))


def secrets_client(endpoint_url: str) -> SecretsManagerClient:
    client: SecretsManagerClient = boto3.session.Session().client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        config=botocore.config.Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}),
    )
    return client


def assert_password(credentials: DatabaseCredentials, expected: str) -> None:
    """Compares without letting pytest print either value."""
    if credentials.password.get_secret_value() != expected:
        pytest.fail(f"{credentials.username}: the password is not the expected one (values withheld)")


def unique_secret_id() -> str:
    return f"ledger/test/{uuid.uuid4().hex}"


def new_password() -> str:
    return f"pw-{secrets.token_urlsafe(18)}"


def secret_document(password: str, username: str = "ledger_app", **extra: object) -> dict[str, object]:
    return {
        "engine": "postgres",
        "host": "db.internal.example",
        "port": 6432,
        "username": username,
        "password": password,
        "dbname": "ledger",
        **extra,
    }


def rotate(client: SecretsManagerClient, secret_id: str, document: dict[str, object]) -> str:
    """Puts a new version as AWSPENDING, then moves AWSCURRENT onto it (what a rotation Lambda does)."""
    new_version = client.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps(document), VersionStages=["AWSPENDING"]
    )["VersionId"]
    stages = client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    old_version = next(version for version, labels in stages.items() if "AWSCURRENT" in labels)
    client.update_secret_version_stage(
        SecretId=secret_id, VersionStage="AWSCURRENT", MoveToVersionId=new_version, RemoveFromVersionId=old_version
    )
    return new_version


@pytest.fixture
def client(moto_endpoint: str) -> SecretsManagerClient:
    return secrets_client(moto_endpoint)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_secret(client: SecretsManagerClient, document: dict[str, object] | str) -> tuple[str, str]:
    secret_id = unique_secret_id()
    text = document if isinstance(document, str) else json.dumps(document)
    version = client.create_secret(Name=secret_id, SecretString=text)["VersionId"]
    return secret_id, version


# --- AWS Secrets Manager ------------------------------------------------------------------------------------------


def test_reads_the_secret_document_into_credentials(client: SecretsManagerClient, clock: ManualClock) -> None:
    password = new_password()
    secret_id, version = make_secret(client, secret_document(password, sslmode="verify-full"))
    calls = GetSecretValueCalls(client)
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)

    credentials = provider.current()

    assert (credentials.host, credentials.port, credentials.username, credentials.dbname) == (
        "db.internal.example",
        6432,
        "ledger_app",
        "ledger",
    )
    assert_password(credentials, password)
    assert credentials.engine == "postgres"
    assert dict(credentials.options) == {"sslmode": "verify-full"}
    assert credentials.version_id == version
    assert calls.stages == ["AWSCURRENT"]
    assert secret_id in provider.description
    assert password not in provider.description


def test_current_within_the_ttl_makes_no_new_call(client: SecretsManagerClient, clock: ManualClock) -> None:
    secret_id, _ = make_secret(client, secret_document(new_password()))
    calls = GetSecretValueCalls(client)
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)

    first = provider.current()
    clock.advance(TTL_SECONDS - 1)
    second = provider.current()

    assert second is first
    assert calls.count == 1


def test_current_after_the_ttl_fetches_again(client: SecretsManagerClient, clock: ManualClock) -> None:
    secret_id, _ = make_secret(client, secret_document(new_password()))
    calls = GetSecretValueCalls(client)
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)
    provider.current()
    changed = new_password()
    client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(secret_document(changed)))

    clock.advance(TTL_SECONDS + 1)
    again = provider.current()

    assert calls.count == 2
    assert_password(again, changed)


def test_refresh_fetches_even_within_the_ttl(client: SecretsManagerClient, clock: ManualClock) -> None:
    secret_id, _ = make_secret(client, secret_document(new_password()))
    calls = GetSecretValueCalls(client)
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)
    provider.current()
    changed = new_password()
    client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(secret_document(changed)))

    clock.advance(5)  # well within the TTL
    refreshed = provider.refresh()

    assert calls.count == 2
    assert_password(refreshed, changed)
    assert provider.current() is refreshed
    assert calls.count == 2


def test_refresh_without_stale_credentials_always_reads_the_store(
    client: SecretsManagerClient, clock: ManualClock
) -> None:
    secret_id, _ = make_secret(client, secret_document(new_password()))
    calls = GetSecretValueCalls(client)
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)
    cached = provider.current()

    first = provider.refresh()  # the clock has not moved: a fresh cache is still re-read on request
    second = provider.refresh()

    assert calls.count == 3
    assert first is not cached
    assert second is not first
    assert provider.current() is second


def test_refresh_of_stale_credentials_already_replaced_does_not_fetch(
    client: SecretsManagerClient, clock: ManualClock
) -> None:
    secret_id, _ = make_secret(client, secret_document(new_password()))
    calls = GetSecretValueCalls(client)
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)
    stale = provider.current()
    clock.advance(5)
    newer = provider.refresh()
    assert calls.count == 2

    clock.advance(5)
    answer = provider.refresh(stale)

    assert answer is newer
    assert calls.count == 2


def test_refresh_of_the_cached_credentials_right_after_a_fetch_reads_the_store(
    client: SecretsManagerClient, clock: ManualClock
) -> None:
    """A login refused with the credentials still in the cache means the cache is stale, however young it is:
    ``refresh(stale)`` must re-read the store ("unless another thread already replaced ``stale``")."""
    secret_id, _ = make_secret(client, secret_document(new_password()))
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)
    cached = provider.current()
    rotated = new_password()
    rotate(client, secret_id, secret_document(rotated))

    fresh = provider.refresh(cached)  # the clock has not moved since the fetch

    assert_password(fresh, rotated)


def test_pending_returns_the_awspending_version_or_none(client: SecretsManagerClient, clock: ManualClock) -> None:
    current_password = new_password()
    secret_id, _ = make_secret(client, secret_document(current_password))
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)

    assert provider.pending() is None

    pending_password = new_password()
    pending_version = client.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps(secret_document(pending_password)), VersionStages=["AWSPENDING"]
    )["VersionId"]
    pending = provider.pending()

    assert pending is not None
    assert_password(pending, pending_password)
    assert pending.version_id == pending_version
    assert_password(provider.current(), current_password)


def test_refresh_after_a_rotation_returns_the_new_password(client: SecretsManagerClient, clock: ManualClock) -> None:
    """moto keeps answering the old version to a GetSecretValue without VersionStage after the stage move: the
    new password shows only because the provider asks for AWSCURRENT explicitly."""
    old_password = new_password()
    secret_id, old_version = make_secret(client, secret_document(old_password))
    calls = GetSecretValueCalls(client)
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)
    assert_password(provider.current(), old_password)

    rotated = new_password()
    new_version = rotate(client, secret_id, secret_document(rotated))
    clock.advance(5)
    refreshed = provider.refresh()

    assert_password(refreshed, rotated)
    assert refreshed.version_id == new_version != old_version
    assert calls.stages == ["AWSCURRENT", "AWSCURRENT"]


def test_unknown_secret_id_is_unavailable_and_named(client: SecretsManagerClient, clock: ManualClock) -> None:
    secret_id = unique_secret_id()
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)

    with pytest.raises(SecretUnavailable, match=re.escape(secret_id)):
        provider.current()


def test_unreachable_endpoint_is_unavailable(clock: ManualClock) -> None:
    secret_id = unique_secret_id()
    provider = AwsSecretsManagerProvider(
        secret_id, secrets_client(f"http://127.0.0.1:{free_port()}"), ttl_seconds=TTL_SECONDS, clock=clock
    )

    with pytest.raises(SecretUnavailable, match=re.escape(secret_id)):
        provider.current()


def test_cached_credentials_outlive_an_unreachable_store(moto_endpoint: str, clock: ManualClock) -> None:
    from moto.server import ThreadedMotoServer

    password = new_password()
    secret_id, _ = make_secret(secrets_client(moto_endpoint), secret_document(password))
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    running = True
    try:
        # moto keeps one backend per process: the secret made through the shared server is visible here too.
        own_client = secrets_client(f"http://127.0.0.1:{port}")
        calls = GetSecretValueCalls(own_client)
        provider = AwsSecretsManagerProvider(secret_id, own_client, ttl_seconds=TTL_SECONDS, clock=clock)
        cached = provider.current()
        server.stop()
        running = False

        clock.advance(TTL_SECONDS + 1)
        with capture_logs() as events:
            answer = provider.current()
            attempts_after_failure = calls.count
            clock.advance(MIN_REFRESH_INTERVAL_SECONDS / 2)
            assert provider.current() is cached
            assert calls.count == attempts_after_failure  # no new attempt before the retry interval
            clock.advance(MIN_REFRESH_INTERVAL_SECONDS)
            assert provider.current() is cached  # the store is tried again soon, not after a whole TTL
            assert calls.count == attempts_after_failure + 1
    finally:
        if running:
            server.stop()

    assert answer is cached
    assert attempts_after_failure == 2
    warnings = [event for event in events if event["event"] == "secret_store_unreachable_using_cached_credentials"]
    assert len(warnings) == 2
    assert warnings[0]["log_level"] == "warning"
    assert secret_id in warnings[0]["reason"]
    assert password not in repr(events)


@pytest.mark.parametrize(
    "make_text",
    [
        pytest.param(lambda pw: json.dumps({"username": "ledger_app", "password": pw}), id="missing-keys"),
        pytest.param(lambda pw: f"postgresql://ledger_app:{pw}@db/ledger", id="not-json"),
        pytest.param(lambda pw: f'{{"username": "ledger_app", "password": "{pw}"', id="truncated-json"),
        pytest.param(lambda pw: json.dumps(["ledger_app", pw]), id="json-array"),
        pytest.param(lambda pw: json.dumps(secret_document(pw, engine="mysql")), id="other-engine"),
        pytest.param(lambda pw: json.dumps(secret_document(pw, port=f"{pw}")), id="port-not-a-number"),
    ],
)
def test_unusable_secret_document_is_unavailable_without_the_password(
    client: SecretsManagerClient, clock: ManualClock, make_text: Any
) -> None:
    password = new_password()
    secret_id, _ = make_secret(client, make_text(password))
    provider = AwsSecretsManagerProvider(secret_id, client, ttl_seconds=TTL_SECONDS, clock=clock)

    with pytest.raises(SecretUnavailable) as raised:
        provider.current()

    assert secret_id in str(raised.value)
    assert password not in str(raised.value)
    assert password not in repr(raised.value)
    assert raised.value.__cause__ is None  # `from None`: no chained error carrying the document either


# --- secret file --------------------------------------------------------------------------------------------------


def write_secret_file(path: Path, password: str) -> None:
    write_private_file(path, json.dumps(secret_document(password)))


def test_secret_file_is_read_and_reread_on_refresh_after_it_changes(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "secret.json"
    first_password = new_password()
    write_secret_file(path, first_password)
    provider = SecretFileProvider(path, ttl_seconds=TTL_SECONDS, clock=clock)

    first = provider.current()
    assert_password(first, first_password)
    assert first.username == "ledger_app"
    assert provider.pending() is None

    second_password = new_password()
    write_secret_file(path, second_password)
    assert provider.current() is first  # cached within the TTL

    clock.advance(5)
    refreshed = provider.refresh(first)

    assert_password(refreshed, second_password)
    assert provider.current() is refreshed


def test_missing_or_broken_secret_file_is_unavailable(tmp_path: Path, clock: ManualClock) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(SecretUnavailable, match=re.escape(str(missing))):
        SecretFileProvider(missing, ttl_seconds=TTL_SECONDS, clock=clock).current()

    password = new_password()
    broken = tmp_path / "broken.json"
    write_private_file(broken, f"password={password}")
    with pytest.raises(SecretUnavailable) as raised:
        SecretFileProvider(broken, ttl_seconds=TTL_SECONDS, clock=clock).current()
    assert password not in str(raised.value)


# --- database URL -------------------------------------------------------------------------------------------------


def test_database_url_with_a_socket_directory() -> None:
    provider = DatabaseUrlProvider(SecretStr("postgresql://ledger_app:p%40ss%2Fw0rd@/ledger?host=/run/pg&port=5433"))

    credentials = provider.current()

    assert (credentials.host, credentials.port, credentials.username, credentials.dbname) == (
        "/run/pg",
        5433,
        "ledger_app",
        "ledger",
    )
    assert credentials.password.get_secret_value() == "p@ss/w0rd"
    assert dict(credentials.options) == {}
    assert provider.refresh(credentials) is credentials
    assert provider.pending() is None


def test_database_url_over_tcp() -> None:
    provider = DatabaseUrlProvider(
        SecretStr("postgresql://ledger_app:s3cret@db.internal.example:6543/ledger?sslmode=verify-full")
    )

    credentials = provider.current()

    assert (credentials.host, credentials.port, credentials.username, credentials.dbname) == (
        "db.internal.example",
        6543,
        "ledger_app",
        "ledger",
    )
    assert credentials.password.get_secret_value() == "s3cret"
    assert dict(credentials.options) == {"sslmode": "verify-full"}
    assert credentials.connect_parameters()["sslmode"] == "verify-full"


def test_database_url_without_port_or_password() -> None:
    credentials = DatabaseUrlProvider(SecretStr("postgresql://postgres@localhost/postgres")).current()

    assert (credentials.host, credentials.port, credentials.username) == ("localhost", 5432, "postgres")
    assert "password" not in credentials.connect_parameters()


def test_database_url_of_another_scheme_is_unavailable_without_the_password() -> None:
    password = new_password()
    with pytest.raises(SecretUnavailable, match="LEDGER_DATABASE_URL") as raised:
        DatabaseUrlProvider(SecretStr(f"mysql://ledger_app:{password}@db/ledger"))
    assert password not in str(raised.value)


# --- no password in representations -------------------------------------------------------------------------------


def test_credentials_and_settings_never_show_the_password() -> None:
    password = new_password()
    credentials = DatabaseCredentials.from_document(secret_document(password))
    settings = LedgerSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=f"postgresql://ledger_app:{password}@db.internal.example:5432/ledger",  # type: ignore[arg-type]
    )

    shown = [
        repr(credentials),
        str(credentials),
        f"{credentials}",
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.database_url),
        str(settings.database_url),
    ]

    for text in shown:
        assert password not in text
    # The value is still there for the connection itself.
    assert credentials.connect_parameters()["password"] == password
    assert settings.database_url is not None
    assert password in settings.database_url.get_secret_value()
