"""The composition root: the only place that knows which adapter serves which port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dependency_injector import containers, providers
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from ledger.domain.api_keys import ApiKeyService
from ledger.domain.bank_statement_service import BankStatementService
from ledger.domain.ledger_verification import LedgerVerificationService
from ledger.domain.ledgers import AccountService, LedgerService, utc_now
from ledger.domain.pending_transfer_service import PendingTransferService
from ledger.domain.reconciliation_service import ReconciliationService
from ledger.domain.transactions import RetryPolicy, TransactionRunner
from ledger.domain.transfer_batches import TransferBatchService
from ledger.domain.transfer_coalescing import CoalescingTransferWriter, DirectTransferWriter, TransferWriter
from ledger.domain.transfer_service import TransferService
from ledger.domain.trust_operations import TrustService
from ledger.domain.trust_reports import TrustReportService
from ledger.infrastructure.database_engine import CredentialedConnector, create_database_engine
from ledger.infrastructure.database_health import DatabaseStoreHealth
from ledger.infrastructure.database_schema import build_metadata
from ledger.infrastructure.in_memory import InMemoryStore, InMemoryStoreHealth, InMemoryUnitOfWork
from ledger.infrastructure.secret_providers import (
    AwsSecretsManagerProvider,
    DatabaseUrlProvider,
    SecretFileProvider,
    SecretProvider,
    secrets_manager_client,
)
from ledger.infrastructure.settings import CredentialSource, LedgerSettings
from ledger.infrastructure.sqlalchemy_unit_of_work import (
    SqlAlchemyUnitOfWork,
    TransactionSettings,
    create_session_factory,
)
from ledger.infrastructure.structured_logging import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI


class NoDatabaseConfigured(RuntimeError):
    pass


def build_secret_provider(settings: LedgerSettings) -> SecretProvider:
    """The service's credentials: what the serving process connects with."""
    return _secret_provider(
        settings,
        settings.credential_source,
        aws_secret_id=settings.aws_secret_id,
        secret_file=settings.secret_file,
        database_url=settings.database_url,
    )


def build_owner_secret_provider(settings: LedgerSettings) -> SecretProvider:
    """The schema owner's credentials, for ``ledger migrate`` only: same kind of store as the service's, own id."""
    source = settings.owner_credential_source
    if source is None:
        raise NoDatabaseConfigured(
            "no owner credentials configured: set LEDGER_OWNER_AWS_SECRET_ID, LEDGER_OWNER_SECRET_FILE or "
            "LEDGER_OWNER_DATABASE_URL (the same kind as the service's source)"
        )
    return _secret_provider(
        settings,
        source,
        aws_secret_id=settings.owner_aws_secret_id,
        secret_file=settings.owner_secret_file,
        database_url=settings.owner_database_url,
    )


def _secret_provider(
    settings: LedgerSettings,
    source: CredentialSource,
    *,
    aws_secret_id: str | None,
    secret_file: Path | None,
    database_url: SecretStr | None,
) -> SecretProvider:
    if source is CredentialSource.AWS_SECRETS_MANAGER:
        assert aws_secret_id is not None
        return AwsSecretsManagerProvider(
            aws_secret_id, secrets_manager_client(settings), ttl_seconds=settings.secret_cache_ttl_seconds
        )
    if source is CredentialSource.SECRET_FILE:
        assert secret_file is not None
        return SecretFileProvider(secret_file, ttl_seconds=settings.secret_cache_ttl_seconds)
    if source is CredentialSource.DATABASE_URL:
        assert database_url is not None
        return DatabaseUrlProvider(database_url)
    raise NoDatabaseConfigured(
        "no database configured: set LEDGER_AWS_SECRET_ID, LEDGER_SECRET_FILE or LEDGER_DATABASE_URL, "
        "or let `ledger serve` start the embedded PostgreSQL"
    )


def database_engine_lifecycle(settings: LedgerSettings, connector: CredentialedConnector) -> Iterator[Engine]:
    engine = create_database_engine(settings, connector)
    try:
        yield engine
    finally:
        engine.dispose()


def transfer_writer_lifecycle(
    settings: LedgerSettings, transfer_service: TransferService, trust_service: TrustService, runner: TransactionRunner
) -> Iterator[TransferWriter]:
    """The coalescing writer (or one transaction per transfer when switched off); its threads stop at shutdown."""
    writer: TransferWriter
    if settings.coalescing_enabled:
        writer = CoalescingTransferWriter(
            transfer_service,
            trust_service,
            runner,
            max_group=settings.coalescing_max_group,
            max_wait_seconds=settings.coalescing_max_wait_ms / 1000,
            writer_threads=settings.coalescing_writer_threads,
            max_metadata_bytes=settings.max_metadata_bytes,
        )
    else:
        writer = DirectTransferWriter(transfer_service, trust_service, runner)
    try:
        yield writer
    finally:
        writer.close()


