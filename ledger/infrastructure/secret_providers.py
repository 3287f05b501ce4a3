"""Where database credentials come from: AWS Secrets Manager, a JSON secret file, or a plain URL.

Every provider hands out the credentials it holds (``current``), re-reads them when the database refused a login
(``refresh``), and, where the store has one, offers the version being rotated in (``pending``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import botocore.exceptions
import structlog
from pydantic import SecretStr

from ledger.infrastructure.database_credentials import DatabaseCredentials, InvalidSecretDocument

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from ledger.infrastructure.settings import LedgerSettings

Clock = Callable[[], float]

# After the store could not be read, serve the cached credentials and try the store again this soon.
MIN_REFRESH_INTERVAL_SECONDS = 1.0


class SecretUnavailable(RuntimeError):
    """The secret store could not give us credentials. The message names the secret, never its value."""


class SecretProvider(Protocol):
    @property
    def description(self) -> str:
        """Where the credentials come from, fit for a log line (no secret)."""

    def current(self) -> DatabaseCredentials: ...

    def refresh(self, stale: DatabaseCredentials | None = None) -> DatabaseCredentials:
        """Re-read the store unless another thread already replaced ``stale``."""

    def pending(self) -> DatabaseCredentials | None:
        """The version being rotated in, if the store has such a thing."""


class _CachedCredentials:
    """A thread-safe TTL cache with single-flight refreshes, shared by the providers that read a store."""

    def __init__(self, fetch: Callable[[], DatabaseCredentials], ttl_seconds: float, clock: Clock) -> None:
        self._fetch = fetch
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._credentials: DatabaseCredentials | None = None
        self._fetched_at = 0.0
        self._log = structlog.get_logger(__name__)

    def current(self) -> DatabaseCredentials:
        credentials = self._credentials
        if credentials is not None and self._clock() - self._fetched_at < self._ttl_seconds:
            return credentials
        with self._lock:
            if self._credentials is not None and self._clock() - self._fetched_at < self._ttl_seconds:
                return self._credentials
            return self._fetch_locked(keep_stale_on_failure=True)

    def refresh(self, stale: DatabaseCredentials | None) -> DatabaseCredentials:
        with self._lock:
            cached = self._credentials
            if cached is not None and stale is not None and cached is not stale:
                # Another thread refreshed since this caller read ``stale``: one fetch serves them all.
                return cached
            return self._fetch_locked(keep_stale_on_failure=True)

    def _fetch_locked(self, *, keep_stale_on_failure: bool) -> DatabaseCredentials:
        try:
            credentials = self._fetch()
        except SecretUnavailable as error:
            if keep_stale_on_failure and self._credentials is not None:
                self._log.warning(
                    "secret_store_unreachable_using_cached_credentials",
                    reason=str(error),
                    retry_in_seconds=MIN_REFRESH_INTERVAL_SECONDS,
                )
                # Try the store again soon rather than after a whole TTL.
                self._fetched_at = self._clock() - self._ttl_seconds + MIN_REFRESH_INTERVAL_SECONDS
                return self._credentials
            raise
        self._credentials = credentials
        self._fetched_at = self._clock()
        return credentials


class AwsSecretsManagerProvider:
    """Reads an AWS database secret (``engine, host, port, username, password, dbname``) through boto3.

    Always asks for ``VersionStage="AWSCURRENT"`` explicitly: without it moto keeps returning the old version after
    a stage move, and on AWS it is the same thing said plainly.
    """

    def __init__(
        self,
        secret_id: str,
        client: SecretsManagerClient,
        *,
        ttl_seconds: float = 300.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._secret_id = secret_id
        self._client = client
        self._cache = _CachedCredentials(self._fetch_current, ttl_seconds, clock)

    @property
    def description(self) -> str:
        return f"aws secret {self._secret_id}"

    def current(self) -> DatabaseCredentials:
        return self._cache.current()

    def refresh(self, stale: DatabaseCredentials | None = None) -> DatabaseCredentials:
        return self._cache.refresh(stale)

    def pending(self) -> DatabaseCredentials | None:
        try:
            return self._fetch("AWSPENDING")
        except SecretUnavailable:
            return None

    def _fetch_current(self) -> DatabaseCredentials:
        return self._fetch("AWSCURRENT")

    def _fetch(self, stage: str) -> DatabaseCredentials:
        try:
            response = self._client.get_secret_value(SecretId=self._secret_id, VersionStage=stage)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "ClientError")
            raise SecretUnavailable(f"secret {self._secret_id!r} ({stage}) could not be read: {code}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise SecretUnavailable(
                f"secrets manager unreachable for {self._secret_id!r}: {type(error).__name__}"
            ) from None
        text = response.get("SecretString")
        if text is None:
            raise SecretUnavailable(f"secret {self._secret_id!r} has no SecretString")
        try:
            return DatabaseCredentials.from_json(text, version_id=response.get("VersionId"))
        except InvalidSecretDocument as error:
            raise SecretUnavailable(f"secret {self._secret_id!r}: {error}") from None


class SecretFileProvider:
    """A JSON secret document on disk (the embedded default writes one, mode 0600)."""

    def __init__(self, path: Path, *, ttl_seconds: float = 300.0, clock: Clock = time.monotonic) -> None:
        self._path = path
        self._cache = _CachedCredentials(self._read, ttl_seconds, clock)

    @property
    def description(self) -> str:
        return f"secret file {self._path}"

    def current(self) -> DatabaseCredentials:
        return self._cache.current()

    def refresh(self, stale: DatabaseCredentials | None = None) -> DatabaseCredentials:
        return self._cache.refresh(stale)

    def pending(self) -> DatabaseCredentials | None:
        return None

    def _read(self) -> DatabaseCredentials:
        try:
            text = self._path.read_text(encoding="utf-8")
        except OSError as error:
            raise SecretUnavailable(f"secret file {self._path} unreadable: {error.strerror}") from None
        try:
            return DatabaseCredentials.from_json(text)
        except InvalidSecretDocument as error:
            raise SecretUnavailable(f"secret file {self._path}: {error}") from None


class DatabaseUrlProvider:
    """A fixed URL from the environment: development and CI only."""

    def __init__(self, url: SecretStr) -> None:
        try:
            self._credentials = DatabaseCredentials.from_url(url.get_secret_value())
        except InvalidSecretDocument as error:
            raise SecretUnavailable(f"LEDGER_DATABASE_URL: {error}") from None

    @property
    def description(self) -> str:
        return "database url from the environment"

    def current(self) -> DatabaseCredentials:
        return self._credentials

    def refresh(self, stale: DatabaseCredentials | None = None) -> DatabaseCredentials:
        return self._credentials

    def pending(self) -> DatabaseCredentials | None:
        return None


def secrets_manager_client(settings: LedgerSettings) -> SecretsManagerClient:
    """The one way this service talks to Secrets Manager: the configured region and endpoint, short timeouts, two
    attempts (a slow store must not hold a login or a start-up check for long)."""
    import boto3
    import botocore.config

    client: SecretsManagerClient = boto3.session.Session().client(
        "secretsmanager",
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        config=botocore.config.Config(
            connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}
        ),
    )
    return client
