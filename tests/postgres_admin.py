"""Test-side administration of a PostgreSQL server: roles, passwords, databases, killing connections."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql
from pydantic import SecretStr

from ledger.infrastructure.database_credentials import DatabaseCredentials
from tests.secret_canaries import canaries


@dataclass
class PostgresAdmin:
    """Talks to the server as a superuser. ``superuser`` are credentials that need no password (socket trust)
    or carry one (an external server given by LEDGER_TEST_DATABASE_URL)."""

    superuser: DatabaseCredentials

    @contextmanager
    def connection(self, dbname: str | None = None) -> Iterator[psycopg2.extensions.connection]:
        parameters = self.superuser.connect_parameters()
        if dbname is not None:
            parameters["dbname"] = dbname
        connection = psycopg2.connect(**parameters)
        connection.autocommit = True
        try:
            yield connection
        finally:
            connection.close()

    def execute(
        self, statement: sql.Composable | str, parameters: tuple[object, ...] = (), dbname: str | None = None
    ) -> list[tuple[object, ...]]:
        with self.connection(dbname) as connection, connection.cursor() as cursor:
            cursor.execute(statement, parameters)
            return cursor.fetchall() if cursor.description else []

    def create_role(self, name: str | None = None, password: str | None = None) -> tuple[str, str]:
        name = name or f"ledger_test_{uuid.uuid4().hex[:10]}"
        password = password or secrets.token_urlsafe(18)
        canaries.register(password)
        self.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        return name, password

    def set_password(self, role: str, password: str) -> None:
        self.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))

    def create_database(self, owner: str, name: str | None = None) -> str:
        name = name or f"ledger_test_{uuid.uuid4().hex[:10]}"
        self.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        return name

    def grant_role(self, role: str, to: str) -> None:
        self.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(to)))

    def terminate_backends(self, dbname: str) -> int:
        rows = self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        return len(rows)

    def create_migrated_database(self) -> DatabaseCredentials:
        """A new password role owning a new database migrated to head; returns the role's credentials."""
        from ledger.infrastructure.database_engine import CredentialedConnector, create_database_engine
        from ledger.infrastructure.schema_migrations import upgrade_to_head
        from ledger.infrastructure.secret_providers import DatabaseUrlProvider
        from tests.conftest import settings_with_secret_url

        role, password = self.create_role()
        dbname = self.create_database(owner=role)
        credentials = self.credentials(role, password, dbname)
        settings = settings_with_secret_url(credentials)
        assert settings.database_url is not None
        engine = create_database_engine(
            settings, CredentialedConnector(DatabaseUrlProvider(settings.database_url), settings)
        )
        try:
            upgrade_to_head(engine)
        finally:
            engine.dispose()
        return credentials

    def credentials(self, username: str, password: str, dbname: str) -> DatabaseCredentials:
        return DatabaseCredentials(
            host=self.superuser.host,
            port=self.superuser.port,
            username=username,
            password=SecretStr(password),
            dbname=dbname,
            options=dict(self.superuser.options),
        )

    def refuses_wrong_passwords(self) -> bool:
        """False on a server that trusts every login (then a refused-login test cannot mean anything)."""
        role, _ = self.create_role()
        try:
            psycopg2.connect(
                **self.credentials(role, "definitely-wrong", self.superuser.dbname).connect_parameters()
            ).close()
        except psycopg2.OperationalError:
            return True
        return False
