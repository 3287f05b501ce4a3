"""The tamper-evident chain of an account's postings.

Every posting carries ``chain_hash = SHA-256(previous hash || canonical bytes of the posting and its entry)``; the
first posting of an account chains to a genesis hash derived from the account id. The account row keeps the hash of
its newest posting (its chain head), so a writer extends the chain under the row lock it already holds: no
ledger-wide lock, no read of older postings.

The canonical encoding is part of the stored data: changing it needs a new format number and a migration.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

CHAIN_FORMAT = 1
_GENESIS_PREFIX = b"trust-ledger/posting-chain/v1/genesis/"
_LINK_PREFIX = b"trust-ledger/posting-chain/v1/link/"


def genesis_hash(account_id: uuid.UUID) -> bytes:
    return hashlib.sha256(_GENESIS_PREFIX + account_id.bytes).digest()


def canonical_json_value(value: Any) -> Any:
    """A form of a JSON value that survives a round trip through PostgreSQL's jsonb unchanged: jsonb keeps numbers
    as ``numeric`` (100.0 may come back as 100, 1e20 as 100000000000000000000, -0.0 as 0), so every number is
    written as its normalized decimal string, tagged so it cannot be confused with a string."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
        return {"#number": "0" if number.is_zero() else str(number.normalize())}
    if isinstance(value, Mapping):
        return {str(key): canonical_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_json_value(item) for item in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _moment(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("a recorded time must carry its time zone")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def posting_link_bytes(
    *,
    tenant_id: uuid.UUID,
    ledger_id: uuid.UUID,
    account_id: uuid.UUID,
    account_version: int,
    side: str,
    amount: int,
    balance_after: int,
    transfer_id: uuid.UUID,
    transfer_kind: str,
    description: str,
    metadata: Mapping[str, Any],
    effective_date: date,
    recorded_at: datetime,
    actor: str,
    reverses_transfer_id: uuid.UUID | None,
) -> bytes:
    """What one posting contributes to its account's chain: the posting and the header of its entry."""
    document = [
        CHAIN_FORMAT,
        str(tenant_id),
        str(ledger_id),
        str(account_id),
        account_version,
        side,
        amount,
        balance_after,
        str(transfer_id),
        transfer_kind,
        description,
        canonical_json_value(metadata),
        effective_date.isoformat(),
        _moment(recorded_at),
        actor,
        None if reverses_transfer_id is None else str(reverses_transfer_id),
    ]
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def next_chain_hash(previous: bytes, link: bytes) -> bytes:
    return hashlib.sha256(_LINK_PREFIX + previous + link).digest()
