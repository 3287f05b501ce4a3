"""Where signed checkpoints live (JSON files in a directory outside the database) and where their key comes from
(a file or AWS Secrets Manager; never the database, never a log line)."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretBytes

from ledger.domain.ledger_checkpoints import MIN_KEY_BYTES
from ledger.infrastructure.embedded_postgres import write_private_file
from ledger.infrastructure.secret_providers import secrets_manager_client
from ledger.infrastructure.settings import CredentialSource, LedgerSettings

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class CheckpointKeyUnavailable(RuntimeError):
    """No usable key: the message says which setting to fix and never contains key material."""


def _parse_key(text: str, source: str) -> SecretBytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise CheckpointKeyUnavailable(f"the checkpoint key in {source} is not hexadecimal") from None
    if len(key) < MIN_KEY_BYTES:
        raise CheckpointKeyUnavailable(f"the checkpoint key in {source} is shorter than {MIN_KEY_BYTES} bytes")
    return SecretBytes(key)


def key_from_file(path: Path, *, create: bool = False) -> SecretBytes:
    """Reads a hex key; with ``create`` a missing file is made (0600) with a new random key."""
    if not path.exists():
        if not create:
            raise CheckpointKeyUnavailable(f"no checkpoint key file at {path}")
        write_private_file(path, secrets.token_hex(MIN_KEY_BYTES) + "\n")
    return _parse_key(path.read_text(encoding="utf-8"), str(path))


def key_from_secrets_manager(client: SecretsManagerClient, secret_id: str) -> SecretBytes:
    try:
        response = client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    except Exception as error:  # botocore's errors: report the kind, never the response
        raise CheckpointKeyUnavailable(
            f"the checkpoint key secret {secret_id!r} could not be read ({type(error).__name__})"
        ) from None
    return _parse_key(response.get("SecretString", ""), f"secret {secret_id!r}")


def embedded_checkpoint_key_file(settings: LedgerSettings) -> Path:
    return settings.data_dir / "secrets" / "checkpoint.key"


def load_checkpoint_key(settings: LedgerSettings, *, create_embedded: bool) -> SecretBytes | None:
    """The configured key; for the embedded default a generated key file (made on the first checkpoint when
    ``create_embedded``); None when no key is configured."""
    if settings.checkpoint_key_secret_id is not None:
        return key_from_secrets_manager(secrets_manager_client(settings), settings.checkpoint_key_secret_id)
    if settings.checkpoint_key_file is not None:
        return key_from_file(settings.checkpoint_key_file)
    if settings.credential_source is CredentialSource.EMBEDDED:
        path = embedded_checkpoint_key_file(settings)
        if path.exists() or create_embedded:
            return key_from_file(path, create=create_embedded)
    return None


class CheckpointDirectory:
    """One file per checkpoint: ``<dir>/<ledger id>/<UTC time>.json``, written atomically, never overwritten."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, ledger_id: uuid.UUID, created_at: datetime, document: dict[str, Any]) -> Path:
        name = created_at.strftime("%Y%m%dT%H%M%S%fZ") + ".json"
        path = self.directory / str(ledger_id) / name
        if path.exists():
            raise FileExistsError(f"a checkpoint already exists at {path}")
        write_private_file(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
        return path

    def latest(self, ledger_id: uuid.UUID) -> tuple[Path, dict[str, Any]] | None:
        folder = self.directory / str(ledger_id)
        if not folder.is_dir():
            return None
        candidates = sorted(path for path in folder.glob("*.json") if not path.name.startswith("."))
        if not candidates:
            return None
        path = candidates[-1]
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return path, document
