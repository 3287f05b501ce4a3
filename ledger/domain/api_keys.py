"""API keys: who may act for which tenant, with which role.

A key is shown once, as ``tlk_<id>.<secret>``. Only an HMAC-SHA256 of the secret is stored; a presented key is checked
with ``hmac.compare_digest``. The secret has 256 bits of entropy, so a fast hash is as safe as a slow one and costs
microseconds per request.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from ledger.domain.errors import DomainError, NotFound
from ledger.domain.model import MAX_NAME_LENGTH, clean_text
from ledger.domain.ports import UnitOfWork
from ledger.domain.transactions import TransactionRunner

TOKEN_PREFIX = "tlk_"
_TOKEN = re.compile(r"^tlk_([a-z0-9]{16})\.([A-Za-z0-9_-]{43})$")


class Unauthenticated(DomainError):
    code = "unauthenticated"


class Forbidden(DomainError):
    code = "forbidden"


class ApiKeyRole(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_RANK = {ApiKeyRole.READ: 0, ApiKeyRole.WRITE: 1, ApiKeyRole.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: uuid.UUID
    name: str
    role: ApiKeyRole
    secret_hash: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Principal:
    """The tenant and role a request acts as, and the key that made it (recorded on every write)."""

    tenant_id: uuid.UUID
    key_id: str
    role: ApiKeyRole

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def require(self, role: ApiKeyRole) -> None:
        if _RANK[self.role] < _RANK[role]:
            raise Forbidden(f"this key's role ({self.role.value}) may not do this; it needs {role.value}")


def hash_secret(key_id: str, secret: str) -> str:
    return hmac.new(key_id.encode("ascii"), secret.encode("ascii"), hashlib.sha256).hexdigest()


class ApiKeyService:
    def __init__(
        self,
        runner: TransactionRunner,
        *,
        cache_seconds: float = 2.0,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runner = runner
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._cache_lock = threading.Lock()

    def create_key(self, tenant_id: uuid.UUID, *, role: ApiKeyRole, name: str, created_by: str) -> tuple[ApiKey, str]:
        """Returns the key and its token; the token is never stored and cannot be shown again."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            id=key_id,
            tenant_id=tenant_id,
            name=clean_text(name, field_name="name", max_length=MAX_NAME_LENGTH),
            role=role,
            secret_hash=hash_secret(key_id, secret),
            created_at=self._clock(),
            created_by=created_by,
        )

        def add_key(uow: UnitOfWork) -> ApiKey:
            uow.api_keys.add(key)
            return key

        self._runner.run(add_key)
        return key, f"{TOKEN_PREFIX}{key_id}.{secret}"

    def revoke_key(self, key_id: str, *, revoked_by: str) -> ApiKey:
        def revoke(uow: UnitOfWork) -> ApiKey:
            key = uow.api_keys.get(key_id)
            if key is None:
                raise NotFound("no such API key", code="api_key_not_found")
            if not key.active:
                return key
            revoked = replace(key, revoked_at=uow.now(), revoked_by=revoked_by)
            uow.api_keys.save(revoked)
            return revoked

        revoked = self._runner.run(revoke)
        with self._cache_lock:
            self._cache.pop(key_id, None)
        return revoked

    def list_keys(self, tenant_id: uuid.UUID | None = None) -> Sequence[ApiKey]:
        return self._runner.read(lambda uow: uow.api_keys.list(tenant_id))

    def authenticate(self, token: str | None) -> Principal:
        """401 for a missing, malformed, unknown or revoked key, without saying which."""
        key_id, secret = _token_parts(token)
        return _principal(self._lookup(key_id), key_id, secret)

    def authenticate_from_cache(self, token: str | None) -> Principal | None:
        """Like ``authenticate`` when the key was looked up less than ``cache_seconds`` ago; None when it must be
        read from the store (then call ``authenticate``). Never blocks, so an event loop may call it."""
        key_id, secret = _token_parts(token)
        cached = self._cached(key_id)
        if cached is None:
            return None
        return _principal(cached[0], key_id, secret)

    def _cached(self, key_id: str) -> tuple[ApiKey | None] | None:
        now = self._monotonic()
        with self._cache_lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return (cached[1],)
        return None

    def _lookup(self, key_id: str) -> ApiKey | None:
        cached = self._cached(key_id)
        if cached is not None:
            return cached[0]
        now = self._monotonic()
        key = self._runner.read(lambda uow: uow.api_keys.get(key_id))
        with self._cache_lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (now, key)
        return key


def _token_parts(token: str | None) -> tuple[str, str]:
    if not token:
        raise Unauthenticated("an API key is required (Authorization: Bearer tlk_...)", code="unauthenticated")
    match = _TOKEN.match(token)
    if match is None:
        raise Unauthenticated("the API key is not valid", code="invalid_api_key")
    key_id, secret = match.groups()
    return key_id, secret


def _principal(key: ApiKey | None, key_id: str, secret: str) -> Principal:
    if key is None or not key.active or not hmac.compare_digest(key.secret_hash, hash_secret(key_id, secret)):
        raise Unauthenticated("the API key is not valid", code="invalid_api_key")
    return Principal(tenant_id=key.tenant_id, key_id=key.id, role=key.role)
