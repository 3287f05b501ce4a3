"""Why a connection attempt failed, told from the server's message.

psycopg2 gives no SQLSTATE for a failure while connecting (``pgcode`` is None), so the text is all there is. This
is the one place that reads it; each cause has a test.
"""

from __future__ import annotations

import enum
import re


class ConnectionFailureCause(enum.StrEnum):
    AUTHENTICATION_FAILED = "authentication_failed"
    HOST_UNREACHABLE = "host_unreachable"
    DATABASE_MISSING = "database_missing"
    SERVER_STARTING = "server_starting"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TLS_FAILED = "tls_failed"
    SECRET_UNAVAILABLE = "secret_unavailable"
    SCHEMA_BEHIND = "schema_behind"
    CONNECTION_FAILED = "connection_failed"


HINTS: dict[ConnectionFailureCause, str] = {
    ConnectionFailureCause.AUTHENTICATION_FAILED: (
        "the database refused the credentials of the secret even after re-reading it; check that the secret's "
        "username and password match the role in PostgreSQL"
    ),
    ConnectionFailureCause.HOST_UNREACHABLE: (
        "no PostgreSQL answers at the secret's host and port; check the host, the port, the network and that "
        "the server is running"
    ),
    ConnectionFailureCause.DATABASE_MISSING: (
        "the secret's dbname does not exist on the server; create it or fix the secret"
    ),
    ConnectionFailureCause.SERVER_STARTING: "the server is starting up or shutting down; wait and retry",
    ConnectionFailureCause.TOO_MANY_CONNECTIONS: (
        "the server has no free connection slots; lower pool sizes or raise max_connections"
    ),
    ConnectionFailureCause.TLS_FAILED: (
        "the TLS handshake failed; check sslmode, sslrootcert and the server certificate"
    ),
    ConnectionFailureCause.SECRET_UNAVAILABLE: (
        "the credentials could not be read from their store; check the secret id, region, endpoint and permissions"
    ),
    ConnectionFailureCause.SCHEMA_BEHIND: "the database schema is older than this release; run `ledger migrate`",
    ConnectionFailureCause.CONNECTION_FAILED: "the connection failed for a reason the service does not recognise",
}

# Causes worth retrying during the start-up deadline: the server may come up; credentials will not fix themselves.
TRANSIENT_CAUSES = frozenset(
    {
        ConnectionFailureCause.HOST_UNREACHABLE,
        ConnectionFailureCause.SERVER_STARTING,
        ConnectionFailureCause.TOO_MANY_CONNECTIONS,
        ConnectionFailureCause.CONNECTION_FAILED,
        ConnectionFailureCause.SECRET_UNAVAILABLE,
    }
)

_PATTERNS: tuple[tuple[re.Pattern[str], ConnectionFailureCause], ...] = (
    (re.compile(r"password authentication failed", re.I), ConnectionFailureCause.AUTHENTICATION_FAILED),
    (re.compile(r"no pg_hba\.conf entry", re.I), ConnectionFailureCause.AUTHENTICATION_FAILED),
    (re.compile(r'role "[^"]*" does not exist', re.I), ConnectionFailureCause.AUTHENTICATION_FAILED),
    (re.compile(r"no password supplied|fe_sendauth", re.I), ConnectionFailureCause.AUTHENTICATION_FAILED),
    (re.compile(r'database "[^"]*" does not exist', re.I), ConnectionFailureCause.DATABASE_MISSING),
    (
        re.compile(r"the database system is (starting up|shutting down|in recovery mode|not yet accepting)", re.I),
        ConnectionFailureCause.SERVER_STARTING,
    ),
    (
        re.compile(r"too many (connections|clients)|remaining connection slots are reserved", re.I),
        ConnectionFailureCause.TOO_MANY_CONNECTIONS,
    ),
    (
        re.compile(
            r"connection refused|could not translate host name|no such file or directory|network is unreachable"
            r"|no route to host|timeout expired|connection timed out|name or service not known",
            re.I,
        ),
        ConnectionFailureCause.HOST_UNREACHABLE,
    ),
    (re.compile(r"\bSSL\b|certificate", re.I), ConnectionFailureCause.TLS_FAILED),
)


def classify_connection_failure(error: BaseException) -> ConnectionFailureCause:
    """Reads the driver's error (or SQLAlchemy's wrapper of it)."""
    original = getattr(error, "orig", None) or error
    message = str(original)
    for pattern, cause in _PATTERNS:
        if pattern.search(message):
            return cause
    return ConnectionFailureCause.CONNECTION_FAILED
