"""Test clients that authenticate like a real API client does.

``AuthorizedTestClient`` sends an admin API key of the default tenant (created on first use in the app's own
container) unless the test sets its own ``Authorization``. ``KeyedTestClient`` also gives every POST a fresh
Idempotency-Key unless the test sets one: for tests about something other than idempotency.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from ledger.domain.api_keys import ApiKeyRole
from ledger.domain.model import DEFAULT_TENANT_ID


def create_api_key(
    container: Any, role: ApiKeyRole = ApiKeyRole.ADMIN, tenant_id: uuid.UUID = DEFAULT_TENANT_ID
) -> str:
    _, token = container.api_key_service().create_key(tenant_id, role=role, name="test key", created_by="test")
    return str(token)


class AuthorizedTestClient(TestClient):
    _token: str | None = None

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        headers = dict(kwargs.get("headers") or {})
        if not any(name.lower() in {"authorization", "x-api-key"} for name in headers):
            token = self._default_token()
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
        kwargs["headers"] = self._with_extra_headers(method, headers)
        return super().request(method, url, **kwargs)

    def _with_extra_headers(self, method: str, headers: dict[str, str]) -> dict[str, str]:
        return headers

    def _default_token(self) -> str | None:
        if self._token is None:
            container = self.app.state.container  # type: ignore[attr-defined]
            try:
                self._token = create_api_key(container)
            except Exception:
                # No database to make a key in: send a well-formed one, as a real client would. Checking it needs
                # the database, so such requests must answer 503, never 401 or 500.
                return "tlk_0123456789abcdef." + "A" * 43
        return self._token


class KeyedTestClient(AuthorizedTestClient):
    def _with_extra_headers(self, method: str, headers: dict[str, str]) -> dict[str, str]:
        if method.upper() == "POST" and not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = f"test-{uuid.uuid4()}"
        return headers
