"""Least privilege: the owner role migrates and owns every table; the service role it grants to owns nothing.

The service role (the serving process's login) may read the ledger tables, insert rows, UPDATE only the account
columns a posting moves (counters, version, status, chain head) and an API key's revocation, and read the schema
revision. History (``HISTORY_TABLES``) it may read and append to, never UPDATE, DELETE or TRUNCATE.

A second guard stands behind the privileges: every history table carries the statement-level trigger
``<table>_append_only`` (migration 0005) that refuses UPDATE, DELETE and TRUNCATE from anyone, the owner included,
with SQLSTATE ``LA001`` (``HISTORY_CHANGE_REFUSED_SQLSTATE``). The table owner can still disable that trigger
(``ALTER TABLE ... DISABLE TRIGGER``), deliberately: that power is the owner's, which is why the service is not it.

To add a history table: create it and its guard trigger (``history_guard_trigger_statement``) in a migration, and
add its name to ``HISTORY_TABLES``; tests check that every table of the schema has a grant here and every history
table its trigger. Every statement is composed with ``psycopg2.sql`` (identifiers quoted, never formatted into strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg2.extensions
import sqlalchemy as sa
import structlog
from psycopg2 import sql
from sqlalchemy.engine import Connection, Engine

from ledger.infrastructure.schema_migrations import upgrade_to_head

# Append-only history: the service inserts and reads these, nobody rewrites them. The one list of them.
HISTORY_TABLES: Final = (
    "transfers",
    "postings",
    "idempotency_records",
    "pending_transfers",
    "pending_outcomes",
    "clearance_holds",
    "clearance_outcomes",
    "reconciliation_signoffs",
    "bank_statements",
    "bank_statement_lines",
    "statement_matches",
)

# Raised by the guard trigger: class "LA" (ledger append-only) is not used by PostgreSQL.
HISTORY_CHANGE_REFUSED_SQLSTATE: Final = "LA001"
HISTORY_GUARD_FUNCTION: Final = "ledger_refuse_history_change"

# The account columns a posting or a status change moves; nothing else of an account is ever updated.
ACCOUNT_UPDATE_COLUMNS: Final = (
    "posted_debits",
    "posted_credits",
    "pending_debits",
    "pending_credits",
    "version",
    "status",
    "chain_head",
    "uncleared_credits",
)
API_KEY_UPDATE_COLUMNS: Final = ("revoked_at", "revoked_by")

# has_table_privilege's privilege names; PostgreSQL 17 adds MAINTAIN (VACUUM, ANALYZE, REINDEX, LOCK TABLE).
TABLE_PRIVILEGES: Final = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
MAINTAIN_SINCE_SERVER_VERSION: Final = 170000

_PRIVILEGES_LOCK = "ledger:grant-service-privileges"


@dataclass(frozen=True, slots=True)
class TableGrant:
    """What the service role may do to one table: table-wide privileges, and UPDATE of these columns only."""

    table: str
    privileges: tuple[str, ...]
    update_columns: tuple[str, ...] = ()


SERVICE_GRANTS: Final[tuple[TableGrant, ...]] = (
    TableGrant("ledgers", ("SELECT", "INSERT")),
    TableGrant("accounts", ("SELECT", "INSERT"), update_columns=ACCOUNT_UPDATE_COLUMNS),
    TableGrant("api_keys", ("SELECT", "INSERT"), update_columns=API_KEY_UPDATE_COLUMNS),
    *(TableGrant(table, ("SELECT", "INSERT")) for table in HISTORY_TABLES),
    # The start-up check compares the schema revision with the release's.
    TableGrant("alembic_version", ("SELECT",)),
)


class LeastPrivilegeFailed(RuntimeError):
    """The roles cannot be separated as required. Names roles and tables, never a secret."""


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    revision_before: str | None
    revision_after: str | None
    owner_role: str
    service_role: str
    least_privilege_applied: bool


def history_guard_trigger_name(table: str) -> str:
    return f"{table}_append_only"


def history_guard_function_statement() -> str:
    """The trigger function of every history table (created by migration 0005)."""
    return f"""
        CREATE OR REPLACE FUNCTION {HISTORY_GUARD_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% are append-only history: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = '{HISTORY_CHANGE_REFUSED_SQLSTATE}',
                      HINT = 'history is corrected by appending (a reversal), never by rewriting it';
        END $$
    """


def history_guard_trigger_statement(table: str) -> str:
    """The guard trigger of one history table, for its migration: it fires once per statement, even a statement
    that touches no row. ``table`` is a name written in a migration, never input."""
    if not (table.isidentifier() and table.islower()):
        raise ValueError(f"not a plain table name: {table!r}")
    return (
        f"CREATE TRIGGER {history_guard_trigger_name(table)} BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {HISTORY_GUARD_FUNCTION}()"
    )


def migrate_with_least_privilege(owner_engine: Engine, service_role: str) -> MigrationOutcome:
    """Upgrade the schema as the owner, then grant the service role exactly ``SERVICE_GRANTS``. When the owner and
    the service are the same role (development with one URL) the grants are skipped with one warning."""
    log = structlog.get_logger(__name__)
    with owner_engine.connect() as connection:
        owner_role = str(connection.execute(sa.text("SELECT current_user")).scalar_one())
        separate_roles = owner_role != service_role
        if separate_roles:
            _require_owner_owns_tables(connection, owner_role)
    before, after = upgrade_to_head(owner_engine)
    if not separate_roles:
        log.warning(
            "least_privilege_not_applied",
            role=service_role,
            reason="the service connects as the schema owner: configure the owner's credentials separately "
            "(LEDGER_OWNER_AWS_SECRET_ID, LEDGER_OWNER_SECRET_FILE) so the service cannot rewrite history",
        )
        return MigrationOutcome(before, after, owner_role, service_role, least_privilege_applied=False)
    grant_service_privileges(owner_engine, service_role)
    log.info(
        "least_privilege_applied",
        owner_role=owner_role,
        service_role=service_role,
        history_tables=list(HISTORY_TABLES),
    )
    return MigrationOutcome(before, after, owner_role, service_role, least_privilege_applied=True)


def grant_service_privileges(owner_engine: Engine, service_role: str) -> None:
    """Revoke everything the service role and PUBLIC hold on the ledger's tables, grant ``SERVICE_GRANTS``, and
    check the service role's effective privileges (role memberships included) are exactly those, in one
    transaction: a failed check leaves the previous grants. Running it twice gives the same result."""
    with owner_engine.begin() as connection, _driver_cursor(connection) as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_PRIVILEGES_LOCK,))
        cursor.execute("SELECT current_user, current_schema(), current_database()")
        owner_role, schema, database = _one_row(cursor)
        _require_separable_roles(cursor, service_role, owner_role)
        role = sql.Identifier(service_role)
        tables = sql.SQL(", ").join(sql.Identifier(schema, grant.table) for grant in SERVICE_GRANTS)
        cursor.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC, {}").format(tables, role))
        sequences = _owned_sequences(cursor, schema)
        if sequences:
            cursor.execute(
                sql.SQL("REVOKE ALL ON SEQUENCE {} FROM PUBLIC, {}").format(
                    sql.SQL(", ").join(sql.Identifier(schema, name) for name in sequences), role
                )
            )
        if _may_act_as_owner(cursor, "pg_namespace", "nspowner", "nspname", schema):
            cursor.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)))
            cursor.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(sql.Identifier(schema), role))
        cursor.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role))
        if _may_act_as_owner(cursor, "pg_database", "datdba", "datname", database):
            cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(database), role))
            cursor.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role))
        for grant in SERVICE_GRANTS:
            table = sql.Identifier(schema, grant.table)
            privileges = sql.SQL(", ").join(sql.SQL(_known_privilege(name)) for name in grant.privileges)
            cursor.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(privileges, table, role))
            if grant.update_columns:
                columns = sql.SQL(", ").join(sql.Identifier(column) for column in grant.update_columns)
                cursor.execute(sql.SQL("GRANT UPDATE ({}) ON TABLE {} TO {}").format(columns, table, role))
        problems = service_privilege_problems(cursor, service_role, schema)
        if problems:
            raise LeastPrivilegeFailed(
                f"the service role {service_role!r} would hold more than it may: " + "; ".join(problems)
            )


def service_privilege_problems(cursor: psycopg2.extensions.cursor, service_role: str, schema: str) -> list[str]:
    """Where the service role's effective privileges differ from ``SERVICE_GRANTS``, or where it owns (or may act
    as the owner of) the database, the schema or a table. Empty when least privilege holds."""
    problems: list[str] = []
    cursor.execute(
        "SELECT pg_has_role(%(role)s, d.datdba, 'USAGE'), pg_has_role(%(role)s, n.nspowner, 'USAGE'),"
        " has_schema_privilege(%(role)s, n.oid, 'CREATE'), r.rolsuper"
        " FROM pg_database d, pg_namespace n, pg_roles r"
        " WHERE d.datname = current_database() AND n.nspname = %(schema)s AND r.rolname = %(role)s",
        {"role": service_role, "schema": schema},
    )
    owns_database, owns_schema, creates_in_schema, superuser = _one_row(cursor)
    cursor.execute("SELECT current_setting('server_version_num')::int")
    maintain = int(_one_row(cursor)[0]) >= MAINTAIN_SINCE_SERVER_VERSION
    privileges = (*TABLE_PRIVILEGES, "MAINTAIN") if maintain else TABLE_PRIVILEGES
    if superuser:
        problems.append("it is a superuser")
    if owns_database:
        problems.append("it owns the database")
    if owns_schema:
        problems.append(f"it owns the schema {schema}")
    if creates_in_schema:
        problems.append(f"it may create objects in the schema {schema}")
    for grant in SERVICE_GRANTS:
        cursor.execute(
            "SELECT c.oid, pg_has_role(%s, c.relowner, 'USAGE') FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (service_role, schema, grant.table),
        )
        row = cursor.fetchone()
        if row is None:
            problems.append(f"table {grant.table} is missing")
            continue
        table_oid, owns_table = row
        if owns_table:
            problems.append(f"it owns the table {grant.table}")
        for privilege in privileges:
            cursor.execute("SELECT has_table_privilege(%s, %s, %s)", (service_role, table_oid, privilege))
            held = bool(_one_row(cursor)[0])
            if held != (privilege in grant.privileges):
                problems.append(f"{privilege} on {grant.table} {'held' if held else 'missing'}")
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
            " AND has_column_privilege(%s, attrelid, attnum, 'UPDATE') ORDER BY attnum",
            (table_oid, service_role),
        )
        updatable = {str(name) for (name,) in cursor.fetchall()}
        if updatable != set(grant.update_columns):
            expected = sorted(grant.update_columns)
            problems.append(f"UPDATE of {grant.table} columns {sorted(updatable)}, expected {expected}")
    return problems


def _require_owner_owns_tables(connection: Connection, owner_role: str) -> None:
    """Before upgrading: the ledger's existing tables must be the migration role's (a deployment whose service role
    ran the migrations so far must hand them over first)."""
    rows = connection.execute(
        sa.text(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relname = ANY(:tables)"
            " AND c.relkind IN ('r', 'p') AND NOT pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY c.relname"
        ),
        {"tables": [grant.table for grant in SERVICE_GRANTS]},
    ).all()
    if rows:
        others = sorted({str(owner) for _, owner in rows})
        raise LeastPrivilegeFailed(
            f"tables {', '.join(str(name) for name, _ in rows)} are owned by {', '.join(others)}, not by the "
            f"migration role {owner_role}: as a superuser, in this database, run REASSIGN OWNED BY {others[0]} TO "
            f"{owner_role} (and ALTER DATABASE ... OWNER TO {owner_role} if that role owns the database)"
        )


def _require_separable_roles(cursor: psycopg2.extensions.cursor, service_role: str, owner_role: str) -> None:
    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (service_role,))
    row = cursor.fetchone()
    if row is None:
        raise LeastPrivilegeFailed(f"the service role {service_role!r} does not exist")
    if row[0]:
        raise LeastPrivilegeFailed(f"the service role {service_role!r} is a superuser: no privilege can bind it")
    cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (service_role, owner_role))
    if _one_row(cursor)[0]:
        raise LeastPrivilegeFailed(
            f"the service role {service_role!r} is a member of the owner role {owner_role!r}: it may act as the owner"
        )


def _owned_sequences(cursor: psycopg2.extensions.cursor, schema: str) -> list[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'S' AND pg_has_role(current_user, c.relowner, 'USAGE')"
        " ORDER BY c.relname",
        (schema,),
    )
    return [str(name) for (name,) in cursor.fetchall()]


def _may_act_as_owner(
    cursor: psycopg2.extensions.cursor, catalog: str, owner_column: str, name_column: str, name: str
) -> bool:
    cursor.execute(
        sql.SQL("SELECT pg_has_role(current_user, {}, 'USAGE') FROM {} WHERE {} = %s").format(
            sql.Identifier(owner_column), sql.Identifier("pg_catalog", catalog), sql.Identifier(name_column)
        ),
        (name,),
    )
    row = cursor.fetchone()
    return bool(row and row[0])


def _known_privilege(name: str) -> str:
    if name not in TABLE_PRIVILEGES:
        raise ValueError(f"unknown table privilege {name!r}")
    return name


def _driver_cursor(connection: Connection) -> psycopg2.extensions.cursor:
    """A psycopg2 cursor in the SQLAlchemy connection's transaction (``psycopg2.sql`` composes for it)."""
    cursor: psycopg2.extensions.cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    return cursor


def _one_row(cursor: psycopg2.extensions.cursor) -> Sequence[Any]:
    row = cursor.fetchone()
    if row is None:
        raise LeastPrivilegeFailed("a catalog query returned no row")
    return tuple(row)
