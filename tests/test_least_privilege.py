"""Least privilege: the owner role migrates and owns; the service role owns nothing and cannot rewrite history.

Connected as the service role, UPDATE, DELETE and TRUNCATE of every history table fail for want of privilege; an
account column outside the listed ones cannot be updated; nothing can be dropped. Connected as the owner, who holds
every privilege, the history guard triggers still refuse (SQLSTATE LA001) until the owner disables them on purpose.
``ledger migrate`` sets it up, twice gives the same result, and it refuses role set-ups that cannot be separated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import structlog
import typer
from psycopg2 import sql
from pydantic import SecretStr, ValidationError

from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.database_engine import CredentialedConnector
from ledger.infrastructure.database_privileges import (
    ACCOUNT_UPDATE_COLUMNS,
    API_KEY_UPDATE_COLUMNS,
    HISTORY_CHANGE_REFUSED_SQLSTATE,
    HISTORY_TABLES,
    SERVICE_GRANTS,
    LeastPrivilegeFailed,
    grant_service_privileges,
    history_guard_trigger_name,
    migrate_with_least_privilege,
    service_privilege_problems,
)
from ledger.infrastructure.database_schema import build_metadata
from ledger.infrastructure.embedded_postgres import write_private_file
from ledger.infrastructure.schema_migrations import head_revision, upgrade_to_head
from ledger.infrastructure.settings import LedgerSettings
from tests.conftest import (
    LeastPrivilegeDatabase,
    database_engine,
    make_least_privilege_database,
)
from tests.postgres_admin import PostgresAdmin
from tests.test_startup_check import CliRun, cli_environment, run_cli

METADATA = build_metadata()
UPDATE_DELETE_TRUNCATE = ("UPDATE", "DELETE", "TRUNCATE")


@contextmanager
def connected(credentials: DatabaseCredentials) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(**credentials.connect_parameters())
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


def refusal(credentials: DatabaseCredentials, statement: sql.Composable | str) -> psycopg2.Error:
    """The error ``statement`` fails with, in a transaction rolled back afterwards; fails the test if it passes."""
    with connected(credentials) as connection, connection.cursor() as cursor:
        try:
            cursor.execute(statement)
        except psycopg2.Error as error:
            return error
    pytest.fail(f"{statement!r} was not refused")


def passes(credentials: DatabaseCredentials, statement: sql.Composable | str) -> None:
    """Runs ``statement`` in a transaction that is rolled back: it must be allowed, and leaves no trace."""
    with connected(credentials) as connection, connection.cursor() as cursor:
        cursor.execute(statement)


def change_statement(operation: str, table: str) -> sql.Composable:
    identifier = sql.Identifier(table)
    if operation == "UPDATE":
        column = sql.Identifier(next(iter(METADATA.tables[table].columns)).name)
        return sql.SQL("UPDATE {} SET {} = {}").format(identifier, column, column)
    if operation == "DELETE":
        return sql.SQL("DELETE FROM {}").format(identifier)
    return sql.SQL("TRUNCATE {}").format(identifier)


@pytest.fixture(scope="module")
def written_history(service_database: DatabaseCredentials, tmp_path_factory: pytest.TempPathFactory) -> uuid.UUID:
    """A ledger with a posted transfer and its idempotency record, written through the API as the service role:
    every history table has rows (a refused statement is refused with something to change)."""
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient

    from ledger.api.app import create_app
    from ledger.container import build_container
    from ledger.domain.api_keys import ApiKeyRole
    from ledger.domain.model import DEFAULT_TENANT_ID
    from tests.conftest import settings_with_secret_file

    container = build_container(settings_with_secret_file(service_database, tmp_path_factory.mktemp("history")))
    try:
        _, token = container.api_key_service().create_key(
            DEFAULT_TENANT_ID, role=ApiKeyRole.ADMIN, name="least privilege", created_by="test"
        )
        with TestClient(create_app(container), headers={"Authorization": f"Bearer {token}"}) as client:

            def post(path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
                response = client.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
                assert response.status_code == status, response.text
                result: dict[str, Any] = response.json()
                return result

            yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
            # A ledger with nothing in it reconciles, so its yesterday can be signed off.
            empty = post("/v1/ledgers", {"name": "Signed off", "currency": "USD"})
            post(f"/v1/ledgers/{empty['id']}/accounts", {"code": "bank", "name": "Trust bank", "kind": "bank"})
            post(f"/v1/ledgers/{empty['id']}/reconciliation/sign-offs", {"as_of": yesterday})

            ledger = post("/v1/ledgers", {"name": "Least privilege", "currency": "USD"})
            accounts = f"/v1/ledgers/{ledger['id']}/accounts"
            post(accounts, {"code": "bank", "name": "Trust bank", "kind": "bank"})
            client_account = post(accounts, {"code": "alice", "name": "Alice", "kind": "client"})
            other = post(accounts, {"code": "bob", "name": "Bob", "kind": "client"})
            post(f"/v1/ledgers/{ledger['id']}/deposits", {"client_account_id": client_account["id"], "amount": 500})
            uncleared = post(
                f"/v1/ledgers/{ledger['id']}/deposits",
                {"client_account_id": client_account["id"], "amount": 300, "cleared": False},
            )
            post(f"/v1/deposits/{uncleared['id']}/clearance", {}, status=200)
            pending = post(
                f"/v1/ledgers/{ledger['id']}/pending-transfers",
                {"debit_account_id": client_account["id"], "credit_account_id": other["id"], "amount": 100},
            )
            post(f"/v1/pending-transfers/{pending['id']}/post", {}, status=200)
            statement = (
                f"period_start,{yesterday}\nperiod_end,{yesterday}\nopening_balance,0.00\nclosing_balance,5.00\n"
                f"date,amount,reference,description\n{yesterday},5.00,,deposit\n"
            )
            post(f"/v1/ledgers/{ledger['id']}/bank-statements", {"csv": statement})
    finally:
        container.shutdown_resources()
    return uuid.UUID(ledger["id"])


@pytest.mark.parametrize("operation", UPDATE_DELETE_TRUNCATE)
@pytest.mark.parametrize("table", HISTORY_TABLES)
def test_the_service_role_cannot_update_delete_or_truncate_history(
    service_database: DatabaseCredentials,
    postgres_admin: PostgresAdmin,
    written_history: uuid.UUID,
    table: str,
    operation: str,
) -> None:
    rows = postgres_admin.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)), dbname=service_database.dbname
    )
    assert rows != [(0,)]
    error = refusal(service_database, change_statement(operation, table))
    assert isinstance(error, psycopg2.errors.InsufficientPrivilege), error
    assert f"permission denied for table {table}" in str(error)


def test_the_service_role_cannot_upsert_over_history(service_database: DatabaseCredentials) -> None:
    error = refusal(
        service_database,
        "INSERT INTO idempotency_records (tenant_id, key, fingerprint, status_code, body, recorded_at)"
        " VALUES (gen_random_uuid(), 'k', 'f', 201, '{}', now())"
        " ON CONFLICT (tenant_id, key) DO UPDATE SET body = excluded.body",
    )
    assert isinstance(error, psycopg2.errors.InsufficientPrivilege), error


@pytest.mark.parametrize(
    ("table", "allowed"),
    [("accounts", ACCOUNT_UPDATE_COLUMNS), ("api_keys", API_KEY_UPDATE_COLUMNS), ("ledgers", ())],
)
def test_the_service_role_updates_only_the_listed_columns(
    service_database: DatabaseCredentials, written_history: uuid.UUID, table: str, allowed: tuple[str, ...]
) -> None:
    for column in METADATA.tables[table].columns:
        statement = sql.SQL("UPDATE {} SET {} = {}").format(
            sql.Identifier(table), sql.Identifier(column.name), sql.Identifier(column.name)
        )
        if column.name in allowed:
            passes(service_database, statement)
        else:
            error = refusal(service_database, statement)
            assert isinstance(error, psycopg2.errors.InsufficientPrivilege), (column.name, error)
    for operation in ("DELETE", "TRUNCATE"):
        error = refusal(service_database, change_statement(operation, table))
        assert isinstance(error, psycopg2.errors.InsufficientPrivilege), (operation, error)


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE postings",
        "ALTER TABLE postings DISABLE TRIGGER postings_append_only",
        "DROP TRIGGER postings_append_only ON postings",
        "ALTER TABLE accounts DROP CONSTRAINT ck_accounts_counters_not_negative",
        "CREATE TABLE shadow_postings (id bigint)",
        "CREATE SCHEMA shadow",
        "LOCK TABLE postings IN ACCESS EXCLUSIVE MODE",
        "SELECT nextval('postings_id_seq')",
    ],
)
def test_the_service_role_cannot_change_the_schema(service_database: DatabaseCredentials, statement: str) -> None:
    error = refusal(service_database, statement)
    assert isinstance(error, psycopg2.errors.InsufficientPrivilege), error


def test_the_service_role_owns_nothing_and_holds_exactly_its_grants(
    least_privilege_database: LeastPrivilegeDatabase, postgres_admin: PostgresAdmin
) -> None:
    service, owner = least_privilege_database.service, least_privilege_database.owner
    owned = postgres_admin.execute(
        "SELECT c.relname FROM pg_class c WHERE pg_get_userbyid(c.relowner) = %s"
        " UNION ALL SELECT nspname FROM pg_namespace WHERE pg_get_userbyid(nspowner) = %s",
        (service.username, service.username),
        dbname=service.dbname,
    )
    assert owned == []
    assert postgres_admin.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (service.dbname,)
    ) == [(owner.username,)]
    tables = postgres_admin.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
        dbname=service.dbname,
    )
    assert tables and {table_owner for _, table_owner in tables} == {owner.username}
    with connected(owner) as connection, connection.cursor() as cursor:
        assert service_privilege_problems(cursor, service.username, "public") == []


def test_every_table_is_classified_and_every_history_table_guarded(
    least_privilege_database: LeastPrivilegeDatabase, postgres_admin: PostgresAdmin
) -> None:
    """A new table needs a grant in SERVICE_GRANTS (the service sees nothing else), a new history table its name in
    HISTORY_TABLES and its guard trigger in its migration."""
    granted = {grant.table for grant in SERVICE_GRANTS}
    assert granted == {*METADATA.tables, "alembic_version"}
    assert set(HISTORY_TABLES) <= granted
    dbname = least_privilege_database.owner.dbname
    in_database = postgres_admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", dbname=dbname)
    assert {name for (name,) in in_database} == granted
    guards = postgres_admin.execute(
        "SELECT c.relname, t.tgname, t.tgenabled, t.tgtype FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE t.tgname LIKE '%%_append_only' ORDER BY 1",
        dbname=dbname,
    )
    # tgtype: statement level (bit 0 clear), BEFORE (2), DELETE (8), UPDATE (16), TRUNCATE (32).
    assert guards == sorted(
        (table, history_guard_trigger_name(table), "O", 2 | 8 | 16 | 32) for table in HISTORY_TABLES
    )


@pytest.mark.parametrize("operation", UPDATE_DELETE_TRUNCATE)
@pytest.mark.parametrize("table", HISTORY_TABLES)
def test_the_owner_is_refused_by_the_guard_triggers(
    owner_database: DatabaseCredentials, written_history: uuid.UUID, table: str, operation: str
) -> None:
    statement = change_statement(operation, table)
    if operation == "TRUNCATE":
        # CASCADE: else the foreign keys between history tables refuse first, and the trigger would go untested.
        statement = sql.SQL("{} CASCADE").format(statement)
    error = refusal(owner_database, statement)
    assert error.pgcode == HISTORY_CHANGE_REFUSED_SQLSTATE, error
    assert f"are append-only history: {operation} refused" in str(error)
    if operation != "TRUNCATE":
        assert str(error).startswith(f"{table} are append-only history")


def test_a_statement_touching_no_row_is_refused_too(owner_database: DatabaseCredentials) -> None:
    error = refusal(owner_database, "DELETE FROM postings WHERE false")
    assert error.pgcode == HISTORY_CHANGE_REFUSED_SQLSTATE


def test_the_owner_can_disable_a_guard_deliberately(
    owner_database: DatabaseCredentials, written_history: uuid.UUID
) -> None:
    """What a malicious owner can do, and the service cannot: the change is rolled back, the trigger stays."""
    with connected(owner_database) as connection, connection.cursor() as cursor:
        cursor.execute("ALTER TABLE postings DISABLE TRIGGER postings_append_only")
        cursor.execute("UPDATE postings SET amount = amount WHERE ledger_id = %s", (str(written_history),))
        assert cursor.rowcount > 0


def test_migrating_twice_gives_the_same_privileges_and_removes_stray_ones(
    postgres_admin: PostgresAdmin,
) -> None:
    database = make_least_privilege_database(postgres_admin)
    service, owner = database.service, database.owner

    def privileges() -> list[tuple[object, ...]]:
        return postgres_admin.execute(
            "SELECT 'table', c.relname::text, c.relacl::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " UNION ALL SELECT 'column', a.attrelid::regclass::text || '.' || a.attname, a.attacl::text"
            " FROM pg_attribute a WHERE a.attacl IS NOT NULL"
            " UNION ALL SELECT 'schema', nspname::text, nspacl::text FROM pg_namespace WHERE nspname = 'public'"
            " UNION ALL SELECT 'database', datname::text, datacl::text FROM pg_database WHERE datname = %s"
            " UNION ALL SELECT 'trigger', tgname::text, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal"
            " ORDER BY 1, 2",
            (service.dbname,),
            dbname=service.dbname,
        )

    first = privileges()
    with database_engine(owner) as engine:
        again = migrate_with_least_privilege(engine, service.username)
    assert (again.revision_before, again.revision_after) == (head_revision(), head_revision())
    assert privileges() == first

    # Privileges granted by hand since are taken back by the next migration.
    for statement in (
        "GRANT ALL ON postings, transfers TO {}",
        "GRANT UPDATE (name) ON accounts TO {}",
        "GRANT DELETE ON idempotency_records TO PUBLIC",
        "GRANT CREATE ON SCHEMA public TO {}",
    ):
        with connected(owner) as connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL(statement).format(sql.Identifier(service.username)))
            connection.commit()
    assert privileges() != first
    with database_engine(owner) as engine:
        migrate_with_least_privilege(engine, service.username)
    assert privileges() == first


@pytest.fixture(scope="module")
def spare_database(postgres_admin: PostgresAdmin) -> LeastPrivilegeDatabase:
    """A database of this module's own, for grants that are expected to fail (and roll back)."""
    return make_least_privilege_database(postgres_admin)


