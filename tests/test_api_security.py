"""API security over HTTP, on both adapters: who may call (401), with which role (403), on whose data (404, the same
answer as for an id that does not exist), how often (429), how much (413, 422), who did it (``actor``), the
``ledger keys`` CLI, and what the OpenAPI document promises about all of it.

Every request here sets its credentials explicitly (no ``AuthorizedTestClient``), so nothing is implicit. The
authorization matrix reads the operations from the app's own OpenAPI document: a new /v1 endpoint fails the matrix
until it is added to ``OPERATIONS``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx2 import Response

from ledger.api.app import create_app
from ledger.container import Container, build_container, use_in_memory_adapters
from ledger.domain.api_keys import ApiKey, ApiKeyRole, hash_secret
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import write_private_file
from ledger.infrastructure.settings import LedgerSettings
from tests.conftest import settings_with_secret_file

CORE_DIR = Path(__file__).resolve().parent.parent
PROBLEM_JSON = "application/problem+json"
TOKEN_PATTERN = re.compile(r"^tlk_([a-z0-9]{16})\.([A-Za-z0-9_-]{43})$")
CLI_TIMEOUT_SECONDS = 120.0
MAX_RETRY_AFTER_SECONDS = 5
FUNDED = 100_00
FIRST_STATEMENT = (
    "period_start,2025-01-01\nperiod_end,2025-01-31\nopening_balance,0.00\nclosing_balance,10.00\n"
    "date,amount,reference,description\n2025-01-15,10.00,,Interest\n"
)
NEXT_STATEMENT = (
    "period_start,2025-02-01\nperiod_end,2025-02-28\nopening_balance,10.00\nclosing_balance,10.00\n"
    "date,amount,reference,description\n"
)

Headers = dict[str, str]


# ---------------------------------------------------------------------------------------------------------------
# Keys, tenants and the data a tenant owns


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def x_api_key(token: str) -> Headers:
    return {"X-API-Key": token}


def unknown_token() -> str:
    return f"tlk_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"


def make_key(container: Container, tenant_id: uuid.UUID, role: ApiKeyRole) -> tuple[ApiKey, str]:
    key, token = container.api_key_service().create_key(
        tenant_id, role=role, name=f"{role.value} key", created_by="test"
    )
    return key, token


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    admin: str
    write: str
    read: str
    revoked: str
    keys: dict[str, ApiKey]


def make_tenant(container: Container) -> Tenant:
    tenant_id = uuid.uuid4()
    made = {role.value: make_key(container, tenant_id, role) for role in ApiKeyRole}
    revoked_key, revoked_token = make_key(container, tenant_id, ApiKeyRole.ADMIN)
    container.api_key_service().revoke_key(revoked_key.id, revoked_by="test")
    return Tenant(
        id=tenant_id,
        admin=made["admin"][1],
        write=made["write"][1],
        read=made["read"][1],
        revoked=revoked_token,
        keys={**{name: key for name, (key, _) in made.items()}, "revoked": revoked_key},
    )


@dataclass(frozen=True)
class World:
    """A trust ledger: the bank, a funded client, a second client, an empty client (to close), firm funds, the
    deposit that funded client 1 (to read) and a deposit to client 2 (to reverse)."""

    ledger_id: str
    bank_id: str
    client1_id: str
    client2_id: str
    empty_client_id: str
    firm_id: str
    deposit_id: str
    reversible_id: str
    pending_to_post_id: str
    pending_to_void_id: str
    uncleared_deposit_id: str
    returnable_deposit_id: str
    bank_statement_id: str

    @classmethod
    def phantom(cls) -> World:
        """The same shape with ids that exist nowhere."""
        return cls(**{field.name: str(uuid.uuid4()) for field in fields(cls)})

    def ids(self) -> set[str]:
        return {getattr(self, field.name) for field in fields(self)}


def expect(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


def post(client: TestClient, path: str, body: dict[str, Any] | None, token: str) -> dict[str, Any]:
    headers = {**bearer(token), "Idempotency-Key": uuid.uuid4().hex}
    return expect(client.post(path, json=body, headers=headers), 201)


def build_world(client: TestClient, token: str) -> World:
    ledger_id = post(client, "/v1/ledgers", {"name": "Client trust", "currency": "USD"}, token)["id"]

    def open_account(code: str, kind: str) -> str:
        body = {"code": code, "name": code.replace("-", " "), "kind": kind}
        return str(post(client, f"/v1/ledgers/{ledger_id}/accounts", body, token)["id"])

    bank_id = open_account("bank", "bank")
    client1_id = open_account("client-1", "client")
    client2_id = open_account("client-2", "client")
    empty_client_id = open_account("client-empty", "client")
    firm_id = open_account("firm-funds", "firm_funds")
    deposits = f"/v1/ledgers/{ledger_id}/deposits"
    deposit_id = post(client, deposits, {"client_account_id": client1_id, "amount": FUNDED}, token)["id"]
    reversible_id = post(client, deposits, {"client_account_id": client2_id, "amount": 5_00}, token)["id"]
    uncleared_id = post(client, deposits, {"client_account_id": client2_id, "amount": 3_00, "cleared": False}, token)
    returnable_id = post(client, deposits, {"client_account_id": client2_id, "amount": 2_00}, token)["id"]
    pending = f"/v1/ledgers/{ledger_id}/pending-transfers"
    reservation = {"debit_account_id": client1_id, "credit_account_id": client2_id, "amount": 1_00}
    pending_to_post_id = post(client, pending, reservation, token)["id"]
    pending_to_void_id = post(client, pending, reservation, token)["id"]
    statement = post(client, f"/v1/ledgers/{ledger_id}/bank-statements", {"csv": FIRST_STATEMENT}, token)
    return World(
        ledger_id=str(ledger_id),
        bank_id=bank_id,
        client1_id=client1_id,
        client2_id=client2_id,
        empty_client_id=empty_client_id,
        firm_id=firm_id,
        deposit_id=str(deposit_id),
        reversible_id=str(reversible_id),
        pending_to_post_id=str(pending_to_post_id),
        pending_to_void_id=str(pending_to_void_id),
        uncleared_deposit_id=str(uncleared_id["id"]),
        returnable_deposit_id=str(returnable_id),
        bank_statement_id=str(statement["id"]),
    )


def snapshot(container: Container, tenant_id: uuid.UUID) -> dict[uuid.UUID, tuple[Any, ...]]:
    """Every ledger and account of a tenant, with the fields a write changes (a posting bumps the version)."""
    state: dict[uuid.UUID, tuple[Any, ...]] = {}
    for ledger in container.ledger_service().list_ledgers(tenant_id, limit=500).items:
        state[ledger.id] = ("ledger", ledger.name)
        for account in container.account_service().list_accounts(tenant_id, ledger.id, limit=500).items:
            state[account.id] = (
                account.version,
                account.posted_debits,
                account.posted_credits,
                account.pending_debits,
                account.pending_credits,
                account.status,
            )
    return state


# ---------------------------------------------------------------------------------------------------------------
# Every /v1 operation, with a request that succeeds for the world's owner


@dataclass(frozen=True)
class Call:
    path_params: dict[str, str]
    body: dict[str, Any] | None = None
    query: dict[str, str] | None = None


def _posting(account_id: str, side: str, amount: int) -> dict[str, Any]:
    return {"account_id": account_id, "side": side, "amount": amount}


OPERATIONS: dict[tuple[str, str], Callable[[World], Call]] = {
    ("POST", "/v1/ledgers"): lambda w: Call({}, {"name": "Matrix ledger", "currency": "USD"}),
    ("GET", "/v1/ledgers"): lambda w: Call({}, query={"limit": "500"}),
    ("GET", "/v1/ledgers/{ledger_id}"): lambda w: Call({"ledger_id": w.ledger_id}),
    ("POST", "/v1/ledgers/{ledger_id}/accounts"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"code": "client-extra", "name": "Extra client", "kind": "client"}
    ),
    ("GET", "/v1/ledgers/{ledger_id}/accounts"): lambda w: Call({"ledger_id": w.ledger_id}),
    ("GET", "/v1/accounts/{account_id}"): lambda w: Call({"account_id": w.client1_id}),
    ("POST", "/v1/accounts/{account_id}/close"): lambda w: Call({"account_id": w.empty_client_id}),
    ("GET", "/v1/accounts/{account_id}/balance"): lambda w: Call(
        {"account_id": w.client1_id}, query={"as_of_date": "2999-12-31"}
    ),
    ("GET", "/v1/accounts/{account_id}/statement"): lambda w: Call({"account_id": w.client1_id}),
    ("POST", "/v1/transfers"): lambda w: Call(
        {},
        {
            "ledger_id": w.ledger_id,
            "postings": [_posting(w.bank_id, "debit", 1_00), _posting(w.client2_id, "credit", 1_00)],
            "description": "matrix transfer",
        },
    ),
    ("GET", "/v1/transfers/{transfer_id}"): lambda w: Call({"transfer_id": w.deposit_id}),
    ("POST", "/v1/ledgers/{ledger_id}/transfers/batch"): lambda w: Call(
        {"ledger_id": w.ledger_id},
        {
            "mode": "independent",
            "transfers": [{"postings": [_posting(w.bank_id, "debit", 1), _posting(w.client2_id, "credit", 1)]}],
        },
    ),
    ("POST", "/v1/transfers/{transfer_id}/reversal"): lambda w: Call(
        {"transfer_id": w.reversible_id}, {"description": "matrix reversal"}
    ),
    ("POST", "/v1/ledgers/{ledger_id}/deposits"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"client_account_id": w.client1_id, "bank_account_id": w.bank_id, "amount": 1_00}
    ),
    ("POST", "/v1/ledgers/{ledger_id}/disbursements"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"client_account_id": w.client1_id, "bank_account_id": w.bank_id, "amount": 1_00}
    ),
    ("POST", "/v1/ledgers/{ledger_id}/client-transfers"): lambda w: Call(
        {"ledger_id": w.ledger_id},
        {"from_client_account_id": w.client1_id, "to_client_account_id": w.client2_id, "amount": 1_00},
    ),
    ("POST", "/v1/ledgers/{ledger_id}/earned-fees"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"client_account_id": w.client1_id, "bank_account_id": w.bank_id, "amount": 1_00}
    ),
    ("POST", "/v1/ledgers/{ledger_id}/firm-deposits"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"bank_account_id": w.bank_id, "amount": 1_00}
    ),
    ("POST", "/v1/ledgers/{ledger_id}/bank-charges"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"bank_account_id": w.bank_id, "amount": 50}
    ),
    ("GET", "/v1/ledgers/{ledger_id}/verification"): lambda w: Call({"ledger_id": w.ledger_id}),
    ("POST", "/v1/ledgers/{ledger_id}/pending-transfers"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"debit_account_id": w.client1_id, "credit_account_id": w.client2_id, "amount": 1}
    ),
    ("GET", "/v1/pending-transfers/{pending_id}"): lambda w: Call({"pending_id": w.pending_to_post_id}),
    ("POST", "/v1/pending-transfers/{pending_id}/post"): lambda w: Call(
        {"pending_id": w.pending_to_post_id}, {"amount": 50}
    ),
    ("POST", "/v1/pending-transfers/{pending_id}/void"): lambda w: Call({"pending_id": w.pending_to_void_id}, {}),
    ("POST", "/v1/ledgers/{ledger_id}/pending-transfers/expiry"): lambda w: Call({"ledger_id": w.ledger_id}),
    ("POST", "/v1/deposits/{transfer_id}/clearance"): lambda w: Call({"transfer_id": w.uncleared_deposit_id}, {}),
    ("POST", "/v1/deposits/{transfer_id}/return"): lambda w: Call(
        {"transfer_id": w.returnable_deposit_id}, {"description": "bounced cheque"}
    ),
    ("GET", "/v1/ledgers/{ledger_id}/reports/trust-listing"): lambda w: Call(
        {"ledger_id": w.ledger_id}, query={"as_of": "2999-12-31"}
    ),
    ("GET", "/v1/ledgers/{ledger_id}/reports/journal"): lambda w: Call(
        {"ledger_id": w.ledger_id}, query={"start": "2000-01-01", "end": "2999-12-31"}
    ),
    ("GET", "/v1/ledgers/{ledger_id}/reports/trial-balance"): lambda w: Call(
        {"ledger_id": w.ledger_id}, query={"as_of": "2999-12-31"}
    ),
    ("GET", "/v1/accounts/{account_id}/reports/client-ledger"): lambda w: Call(
        {"account_id": w.client1_id}, query={"start": "2000-01-01", "end": "2999-12-31"}
    ),
    ("POST", "/v1/ledgers/{ledger_id}/bank-statements"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"csv": NEXT_STATEMENT}
    ),
    ("GET", "/v1/ledgers/{ledger_id}/bank-statements"): lambda w: Call({"ledger_id": w.ledger_id}),
    ("GET", "/v1/bank-statements/{statement_id}"): lambda w: Call({"statement_id": w.bank_statement_id}),
    ("POST", "/v1/ledgers/{ledger_id}/bank-statements/matching"): lambda w: Call({"ledger_id": w.ledger_id}, {}),
    ("GET", "/v1/ledgers/{ledger_id}/reconciliation"): lambda w: Call(
        {"ledger_id": w.ledger_id}, query={"as_of": "2999-12-31"}
    ),
    # Before the world's first bank statement and its first entry everything is zero: that day reconciles.
    ("POST", "/v1/ledgers/{ledger_id}/reconciliation/sign-offs"): lambda w: Call(
        {"ledger_id": w.ledger_id}, {"as_of": "2024-12-31"}
    ),
    ("GET", "/v1/ledgers/{ledger_id}/unmatched"): lambda w: Call(
        {"ledger_id": w.ledger_id}, query={"as_of": "2025-12-31"}
    ),
}

SUCCESS_STATUS = {
    ("POST", "/v1/accounts/{account_id}/close"): 200,
    ("POST", "/v1/pending-transfers/{pending_id}/post"): 200,
    ("POST", "/v1/pending-transfers/{pending_id}/void"): 200,
    ("POST", "/v1/ledgers/{ledger_id}/pending-transfers/expiry"): 200,
    ("POST", "/v1/deposits/{transfer_id}/clearance"): 200,
    ("POST", "/v1/ledgers/{ledger_id}/bank-statements/matching"): 200,
}


def success_status(operation: tuple[str, str]) -> int:
    return SUCCESS_STATUS.get(operation, 201 if operation[0] == "POST" else 200)


def v1_operations(app: FastAPI) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path template) -> the operation object, for every /v1 operation the app documents."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path, path_item in app.openapi()["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in path_item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                found[(method.upper(), path)] = operation
    return found


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def send(
    client: TestClient,
    operation: tuple[str, str],
    call: Call,
    headers: Headers,
    *,
    idempotency_key: str | None = None,
) -> Response:
    method, template = operation
    assert placeholders(template) == set(call.path_params), f"{method} {template}: fill every path parameter"
    request_headers = dict(headers)
    if method == "POST":
        request_headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
    return client.request(
        method,
        template.format(**call.path_params),
        json=call.body,
        params=call.query,
        headers=request_headers,
    )


def carries_ids(call: Call, phantom_call: Call) -> bool:
    return call != phantom_call


def assert_problem(response: Response, status: int, code: str, label: str) -> dict[str, Any]:
    assert response.status_code == status, f"{label}: expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, label
    body: dict[str, Any] = response.json()
    assert body["code"] == code, f"{label}: {body}"
    assert body["status"] == status, label
    return body


def assert_unauthorized(response: Response, code: str, label: str) -> dict[str, Any]:
    body = assert_problem(response, 401, code, label)
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), f"{label}: {response.headers}"
    return body


@pytest.fixture
def client(any_container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(any_container)) as test_client:
        yield test_client


@pytest.fixture
def container(any_container: Container) -> Container:
    return any_container


# ---------------------------------------------------------------------------------------------------------------
# 1. The authorization matrix


def test_every_v1_operation_is_in_the_matrix(client: TestClient) -> None:
    documented = set(v1_operations(client.app))  # type: ignore[arg-type]
    not_covered = documented - set(OPERATIONS)
    stale = set(OPERATIONS) - documented
    assert not not_covered, f"operations without a request in OPERATIONS (add them): {sorted(not_covered)}"
    assert not stale, f"OPERATIONS names operations the app no longer has: {sorted(stale)}"
    for operation, make_call in OPERATIONS.items():
        assert placeholders(operation[1]) == set(make_call(World.phantom()).path_params), operation


def test_authorization_matrix(client: TestClient, container: Container) -> None:
    a = make_tenant(container)
    b = make_tenant(container)
    world_a = build_world(client, a.admin)
    world_b = build_world(client, b.admin)
    phantom = World.phantom()
    documented = v1_operations(client.app)  # type: ignore[arg-type]
    assert set(documented) == set(OPERATIONS)

    admin_id = a.keys["admin"].id
    wrong_secret = f"tlk_{admin_id}.{secrets.token_urlsafe(32)}"
    assert wrong_secret != a.admin
    invalid_credentials: dict[str, Headers] = {
        "malformed bearer": bearer("not-a-key"),
        "truncated bearer": bearer(a.admin[:-1]),
        "bearer with junk": bearer(a.admin + "x"),
        "upper-case key id": bearer(a.admin.upper()),
        "unknown bearer": bearer(unknown_token()),
        "wrong secret for a real key id": bearer(wrong_secret),
        "revoked bearer": bearer(a.revoked),
        "malformed X-API-Key": x_api_key("not-a-key"),
        "unknown X-API-Key": x_api_key(unknown_token()),
        "revoked X-API-Key": x_api_key(a.revoked),
    }

    before = (snapshot(container, a.id), snapshot(container, b.id))
    assert len(before[0]) == 6
    assert len(before[1]) == 6
    idempotency_keys = {operation: f"matrix-{uuid.uuid4()}" for operation in OPERATIONS}
    checked_foreign_ids = []

    for operation, make_call in OPERATIONS.items():
        method, template = operation
        call, phantom_call = make_call(world_a), make_call(phantom)
        key = idempotency_keys[operation]

        def attempt(headers: Headers, which: Call = call, *, _op: tuple[str, str] = operation, _key: str = key) -> Any:
            return send(client, _op, which, headers, idempotency_key=_key)

        label = f"{method} {template}"
        assert_unauthorized(attempt({}), "unauthenticated", f"{label}, no key")

        bodies = {
            name: assert_unauthorized(attempt(headers), "invalid_api_key", f"{label}, {name}")
            for name, headers in invalid_credentials.items()
        }
        # A 401 never says whether the key was malformed, unknown or revoked.
        assert len({json.dumps(body, sort_keys=True) for body in bodies.values()}) == 1, bodies

        if method == "POST":
            assert_problem(attempt(bearer(a.read)), 403, "forbidden", f"{label}, read key")
            assert_problem(attempt(x_api_key(a.read)), 403, "forbidden", f"{label}, read X-API-Key")

        if carries_ids(call, phantom_call):
            assert "404" in documented[operation]["responses"], f"{label} answers 404 but does not document it"
            foreign = attempt(bearer(b.admin))
            foreign_x = attempt(x_api_key(b.admin))
            missing_for_b = attempt(bearer(b.admin), phantom_call)
            missing_for_a = attempt(bearer(a.admin), phantom_call)
            for name, response in (
                ("B's key on A's ids", foreign),
                ("B's X-API-Key on A's ids", foreign_x),
                ("B's key on ids that do not exist", missing_for_b),
                ("A's key on ids that do not exist", missing_for_a),
            ):
                assert response.status_code == 404, f"{label}, {name}: {response.status_code} {response.text}"
                assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
            # Another tenant's id answers exactly what an id that does not exist answers, byte for byte.
            assert foreign.content == missing_for_b.content, (foreign.text, missing_for_b.text)
            assert foreign_x.content == missing_for_b.content
            assert missing_for_a.content == missing_for_b.content
            checked_foreign_ids.append(operation)
        elif method == "GET":
            # A list without ids in its path: each tenant sees its own ledgers, never the other's.
            for tenant, own, other in ((b, world_b, world_a), (a, world_a, world_b)):
                listed = expect(attempt(bearer(tenant.read)), 200)
                listed_ids = {item["id"] for item in listed["items"]}
                assert listed_ids == {own.ledger_id}, f"{label}: {listed_ids}"
                assert other.ledger_id not in listed_ids

    assert len(checked_foreign_ids) == len(OPERATIONS) - 2, "every operation except the two on /v1/ledgers has ids"

    # No refused request wrote anything, in either tenant.
    assert (snapshot(container, a.id), snapshot(container, b.id)) == before

    # The same requests with the right key succeed, even with the Idempotency-Key every refusal above used: none of
    # those refusals was recorded, so the key is still unused.
    for operation, make_call in OPERATIONS.items():
        token = a.write if operation[0] == "POST" else a.read
        response = send(
            client, operation, make_call(world_a), bearer(token), idempotency_key=idempotency_keys[operation]
        )
        expect(response, success_status(operation))
        assert response.headers["content-type"].split(";")[0] == "application/json"
    assert snapshot(container, a.id) != before[0]
    assert snapshot(container, b.id) == before[1], "A's writes changed nothing of B's"


def test_ids_of_another_tenant_inside_a_body_are_not_found(client: TestClient, container: Container) -> None:
    """B names its own ledger but A's accounts: the same 404 as accounts that do not exist, and nothing written."""
    a = make_tenant(container)
    b = make_tenant(container)
    world_a = build_world(client, a.admin)
    world_b = build_world(client, b.admin)
    phantom = World.phantom()
    before = (snapshot(container, a.id), snapshot(container, b.id))

    def mixed(foreign: World) -> dict[str, tuple[str, dict[str, Any]]]:
        ledger = world_b.ledger_id
        return {
            "transfer": (
                "/v1/transfers",
                {
                    "ledger_id": ledger,
                    "postings": [
                        _posting(world_b.bank_id, "debit", 1_00),
                        _posting(foreign.client1_id, "credit", 1_00),
                    ],
                },
            ),
            "deposit": (f"/v1/ledgers/{ledger}/deposits", {"client_account_id": foreign.client1_id, "amount": 1_00}),
            "deposit to another tenant's bank": (
                f"/v1/ledgers/{ledger}/deposits",
                {"client_account_id": world_b.client1_id, "bank_account_id": foreign.bank_id, "amount": 1_00},
            ),
            "disbursement": (
                f"/v1/ledgers/{ledger}/disbursements",
                {"client_account_id": foreign.client1_id, "amount": 1_00},
            ),
            "client transfer": (
                f"/v1/ledgers/{ledger}/client-transfers",
                {"from_client_account_id": world_b.client1_id, "to_client_account_id": foreign.client2_id, "amount": 1},
            ),
            "firm deposit": (f"/v1/ledgers/{ledger}/firm-deposits", {"bank_account_id": foreign.bank_id, "amount": 1}),
        }

    foreign_requests, phantom_requests = mixed(world_a), mixed(phantom)
    for name, (path, body) in foreign_requests.items():
        headers = {**bearer(b.write), "Idempotency-Key": uuid.uuid4().hex}
        foreign = client.post(path, json=body, headers=headers)
        missing = client.post(phantom_requests[name][0], json=phantom_requests[name][1], headers=headers)
        assert_problem(foreign, 404, "account_not_found", name)
        assert foreign.content == missing.content, (name, foreign.text, missing.text)
    assert (snapshot(container, a.id), snapshot(container, b.id)) == before


