"""Everything a benchmark run sets up itself: an embedded PostgreSQL in a temporary directory, the schema, an admin
API key, a container in this process (the service role, like a server), and the seeded ledgers."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ledger.container import Container, build_container
from ledger.infrastructure.embedded_postgres import SERVICE_DATABASE, SERVICE_ROLE, EmbeddedServerInfo
from ledger.infrastructure.settings import LedgerSettings
from scripts.throughput.raw_sql import LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS, PgbenchTarget, find_pgbench
from scripts.throughput.served import BenchServer, ServeSettings
from scripts.throughput.workload import Progress
from tests.fault_scenario import RestartablePostgres


@dataclass
class BenchEnvironment:
    """``start`` then ``close`` (always). ``container`` is this process's, for seeding and the in-process runs."""

    progress: Progress
    pool_size: int = 16
    directory: Path = field(init=False)
    postgres: RestartablePostgres = field(init=False)
    info: EmbeddedServerInfo = field(init=False)
    container: Container = field(init=False)
    admin_token: str = ""
    _servers: list[BenchServer] = field(default_factory=list)

    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="ledger-bench-")).resolve()
        # As root the wheel runs PostgreSQL as its own system user, which must traverse the directory's parents.
        self.directory.chmod(0o755)
        self.postgres = RestartablePostgres(self.directory)
        self.info = self.postgres.start()
        self.progress(f"PostgreSQL {self.info.server_version} started in {self.directory}")
        setup = self.server(ServeSettings(workers=1, pool_size=2))
        setup.run_command("migrate")
        self.admin_token = setup.create_admin_key()
        self.container = build_container(
            LedgerSettings(
                environment="test",
                secret_file=self.info.secret_file,
                pool_size=self.pool_size,
                max_overflow=0,
                pool_timeout_seconds=10,
                lock_timeout_ms=LOCK_TIMEOUT_MS,
                statement_timeout_ms=STATEMENT_TIMEOUT_MS,
                log_level="WARNING",
            )
        )

    def server(self, settings: ServeSettings) -> BenchServer:
        """A served ledger on a free port (not started), stopped by ``close`` at the latest."""
        served = BenchServer(self.info.secret_file, self.directory, self.info.owner_secret_file, settings)
        self._servers.append(served)
        return served

    def pgbench_target(self) -> PgbenchTarget:
        secret = json.loads(self.info.secret_file.read_text(encoding="utf-8"))
        return PgbenchTarget(
            binary=find_pgbench(self.info.server_version),
            host=str(self.info.socket_dir),
            port=self.info.port,
            user=SERVICE_ROLE,
            password=str(secret["password"]),
            dbname=SERVICE_DATABASE,
        )

    def postgres_settings(self) -> dict[str, str]:
        names = ["shared_buffers", "max_connections", "synchronous_commit", "fsync", "wal_level", "work_mem"]
        with self.postgres.superuser() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)", (names,))
            return {str(name): f"{setting}{unit and ' ' + unit}" for name, setting, unit in cursor.fetchall()}

    def close(self) -> None:
        for served in self._servers:
            served.stop()
        container = getattr(self, "container", None)
        if container is not None:
            container.shutdown_resources()
        if hasattr(self, "postgres"):
            self.postgres.shutdown()
        if hasattr(self, "directory"):
            shutil.rmtree(self.directory, ignore_errors=True)