def test_a_service_role_that_inherits_more_is_refused(
    spare_database: LeastPrivilegeDatabase, postgres_admin: PostgresAdmin
) -> None:
    """Effective privileges count, role memberships included: a group role that may UPDATE postings is caught."""
    group, _ = postgres_admin.create_role()
    member, _ = postgres_admin.create_role()
    postgres_admin.grant_role(group, member)
    postgres_admin.execute(
        sql.SQL("GRANT UPDATE ON postings TO {}").format(sql.Identifier(group)), dbname=spare_database.owner.dbname
    )
    with database_engine(spare_database.owner) as engine, pytest.raises(LeastPrivilegeFailed) as refused:
        grant_service_privileges(engine, member)
    assert "UPDATE on postings held" in str(refused.value)


@pytest.mark.parametrize("relation", ["member of the owner", "superuser", "missing"])
def test_role_set_ups_that_cannot_be_separated_are_refused(
    spare_database: LeastPrivilegeDatabase, postgres_admin: PostgresAdmin, relation: str
) -> None:
    owner = spare_database.owner
    if relation == "missing":
        role = f"ledger_test_missing_{uuid.uuid4().hex[:8]}"
    else:
        role, _ = postgres_admin.create_role()
        if relation == "superuser":
            postgres_admin.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(role)))
        else:
            postgres_admin.grant_role(owner.username, role)
    with database_engine(owner) as engine, pytest.raises(LeastPrivilegeFailed) as refused:
        grant_service_privileges(engine, role)
    assert role in str(refused.value)
    with connected(owner) as connection, connection.cursor() as cursor:
        assert service_privilege_problems(cursor, spare_database.service.username, "public") == []


