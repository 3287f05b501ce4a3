"""Rotation under load: the database password is rotated, the way AWS's rotation Lambdas do it, while workers post
transfers over HTTP to the running service, whose connections are recycled so often that new logins happen all
the time. Not one request may fail.

The service runs in this process (the container and the FastAPI app under uvicorn in a thread), configured as in
production from AWS Secrets Manager (moto's server mode), so the driver can read its login counters. The first half
of the run rotates a single user; the second half alternates between a user and its clone.

Used by ``tests/test_rotation_under_load.py`` (a short run on the suite's PostgreSQL and moto) and by
``scripts/rotation_under_load.py`` (a long run on its own embedded PostgreSQL and moto server).
"""

from __future__ import annotations

import enum
import logging
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import httpx
import psycopg2
import uvicorn
from dependency_injector import providers
from pydantic import SecretStr

from ledger.api.app import create_app
from ledger.container import Container, build_container
from ledger.domain.api_keys import ApiKeyRole
from ledger.domain.model import DEFAULT_TENANT_ID
from ledger.infrastructure.connection_failures import ConnectionFailureCause, classify_connection_failure
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.database_engine import CredentialedConnector
from ledger.infrastructure.embedded_postgres import EmbeddedPostgres
from ledger.infrastructure.secret_providers import AwsSecretsManagerProvider
from ledger.infrastructure.settings import LedgerSettings
from tests.postgres_admin import PostgresAdmin
from tests.secret_canaries import canaries
from tests.secrets_manager_rotation import (
    REGION,
    GetSecretValueCalls,
    create_secret,
    new_password,
    promote,
    put_pending,
    read_stage,
    secrets_client,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

CLONE_SUFFIX = "_clone"
# A refusal by a ledger rule is an answer, not a failure; the transfers are designed so that none happens.
RULE_REFUSAL_CODES = frozenset({"insufficient_funds"})
MAX_FAILURE_SAMPLES = 20
HTTP_TIMEOUT_SECONDS = 30.0


class Strategy(enum.StrEnum):
    SINGLE_USER = "single user"
    ALTERNATING_USERS = "alternating users"


@dataclass(frozen=True)
class LoadPlan:
    seconds: float = 60.0
    interval_seconds: float = 10.0
    workers: int = 4
    # Short enough that the cache is re-read all the time, long enough that logins refused with a fresh cache happen.
    secret_cache_ttl_seconds: float = 2.0
    pool_size: int = 2
    max_overflow: int = 2
    pool_recycle_seconds: int = 1
    # Time between setSecret and finishSecret, as a share of the interval: the old password is refused while
    # AWSCURRENT still holds it (single user), or the next user's password is already changed (alternating).
    set_to_finish_share: float = 0.25
    progress_every_seconds: float = 5.0

    def schedule(self) -> list[tuple[float, Strategy]]:
        """When each rotation starts (seconds into the run), mid-interval: single user in the first half of the
        run, alternating users in the second."""
        count = int(self.seconds // self.interval_seconds)
        moments = [(number + 0.5) * self.interval_seconds for number in range(count)]
        return [
            (moment, Strategy.SINGLE_USER if moment < self.seconds / 2 else Strategy.ALTERNATING_USERS)
            for moment in moments
        ]


@dataclass(frozen=True)
class RotationRecord:
    strategy: Strategy
    replaced: DatabaseCredentials  # what AWSCURRENT held before
    installed: DatabaseCredentials  # what it holds after
    started_at: float  # seconds into the run
    seconds: float


def alternate_username(username: str) -> str:
    return username.removesuffix(CLONE_SUFFIX) if username.endswith(CLONE_SUFFIX) else username + CLONE_SUFFIX


class LambdaStyleRotator:
    """The four steps of an AWS rotation Lambda, against moto and the real PostgreSQL (as its superuser)."""

    def __init__(
        self,
        client: SecretsManagerClient,
        secret_id: str,
        admin: PostgresAdmin,
        set_to_finish_seconds: float,
    ) -> None:
        self._client = client
        self._secret_id = secret_id
        self._admin = admin
        self._set_to_finish_seconds = set_to_finish_seconds

    def rotate(self, strategy: Strategy, started_at: float = 0.0) -> RotationRecord:
        began = time.monotonic()
        current = read_stage(self._client, self._secret_id, "AWSCURRENT")
        # createSecret: the new version, labelled AWSPENDING only.
        username = current.username if strategy is Strategy.SINGLE_USER else alternate_username(current.username)
        password = new_password()
        canaries.register(password)
        pending = replace(current, username=username, password=SecretStr(password), version_id=None)
        version = put_pending(self._client, self._secret_id, pending)
        # setSecret: the database takes the new password. For a single user the old one is refused from now on,
        # while AWSCURRENT still holds it.
        self._admin.set_password(username, password)
        time.sleep(self._set_to_finish_seconds)
        # testSecret: log in with the pending version.
        connection = psycopg2.connect(**pending.connect_parameters(), connect_timeout=5)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            connection.close()
        # finishSecret: AWSCURRENT moves onto the new version, AWSPENDING comes off it.
        promote(self._client, self._secret_id, version)
        return RotationRecord(strategy, current, pending, started_at, time.monotonic() - began)


def login_refused(credentials: DatabaseCredentials) -> bool:
    """True when PostgreSQL refuses these credentials as an authentication failure."""
    try:
        psycopg2.connect(**credentials.connect_parameters(), connect_timeout=5).close()
    except psycopg2.OperationalError as error:
        return classify_connection_failure(error) is ConnectionFailureCause.AUTHENTICATION_FAILED
    return False


class RequestTally:
    """What the workers saw, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.successes = 0
        self.rule_refusals = 0
        self.failures = 0
        self.failure_samples: list[str] = []
        self.latencies_ms: list[float] = []
        self.posted_by_account: dict[str, int] = {}

    def success(self, latency_ms: float, account_id: str, amount: int) -> None:
        with self._lock:
            self.requests += 1
            self.successes += 1
            self.latencies_ms.append(latency_ms)
            self.posted_by_account[account_id] = self.posted_by_account.get(account_id, 0) + amount

    def refusal(self, latency_ms: float) -> None:
        with self._lock:
            self.requests += 1
            self.rule_refusals += 1
            self.latencies_ms.append(latency_ms)

    def failure(self, latency_ms: float, what: str) -> None:
        with self._lock:
            self.requests += 1
            self.failures += 1
            self.latencies_ms.append(latency_ms)
            if len(self.failure_samples) < MAX_FAILURE_SAMPLES:
                self.failure_samples.append(what)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.requests, self.failures


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class LoadReport:
    plan: LoadPlan
    rotations: list[RotationRecord]
    rotation_errors: list[str]
    requests: int
    failures: int
    failure_samples: list[str]
    rule_refusals: int
    connections_opened: int
    credential_refreshes: int
    get_secret_value_calls: int
    latencies_ms: list[float]
    balance_mismatches: list[str]
    old_single_user_passwords_refused: int
    final_login_works: bool
    pool_capacity: int
    seconds: float

    def rotations_done(self, strategy: Strategy) -> int:
        return sum(1 for record in self.rotations if record.strategy is strategy)

    @property
    def passed(self) -> bool:
        single = self.rotations_done(Strategy.SINGLE_USER)
        return (
            self.failures == 0
            and not self.rotation_errors
            and not self.balance_mismatches
            and self.old_single_user_passwords_refused == single
            and self.final_login_works
            and len(self.rotations) == len(self.plan.schedule())
        )

    def table(self) -> str:
        single = self.rotations_done(Strategy.SINGLE_USER)
        rows = [
            ("rotations, single user", str(single)),
            ("rotations, alternating users", str(self.rotations_done(Strategy.ALTERNATING_USERS))),
            ("rotation errors", str(len(self.rotation_errors))),
            ("requests (transfers posted)", str(self.requests)),
            ("failed requests", str(self.failures)),
            ("rule refusals (not failures)", str(self.rule_refusals)),
            ("new logins (connections_opened)", f"{self.connections_opened} (pool holds {self.pool_capacity})"),
            ("credential refreshes", str(self.credential_refreshes)),
            ("GetSecretValue calls", str(self.get_secret_value_calls)),
            ("latency p50", f"{percentile(self.latencies_ms, 0.50):.1f} ms"),
            ("latency p99", f"{percentile(self.latencies_ms, 0.99):.1f} ms"),
            ("latency max", f"{max(self.latencies_ms, default=0.0):.1f} ms"),
            ("balances equal the transfers answered 201", "yes" if not self.balance_mismatches else "NO"),
            ("old single-user passwords refused", f"{self.old_single_user_passwords_refused}/{single}"),
            ("AWSCURRENT logs in at the end", "yes" if self.final_login_works else "NO"),
            ("wall clock", f"{self.seconds:.1f} s"),
            ("result", "PASS" if self.passed else "FAIL"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines.extend(f"failure: {sample}" for sample in self.failure_samples)
        lines.extend(f"rotation error: {error}" for error in self.rotation_errors)
        lines.extend(f"balance mismatch: {mismatch}" for mismatch in self.balance_mismatches)
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def service_secrets_client(endpoint_url: str) -> SecretsManagerClient:
    """A client configured like the one the container builds for the service (timeouts, retries)."""
    client: SecretsManagerClient = boto3.session.Session().client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=endpoint_url,
        config=botocore.config.Config(
            connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}
        ),
    )
    return client


class InProcessService:
    """The container and the FastAPI app served by uvicorn in a thread. The secret provider is the production
    class on a client this driver counts GetSecretValue calls of."""

    def __init__(self, settings: LedgerSettings, endpoint_url: str) -> None:
        assert settings.aws_secret_id is not None
        client = service_secrets_client(endpoint_url)
        self.secret_reads = GetSecretValueCalls(client)
        self.container: Container = build_container(settings)
        self.container.secret_provider.override(
            providers.Object(
                AwsSecretsManagerProvider(settings.aws_secret_id, client, ttl_seconds=settings.secret_cache_ttl_seconds)
            )
        )
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(self.container),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="rotation-load-uvicorn", daemon=True)

    @property
    def connector(self) -> CredentialedConnector:
        connector: CredentialedConnector = self.container.database_connector()
        return connector

    def __enter__(self) -> InProcessService:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the service did not start (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start within 60 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def api_key(self, role: ApiKeyRole, name: str) -> str:
        _, token = self.container.api_key_service().create_key(
            DEFAULT_TENANT_ID, role=role, name=name, created_by="rotation-under-load"
        )
        return str(token)


@dataclass(frozen=True)
class WorkerBook:
    token: str
    cash_account_id: str
    income_account_id: str


def _expect_created(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 201:
        raise RuntimeError(f"set-up request refused: {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def open_books(service: InProcessService, workers: int) -> tuple[str, list[WorkerBook]]:
    """A general ledger with a cash and an income account per worker, neither refusing overdrafts: a transfer
    from income to cash never runs out of funds. Each worker has its own write key."""
    admin_token = service.api_key(ApiKeyRole.ADMIN, "rotation-under-load set-up")
    headers = {"Authorization": f"Bearer {admin_token}"}
    books = []
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS) as http:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            return _expect_created(http.post(path, json=body, headers={"Idempotency-Key": f"setup-{uuid.uuid4()}"}))

        ledger_id = str(
            post("/v1/ledgers", {"name": "Rotation under load", "currency": "USD", "kind": "general"})["id"]
        )
        accounts = f"/v1/ledgers/{ledger_id}/accounts"
        for number in range(workers):
            cash = post(
                accounts, {"code": f"cash-{number}", "name": "Cash", "kind": "asset", "prevent_overdraft": False}
            )
            income = post(
                accounts, {"code": f"income-{number}", "name": "Fees", "kind": "income", "prevent_overdraft": False}
            )
            token = service.api_key(ApiKeyRole.WRITE, f"rotation-under-load worker {number}")
            books.append(WorkerBook(token, str(cash["id"]), str(income["id"])))
    return ledger_id, books


def post_transfers(base_url: str, ledger_id: str, book: WorkerBook, tally: RequestTally, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {book.token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS) as http:
        while not stop.is_set():
            amount = random.randint(1, 99_999)
            body = {
                "ledger_id": ledger_id,
                "postings": [
                    {"account_id": book.cash_account_id, "side": "debit", "amount": amount},
                    {"account_id": book.income_account_id, "side": "credit", "amount": amount},
                ],
                "description": "fee received during a rotation",
            }
            started = time.perf_counter()
            try:
                response = http.post("/v1/transfers", json=body, headers={"Idempotency-Key": f"load-{uuid.uuid4()}"})
            except httpx.HTTPError as error:
                tally.failure((time.perf_counter() - started) * 1000, f"{type(error).__name__}: {error}")
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            if response.status_code == 201:
                tally.success(latency_ms, book.cash_account_id, amount)
                continue
            code = _problem_code(response)
            if response.status_code == 422 and code in RULE_REFUSAL_CODES:
                tally.refusal(latency_ms)
            else:
                tally.failure(latency_ms, f"HTTP {response.status_code} {code}: {response.text[:300]}")


def _problem_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "-"
    return str(body.get("code", "-")) if isinstance(body, dict) else "-"


def _balance_mismatches(service: InProcessService, books: list[WorkerBook], tally: RequestTally) -> list[str]:
    mismatches = []
    with httpx.Client(base_url=service.base_url, timeout=HTTP_TIMEOUT_SECONDS) as http:
        for book in books:
            response = http.get(
                f"/v1/accounts/{book.cash_account_id}", headers={"Authorization": f"Bearer {book.token}"}
            )
            if response.status_code != 200:
                mismatches.append(f"account {book.cash_account_id}: HTTP {response.status_code}")
                continue
            posted = int(response.json()["balances"]["posted"])
            expected = tally.posted_by_account.get(book.cash_account_id, 0)
            if posted != expected:
                mismatches.append(f"account {book.cash_account_id}: posted {posted}, 201 answers add up to {expected}")
    return mismatches


def prepare_roles(admin: PostgresAdmin) -> DatabaseCredentials:
    """The service's database and login role, migrated to head, and the role's clone for alternating users
    (a member of the role, as AWS's multi-user Lambda sets it up: ``GRANT <user> TO <user>_clone``)."""
    credentials = admin.create_migrated_database()
    clone = alternate_username(credentials.username)
    admin.create_role(name=clone)
    admin.grant_role(credentials.username, to=clone)
    return credentials


def service_settings(plan: LoadPlan, secret_id: str, endpoint_url: str) -> LedgerSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "aws_secret_id": secret_id,
        "aws_region": REGION,
        "aws_endpoint_url": endpoint_url,
        "secret_cache_ttl_seconds": plan.secret_cache_ttl_seconds,
        "pool_size": plan.pool_size,
        "max_overflow": plan.max_overflow,
        "pool_recycle_seconds": plan.pool_recycle_seconds,
        "pool_timeout_seconds": 10,
        # A load run, not a rate-limit test: let every worker go as fast as it can.
        "rate_limit_per_second": 100_000,
        "rate_limit_burst": 100_000,
    }
    return LedgerSettings(**values)


@contextmanager
def quiet_http_client_logs() -> Iterator[None]:
    """The workers' HTTP client logs every request (and httpcore every step of it at DEBUG): thousands of lines
    that say nothing here. Raised to WARNING for the run, restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_rotation_under_load(
    admin: PostgresAdmin,
    endpoint_url: str,
    plan: LoadPlan,
    on_progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Sets up a database, a secret and the service, runs the plan and reports. Raises only if the set-up fails;
    what goes wrong during the run is in the report."""
    with quiet_http_client_logs():
        return _run(admin, endpoint_url, plan, on_progress)


def _run(
    admin: PostgresAdmin, endpoint_url: str, plan: LoadPlan, on_progress: Callable[[str], None] | None
) -> LoadReport:
    credentials = prepare_roles(admin)
    rotator_client = secrets_client(endpoint_url)
    secret_id = create_secret(rotator_client, credentials)
    rotator = LambdaStyleRotator(
        rotator_client, secret_id, admin, set_to_finish_seconds=plan.interval_seconds * plan.set_to_finish_share
    )
    settings = service_settings(plan, secret_id, endpoint_url)
    tally = RequestTally()
    rotations: list[RotationRecord] = []
    rotation_errors: list[str] = []
    stop = threading.Event()

    with InProcessService(settings, endpoint_url) as service:
        ledger_id, books = open_books(service, plan.workers)
        connector = service.connector
        opened_before, refreshes_before = connector.connections_opened, connector.credential_refreshes
        reads_before = service.secret_reads.count
        started = time.monotonic()

        def rotate_on_schedule() -> None:
            for moment, strategy in plan.schedule():
                if stop.wait(max(0.0, started + moment - time.monotonic())):
                    return
                try:
                    rotations.append(rotator.rotate(strategy, started_at=time.monotonic() - started))
                except Exception as error:
                    rotation_errors.append(f"{strategy} at {moment:.1f}s: {type(error).__name__}: {error}")

        workers = [
            threading.Thread(
                target=post_transfers, args=(service.base_url, ledger_id, book, tally, stop), name=f"load-{number}"
            )
            for number, book in enumerate(books)
        ]
        rotation_thread = threading.Thread(target=rotate_on_schedule, name="rotator")
        for thread in [*workers, rotation_thread]:
            thread.start()
        try:
            next_progress = plan.progress_every_seconds
            while (elapsed := time.monotonic() - started) < plan.seconds:
                time.sleep(max(0.0, min(plan.seconds, next_progress) - elapsed))
                if on_progress is not None and time.monotonic() - started >= next_progress:
                    requests, failures = tally.snapshot()
                    on_progress(
                        f"{time.monotonic() - started:5.1f}s  rotations {len(rotations):2d}  requests {requests:6d}  "
                        f"failures {failures}  new logins {connector.connections_opened - opened_before:5d}  "
                        f"refreshes {connector.credential_refreshes - refreshes_before:4d}  "
                        f"GetSecretValue {service.secret_reads.count - reads_before:5d}"
                    )
                    next_progress += plan.progress_every_seconds
        finally:
            stop.set()
            rotation_thread.join(timeout=60)
            for thread in workers:
                thread.join(timeout=HTTP_TIMEOUT_SECONDS + 5)
        seconds = time.monotonic() - started
        connections_opened = connector.connections_opened - opened_before
        credential_refreshes = connector.credential_refreshes - refreshes_before
        secret_reads = service.secret_reads.count - reads_before
        mismatches = _balance_mismatches(service, books, tally)

    old_refused = sum(
        1 for record in rotations if record.strategy is Strategy.SINGLE_USER and login_refused(record.replaced)
    )
    final = read_stage(rotator_client, secret_id, "AWSCURRENT")
    return LoadReport(
        plan=plan,
        rotations=rotations,
        rotation_errors=rotation_errors,
        requests=tally.requests,
        failures=tally.failures,
        failure_samples=tally.failure_samples,
        rule_refusals=tally.rule_refusals,
        connections_opened=connections_opened,
        credential_refreshes=credential_refreshes,
        get_secret_value_calls=secret_reads,
        latencies_ms=tally.latencies_ms,
        balance_mismatches=mismatches,
        old_single_user_passwords_refused=old_refused,
        final_login_works=not login_refused(final),
        pool_capacity=plan.pool_size + plan.max_overflow,
        seconds=seconds,
    )


@dataclass(frozen=True)
class StandaloneInfrastructure:
    admin: PostgresAdmin
    endpoint_url: str


@contextmanager
def standalone_infrastructure() -> Iterator[StandaloneInfrastructure]:
    """For the script: a moto server (dummy AWS credentials) and an embedded PostgreSQL in a temporary directory,
    both stopped on the way out."""
    from moto.server import ThreadedMotoServer

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per Secrets Manager call otherwise
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-rotation-load-") as directory:
            embedded = EmbeddedPostgres(Path(directory))
            info = embedded.start()
            try:
                superuser = DatabaseCredentials(
                    host=str(info.socket_dir),
                    port=info.port,
                    username="postgres",
                    password=SecretStr(""),
                    dbname="postgres",
                )
                yield StandaloneInfrastructure(PostgresAdmin(superuser), f"http://127.0.0.1:{port}")
            finally:
                embedded.stop()
    finally:
        moto.stop()
