"""Shared fixtures: a real PostgreSQL (the embedded one, or LEDGER_TEST_DATABASE_URL) and moto's server mode."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from ledger.container import Container, build_container, use_in_memory_adapters
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import EmbeddedPostgres, write_private_file
from ledger.infrastructure.settings import LedgerSettings
from tests.postgres_admin import PostgresAdmin
from tests.secret_canaries import canaries

TEST_DATABASE_URL_VARIABLE = "LEDGER_TEST_DATABASE_URL"
_STARTED_HERE = "_LEDGER_TEST_EMBEDDED_STARTED"


def pytest_configure(config: pytest.Config) -> None:
    """Starts the embedded PostgreSQL once, in the controlling process (never in an xdist worker); workers find
    its URL in the environment they inherit."""
    # The suite captures log records at DEBUG for the canary scan; keep the loggers the product pins (boto logs
    # secret values at DEBUG) and SQLAlchemy's statement echo where the product keeps them.
    for name in ("boto3", "botocore", "s3transfer", "urllib3", "sqlalchemy.engine"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if hasattr(config, "workerinput") or os.environ.get(TEST_DATABASE_URL_VARIABLE):
        return
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-test-pg-"))
    embedded = EmbeddedPostgres(data_dir)
    info = embedded.start()
    os.environ[TEST_DATABASE_URL_VARIABLE] = f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    os.environ[_STARTED_HERE] = "1"
    config.stash[_embedded_key] = embedded


_embedded_key = pytest.StashKey[EmbeddedPostgres]()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    canaries.scan(report.nodeid, report.sections)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if canaries.leaks:
        terminalreporter.section("secret canary scan", sep="=", red=True)
        for leak in canaries.leaks:
            terminalreporter.line(leak)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if canaries.leaks and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session", autouse=True)
def _register_secrets_as_canaries() -> Iterator[None]:
    """Every API key token the suite makes becomes a canary (passwords are registered where roles are made)."""
    from ledger.domain.api_keys import ApiKeyService

    original = ApiKeyService.create_key

    def create_key_and_register(self: ApiKeyService, *args: Any, **kwargs: Any) -> Any:
        key, token = original(self, *args, **kwargs)
        canaries.register(token)
        return key, token

    ApiKeyService.create_key = create_key_and_register  # type: ignore[method-assign]
    yield
    ApiKeyService.create_key = original  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    embedded = config.stash.get(_embedded_key, None)
    if embedded is not None:
        embedded.stop()


@pytest.fixture(scope="session")
def postgres_admin() -> PostgresAdmin:
    return PostgresAdmin(DatabaseCredentials.from_url(os.environ[TEST_DATABASE_URL_VARIABLE]))


@dataclass(frozen=True)
class LeastPrivilegeDatabase:
    """A migrated database with production's two roles."""

    owner: DatabaseCredentials
    service: DatabaseCredentials


def make_least_privilege_database(postgres_admin: PostgresAdmin) -> LeastPrivilegeDatabase:
    """A new database owned by a new owner role, migrated by it, and a new service role granted its least privileges
    by the same code as ``ledger migrate``."""
    from ledger.infrastructure.database_privileges import migrate_with_least_privilege

    owner_role, owner_password = postgres_admin.create_role()
    service_role, service_password = postgres_admin.create_role()
    dbname = postgres_admin.create_database(owner=owner_role)
    owner = postgres_admin.credentials(owner_role, owner_password, dbname)
    with database_engine(owner) as engine:
        outcome = migrate_with_least_privilege(engine, service_role)
    assert outcome.least_privilege_applied
    service = postgres_admin.credentials(service_role, service_password, dbname)
    return LeastPrivilegeDatabase(owner=owner, service=service)


@contextmanager
def database_engine(credentials: DatabaseCredentials) -> Iterator[Engine]:
    """A pooled engine of the product's kind for these credentials, disposed on the way out."""
    from ledger.infrastructure.database_engine import CredentialedConnector, create_database_engine
    from ledger.infrastructure.secret_providers import DatabaseUrlProvider

    settings = settings_with_secret_url(credentials)
    assert settings.database_url is not None
    engine = create_database_engine(
        settings, CredentialedConnector(DatabaseUrlProvider(settings.database_url), settings)
    )
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def least_privilege_database(postgres_admin: PostgresAdmin) -> LeastPrivilegeDatabase:
    return make_least_privilege_database(postgres_admin)


@pytest.fixture(scope="session")
def service_database(least_privilege_database: LeastPrivilegeDatabase) -> DatabaseCredentials:
    """What the service connects with: the service role of a migrated database. It owns nothing and holds only
    the grants ``ledger migrate`` gives it, so every test using it shows those grants suffice."""
    return least_privilege_database.service


@pytest.fixture(scope="session")
def owner_database(least_privilege_database: LeastPrivilegeDatabase) -> DatabaseCredentials:
    """The owner role of ``service_database``'s database (same database): it owns the database and the tables and
    ran the migrations. For tests that act as the owner, e.g. disabling a history guard trigger
    (``ALTER TABLE postings DISABLE TRIGGER postings_append_only``) to play a malicious owner; re-enable it after,
    the database is shared by the session."""
    return least_privilege_database.owner


def credentials_url(credentials: DatabaseCredentials) -> str:
    from urllib.parse import quote

    password = credentials.password.get_secret_value()
    userinfo = quote(credentials.username) + (":" + quote(password, safe="") if password else "")
    if credentials.host.startswith("/"):
        return f"postgresql://{userinfo}@/{credentials.dbname}?host={credentials.host}&port={credentials.port}"
    return f"postgresql://{userinfo}@{credentials.host}:{credentials.port}/{credentials.dbname}"


def settings_with_secret_url(credentials: DatabaseCredentials, **overrides: object) -> LedgerSettings:
    return LedgerSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=SecretStr(credentials_url(credentials)),
        **overrides,  # type: ignore[arg-type]
    )


def settings_with_secret_file(credentials: DatabaseCredentials, directory: Path, **overrides: object) -> LedgerSettings:
    import json

    path = directory / "secret.json"
    write_private_file(path, json.dumps(credentials.to_document()))
    return LedgerSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        secret_file=path,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def _isolated_ledger_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build settings explicitly; stray LEDGER_* variables of the developer's shell must not leak in."""
    for name in list(os.environ):
        if name.startswith("LEDGER_") and name != TEST_DATABASE_URL_VARIABLE:
            monkeypatch.delenv(name)


@pytest.fixture
def pg_container(service_database: DatabaseCredentials, tmp_path: Path) -> Iterator[Container]:
    """The container wired to PostgreSQL through a secret file, as production wires it to a secret store."""
    container = build_container(settings_with_secret_file(service_database, tmp_path))
    yield container
    container.shutdown_resources()


@pytest.fixture
def memory_container() -> Iterator[Container]:
    container = build_container(LedgerSettings(_env_file=None, environment="test"))  # type: ignore[call-arg]
    use_in_memory_adapters(container)
    yield container
    container.shutdown_resources()


@pytest.fixture(params=["memory", "postgres"])
def any_container(request: pytest.FixtureRequest) -> Container:
    """The same test on both adapters."""
    name = "memory_container" if request.param == "memory" else "pg_container"
    container: Container = request.getfixturevalue(name)
    return container


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """AWS Secrets Manager through moto's server mode: boto3 speaks real HTTP to it."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