# ---------------------------------------------------------------------------------------------------------------
# 2. Roles


def test_roles_read_gets_everything_write_and_admin_post(client: TestClient, container: Container) -> None:
    a = make_tenant(container)
    world_for_write = build_world(client, a.admin)
    world_for_admin = build_world(client, a.admin)

    for operation, make_call in OPERATIONS.items():
        method, template = operation
        if method == "GET":
            for name, headers in (
                ("read", bearer(a.read)),
                ("read X-API-Key", x_api_key(a.read)),
                ("write", bearer(a.write)),
                ("admin", bearer(a.admin)),
            ):
                response = send(client, operation, make_call(world_for_write), headers)
                assert response.status_code == 200, f"{name} key: GET {template}: {response.text}"
        else:
            for name, headers, world in (
                ("write", bearer(a.write), world_for_write),
                ("admin", bearer(a.admin), world_for_admin),
            ):
                response = send(client, operation, make_call(world), headers)
                assert response.status_code == success_status(operation), (
                    f"{name} key: POST {template}: {response.text}"
                )

    write_with_x_api_key = send(
        client, ("POST", "/v1/ledgers"), Call({}, {"name": "Via X-API-Key", "currency": "EUR"}), x_api_key(a.write)
    )
    expect(write_with_x_api_key, 201)


