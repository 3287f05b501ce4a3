"""AWS Secrets Manager (moto's server mode) as a rotation Lambda uses it: make a secret, put a pending version,
promote it, and count the GetSecretValue calls a client sends. Shared by the rotation tests and the
rotation-under-load driver."""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
from pydantic import SecretStr

from ledger.infrastructure.database_credentials import DatabaseCredentials

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

REGION = "us-east-1"


class GetSecretValueCalls:
    """Counts the GetSecretValue requests one client sends (thread-safe)."""

    def __init__(self, client: SecretsManagerClient) -> None:
        self._lock = threading.Lock()
        self.count = 0
        client.meta.events.register("before-call.secrets-manager.GetSecretValue", self._count)

    def _count(self, **_: Any) -> None:
        with self._lock:
            self.count += 1


def secrets_client(endpoint_url: str) -> SecretsManagerClient:
    client: SecretsManagerClient = boto3.session.Session().client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=endpoint_url,
        config=botocore.config.Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
    )
    return client


def new_password() -> str:
    return f"pw-{secrets.token_urlsafe(18)}"


def with_password(credentials: DatabaseCredentials, password: str) -> DatabaseCredentials:
    return replace(credentials, password=SecretStr(password))


def create_secret(client: SecretsManagerClient, credentials: DatabaseCredentials) -> str:
    secret_id = f"ledger/test/{uuid.uuid4().hex}"
    client.create_secret(Name=secret_id, SecretString=json.dumps(credentials.to_document()))
    return secret_id


def read_stage(client: SecretsManagerClient, secret_id: str, stage: str) -> DatabaseCredentials:
    response = client.get_secret_value(SecretId=secret_id, VersionStage=stage)
    return DatabaseCredentials.from_json(response["SecretString"], version_id=response["VersionId"])


def put_pending(client: SecretsManagerClient, secret_id: str, credentials: DatabaseCredentials) -> str:
    version: str = client.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps(credentials.to_document()), VersionStages=["AWSPENDING"]
    )["VersionId"]
    return version


def promote(client: SecretsManagerClient, secret_id: str, version: str) -> None:
    """Finishes a rotation: AWSCURRENT moves onto ``version`` and the AWSPENDING label is taken off it, so the
    new password is reachable through AWSCURRENT only."""
    stages = client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    old = next(candidate for candidate, labels in stages.items() if "AWSCURRENT" in labels)
    client.update_secret_version_stage(
        SecretId=secret_id, VersionStage="AWSCURRENT", MoveToVersionId=version, RemoveFromVersionId=old
    )
    client.update_secret_version_stage(SecretId=secret_id, VersionStage="AWSPENDING", RemoveFromVersionId=version)


def rotate_secret(client: SecretsManagerClient, secret_id: str, credentials: DatabaseCredentials) -> None:
    promote(client, secret_id, put_pending(client, secret_id, credentials))
