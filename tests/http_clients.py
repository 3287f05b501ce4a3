"""A test client for tests about something other than idempotency: every POST gets a fresh Idempotency-Key unless
the test sets one itself."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient


class KeyedTestClient(TestClient):
    def request(self, method: str, url: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if method.upper() == "POST":
            headers = dict(kwargs.get("headers") or {})
            if not any(name.lower() == "idempotency-key" for name in headers):
                headers["Idempotency-Key"] = f"test-{uuid.uuid4()}"
            kwargs["headers"] = headers
        return super().request(method, url, **kwargs)