# ---------------------------------------------------------------------------------------------------------------
# 3. Every write records its key


def test_every_write_records_the_key_that_made_it(client: TestClient, container: Container) -> None:
    a = make_tenant(container)
    world = build_world(client, a.admin)
    write_actor = f"key:{a.keys['write'].id}"
    admin_actor = f"key:{a.keys['admin'].id}"

    transfer = post(client, *_transfer_request(world), a.write)
    assert transfer["actor"] == write_actor
    read_back = expect(client.get(f"/v1/transfers/{transfer['id']}", headers=bearer(a.read)), 200)
    assert read_back["actor"] == write_actor

    deposit = expect(client.get(f"/v1/transfers/{world.deposit_id}", headers=bearer(a.read)), 200)
    assert deposit["actor"] == admin_actor, "the set-up deposit was made with the admin key"

    reversal = post(client, f"/v1/transfers/{transfer['id']}/reversal", {}, a.write)
    assert reversal["actor"] == write_actor
    fee = post(
        client,
        f"/v1/ledgers/{world.ledger_id}/earned-fees",
        {"client_account_id": world.client1_id, "amount": 1},
        a.admin,
    )
    assert fee["actor"] == admin_actor
    assert len({write_actor, admin_actor}) == 2


def _transfer_request(world: World) -> tuple[str, dict[str, Any]]:
    return (
        "/v1/transfers",
        {
            "ledger_id": world.ledger_id,
            "postings": [_posting(world.bank_id, "debit", 2_00), _posting(world.client2_id, "credit", 2_00)],
        },
    )


