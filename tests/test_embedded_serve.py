"""The embedded default through the real CLI: ``ledger serve`` with no database configured.

It starts a private PostgreSQL in LEDGER_DATA_DIR, writes a 0600 secret file, migrates and serves; Ctrl-C stops the
server and its PostgreSQL; a second start on the same data directory finds the same data and the same secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg2
import pytest

from tests.conftest import free_port
from tests.secret_canaries import canaries

pytestmark = pytest.mark.slow

READY_WITHIN_SECONDS = 20.0
STOPPED_WITHIN_SECONDS = 15.0
POSTGRES_GONE_WITHIN_SECONDS = 5.0


def embedded_environment(data_dir: Path) -> dict[str, str]:
    """The parent's environment without any credential source: no LEDGER_* and no AWS_* variable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LEDGER_", "AWS_"))}
    env.update(
        LEDGER_ENVIRONMENT="test",
        LEDGER_DATA_DIR=str(data_dir),
        LEDGER_LOG_FORMAT="json",
        LEDGER_LOG_LEVEL="INFO",
        LEDGER_HOST="127.0.0.1",
        LEDGER_STARTUP_DEADLINE_SECONDS="5",
        LEDGER_STARTUP_RETRY_INTERVAL_SECONDS="0.5",
    )
    return env


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """Processes whose command line names this data directory (the embedded postmaster and its children)."""
    marker = str(data_dir)
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in process.info["cmdline"] or ()):
                found.append(process)
    return found


def wait_until_no_postgres(data_dir: Path, seconds: float) -> list[psutil.Process]:
    give_up_at = time.monotonic() + seconds
    left = postgres_processes(data_dir)
    while left and time.monotonic() < give_up_at:
        psutil.wait_procs(left, timeout=0.2)
        left = postgres_processes(data_dir)
    return left


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    started: float
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        # Read through a separate handle: seeking the child's own stdout would move where it writes.
        return self.log_path.read_bytes().decode("utf-8", errors="replace")

    def wait_ready(self, client: httpx.Client) -> float:
        """Seconds from process start to the first 200 from /readyz."""
        give_up_at = self.started + READY_WITHIN_SECONDS
        last: str = "no answer"
        while time.monotonic() < give_up_at:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited {self.process.returncode} before it was ready:\n{self.output()}")
            try:
                response = client.get(f"{self.base_url}/readyz", timeout=1.0)
            except httpx.TransportError as error:
                last = type(error).__name__
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.1)
                continue
            if response.status_code == 200:
                return time.monotonic() - self.started
            last = f"{response.status_code} {response.text}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.1)
        pytest.fail(f"/readyz not 200 within {READY_WITHIN_SECONDS}s (last: {last}):\n{self.output()}")

    def interrupt(self) -> float:
        """Ctrl-C; returns the seconds until the process exited."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=STOPPED_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running {STOPPED_WITHIN_SECONDS}s after SIGINT:\n{self.output()}")
        return time.monotonic() - sent


@contextlib.contextmanager
def embedded_server(data_dir: Path, log_path: Path) -> Iterator[ServerProcess]:
    """``ledger serve`` on a free port; whatever happens, the server and its PostgreSQL are gone afterwards."""
    with log_path.open("ab") as output_file:
        port = free_port()
        server = ServerProcess(
            process=subprocess.Popen(
                [sys.executable, "-m", "ledger", "serve", "--port", str(port)],
                env=embedded_environment(data_dir),
                stdin=subprocess.DEVNULL,
                stdout=output_file,
                stderr=subprocess.STDOUT,
            ),
            port=port,
            started=time.monotonic(),
            log_path=log_path,
        )
        try:
            yield server
        finally:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait(timeout=10)
            # Only the PostgreSQL this test started: its command line names this test's data directory.
            for leftover in postgres_processes(data_dir):
                with contextlib.suppress(psutil.Error):
                    leftover.kill()
            psutil.wait_procs(postgres_processes(data_dir), timeout=5)


def json_events(output: str) -> list[dict[str, Any]]:
    events = []
    for line in output.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def assert_stopped_cleanly(server: ServerProcess, data_dir: Path, *passwords: str) -> None:
    seconds = server.interrupt()
    assert seconds <= STOPPED_WITHIN_SECONDS
    left = wait_until_no_postgres(data_dir, POSTGRES_GONE_WITHIN_SECONDS)
    assert left == [], f"postgres still running for {data_dir}: {[p.pid for p in left]}\n{server.output()}"
    output = server.output()
    for password in passwords:
        assert password not in output
    assert "Traceback" not in output, output
    events = [event.get("event") for event in json_events(output)]
    assert "embedded_postgres_stopped" in events, output


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's tmp_path: as root the wheel runs PostgreSQL as the `pgserver` user, which must traverse the
    directory's parents, and pytest keeps its own base directory private (0700) and may tighten it again."""
    directory = Path(tempfile.mkdtemp(prefix="ledger-embedded-serve-test-")).resolve()
    directory.chmod(0o755)
    data = directory / "ledger-data"
    data.mkdir()
    yield data
    shutil.rmtree(directory, ignore_errors=True)