def _same(engine: Engine) -> Engine:
    return engine


def _same_writer(writer: TransferWriter) -> TransferWriter:
    return writer


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=LedgerSettings)

    secret_provider = providers.ThreadSafeSingleton(build_secret_provider, settings)
    database_connector = providers.ThreadSafeSingleton(CredentialedConnector, secret_provider, settings)
    # The resource disposes the engine at shutdown; the singleton around it makes the first use thread-safe.
    database_engine_resource = providers.Resource(database_engine_lifecycle, settings, database_connector)
    database_engine = providers.ThreadSafeSingleton(_same, database_engine_resource)
    database_tables = providers.ThreadSafeSingleton(build_metadata)

    # The schema owner, for `ledger migrate` only: built on first use, so a serving process never reads its secret.
    owner_secret_provider = providers.ThreadSafeSingleton(build_owner_secret_provider, settings)
    owner_database_connector = providers.ThreadSafeSingleton(CredentialedConnector, owner_secret_provider, settings)
    owner_database_engine_resource = providers.Resource(database_engine_lifecycle, settings, owner_database_connector)
    owner_database_engine = providers.ThreadSafeSingleton(_same, owner_database_engine_resource)
    session_factory = providers.ThreadSafeSingleton(create_session_factory, database_engine)
    transaction_settings = providers.ThreadSafeSingleton(TransactionSettings, settings)

    unit_of_work = providers.Factory(
        SqlAlchemyUnitOfWork,
        session_factory=session_factory,
        tables=database_tables,
        transaction_settings=transaction_settings,
    )
    store_health = providers.ThreadSafeSingleton(DatabaseStoreHealth, database_engine, settings)

    in_memory_store = providers.ThreadSafeSingleton(InMemoryStore)

    retry_policy = providers.Object(RetryPolicy())
    transaction_runner = providers.Factory(
        TransactionRunner, uow_factory=unit_of_work.provider, retry_policy=retry_policy
    )
    ledger_service = providers.Factory(LedgerService, runner=transaction_runner)
    account_service = providers.Factory(AccountService, runner=transaction_runner)
    transfer_service = providers.Factory(
        TransferService, runner=transaction_runner, max_metadata_bytes=settings.provided.max_metadata_bytes
    )
    transfer_batch_service = providers.Factory(
        TransferBatchService, runner=transaction_runner, max_metadata_bytes=settings.provided.max_metadata_bytes
    )
    trust_service = providers.Factory(
        TrustService, runner=transaction_runner, max_metadata_bytes=settings.provided.max_metadata_bytes
    )
    # One writer per process, shared by every request; the resource closes it at shutdown.
    transfer_writer_resource = providers.Resource(
        transfer_writer_lifecycle, settings, transfer_service, trust_service, transaction_runner
    )
    transfer_writer = providers.ThreadSafeSingleton(_same_writer, transfer_writer_resource)
    ledger_verification_service = providers.Factory(LedgerVerificationService, runner=transaction_runner)
    trust_report_service = providers.Factory(TrustReportService, runner=transaction_runner)
    reconciliation_service = providers.Factory(ReconciliationService, runner=transaction_runner)
    pending_transfer_service = providers.Factory(
        PendingTransferService, runner=transaction_runner, max_metadata_bytes=settings.provided.max_metadata_bytes
    )
    bank_statement_service = providers.Factory(BankStatementService, runner=transaction_runner)
    api_key_service = providers.ThreadSafeSingleton(
        ApiKeyService,
        runner=transaction_runner,
        cache_seconds=settings.provided.api_key_cache_seconds,
        clock=providers.Object(utc_now),
    )


def build_container(settings: LedgerSettings) -> Container:
    container = Container(settings=settings)
    return container


def use_in_memory_adapters(container: Container) -> None:
    """Swap PostgreSQL for the in-memory adapters: the whole app then runs without a database."""
    container.unit_of_work.override(providers.Factory(InMemoryUnitOfWork, store=container.in_memory_store))
    container.store_health.override(providers.ThreadSafeSingleton(InMemoryStoreHealth))


def create_app() -> FastAPI:
    """The ASGI factory uvicorn imports (``ledger.container:create_app``): settings from the environment."""
    from ledger.api.app import create_app as create_api

    settings = LedgerSettings()
    configure_logging(settings.log_level, settings.log_format)
    return create_api(build_container(settings))
