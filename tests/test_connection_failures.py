"""Why a connection attempt failed, told from the driver's message: one test per cause.

psycopg2 gives no SQLSTATE while connecting, so the classifier reads text. Wherever the error can be produced for
real (the test server, a closed port, an empty socket directory, a name that cannot resolve, a TCP peer that speaks
just enough of the protocol) it is; the rest are the server's own message texts, table-driven.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from psycopg2 import sql

from ledger.infrastructure.connection_failures import (
    HINTS,
    TRANSIENT_CAUSES,
    ConnectionFailureCause,
    classify_connection_failure,
)
from tests.conftest import free_port
from tests.postgres_admin import PostgresAdmin

Cause = ConnectionFailureCause
CONNECT_TIMEOUT_SECONDS = 3


def connect_error(**parameters: Any) -> psycopg2.OperationalError:
    """The error psycopg2 raises for these connection parameters (the attempt must fail)."""
    parameters.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    try:
        connection = psycopg2.connect(**parameters)
    except psycopg2.OperationalError as error:
        return error
    connection.close()
    pytest.fail("the connection attempt was expected to fail but succeeded")


@pytest.fixture
def password_role(postgres_admin: PostgresAdmin) -> tuple[str, str]:
    """A login role with a password, on a server that refuses wrong passwords."""
    return postgres_admin.create_role()


# --- real errors from the test server -------------------------------------------------------------------------


def test_wrong_password_is_authentication_failed(postgres_admin: PostgresAdmin, password_role: tuple[str, str]) -> None:
    role, _ = password_role
    wrong = postgres_admin.credentials(role, f"wrong-{secrets.token_hex(8)}", postgres_admin.superuser.dbname)
    error = connect_error(**wrong.connect_parameters())
    assert error.pgcode is None  # the reason the classifier reads text
    assert "password authentication failed" in str(error)
    assert classify_connection_failure(error) is Cause.AUTHENTICATION_FAILED


def test_wrong_password_for_a_missing_database_is_still_authentication_failed(
    postgres_admin: PostgresAdmin, password_role: tuple[str, str]
) -> None:
    role, _ = password_role
    wrong = postgres_admin.credentials(role, "wrong", f"no_such_db_{secrets.token_hex(4)}")
    assert classify_connection_failure(connect_error(**wrong.connect_parameters())) is Cause.AUTHENTICATION_FAILED


def test_missing_database_is_database_missing(postgres_admin: PostgresAdmin, password_role: tuple[str, str]) -> None:
    role, password = password_role
    dbname = f"no_such_db_{secrets.token_hex(4)}"
    error = connect_error(**postgres_admin.credentials(role, password, dbname).connect_parameters())
    assert f'database "{dbname}" does not exist' in str(error)
    assert classify_connection_failure(error) is Cause.DATABASE_MISSING


def test_missing_role_is_authentication_failed(postgres_admin: PostgresAdmin) -> None:
    missing = postgres_admin.credentials(
        f"no_such_role_{secrets.token_hex(4)}", "whatever", postgres_admin.superuser.dbname
    )
    assert classify_connection_failure(connect_error(**missing.connect_parameters())) is Cause.AUTHENTICATION_FAILED


def test_role_over_its_connection_limit_is_too_many_connections(
    postgres_admin: PostgresAdmin, password_role: tuple[str, str]
) -> None:
    role, password = password_role
    postgres_admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(role)))
    error = connect_error(
        **postgres_admin.credentials(role, password, postgres_admin.superuser.dbname).connect_parameters()
    )
    assert "too many connections" in str(error)
    assert classify_connection_failure(error) is Cause.TOO_MANY_CONNECTIONS


def test_closed_tcp_port_is_host_unreachable() -> None:
    error = connect_error(host="127.0.0.1", port=free_port(), user="ledger", password="x", dbname="ledger")
    assert "Connection refused" in str(error)
    assert classify_connection_failure(error) is Cause.HOST_UNREACHABLE


def test_socket_directory_without_a_server_is_host_unreachable(tmp_path: Path) -> None:
    error = connect_error(host=str(tmp_path), port=5432, user="ledger", password="x", dbname="ledger")
    assert "No such file or directory" in str(error)
    assert classify_connection_failure(error) is Cause.HOST_UNREACHABLE


def test_unresolvable_host_name_is_host_unreachable() -> None:
    error = connect_error(host="no-such-host.invalid", port=5432, user="ledger", password="x", dbname="ledger")
    assert "could not translate host name" in str(error)
    assert classify_connection_failure(error) is Cause.HOST_UNREACHABLE


def test_sqlalchemy_wrapper_is_read_through_to_the_driver_error(
    postgres_admin: PostgresAdmin, password_role: tuple[str, str]
) -> None:
    role, _ = password_role
    superuser = postgres_admin.superuser
    engine = sa.create_engine(
        sa.URL.create(
            "postgresql+psycopg2",
            username=role,
            password="wrong",
            host=superuser.host,
            port=superuser.port,
            database=superuser.dbname,
        ),
        poolclass=sa.pool.NullPool,
    )
    try:
        with pytest.raises(sa.exc.OperationalError) as raised, engine.connect():
            pass
    finally:
        engine.dispose()
    assert isinstance(raised.value.orig, psycopg2.OperationalError)
    assert classify_connection_failure(raised.value) is Cause.AUTHENTICATION_FAILED


# --- real errors from a TCP peer that speaks just enough of the protocol -------------------------------------


@pytest.fixture
def fake_server() -> Iterator[Any]:
    """Starts a one-connection TCP peer answering libpq's SSLRequest with ``reply`` (nothing: hang up)."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(reply: bytes) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        listeners.append(listener)

        def answer_once() -> None:
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            with peer:
                peer.settimeout(5)
                try:
                    peer.recv(8)  # SSLRequest (or StartupMessage with sslmode=disable)
                    if reply:
                        peer.sendall(reply)
                        peer.recv(1024)  # wait for libpq to give up
                except OSError:
                    pass

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        threads.append(thread)
        port: int = listener.getsockname()[1]
        return port

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(timeout=5)


