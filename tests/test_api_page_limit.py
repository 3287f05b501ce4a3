"""The page size limit is configurable below the design's maximum of 500."""

from __future__ import annotations

from ledger.api.app import create_app
from ledger.container import build_container, use_in_memory_adapters
from ledger.infrastructure.settings import LedgerSettings
from tests.http_clients import KeyedTestClient


def test_a_lower_configured_page_size_is_enforced_and_documented_limit_stays() -> None:
    container = build_container(LedgerSettings(environment="test", max_page_size=10))  # type: ignore[call-arg]
    use_in_memory_adapters(container)
    with KeyedTestClient(create_app(container)) as client:
        assert client.get("/v1/ledgers", params={"limit": 10}).status_code == 200
        refused = client.get("/v1/ledgers", params={"limit": 11})
        assert refused.status_code == 422
        assert refused.json()["code"] == "invalid_page_size"
        assert client.get("/v1/ledgers", params={"limit": 501}).status_code == 422
        parameters = client.get("/openapi.json").json()["paths"]["/v1/ledgers"]["get"]["parameters"]
        assert any(parameter["name"] == "limit" for parameter in parameters)
