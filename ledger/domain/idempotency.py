"""Idempotent writes: a key posts at most once, forever, and its replay returns the first response."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from ledger.domain.errors import InvalidRequest

Outcome = TypeVar("Outcome")

MAX_KEY_LENGTH = 255
_ACCEPTABLE_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def check_idempotency_key(key: str) -> str:
    if not _ACCEPTABLE_KEY.match(key):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters without spaces",
            code="invalid_idempotency_key",
        )
    return key


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """What the first request answered; a replay answers exactly this."""

    status_code: int
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    tenant_id: uuid.UUID
    key: str
    fingerprint: str
    response: RecordedResponse
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class IdempotentRequest(Generic[Outcome]):
    """``render`` turns the outcome, or a refusal by a ledger rule, into the response to record. It is handed in by
    the caller (the API renders JSON), so the domain stores a response without knowing HTTP."""

    tenant_id: uuid.UUID
    key: str
    fingerprint: str
    render: Callable[[Outcome | Exception], RecordedResponse]