def test_server_without_tls_when_tls_is_required_is_tls_failed(fake_server: Any) -> None:
    port = fake_server(b"N")  # "no SSL here"
    error = connect_error(host="127.0.0.1", port=port, user="u", password="x", dbname="d", sslmode="require")
    assert "SSL" in str(error)
    assert classify_connection_failure(error) is Cause.TLS_FAILED


def test_missing_root_certificate_is_tls_failed(fake_server: Any, tmp_path: Path) -> None:
    port = fake_server(b"S")  # "go ahead with TLS": libpq then needs its root certificate
    error = connect_error(
        host="127.0.0.1",
        port=port,
        user="u",
        password="x",
        dbname="d",
        sslmode="verify-full",
        sslrootcert=str(tmp_path / "root.crt"),
    )
    assert "root certificate file" in str(error)
    assert classify_connection_failure(error) is Cause.TLS_FAILED


def test_peer_hanging_up_unexpectedly_is_connection_failed(fake_server: Any) -> None:
    port = fake_server(b"")
    error = connect_error(host="127.0.0.1", port=port, user="u", password="x", dbname="d", sslmode="disable")
    assert "closed the connection unexpectedly" in str(error)
    assert classify_connection_failure(error) is Cause.CONNECTION_FAILED


# --- the server's message texts, table-driven ----------------------------------------------------------------

SOCKET = 'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: '
TCP = 'connection to server at "db.internal" (10.0.0.5), port 5432 failed: '