# ---------------------------------------------------------------------------------------------------------------
# Containers with settings of the test's own


@pytest.fixture(params=["memory", "postgres"])
def make_container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Container]]:
    """Builds containers with overridden settings on the parametrized adapter; shuts them all down afterwards."""
    database: DatabaseCredentials | None = (
        request.getfixturevalue("service_database") if request.param == "postgres" else None
    )
    made: list[Container] = []

    def make(**overrides: object) -> Container:
        if database is None:
            built = build_container(LedgerSettings(_env_file=None, environment="test", **overrides))  # type: ignore[call-arg, arg-type]
            use_in_memory_adapters(built)
        else:
            directory = tmp_path / f"container-{len(made)}"
            built = build_container(settings_with_secret_file(database, directory, **overrides))
        made.append(built)
        return built

    try:
        yield make
    finally:
        for built in made:
            built.shutdown_resources()


# ---------------------------------------------------------------------------------------------------------------
# 4. Rate limit


def test_rate_limit_per_key_with_retry_after(make_container: Callable[..., Container]) -> None:
    container = make_container(rate_limit_per_second=1, rate_limit_burst=3)
    tenant_id = uuid.uuid4()
    _, token = make_key(container, tenant_id, ApiKeyRole.WRITE)
    _, other_token = make_key(container, tenant_id, ApiKeyRole.READ)

    with TestClient(create_app(container)) as client:
        # Warm the app and the connection pool with the other key, so the four timed requests are quick.
        assert client.get("/v1/ledgers", headers=bearer(other_token)).status_code == 200
        started = time.monotonic()
        responses = [client.get("/v1/ledgers", headers=bearer(token)) for _ in range(4)]
        elapsed = time.monotonic() - started
        assert [response.status_code for response in responses[:3]] == [200, 200, 200], [r.text for r in responses]
        assert elapsed < 1.0, f"four requests took {elapsed:.2f}s: the bucket refilled, the test proves nothing"
        limited = assert_problem(responses[3], 429, "rate_limited", "4th rapid request")
        assert limited["title"] == "Too Many Requests"

        # A limited write is refused before it writes, and its Idempotency-Key stays unused.
        idempotency_key = uuid.uuid4().hex
        refused_write = client.post(
            "/v1/ledgers",
            json={"name": "Too soon", "currency": "USD"},
            headers={**bearer(token), "Idempotency-Key": idempotency_key},
        )
        assert_problem(refused_write, 429, "rate_limited", "limited write")
        assert container.ledger_service().list_ledgers(tenant_id).items == []

        retry_after = refused_write.headers["retry-after"]
        assert retry_after.isdigit(), retry_after
        assert 1 <= int(retry_after) <= MAX_RETRY_AFTER_SECONDS
        assert responses[3].headers["retry-after"].isdigit()
        assert int(responses[3].headers["retry-after"]) >= 1

        # Another key of the same tenant has a bucket of its own.
        assert client.get("/v1/ledgers", headers=bearer(other_token)).status_code == 200

        # After Retry-After the key works again (one token has come back: the write spends it).
        time.sleep(int(retry_after))
        created = client.post(
            "/v1/ledgers",
            json={"name": "Too soon", "currency": "USD"},
            headers={**bearer(token), "Idempotency-Key": idempotency_key},
        )
        expect(created, 201)
        assert [ledger.name for ledger in container.ledger_service().list_ledgers(tenant_id).items] == ["Too soon"]


