"""A canary password must never surface: not in a log line (even at DEBUG), a response, a header or an exception.

The canary is the service role's real password in PostgreSQL, delivered through AWS Secrets Manager (moto's server
mode). Everything the service writes is captured from the real output stream (structlog's ``capture_logs`` would
bypass the redaction processor, so it proves nothing here): start-up, ordinary requests, a refused login, a failed
readiness probe, and the CLI's ``migrate`` and ``check`` run as subprocesses at DEBUG.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import httpx
import pytest
import structlog

from ledger.api.app import create_app, report_startup_check
from ledger.container import build_container
from ledger.domain.errors import StartupCheckFailed
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.settings import LedgerSettings
from ledger.infrastructure.structured_logging import configure_logging
from tests.conftest import free_port
from tests.http_clients import KeyedTestClient
from tests.postgres_admin import PostgresAdmin

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_SECONDS = 90
REGION = "us-east-1"

_TOUCHED_LOGGERS = (
    "boto3",
    "botocore",
    "s3transfer",
    "urllib3",
    "sqlalchemy",
    "sqlalchemy.engine",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "alembic",
)


@dataclass(frozen=True)
class CanaryWorld:
    """A migrated database whose role's password is the canary, and secrets in moto that deliver it."""

    canary: str
    wrong_canary: str
    credentials: DatabaseCredentials
    secret_id: str
    wrong_secret_id: str
    unreachable_secret_id: str
    endpoint_url: str
    migrate_output: str

    @property
    def canaries(self) -> tuple[str, ...]:
        # The random parts too: a partly masked password ("CanaryPw-***" + the rest) is still a leak.
        return (self.canary, self.canary.split("-", 1)[1], self.wrong_canary, self.wrong_canary.split("-", 2)[2])


def _secrets_client(endpoint_url: str) -> SecretsManagerClient:
    client: SecretsManagerClient = boto3.session.Session().client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=endpoint_url,
        config=botocore.config.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2}),
    )
    return client


