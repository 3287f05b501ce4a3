"""Database credentials in the shape AWS uses for database secrets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

_KNOWN_OPTIONS = frozenset({"sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "target_session_attrs"})


class InvalidSecretDocument(ValueError):
    """The secret exists but does not hold usable database credentials. Never carries the secret's values."""


@dataclass(frozen=True, slots=True)
class DatabaseCredentials:
    host: str
    port: int
    username: str
    password: SecretStr
    dbname: str
    engine: str = "postgres"
    options: Mapping[str, str] = field(default_factory=dict)
    version_id: str | None = None

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, version_id: str | None = None, require_password: bool = True
    ) -> DatabaseCredentials:
        required = ("host", "username", "password", "dbname") if require_password else ("host", "username", "dbname")
        missing = [key for key in required if not document.get(key)]
        if missing:
            raise InvalidSecretDocument(f"secret document lacks {', '.join(missing)}")
        engine = str(document.get("engine", "postgres"))
        if engine not in {"postgres", "postgresql"}:
            raise InvalidSecretDocument(f"secret document engine {engine!r} is not postgres")
        try:
            port = int(document.get("port", 5432))
        except (TypeError, ValueError):
            raise InvalidSecretDocument("secret document port is not a number") from None
        options = {key: str(value) for key, value in document.items() if key in _KNOWN_OPTIONS}
        return cls(
            host=str(document["host"]),
            port=port,
            username=str(document["username"]),
            password=SecretStr(str(document.get("password") or "")),
            dbname=str(document["dbname"]),
            engine=engine,
            options=options,
            version_id=version_id,
        )

    @classmethod
    def from_json(cls, text: str, *, version_id: str | None = None) -> DatabaseCredentials:
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidSecretDocument("secret is not a JSON document") from None
        if not isinstance(document, dict):
            raise InvalidSecretDocument("secret is not a JSON object")
        return cls.from_document(document, version_id=version_id)

    @classmethod
    def from_url(cls, url: str) -> DatabaseCredentials:
        """Parses ``postgresql://user:password@host:port/dbname?sslmode=...`` (host may be a socket directory
        given as ``?host=/path``)."""
        parts = urlsplit(url)
        if not parts.scheme.startswith("postgres"):
            raise InvalidSecretDocument("database URL must use the postgresql scheme")
        query = dict(parse_qsl(parts.query))
        host = query.pop("host", None) or parts.hostname or ""
        document: dict[str, Any] = {
            "engine": "postgres",
            "host": unquote(host),
            "port": parts.port or int(query.pop("port", 5432)),
            "username": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "dbname": unquote(parts.path.lstrip("/")),
            **query,
        }
        # A development server with trust authentication needs no password.
        return cls.from_document(document, require_password=False)

    def to_document(self) -> dict[str, Any]:
        """The secret document, password in clear: only for writing a secret file or a secret version."""
        return {
            "engine": self.engine,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password.get_secret_value(),
            "dbname": self.dbname,
            **dict(self.options),
        }

    def connect_parameters(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect``."""
        parameters: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.username,
            "dbname": self.dbname,
            **dict(self.options),
        }
        password = self.password.get_secret_value()
        if password:
            parameters["password"] = password
        return parameters