def read_secret(path: Path) -> dict[str, Any]:
    """An embedded role's secret document; its password becomes a canary of the suite."""
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    canaries.register(document["password"])
    return document


@contextlib.contextmanager
def connected_as(secret: dict[str, Any]) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor logged in with an embedded role's secret; whatever it did is rolled back."""
    connection = psycopg2.connect(
        host=secret["host"],
        port=secret["port"],
        user=secret["username"],
        password=secret["password"],
        dbname=secret["dbname"],
    )
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.rollback()
        connection.close()


def refused_sqlstate(secret: dict[str, Any], statement: str) -> str | None:
    """The SQLSTATE ``statement`` fails with when run with ``secret``, None when it passes."""
    try:
        with connected_as(secret) as cursor:
            cursor.execute(statement)
    except psycopg2.Error as error:
        return str(error.pgcode)
    return None


def rows_as(secret: dict[str, Any], statement: str) -> list[tuple[Any, ...]]:
    with connected_as(secret) as cursor:
        cursor.execute(statement)
        return list(cursor.fetchall())


def assert_least_privilege(service: dict[str, Any], owner: dict[str, Any]) -> None:
    """The service role owns nothing and cannot rewrite history; the owner owns the database, and even it is
    refused by the guard triggers."""
    assert (service["username"], owner["username"]) == ("ledger_service", "ledger_owner")
    assert rows_as(service, "SELECT count(*) FROM pg_class WHERE relowner = current_user::regrole") == [(0,)]
    assert rows_as(service, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()") == [
        ("ledger_owner",)
    ]
    assert refused_sqlstate(service, "DELETE FROM transfers") == "42501"
    assert refused_sqlstate(service, "DROP TABLE ledgers") == "42501"
    assert refused_sqlstate(owner, "DELETE FROM transfers") == "LA001"