def _cli_environment(world_endpoint: str, secret_id: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LEDGER_")}
    environment.update(
        {
            "LEDGER_AWS_SECRET_ID": secret_id,
            "LEDGER_AWS_REGION": REGION,
            "LEDGER_AWS_ENDPOINT_URL": world_endpoint,
            "LEDGER_LOG_LEVEL": "DEBUG",
            "LEDGER_LOG_FORMAT": "json",
            "LEDGER_ENVIRONMENT": "development",  # SQL parameters shown: the most talkative setting
            "LEDGER_STARTUP_DEADLINE_SECONDS": "3",
            "LEDGER_STARTUP_RETRY_INTERVAL_SECONDS": "0.25",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


def _run_cli(endpoint_url: str, secret_id: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger", *arguments],
        cwd=PROJECT_ROOT,
        env=_cli_environment(endpoint_url, secret_id),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.fixture(scope="module")
def canary_world(postgres_admin: PostgresAdmin, moto_endpoint: str) -> CanaryWorld:
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("the test server trusts every login: a password canary would prove nothing")
    token = secrets.token_hex(12)
    canary = f"CanaryPw-{token}"
    wrong_canary = f"CanaryPw-wrong-{secrets.token_hex(12)}"
    role, _ = postgres_admin.create_role(password=canary)
    dbname = postgres_admin.create_database(owner=role)
    credentials = postgres_admin.credentials(role, canary, dbname)

    client = _secrets_client(moto_endpoint)
    prefix = f"ledger/canary/{uuid.uuid4().hex}"
    document = credentials.to_document()
    client.create_secret(Name=f"{prefix}/good", SecretString=json.dumps(document))
    client.create_secret(Name=f"{prefix}/wrong", SecretString=json.dumps({**document, "password": wrong_canary}))
    unreachable = {**document, "host": "127.0.0.1", "port": free_port()}
    client.create_secret(Name=f"{prefix}/unreachable", SecretString=json.dumps(unreachable))

    # The migration itself runs with the canary, at DEBUG, through the real CLI.
    migrated = _run_cli(moto_endpoint, f"{prefix}/good", "migrate")
    assert migrated.returncode == 0, f"ledger migrate failed:\n{_scrub(migrated.stdout + migrated.stderr, canary)}"
    return CanaryWorld(
        canary=canary,
        wrong_canary=wrong_canary,
        credentials=credentials,
        secret_id=f"{prefix}/good",
        wrong_secret_id=f"{prefix}/wrong",
        unreachable_secret_id=f"{prefix}/unreachable",
        endpoint_url=moto_endpoint,
        migrate_output=migrated.stdout + migrated.stderr,
    )


def _scrub(text: str, *canaries: str) -> str:
    """Failure messages of this file must not print the canary either."""
    for canary in canaries:
        text = text.replace(canary, "<CANARY>")
    return text


def _assert_no_canary(world: CanaryWorld, where: str, texts: list[str]) -> None:
    for number, text in enumerate(texts):
        for canary in world.canaries:
            if canary in text:
                position = text.index(canary)
                context = _scrub(text[max(0, position - 200) : position + 200], *world.canaries)
                pytest.fail(f"the canary leaked in {where} (item {number}): ...{context}...")


@pytest.fixture
def captured_logging() -> Iterator[io.StringIO]:
    """DEBUG logging through the product's pipeline into a buffer; the previous logging state comes back after."""
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    root_level = root.level
    saved = {
        name: (lg.level, lg.propagate, lg.disabled, list(lg.handlers))
        for name in _TOUCHED_LOGGERS
        for lg in (logging.getLogger(name),)
    }
    structlog.contextvars.clear_contextvars()
    stream = io.StringIO()
    configure_logging(level="DEBUG", log_format="json", stream=stream)
    try:
        yield stream
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        for handler in list(root.handlers):
            if handler not in root_handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(root_level)
        for name, (level, propagate, disabled, handlers) in saved.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = disabled
            lg.handlers[:] = handlers


def _settings(world: CanaryWorld, secret_id: str, **overrides: Any) -> LedgerSettings:
    return LedgerSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="development",
        aws_secret_id=secret_id,
        aws_region=REGION,
        aws_endpoint_url=world.endpoint_url,
        log_level="DEBUG",
        startup_deadline_seconds=overrides.pop("startup_deadline_seconds", 3),
        startup_retry_interval_seconds=0.25,
        **overrides,
    )


def _response_texts(response: httpx.Response) -> list[str]:
    return [response.text, json.dumps(dict(response.headers)), str(response.url)]


def _exception_texts(error: BaseException) -> list[str]:
    """The exception and every exception chained to it, hidden (``from None``) or not."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.extend([str(current), repr(current), repr(getattr(current, "__dict__", {}))])
        current = current.__cause__ or current.__context__
    return texts


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    records = []
    for line in stream.getvalue().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def test_the_service_never_leaks_the_canary_at_debug(canary_world: CanaryWorld, captured_logging: io.StringIO) -> None:
    world = canary_world
    responses: list[httpx.Response] = []
    exceptions: list[BaseException] = []

    # Start-up (the lifespan's check), then ordinary requests, successes and refusals alike.
    container = build_container(_settings(world, world.secret_id))
    try:
        with KeyedTestClient(create_app(container), raise_server_exceptions=False) as client:
            ledger = client.post("/v1/ledgers", json={"name": "Canary trust", "currency": "USD"})
            assert ledger.status_code == 201, ledger.text
            ledger_id = ledger.json()["id"]
            responses.append(ledger)
            for code in ("bank", "client-1", "client-2"):
                kind = "bank" if code == "bank" else "client"
                created = client.post(
                    f"/v1/ledgers/{ledger_id}/accounts", json={"code": code, "name": code.title(), "kind": kind}
                )
                assert created.status_code == 201, created.text
                responses.append(created)
            responses += [
                client.get("/v1/ledgers", params={"limit": 2}),
                client.get(f"/v1/ledgers/{ledger_id}/accounts", params={"limit": 2}),
                client.get(f"/v1/accounts/{responses[-1].json()['id']}"),
                client.get(f"/v1/accounts/{uuid.uuid4()}"),
                client.post(f"/v1/ledgers/{ledger_id}/accounts", json={"code": "bank", "name": "B", "kind": "bank"}),
                client.post("/v1/ledgers", json={"name": "x", "currency": "USD", "colour": "blue"}),
                client.get("/healthz"),
                client.get("/readyz"),
            ]
            assert [response.status_code for response in responses[-8:]] == [200, 200, 200, 404, 409, 422, 200, 200]
    finally:
        container.shutdown_resources()

    # A refused login: the secret holds a wrong password (itself a canary).
    refused = build_container(_settings(world, world.wrong_secret_id))
    try:
        with pytest.raises(StartupCheckFailed) as login_failed:
            report_startup_check(refused.store_health())
        assert login_failed.value.cause == "authentication_failed"
        exceptions.append(login_failed.value)
        assert refused.database_connector().credential_refreshes >= 1
    finally:
        refused.shutdown_resources()

    # A readiness failure: the secret's host does not answer; the lifespan refuses to start, the probes say 503.
    unreachable = build_container(_settings(world, world.unreachable_secret_id, startup_deadline_seconds=0.6))
    try:
        app = create_app(unreachable)
        with pytest.raises(StartupCheckFailed) as start_failed, KeyedTestClient(app, raise_server_exceptions=False):
            pass
        assert start_failed.value.cause == "host_unreachable"
        exceptions.append(start_failed.value)
        client = KeyedTestClient(app, raise_server_exceptions=False)
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503, not_ready.text
        unavailable = client.get("/v1/ledgers")
        assert unavailable.status_code == 503, unavailable.text
        responses += [not_ready, unavailable]
    finally:
        unreachable.shutdown_resources()

    log_text = captured_logging.getvalue()
    records = _records(captured_logging)
    events = {record.get("event") for record in records}
    # The capture saw what it had to see, at DEBUG.
    assert {"startup_check_passed", "startup_check_failed", "http_request"} <= events, sorted(map(str, events))
    assert "database_login_refused_refreshing_credentials" in events
    assert any(record.get("level") == "debug" for record in records), "nothing was logged at DEBUG"
    assert world.credentials.username in log_text  # the role is named; only its password is secret

    _assert_no_canary(world, "the log output", log_text.splitlines())
    _assert_no_canary(world, "a response", [text for response in responses for text in _response_texts(response)])
    _assert_no_canary(world, "an exception", [text for error in exceptions for text in _exception_texts(error)])


def test_the_cli_never_leaks_the_canary_at_debug(canary_world: CanaryWorld) -> None:
    world = canary_world
    _assert_no_canary(world, "`ledger migrate` output", [world.migrate_output])
    assert "schema_migrated" in world.migrate_output

    passed = _run_cli(world.endpoint_url, world.secret_id, "check")
    output = passed.stdout + passed.stderr
    _assert_no_canary(world, "`ledger check` output", [output])
    assert passed.returncode == 0, _scrub(output, *world.canaries)
    assert "startup_check_passed" in passed.stdout
    # At DEBUG the SQL statements are logged (result rows never are): proof the run was verbose.
    assert '"logger": "sqlalchemy.engine' in passed.stdout, "the CLI did not log at DEBUG"

    refused = _run_cli(world.endpoint_url, world.wrong_secret_id, "check")
    output = refused.stdout + refused.stderr
    _assert_no_canary(world, "`ledger check` output with a wrong password", [output])
    assert refused.returncode == 1, _scrub(output, *world.canaries)
    assert "authentication_failed" in refused.stdout
