"""The one settings class. Built by the app factory and the CLI, never at import time."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CredentialSource(enum.StrEnum):
    AWS_SECRETS_MANAGER = "aws_secrets_manager"
    SECRET_FILE = "secret_file"
    DATABASE_URL = "database_url"
    EMBEDDED = "embedded"


# The sslmodes under which libpq checks the server's certificate (verify-full also checks its host name).
VERIFIED_SSLMODES = frozenset({"verify-ca", "verify-full"})

_SOURCE_VARIABLES = {
    CredentialSource.AWS_SECRETS_MANAGER: "LEDGER_AWS_SECRET_ID",
    CredentialSource.SECRET_FILE: "LEDGER_SECRET_FILE",
    CredentialSource.DATABASE_URL: "LEDGER_DATABASE_URL",
}


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("trust-ledger", appauthor=False))


class LedgerSettings(BaseSettings):
    """Environment-driven (prefix ``LEDGER_``). Holds where credentials live, never a password of its own,
    except ``database_url`` which is for development and CI only."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"

    # Credential source: at most one of these; none means the embedded PostgreSQL.
    aws_secret_id: str | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    secret_file: Path | None = None
    database_url: SecretStr | None = None
    secret_cache_ttl_seconds: float = Field(default=300.0, gt=0)

    # Where the schema owner's credentials live, used by `ledger migrate` only (the serving process never reads
    # them): the same kind of source as the service's, with its own id. The AWS secret shares the service's region
    # and endpoint.
    owner_aws_secret_id: str | None = None
    owner_secret_file: Path | None = None
    owner_database_url: SecretStr | None = None

    data_dir: Path = Field(default_factory=default_data_dir)

    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=5, ge=0, le=200)
    pool_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    pool_recycle_seconds: int = Field(default=1800, ge=1)
    pool_pre_ping: bool = True
    application_name: str = "trust-ledger"
    statement_timeout_ms: int = Field(default=15_000, ge=0)
    lock_timeout_ms: int = Field(default=5_000, ge=0)
    idle_in_transaction_timeout_ms: int = Field(default=30_000, ge=0)
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    sslrootcert: Path | None = None
    # Production refuses an sslmode that does not verify the server's certificate unless this says so, deliberately.
    allow_weak_tls: bool = False

    startup_deadline_seconds: float = Field(default=30.0, gt=0)
    startup_retry_interval_seconds: float = Field(default=1.0, gt=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    # Limits of the HTTP API. The rate limit is per API key and per server process; a global limit belongs at the
    # gateway in front of the service.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    max_metadata_bytes: int = Field(default=4096, ge=2, le=4096)
    max_page_size: int = Field(default=500, ge=1, le=500)
    rate_limit_per_second: float = Field(default=200.0, gt=0)
    rate_limit_burst: int = Field(default=400, ge=1)
    api_key_cache_seconds: float = Field(default=2.0, ge=0, le=60)

    # Signed checkpoints of the posting chains (`ledger checkpoint`, `ledger verify`). The key never enters the
    # database: a file (hex, 32+ bytes) or a Secrets Manager secret (same region and endpoint as above). With
    # neither, the embedded default keeps a generated key file in its data directory.
    checkpoint_key_file: Path | None = None
    checkpoint_key_secret_id: str | None = None
    checkpoint_dir: Path | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    threadpool_size: int = Field(default=64, ge=1, le=1000)

    # The coalescing writer: concurrent single transfers of one process share one transaction. A group closes when
    # full or when the wait since its first transfer is over; each writer thread runs one group at a time.
    coalescing_enabled: bool = True
    coalescing_max_group: int = Field(default=32, ge=1, le=1000)
    coalescing_max_wait_ms: float = Field(default=2.0, ge=0, le=100)
    coalescing_writer_threads: int = Field(default=2, ge=1, le=64)

    @model_validator(mode="after")
    def _thread_pool_larger_than_a_group(self) -> LedgerSettings:
        # Each transfer waiting in a group holds a thread of the pool: a pool no larger than a group could never
        # fill one, and every group would wait out its whole wait.
        if self.coalescing_enabled and self.threadpool_size <= self.coalescing_max_group:
            raise ValueError(
                f"LEDGER_THREADPOOL_SIZE ({self.threadpool_size}) must be larger than LEDGER_COALESCING_MAX_GROUP "
                f"({self.coalescing_max_group})"
            )
        return self

    @model_validator(mode="after")
    def _one_credential_source(self) -> LedgerSettings:
        chosen = [
            name
            for name, value in (
                ("LEDGER_AWS_SECRET_ID", self.aws_secret_id),
                ("LEDGER_SECRET_FILE", self.secret_file),
                ("LEDGER_DATABASE_URL", self.database_url),
            )
            if value is not None
        ]
        if len(chosen) > 1:
            raise ValueError(f"set at most one credential source, got {', '.join(chosen)}")
        if self.aws_secret_id is not None and not self.aws_region:
            raise ValueError("LEDGER_AWS_REGION is required with LEDGER_AWS_SECRET_ID")
        if self.environment == "production" and self.database_url is not None:
            raise ValueError("LEDGER_DATABASE_URL is for development and CI; production reads AWS Secrets Manager")
        return self

    @model_validator(mode="after")
    def _owner_source_of_the_same_kind(self) -> LedgerSettings:
        chosen = [
            name
            for name, value in (
                ("LEDGER_OWNER_AWS_SECRET_ID", self.owner_aws_secret_id),
                ("LEDGER_OWNER_SECRET_FILE", self.owner_secret_file),
                ("LEDGER_OWNER_DATABASE_URL", self.owner_database_url),
            )
            if value is not None
        ]
        if len(chosen) > 1:
            raise ValueError(f"set at most one owner credential source, got {', '.join(chosen)}")
        owner = self.owner_credential_source
        if owner is None:
            return self
        if owner is not self.credential_source:
            raise ValueError(
                f"{chosen[0]} needs the service's credentials from the same kind of source "
                f"({_SOURCE_VARIABLES[owner]}), not {self.credential_source.value}"
            )
        # (So LEDGER_OWNER_DATABASE_URL, like LEDGER_DATABASE_URL, is refused in production.)
        return self

    @model_validator(mode="after")
    def _verified_tls_in_production(self) -> LedgerSettings:
        # Without any credential source the CLI refuses production with its own message (no embedded default there).
        if (
            self.environment != "production"
            or self.credential_source is CredentialSource.EMBEDDED
            or self.allow_weak_tls
            or self.sslmode in VERIFIED_SSLMODES
        ):
            return self
        given = (
            f"LEDGER_SSLMODE={self.sslmode}"
            if self.sslmode
            else "no LEDGER_SSLMODE (libpq's default, prefer, may fall back to plain text)"
        )
        raise ValueError(
            f"production requires LEDGER_SSLMODE=verify-full (or verify-ca), got {given}: the database server's "
            "certificate would not be verified. Set LEDGER_ALLOW_WEAK_TLS=true to accept that deliberately"
        )

    @property
    def credential_source(self) -> CredentialSource:
        if self.aws_secret_id is not None:
            return CredentialSource.AWS_SECRETS_MANAGER
        if self.secret_file is not None:
            return CredentialSource.SECRET_FILE
        if self.database_url is not None:
            return CredentialSource.DATABASE_URL
        return CredentialSource.EMBEDDED

    @property
    def checkpoint_directory(self) -> Path:
        return self.checkpoint_dir if self.checkpoint_dir is not None else self.data_dir / "checkpoints"

    @property
    def owner_credential_source(self) -> CredentialSource | None:
        """Where ``ledger migrate`` finds the schema owner's credentials; None when none is configured."""
        if self.owner_aws_secret_id is not None:
            return CredentialSource.AWS_SECRETS_MANAGER
        if self.owner_secret_file is not None:
            return CredentialSource.SECRET_FILE
        if self.owner_database_url is not None:
            return CredentialSource.DATABASE_URL
        return None

    @property
    def hide_sql_parameters(self) -> bool:
        return self.environment != "development"
