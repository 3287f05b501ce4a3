"""What a downstream test suite imports to run the service on the in-memory adapters (no database).

In a ``conftest.py``::

    pytest_plugins = ["ledger.testing"]

then use the fixtures ``ledger_container`` (a wired container), ``ledger_app`` (the FastAPI app),
``ledger_api_key`` (an admin key of the default tenant) and ``ledger_client`` (a ``TestClient`` with the lifespan
run, sending that key). Outside pytest, ``in_memory_container()`` gives the same
container. The in-memory adapters pass the same contract suite as the PostgreSQL ones, so behaviour matches.
Requires the ``dev`` extra (pytest, httpx2).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ledger.container import Container, build_container, use_in_memory_adapters
from ledger.domain.api_keys import ApiKeyRole
from ledger.domain.model import DEFAULT_TENANT_ID
from ledger.infrastructure.settings import LedgerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient


def in_memory_container(settings: LedgerSettings | None = None) -> Container:
    """A container whose unit of work and health check are the in-memory ones; everything else is production."""
    container = build_container(settings or LedgerSettings(environment="test"))
    use_in_memory_adapters(container)
    return container


@pytest.fixture
def ledger_container() -> Iterator[Container]:
    container = in_memory_container()
    yield container
    container.shutdown_resources()


@pytest.fixture
def ledger_app(ledger_container: Container) -> FastAPI:
    from ledger.api.app import create_app

    return create_app(ledger_container)


@pytest.fixture
def ledger_api_key(ledger_container: Container) -> str:
    _, token = ledger_container.api_key_service().create_key(
        DEFAULT_TENANT_ID, role=ApiKeyRole.ADMIN, name="ledger.testing", created_by="ledger.testing"
    )
    return token


@pytest.fixture
def ledger_client(ledger_app: FastAPI, ledger_api_key: str) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    with TestClient(ledger_app, headers={"Authorization": f"Bearer {ledger_api_key}"}) as client:
        yield client
