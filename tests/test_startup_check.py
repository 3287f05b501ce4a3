"""The start-up check through the real CLI: ``ledger check``, ``ledger serve`` and ``ledger migrate`` as subprocesses.

Each failure scenario plants a canary password in the secret (a file, or a secret in moto's AWS Secrets Manager),
runs ``check`` and ``serve`` (for two scenarios also ``serve --workers 2``) a few at a time, and expects each to
exit non-zero within the start-up deadline with exactly one ``startup_check_failed`` event naming the cause, never
listening on its port and never printing the canary. Logs run at DEBUG so that a library that logs secrets at
DEBUG would give itself away.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import SecretStr

from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import write_private_file
from ledger.infrastructure.schema_migrations import head_revision
from tests.conftest import free_port
from tests.postgres_admin import PostgresAdmin

DEADLINE_SECONDS = 3.0
RETRY_INTERVAL_SECONDS = 0.5
# Wall clock: interpreter start and imports take about 1.5 s alone, several times that when other CLIs and test
# runs share a small machine. The tight bound is measured from the process's own first log line instead.
INTERPRETER_ALLOWANCE_SECONDS = 60.0
# From the first log line to the process's exit: the check's own deadline plus engine disposal and exit.
# Generous for a loaded 2-core machine (the suite runs on two workers); a hang would still blow far past it.
AFTER_FIRST_LOG_ALLOWANCE_SECONDS = 4.5
PROCESS_TIMEOUT_SECONDS = 90.0
AWS_REGION = "us-east-1"
UVICORN_STARTED_MARKERS = ("Uvicorn running", "Started server process", "Waiting for application startup")


def new_canary() -> str:
    return f"Canary-Pw-{secrets.token_hex(12)}"


def cli_environment(directory: Path, credential_variables: dict[str, str], **extra: str) -> dict[str, str]:
    """The parent's environment without any LEDGER_* or AWS_* variable, then every setting the test relies on."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LEDGER_", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=AWS_REGION,
        AWS_CONFIG_FILE=str(directory / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(directory / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        LEDGER_ENVIRONMENT="test",
        LEDGER_LOG_FORMAT="json",
        LEDGER_LOG_LEVEL="DEBUG",
        LEDGER_STARTUP_DEADLINE_SECONDS=str(DEADLINE_SECONDS),
        LEDGER_STARTUP_RETRY_INTERVAL_SECONDS=str(RETRY_INTERVAL_SECONDS),
        LEDGER_HOST="127.0.0.1",
        # Should a credential variable go missing, the embedded server would start here, not in the home directory.
        LEDGER_DATA_DIR=str(directory / "embedded-data"),
    )
    env.update(credential_variables)
    env.update(extra)
    return env


@dataclass
class CliRun:
    args: list[str]
    watch_port: int | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    started_wall: float = 0.0
    returncode: int | None = None
    elapsed: float = 0.0
    port_accepted: bool = False
    stdout: str = ""
    stderr: str = ""
    _out: Any = None
    _err: Any = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.output.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                found.append(event)
        return found

    def named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.events() if event.get("event") == name]

    def event_times(self) -> list[float]:
        """Wall-clock times (seconds since the epoch) of the events this process logged, in order."""
        return [
            datetime.fromisoformat(event["timestamp"]).timestamp()
            for event in self.events()
            if isinstance(event.get("timestamp"), str)
        ]

    def seconds_after_first_log(self) -> float:
        """From the first event the process logged (its imports done) to its exit."""
        times = self.event_times()
        return self.started_wall + self.elapsed - min(times) if times else self.elapsed

    def describe(self) -> str:
        return f"`ledger {' '.join(self.args)}` exited {self.returncode} after {self.elapsed:.1f}s:\n{self.output}"


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def run_cli(
    runs: list[CliRun],
    env: dict[str, str],
    *,
    at_once: int = 3,
    timeout: float = PROCESS_TIMEOUT_SECONDS,
) -> list[CliRun]:
    """Runs up to ``at_once`` CLIs side by side (in list order), watches their ports while they live, and
    collects exit codes, elapsed times and output. Whatever is still running at the end is killed."""
    with contextlib.ExitStack() as files:
        waiting = list(runs)
        running: list[CliRun] = []
        try:
            give_up_at = time.monotonic() + timeout
            while (waiting or running) and time.monotonic() < give_up_at:
                while waiting and len(running) < at_once:
                    run = waiting.pop(0)
                    run._out = files.enter_context(tempfile.TemporaryFile())
                    run._err = files.enter_context(tempfile.TemporaryFile())
                    run.started = time.monotonic()
                    run.started_wall = time.time()
                    run.process = subprocess.Popen(
                        [sys.executable, "-m", "ledger", *run.args],
                        env=run.env or env,
                        stdin=subprocess.DEVNULL,
                        stdout=run._out,
                        stderr=run._err,
                    )
                    running.append(run)
                for run in list(running):
                    assert run.process is not None
                    if run.watch_port is not None and _port_accepts(run.watch_port):
                        run.port_accepted = True
                    try:
                        run.returncode = run.process.wait(timeout=0.02)
                    except subprocess.TimeoutExpired:
                        continue
                    run.elapsed = time.monotonic() - run.started
                    running.remove(run)
        finally:
            for run in runs:
                if run.process is not None and run.process.poll() is None:
                    run.process.kill()
                    run.process.wait(timeout=10)
                    run.elapsed = time.monotonic() - run.started
                for handle, attribute in ((run._out, "stdout"), (run._err, "stderr")):
                    if handle is not None:
                        handle.seek(0)
                        setattr(run, attribute, handle.read().decode("utf-8", errors="replace"))
    return runs