# ---------------------------------------------------------------------------------------------------------------
# 5. Limits


def _metadata_of_size(size: int) -> dict[str, str]:
    """A metadata object whose JSON encoding (as the service measures it) is exactly ``size`` bytes."""
    metadata = {"note": "x" * (size - len(json.dumps({"note": ""})))}
    assert len(json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode("utf-8")) == size
    return metadata


def _transfer_with_metadata(world: World, metadata: dict[str, Any]) -> dict[str, Any]:
    _, body = _transfer_request(world)
    return {**body, "metadata": metadata}


def test_body_size_limit_is_configurable(make_container: Callable[..., Container]) -> None:
    # One app at a time: dependency-injector wiring is per module and the last container wired wins (DESIGN.md).
    small = make_container(max_body_bytes=2048)
    tenant = uuid.uuid4()
    _, token = make_key(small, tenant, ApiKeyRole.ADMIN)
    big_metadata = _metadata_of_size(3000)

    with TestClient(create_app(small)) as client:
        world = build_world(client, token)
        big_body = json.dumps(_transfer_with_metadata(world, big_metadata)).encode()
        assert 3 * 1024 - 200 <= len(big_body) <= 3 * 1024 + 200

        before = snapshot(small, tenant)
        headers = {**bearer(token), "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}
        assert_problem(client.post("/v1/transfers", content=big_body, headers=headers), 413, "body_too_large", "3 KB")

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(big_body), 512):
                yield big_body[start : start + 512]

        streamed = client.post("/v1/transfers", content=chunks(), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert_problem(streamed, 413, "body_too_large", "3 KB without Content-Length")
        assert snapshot(small, tenant) == before

        # Under the limit the same service takes a transfer, with the Idempotency-Key the refusals did not record.
        fitting = json.dumps(_transfer_with_metadata(world, _metadata_of_size(1500))).encode()
        assert len(fitting) < 2048
        expect(client.post("/v1/transfers", content=fitting, headers=headers), 201)

    # The default limit takes the same 3 KB body.
    default = make_container()
    default_tenant = uuid.uuid4()
    _, default_token = make_key(default, default_tenant, ApiKeyRole.ADMIN)
    with TestClient(create_app(default)) as client:
        default_world = build_world(client, default_token)
        taken = post(client, "/v1/transfers", _transfer_with_metadata(default_world, big_metadata), default_token)
        assert taken["metadata"] == big_metadata


def test_metadata_limit_is_configurable(make_container: Callable[..., Container]) -> None:
    small = make_container(max_metadata_bytes=64)
    tenant = uuid.uuid4()
    _, token = make_key(small, tenant, ApiKeyRole.ADMIN)
    too_big = _metadata_of_size(100)

    with TestClient(create_app(small)) as client:
        world = build_world(client, token)
        before = snapshot(small, tenant)
        key = uuid.uuid4().hex
        headers = {**bearer(token), "Idempotency-Key": key}

        refused = client.post("/v1/transfers", json=_transfer_with_metadata(world, too_big), headers=headers)
        assert_problem(refused, 422, "metadata_too_large", "transfer with 100 bytes of metadata")
        deposit = {"client_account_id": world.client1_id, "amount": 1_00, "metadata": too_big}
        refused_deposit = client.post(
            f"/v1/ledgers/{world.ledger_id}/deposits", json=deposit, headers={**headers, "Idempotency-Key": key + "-d"}
        )
        assert_problem(refused_deposit, 422, "metadata_too_large", "deposit with 100 bytes of metadata")
        assert snapshot(small, tenant) == before

        # Exactly at the limit is fine, and the refused request's Idempotency-Key was not recorded.
        at_limit = _metadata_of_size(64)
        accepted = client.post("/v1/transfers", json=_transfer_with_metadata(world, at_limit), headers=headers)
        assert expect(accepted, 201)["metadata"] == at_limit

    # The default limit takes the same 100 bytes.
    default = make_container()
    default_tenant = uuid.uuid4()
    _, default_token = make_key(default, default_tenant, ApiKeyRole.ADMIN)
    with TestClient(create_app(default)) as client:
        default_world = build_world(client, default_token)
        taken = post(client, "/v1/transfers", _transfer_with_metadata(default_world, too_big), default_token)
        assert taken["metadata"] == too_big


def test_page_size_is_bounded_on_every_list(client: TestClient, container: Container) -> None:
    a = make_tenant(container)
    world = build_world(client, a.admin)
    lists = [
        operation
        for operation, documented in v1_operations(client.app).items()  # type: ignore[arg-type]
        if operation[0] == "GET" and any(parameter["name"] == "limit" for parameter in documented.get("parameters", []))
    ]
    assert len(lists) >= 3, lists
    for operation in lists:
        call = OPERATIONS[operation](world)
        for limit, status in (("501", 422), ("0", 422), ("500", 200), ("1", 200)):
            response = send(client, operation, Call(call.path_params, query={"limit": limit}), bearer(a.read))
            assert response.status_code == status, f"{operation} limit={limit}: {response.text}"
            if status == 422:
                assert response.json()["code"] == "validation_error"


# ---------------------------------------------------------------------------------------------------------------
# 6. The keys CLI


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger", "keys", *args],
        env=env,
        cwd=CORE_DIR,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def _split_output(result: subprocess.CompletedProcess[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Standard output holds JSON log lines and the command's own output: returns (log events, other lines)."""
    events: list[dict[str, Any]] = []
    others: list[str] = []
    for line in result.stdout.splitlines():
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            events.append(parsed)
        elif line.strip():
            others.append(line)
    return events, others


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.mark.slow
def test_keys_cli_create_list_use_and_revoke(service_database: DatabaseCredentials, tmp_path: Path) -> None:
    """PostgreSQL only: the CLI manages keys in the service's database (it has no in-memory mode)."""
    secret_file = tmp_path / "cli" / "secret.json"
    write_private_file(secret_file, json.dumps(service_database.to_document()))
    assert secret_file.stat().st_mode & 0o777 == 0o600
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LEDGER_", "AWS_"))}
    env.update(
        PYTHONPATH=str(CORE_DIR),
        LEDGER_SECRET_FILE=str(secret_file),
        LEDGER_ENVIRONMENT="test",
        LEDGER_LOG_FORMAT="json",
        LEDGER_LOG_LEVEL="DEBUG",
        LEDGER_DATA_DIR=str(tmp_path / "no-embedded-database"),
    )
    tenant = str(uuid.uuid4())
    outputs: list[subprocess.CompletedProcess[str]] = []

    created = _cli(["create", "--role", "read", "--name", "cli read key", "--tenant", tenant], env)
    outputs.append(created)
    assert created.returncode == 0, _describe(created)
    events, lines = _split_output(created)
    assert len(lines) == 1, _describe(created)
    token = lines[0].strip()
    match = TOKEN_PATTERN.match(token)
    assert match is not None, token
    key_id, secret = match.groups()
    assert any(event.get("event") == "api_key_created" and event.get("key_id") == key_id for event in events)

    listed = _cli(["list", "--tenant", tenant], env)
    outputs.append(listed)
    assert listed.returncode == 0, _describe(listed)
    _, listed_lines = _split_output(listed)
    assert len(listed_lines) == 1, _describe(listed)
    assert key_id in listed_lines[0]
    assert "role=read" in listed_lines[0]
    assert "active" in listed_lines[0]
    assert secret not in listed.stdout
    assert hash_secret(key_id, secret) not in listed_lines[0], "the listing shows no secret hash either"

    settings = settings_with_secret_file(service_database, tmp_path / "app", api_key_cache_seconds=0)
    container = build_container(settings)
    try:
        with TestClient(create_app(container)) as client:
            allowed = client.get("/v1/ledgers", headers=bearer(token))
            assert expect(allowed, 200)["items"] == [], "a fresh tenant has no ledgers"
            refused = client.post(
                "/v1/ledgers",
                json={"name": "Not allowed", "currency": "USD"},
                headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert_problem(refused, 403, "forbidden", "read key from the CLI on a write")

            revoked = _cli(["revoke", key_id], env)
            outputs.append(revoked)
            assert revoked.returncode == 0, _describe(revoked)
            assert_unauthorized(client.get("/v1/ledgers", headers=bearer(token)), "invalid_api_key", "revoked by CLI")
            assert container.ledger_service().list_ledgers(uuid.UUID(tenant)).items == []
    finally:
        container.shutdown_resources()

    listed_again = _cli(["list", "--tenant", tenant], env)
    outputs.append(listed_again)
    _, listed_lines = _split_output(listed_again)
    assert len(listed_lines) == 1
    assert "revoked" in listed_lines[0]

    unknown = _cli(["revoke", secrets.token_hex(8)], env)
    outputs.append(unknown)
    assert unknown.returncode != 0, _describe(unknown)

    for result in outputs:
        assert token not in result.stderr
        assert secret not in result.stderr
        events, _ = _split_output(result)
        assert events, f"no JSON log lines: {_describe(result)}"
        for event in events:
            assert secret not in json.dumps(event), event
    assert all(secret not in result.stdout for result in outputs[1:]), "only `keys create` prints the token"


# ---------------------------------------------------------------------------------------------------------------
# 7. The OpenAPI document


def test_openapi_declares_the_bearer_scheme_on_every_v1_operation(client: TestClient) -> None:
    document = client.app.openapi()  # type: ignore[attr-defined]
    schemes = document["components"]["securitySchemes"]
    bearer_schemes = {
        name for name, scheme in schemes.items() if scheme.get("type") == "http" and scheme.get("scheme") == "bearer"
    }
    assert bearer_schemes, schemes
    assert "Problem" in document["components"]["schemas"]

    operations = v1_operations(client.app)  # type: ignore[arg-type]
    assert len(operations) == len(OPERATIONS)
    for (method, path), operation in operations.items():
        label = f"{method} {path}"
        security = operation.get("security")
        assert security, f"{label} declares no security"
        assert all(set(requirement) <= bearer_schemes for requirement in security), f"{label}: {security}"
        assert any(set(requirement) & bearer_schemes for requirement in security), f"{label}: {security}"
        for status in ("401", "403", "429"):
            response = operation["responses"].get(status)
            assert response is not None, f"{label} does not document {status}"
            schema = response["content"][PROBLEM_JSON]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, f"{label} {status}: {schema}"

    # Health probes need no key.
    for path in ("/healthz", "/readyz"):
        assert "security" not in document["paths"][path]["get"]
    assert client.get("/healthz").status_code == 200
