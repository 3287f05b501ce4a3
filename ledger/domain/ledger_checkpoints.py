"""Signed checkpoints: the chain head of every account of a ledger at one moment, signed with a key the database
never sees (HMAC-SHA-256). ``ledger verify`` checks history against the latest one, so even the database owner,
who could recompute unkeyed chains, cannot rewrite what a checkpoint covers unnoticed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.domain.errors import InvalidRequest

CHECKPOINT_FORMAT = 1
MIN_KEY_BYTES = 32


class CheckpointRejected(InvalidRequest):
    """A checkpoint that is malformed or whose signature does not hold: nothing it says can be trusted."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    account_id: uuid.UUID
    version: int
    chain_head: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    created_at: datetime
    heads: tuple[ChainHead, ...]

    def unsigned_document(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "tenant_id": str(self.tenant_id),
            "ledger_id": str(self.ledger_id),
            "created_at": self.created_at.isoformat(),
            "heads": [
                {"account_id": str(head.account_id), "version": head.version, "chain_head": head.chain_head.hex()}
                for head in sorted(self.heads, key=lambda head: head.account_id)
            ],
        }


def _signature(document: Mapping[str, Any], key: bytes) -> str:
    payload = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """Names the key in a checkpoint without revealing it (a hash of a hash of 32+ random bytes)."""
    return hashlib.sha256(b"trust-ledger/checkpoint-key/" + key).hexdigest()[:16]


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise InvalidRequest(f"a checkpoint key has at least {MIN_KEY_BYTES} bytes", code="checkpoint_key_too_short")


def sign_checkpoint(checkpoint: Checkpoint, key: bytes) -> dict[str, Any]:
    """The document to store outside the database."""
    _check_key(key)
    document = checkpoint.unsigned_document()
    document["key_id"] = key_fingerprint(key)
    document["signature"] = _signature(document, key)
    return document


def open_checkpoint(document: Mapping[str, Any], key: bytes) -> Checkpoint:
    """Checks the signature, then parses. Raises ``CheckpointRejected`` for anything that does not hold."""
    _check_key(key)
    unsigned = {name: value for name, value in document.items() if name != "signature"}
    signature = document.get("signature")
    if not isinstance(signature, str) or not hmac.compare_digest(signature, _signature(unsigned, key)):
        raise CheckpointRejected(
            "the checkpoint's signature does not hold: it was altered, or signed with another key",
            code="checkpoint_signature_invalid",
        )
    try:
        if document["format"] != CHECKPOINT_FORMAT:
            raise ValueError(f"unknown checkpoint format {document['format']!r}")
        return Checkpoint(
            tenant_id=uuid.UUID(document["tenant_id"]),
            ledger_id=uuid.UUID(document["ledger_id"]),
            created_at=datetime.fromisoformat(document["created_at"]),
            heads=tuple(
                ChainHead(
                    account_id=uuid.UUID(head["account_id"]),
                    version=int(head["version"]),
                    chain_head=bytes.fromhex(head["chain_head"]),
                )
                for head in document["heads"]
            ),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointRejected(f"the checkpoint is malformed: {error}", code="checkpoint_malformed") from None