def write_secret_file(directory: Path, credentials: DatabaseCredentials) -> dict[str, str]:
    path = directory / f"secret-{secrets.token_hex(4)}.json"
    write_private_file(path, json.dumps(credentials.to_document()))
    return {"LEDGER_SECRET_FILE": str(path)}


def aws_variables(moto_endpoint: str, secret_id: str) -> dict[str, str]:
    return {
        "LEDGER_AWS_SECRET_ID": secret_id,
        "LEDGER_AWS_REGION": AWS_REGION,
        "LEDGER_AWS_ENDPOINT_URL": moto_endpoint,
    }


def put_aws_secret(moto_endpoint: str, credentials: DatabaseCredentials) -> dict[str, str]:
    client = boto3.client(
        "secretsmanager",
        region_name=AWS_REGION,
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    secret_id = f"ledger/test/{secrets.token_hex(6)}"
    client.create_secret(Name=secret_id, SecretString=json.dumps(credentials.to_document()))
    return aws_variables(moto_endpoint, secret_id)


# --- failure scenarios ----------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    cause: str
    transient: bool
    canary: str
    credential_variables: dict[str, str]
    runs: dict[str, CliRun] = field(default_factory=dict)


def build_scenario(name: str, admin: PostgresAdmin, moto_endpoint: str, directory: Path) -> Scenario:
    canary = new_canary()
    if name == "wrong_password_aws":
        # The service fetches the canary from the store (at DEBUG, where botocore would log it) and is refused.
        role, _ = admin.create_role()
        wrong = admin.credentials(role, canary, admin.create_database(owner=role))
        return Scenario(name, "authentication_failed", False, canary, put_aws_secret(moto_endpoint, wrong))
    if name == "host_unreachable":
        closed = DatabaseCredentials(
            host="127.0.0.1", port=free_port(), username="ledger_service", password=SecretStr(canary), dbname="ledger"
        )
        return Scenario(name, "host_unreachable", True, canary, write_secret_file(directory, closed))
    if name == "database_missing":
        role, _ = admin.create_role(password=canary)
        missing = admin.credentials(role, canary, f"no_such_db_{secrets.token_hex(4)}")
        return Scenario(name, "database_missing", False, canary, write_secret_file(directory, missing))
    if name == "schema_behind":
        role, _ = admin.create_role(password=canary)
        fresh = admin.credentials(role, canary, admin.create_database(owner=role))
        return Scenario(name, "schema_behind", False, canary, write_secret_file(directory, fresh))
    if name == "secret_unavailable":
        # A real secret holding the canary exists; the service asks for another id.
        role, _ = admin.create_role(password=canary)
        put_aws_secret(moto_endpoint, admin.credentials(role, canary, admin.create_database(owner=role)))
        variables = aws_variables(moto_endpoint, f"ledger/test/no-such-secret-{secrets.token_hex(4)}")
        return Scenario(name, "secret_unavailable", True, canary, variables)
    raise AssertionError(f"unknown scenario {name}")


SCENARIOS = [
    "wrong_password_aws",
    "host_unreachable",
    "database_missing",
    "schema_behind",
    "secret_unavailable",
]


# ``serve --workers 2`` takes the same path as ``serve`` up to the check; two scenarios keep the suite short.
WORKER_SCENARIOS = ["host_unreachable", "schema_behind"]


@pytest.fixture(scope="module")
def failing_scenarios(
    postgres_admin: PostgresAdmin, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Scenario]:
    """Runs ``check`` and ``serve`` (and for some ``serve --workers 2``) against every failing configuration,
    a few processes at a time; the scenarios that wait out the deadline go first, so they overlap."""
    scenarios: dict[str, Scenario] = {}
    every_run: list[CliRun] = []
    for name in sorted(SCENARIOS, key=lambda name: name not in {"host_unreachable", "secret_unavailable"}):
        directory = tmp_path_factory.mktemp(f"startup-{name}")
        scenario = build_scenario(name, postgres_admin, moto_endpoint, directory)
        env = cli_environment(directory, scenario.credential_variables)
        serve_port = free_port()
        scenario.runs = {
            "check": CliRun(["check"], env=env),
            "serve": CliRun(["serve", "--port", str(serve_port)], watch_port=serve_port, env=env),
        }
        if name in WORKER_SCENARIOS:
            workers_port = free_port()
            scenario.runs["serve_workers"] = CliRun(
                ["serve", "--workers", "2", "--port", str(workers_port)], watch_port=workers_port, env=env
            )
        scenarios[name] = scenario
        every_run.extend(scenario.runs.values())
    run_cli(every_run, {}, timeout=PROCESS_TIMEOUT_SECONDS * 2)
    return scenarios


def assert_failed_once(run: CliRun, scenario: Scenario) -> None:
    assert run.returncode is not None, f"did not exit within {PROCESS_TIMEOUT_SECONDS}s: {run.describe()}"
    assert run.returncode != 0, run.describe()
    assert run.elapsed < DEADLINE_SECONDS + INTERPRETER_ALLOWANCE_SECONDS, run.describe()
    assert run.seconds_after_first_log() <= DEADLINE_SECONDS + AFTER_FIRST_LOG_ALLOWANCE_SECONDS, run.describe()
    assert scenario.canary not in run.stdout
    assert scenario.canary not in run.stderr
    assert "Traceback" not in run.output, run.describe()
    non_json = [line for line in run.stdout.splitlines() if line.strip() and not line.lstrip().startswith("{")]
    assert non_json == [], f"stdout lines that are not JSON: {non_json}"

    failures = run.named("startup_check_failed")
    assert len(failures) == 1, run.describe()
    failure = failures[0]
    assert failure["level"] == "error"
    assert failure["cause"] == scenario.cause, run.describe()
    assert isinstance(failure.get("hint"), str)
    assert failure["hint"].strip()
    errors = [event for event in run.events() if event.get("level") in {"error", "critical", "exception"}]
    assert errors == failures, f"other error events: {errors}"

    retries = run.named("database_not_ready_retrying")
    if scenario.transient:
        # Worth waiting for: retried over the whole deadline, then gave up.
        assert len(retries) >= 2, run.describe()
        times = run.event_times()
        assert max(times) - min(times) >= DEADLINE_SECONDS - 3 * RETRY_INTERVAL_SECONDS, run.describe()
    else:
        assert retries == [], f"a {scenario.cause} cannot fix itself, yet it was retried: {run.describe()}"


def assert_never_listened(run: CliRun) -> None:
    assert not run.port_accepted, f"port {run.watch_port} accepted a connection: {run.describe()}"
    for marker in UVICORN_STARTED_MARKERS:
        assert marker not in run.output, run.describe()
    assert run.watch_port is not None
    assert not _port_accepts(run.watch_port)


@pytest.mark.parametrize("name", SCENARIOS)
def test_check_exits_1_with_one_event_naming_the_cause(name: str, failing_scenarios: dict[str, Scenario]) -> None:
    scenario = failing_scenarios[name]
    run = scenario.runs["check"]
    assert_failed_once(run, scenario)
    assert run.returncode == 1


@pytest.mark.parametrize("name", SCENARIOS)
def test_serve_exits_non_zero_without_listening(name: str, failing_scenarios: dict[str, Scenario]) -> None:
    scenario = failing_scenarios[name]
    run = scenario.runs["serve"]
    assert_failed_once(run, scenario)
    assert_never_listened(run)


@pytest.mark.parametrize("name", WORKER_SCENARIOS)
def test_serve_with_workers_exits_non_zero_without_listening(name: str, failing_scenarios: dict[str, Scenario]) -> None:
    scenario = failing_scenarios[name]
    run = scenario.runs["serve_workers"]
    assert_failed_once(run, scenario)
    assert_never_listened(run)


# --- success ----------------------------------------------------------------------------------------------------

POOL_VARIABLES = {
    "LEDGER_POOL_SIZE": "4",
    "LEDGER_MAX_OVERFLOW": "2",
    "LEDGER_POOL_TIMEOUT_SECONDS": "1.5",
    "LEDGER_POOL_RECYCLE_SECONDS": "600",
    "LEDGER_APPLICATION_NAME": "trust-ledger-startup-test",
}


def assert_passed_once(run: CliRun, password: str, expected_server_version: str) -> dict[str, Any]:
    assert run.returncode == 0, run.describe()
    assert password not in run.output
    assert run.named("startup_check_failed") == []
    passed = run.named("startup_check_passed")
    assert len(passed) == 1, run.describe()
    event = passed[0]
    assert event["level"] == "info"
    assert event["server_version"] == expected_server_version
    assert event["schema_revision"] == head_revision()
    assert event["pool_size"] == 4
    assert event["max_overflow"] == 2
    assert event["pool_timeout_seconds"] == 1.5
    assert event["pool_recycle_seconds"] == 600
    assert event["application_name"] == "trust-ledger-startup-test"
    errors = [e for e in run.events() if e.get("level") in {"error", "critical", "exception"}]
    assert errors == [], run.describe()
    return event


def server_version(admin: PostgresAdmin) -> str:
    return str(admin.execute("SHOW server_version")[0][0])


def test_check_passes_against_a_migrated_database(
    service_database: DatabaseCredentials, postgres_admin: PostgresAdmin, tmp_path: Path
) -> None:
    env = cli_environment(tmp_path, write_secret_file(tmp_path, service_database), **POOL_VARIABLES)
    (run,) = run_cli([CliRun(["check"])], env)
    assert_passed_once(run, service_database.password.get_secret_value(), server_version(postgres_admin))


def test_migrate_brings_a_fresh_database_to_head_then_check_passes(
    postgres_admin: PostgresAdmin, tmp_path: Path
) -> None:
    canary = new_canary()
    role, _ = postgres_admin.create_role(password=canary)
    dbname = postgres_admin.create_database(owner=role)
    env = cli_environment(
        tmp_path, write_secret_file(tmp_path, postgres_admin.credentials(role, canary, dbname)), **POOL_VARIABLES
    )

    (migrated,) = run_cli([CliRun(["migrate"])], env)
    assert migrated.returncode == 0, migrated.describe()
    assert canary not in migrated.output
    (event,) = migrated.named("schema_migrated")
    assert event["revision_before"] is None
    assert event["revision_after"] == head_revision()
    # Seen from outside the service: the database itself records the newest revision.
    assert postgres_admin.execute("SELECT version_num FROM alembic_version", dbname=dbname) == [(head_revision(),)]

    (checked,) = run_cli([CliRun(["check"])], env)
    assert_passed_once(checked, canary, server_version(postgres_admin))