def test_tables_owned_by_the_former_service_role_must_be_handed_over_first(postgres_admin: PostgresAdmin) -> None:
    """A deployment whose service role ran the migrations so far: the new owner role cannot take its tables."""
    former, former_password = postgres_admin.create_role()
    dbname = postgres_admin.create_database(owner=former)
    with database_engine(postgres_admin.credentials(former, former_password, dbname)) as engine:
        upgrade_to_head(engine)
    owner, owner_password = postgres_admin.create_role()
    postgres_admin.execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), sql.Identifier(owner))
    )
    with (
        database_engine(postgres_admin.credentials(owner, owner_password, dbname)) as engine,
        pytest.raises(LeastPrivilegeFailed) as refused,
    ):
        migrate_with_least_privilege(engine, former)
    assert f"REASSIGN OWNED BY {former} TO {owner}" in str(refused.value)
    # Handed over as told, the same migration succeeds.
    postgres_admin.execute(
        sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(former), sql.Identifier(owner)), dbname=dbname
    )
    with database_engine(postgres_admin.credentials(owner, owner_password, dbname)) as engine:
        assert migrate_with_least_privilege(engine, former).least_privilege_applied
    error = refusal(postgres_admin.credentials(former, former_password, dbname), "DELETE FROM postings")
    assert isinstance(error, psycopg2.errors.InsufficientPrivilege)