MESSAGES: list[tuple[str, Cause]] = [
    (SOCKET + 'FATAL:  password authentication failed for user "ledger_service"', Cause.AUTHENTICATION_FAILED),
    (SOCKET + 'FATAL:  role "ledger_service" does not exist', Cause.AUTHENTICATION_FAILED),
    (
        TCP + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "svc", database "ledger", no encryption',
        Cause.AUTHENTICATION_FAILED,
    ),
    (
        TCP + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "svc", database "ledger", SSL off',
        Cause.AUTHENTICATION_FAILED,
    ),
    (TCP + "fe_sendauth: no password supplied", Cause.AUTHENTICATION_FAILED),
    (SOCKET + 'FATAL:  database "ledger" does not exist', Cause.DATABASE_MISSING),
    (SOCKET + "FATAL:  the database system is starting up", Cause.SERVER_STARTING),
    (SOCKET + "FATAL:  the database system is shutting down", Cause.SERVER_STARTING),
    (SOCKET + "FATAL:  the database system is in recovery mode", Cause.SERVER_STARTING),
    (
        SOCKET + "FATAL:  the database system is not yet accepting connections\n"
        "DETAIL:  Consistent recovery state has not been yet reached.",
        Cause.SERVER_STARTING,
    ),
    (SOCKET + "FATAL:  sorry, too many clients already", Cause.TOO_MANY_CONNECTIONS),
    (SOCKET + 'FATAL:  too many connections for role "ledger_service"', Cause.TOO_MANY_CONNECTIONS),
    (SOCKET + 'FATAL:  too many connections for database "ledger"', Cause.TOO_MANY_CONNECTIONS),
    (
        SOCKET + "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
        Cause.TOO_MANY_CONNECTIONS,
    ),
    (
        SOCKET + "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
        Cause.TOO_MANY_CONNECTIONS,
    ),
    (TCP + "server does not support SSL, but SSL was required", Cause.TLS_FAILED),
    (TCP + 'server certificate for "db.internal" does not match host name "10.0.0.5"', Cause.TLS_FAILED),
    (TCP + "SSL error: certificate verify failed", Cause.TLS_FAILED),
    (TCP + "SSL error: tlsv1 alert protocol version", Cause.TLS_FAILED),
    (
        TCP + 'root certificate file "/etc/ssl/rds.pem" does not exist\nEither provide the file, use the '
        "system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate "
        "verification.",
        Cause.TLS_FAILED,
    ),
    (TCP + "timeout expired", Cause.HOST_UNREACHABLE),
    (TCP + "Network is unreachable", Cause.HOST_UNREACHABLE),
    (TCP + "No route to host", Cause.HOST_UNREACHABLE),
    (
        'could not translate host name "db.internal" to address: Temporary failure in name resolution',
        Cause.HOST_UNREACHABLE,
    ),
    (
        TCP + "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
        Cause.CONNECTION_FAILED,
    ),
    ("something no release of libpq has ever said", Cause.CONNECTION_FAILED),
    ("", Cause.CONNECTION_FAILED),
]


@pytest.mark.parametrize(("message", "expected"), MESSAGES, ids=[f"{c.value}-{i}" for i, (_, c) in enumerate(MESSAGES)])
def test_message_text_is_classified(message: str, expected: Cause) -> None:
    assert classify_connection_failure(psycopg2.OperationalError(message)) is expected


def test_every_cause_has_a_hint_and_only_what_can_recover_is_retried() -> None:
    assert set(HINTS) == set(Cause)
    assert all(hint.strip() for hint in HINTS.values())
    assert Cause.AUTHENTICATION_FAILED not in TRANSIENT_CAUSES
    assert Cause.DATABASE_MISSING not in TRANSIENT_CAUSES
    assert Cause.SCHEMA_BEHIND not in TRANSIENT_CAUSES
    assert Cause.TLS_FAILED not in TRANSIENT_CAUSES
    assert {Cause.HOST_UNREACHABLE, Cause.SERVER_STARTING, Cause.TOO_MANY_CONNECTIONS} <= TRANSIENT_CAUSES