def test_embedded_serve_starts_serves_stops_and_restarts_on_the_same_data(tmp_path: Path, data_dir: Path) -> None:
    secret_file = data_dir / "secrets" / "service.json"
    owner_secret_file = data_dir / "secrets" / "owner.json"

    with embedded_server(data_dir, tmp_path / "first.log") as first, httpx.Client() as client:
        first.wait_ready(client)
        assert client.get(f"{first.base_url}/v1/ledgers", timeout=5).status_code == 401
        # An operator makes a key while the server runs: the CLI shares the embedded PostgreSQL, leaves it running.
        made = subprocess.run(
            [sys.executable, "-m", "ledger", "keys", "create", "--role", "admin", "--name", "embedded test"],
            env=embedded_environment(data_dir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        token = made.stdout.strip().splitlines()[-1]
        assert token.startswith("tlk_")
        assert token not in made.stderr
        client.headers["Authorization"] = f"Bearer {token}"
        created = client.post(
            f"{first.base_url}/v1/ledgers",
            json={"name": "Trust", "currency": "USD"},
            headers={"Idempotency-Key": "embedded-serve-ledger-1"},
            timeout=5,
        )
        assert created.status_code == 201, created.text
        ledger = created.json()
        assert ledger["name"] == "Trust"
        assert ledger["currency"] == "USD"

        secret_text = secret_file.read_text(encoding="utf-8")
        service, owner = read_secret(secret_file), read_secret(owner_secret_file)
        password = service["password"]
        assert len(password) >= 16
        assert len(owner["password"]) >= 16
        assert owner["password"] != password
        assert (service["username"], owner["username"]) == ("ledger_service", "ledger_owner")
        assert postgres_processes(data_dir), "no postgres process names the data directory"

        # Migrated as the owner, served as the service role.
        (applied,) = [event for event in json_events(first.output()) if event.get("event") == "least_privilege_applied"]
        assert (applied["owner_role"], applied["service_role"]) == ("ledger_owner", "ledger_service")
        assert_least_privilege(service, owner)

        assert_stopped_cleanly(first, data_dir, password, owner["password"])

    with (
        embedded_server(data_dir, tmp_path / "second.log") as second,
        httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        second.wait_ready(client)
        listed = client.get(f"{second.base_url}/v1/ledgers", timeout=5)
        assert listed.status_code == 200, listed.text
        assert ledger["id"] in [item["id"] for item in listed.json()["items"]]
        fetched = client.get(f"{second.base_url}/v1/ledgers/{ledger['id']}", timeout=5)
        assert fetched.status_code == 200
        assert fetched.json() == ledger

        # The same secrets: not rewritten, still private.
        assert secret_file.read_text(encoding="utf-8") == secret_text
        assert read_secret(owner_secret_file) == owner
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

        assert_stopped_cleanly(second, data_dir, password, owner["password"])


def previous_release_data_dir(data_dir: str) -> None:
    """Run in a child process (the embedded server starts in a CLI's process, never in a test worker): leaves
    ``data_dir`` as the release before least privilege left it: no owner role, the database and the tables (schema
    at 0004) owned by ``ledger_service``, a ledger written, the server stopped."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from ledger.infrastructure.embedded_postgres import EmbeddedPostgres
    from ledger.infrastructure.schema_migrations import SCRIPT_LOCATION

    embedded = EmbeddedPostgres(Path(data_dir))
    info = embedded.start()
    try:
        superuser = embedded.superuser_connection(info.socket_dir, info.port)
        with superuser.cursor() as cursor:
            cursor.execute("ALTER DATABASE ledger OWNER TO ledger_service")
            cursor.execute("DROP ROLE ledger_owner")
        superuser.close()
        info.owner_secret_file.unlink()
        service = json.loads(info.secret_file.read_text(encoding="utf-8"))
        engine = sa.create_engine(
            sa.URL.create(
                "postgresql+psycopg2",
                username=service["username"],
                password=service["password"],
                database=service["dbname"],
                query={"host": service["host"], "port": str(service["port"])},
            )
        )
        with engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", SCRIPT_LOCATION)
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            connection.execute(
                sa.text(
                    "INSERT INTO ledgers (id, tenant_id, name, currency_code, currency_exponent, time_zone, created_at)"
                    " VALUES (gen_random_uuid(), gen_random_uuid(), 'Kept across the upgrade', 'USD', 2, 'UTC', now())"
                )
            )
            connection.commit()
        engine.dispose()
    finally:
        embedded.stop()


def test_a_previous_release_data_dir_is_handed_to_the_owner_role_on_start(tmp_path: Path, data_dir: Path) -> None:
    env = embedded_environment(data_dir)
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from tests.test_embedded_serve import previous_release_data_dir as b; b({str(data_dir)!r})",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    service_before = read_secret(data_dir / "secrets" / "service.json")
    assert not (data_dir / "secrets" / "owner.json").exists()

    with embedded_server(data_dir, tmp_path / "upgrade.log") as server, httpx.Client() as client:
        server.wait_ready(client)
        events = json_events(server.output())
        (handed,) = [event for event in events if event.get("event") == "embedded_database_handed_to_owner"]
        assert handed["objects"] > 0
        (migrated,) = [event for event in events if event.get("event") == "schema_migrated"]
        assert migrated["revision_before"] == "0004"
        service, owner = (
            read_secret(data_dir / "secrets" / "service.json"),
            read_secret(data_dir / "secrets" / "owner.json"),
        )
        assert service == service_before
        assert_least_privilege(service, owner)
        assert rows_as(service, "SELECT name FROM ledgers") == [("Kept across the upgrade",)]
        assert_stopped_cleanly(server, data_dir, service["password"], owner["password"])