def test_one_role_for_both_migrates_with_one_warning(postgres_admin: PostgresAdmin) -> None:
    role, password = postgres_admin.create_role()
    dbname = postgres_admin.create_database(owner=role)
    with (
        database_engine(postgres_admin.credentials(role, password, dbname)) as engine,
        structlog.testing.capture_logs() as logs,
    ):
        outcome = migrate_with_least_privilege(engine, role)
    assert not outcome.least_privilege_applied
    assert outcome.revision_after == head_revision()
    warnings = [entry for entry in logs if entry["event"] == "least_privilege_not_applied"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert password not in repr(logs)


def test_ledger_migrate_with_an_owner_secret_grants_the_service_role(
    postgres_admin: PostgresAdmin, tmp_path: Path
) -> None:
    """The CLI end to end: the owner's secret file migrates, the service's secret file names the role to grant."""
    owner, owner_password = postgres_admin.create_role()
    service, service_password = postgres_admin.create_role()
    dbname = postgres_admin.create_database(owner=owner)
    files = {}
    for name, role, password in (("owner", owner, owner_password), ("service", service, service_password)):
        files[name] = tmp_path / f"{name}.json"
        credentials = postgres_admin.credentials(role, password, dbname)
        write_private_file(files[name], json.dumps(credentials.to_document()))
    env = cli_environment(
        tmp_path, {"LEDGER_SECRET_FILE": str(files["service"]), "LEDGER_OWNER_SECRET_FILE": str(files["owner"])}
    )
    (migrated,) = run_cli([CliRun(["migrate"])], env)
    assert migrated.returncode == 0, migrated.describe()
    assert owner_password not in migrated.output
    assert service_password not in migrated.output
    (applied,) = migrated.named("least_privilege_applied")
    assert (applied["owner_role"], applied["service_role"]) == (owner, service)
    assert migrated.named("least_privilege_not_applied") == []
    error = refusal(postgres_admin.credentials(service, service_password, dbname), "TRUNCATE transfers")
    assert isinstance(error, psycopg2.errors.InsufficientPrivilege)


def test_production_refuses_the_embedded_default_and_migrating_without_the_owners_secret(tmp_path: Path) -> None:
    """Each refused before any connection (or any embedded server), exit 2."""
    from ledger import cli

    embedded = LedgerSettings(environment="production", data_dir=tmp_path / "data")
    with structlog.testing.capture_logs() as logs, pytest.raises(typer.Exit) as refused:
        with cli.database_available(embedded):
            pytest.fail("the embedded default started in production")
    assert refused.value.exit_code == cli.EXIT_BAD_SETTINGS
    assert [entry["event"] for entry in logs] == ["embedded_database_refused_in_production"]
    assert not (tmp_path / "data").exists()

    without_owner = production_settings(sslmode="verify-full")
    with structlog.testing.capture_logs() as logs, pytest.raises(typer.Exit) as refused:
        cli._migrate(without_owner)
    assert refused.value.exit_code == cli.EXIT_BAD_SETTINGS
    assert [entry["event"] for entry in logs] == ["owner_credentials_required"]


def production_settings(**values: Any) -> LedgerSettings:
    return LedgerSettings(
        environment="production",
        aws_secret_id="ledger/service",
        aws_region="eu-west-1",
        **values,
    )


@pytest.mark.parametrize("sslmode", [None, "disable", "allow", "prefer", "require"])
def test_production_refuses_tls_that_does_not_verify_the_server(sslmode: str | None) -> None:
    with pytest.raises(ValidationError, match="production requires LEDGER_SSLMODE=verify-full"):
        production_settings(sslmode=sslmode)
    assert production_settings(sslmode=sslmode, allow_weak_tls=True).sslmode == sslmode


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_production_accepts_verified_tls(sslmode: str) -> None:
    assert production_settings(sslmode=sslmode).sslmode == sslmode


def test_the_weak_tls_override_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_ENVIRONMENT", "production")
    monkeypatch.setenv("LEDGER_AWS_SECRET_ID", "ledger/service")
    monkeypatch.setenv("LEDGER_AWS_REGION", "eu-west-1")
    monkeypatch.setenv("LEDGER_SSLMODE", "require")
    with pytest.raises(ValidationError):
        LedgerSettings()
    monkeypatch.setenv("LEDGER_ALLOW_WEAK_TLS", "true")
    assert LedgerSettings().allow_weak_tls


def test_the_owner_source_is_of_the_service_kind(tmp_path: Path) -> None:
    settings = production_settings(sslmode="verify-full", owner_aws_secret_id="ledger/owner")
    assert settings.owner_credential_source == settings.credential_source
    with pytest.raises(ValidationError, match="same kind of source"):
        production_settings(sslmode="verify-full", owner_secret_file=tmp_path / "owner.json")
    with pytest.raises(ValidationError, match="at most one owner credential source"):
        production_settings(
            sslmode="verify-full", owner_aws_secret_id="ledger/owner", owner_secret_file=tmp_path / "owner.json"
        )
    with pytest.raises(ValidationError, match="LEDGER_DATABASE_URL is for development"):
        LedgerSettings(
            environment="production",
            database_url=SecretStr("postgresql://u:p@db/d"),
            owner_database_url=SecretStr("postgresql://o:p@db/d"),
        )


def test_the_operators_tls_settings_win_over_the_secret_document() -> None:
    """The parameters handed to the driver: production's verified-TLS rule cannot be undone by a secret's sslmode."""

    class RecordingDialect:
        parameters: dict[str, Any] = {}

        def connect(self, *args: Any, **parameters: Any) -> object:
            RecordingDialect.parameters = parameters
            return object()

    class FixedSecret:
        description = "a fixed secret"

        def current(self) -> DatabaseCredentials:
            return DatabaseCredentials.from_document(
                {"host": "db", "username": "u", "password": "p", "dbname": "d", "sslmode": "disable"}
            )

        def refresh(self, stale: DatabaseCredentials | None = None) -> DatabaseCredentials:
            return self.current()

        def pending(self) -> DatabaseCredentials | None:
            return None

    settings = production_settings(sslmode="verify-full", sslrootcert=Path("/etc/ssl/rds.pem"))
    connector = CredentialedConnector(FixedSecret(), settings)
    connector(RecordingDialect(), None, [], {})  # type: ignore[arg-type]
    assert RecordingDialect.parameters["sslmode"] == "verify-full"
    assert RecordingDialect.parameters["sslrootcert"] == "/etc/ssl/rds.pem"
