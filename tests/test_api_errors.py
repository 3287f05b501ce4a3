"""The error table of DESIGN.md section 6 over HTTP, on both adapters.

Every row asserts the status, the problem+json content type and the stable ``code``, and that nothing was written:
the balances, versions and statuses of every account, the statement lengths and the lists of ledgers and accounts are
the same before and after. Where a refused write sent an Idempotency-Key, a valid request with the same key must then
succeed: proof that the refusal recorded nothing under the key (a refusal by a ledger rule is the exception, and is
replayed instead).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient
from httpx2 import Response
from pydantic import SecretStr

from ledger.api.app import create_app
from ledger.container import Container, build_container
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.secret_providers import DatabaseUrlProvider
from tests.conftest import free_port, settings_with_secret_url
from tests.http_clients import AuthorizedTestClient

PROBLEM = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "code", "detail"}
MAX_PAGES = 200
FUNDED = 100_00


def new_key() -> str:
    return uuid.uuid4().hex


def write(client: TestClient, path: str, body: dict[str, Any] | None = None, *, key: str | None = None) -> Response:
    return client.post(path, json=body, headers={"Idempotency-Key": key or new_key()})


def created(response: Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


@dataclass(frozen=True)
class World:
    """A trust ledger (USD) with a bank, two clients, firm funds and a closed client; client 1 holds ``FUNDED``.
    A second trust ledger in EUR with its own bank and client."""

    ledger_id: str
    bank_id: str
    client1_id: str
    client2_id: str
    firm_id: str
    closed_client_id: str
    other_ledger_id: str
    other_bank_id: str
    other_client_id: str
    deposit_id: str
    ledger_ids: tuple[str, ...] = field(default=())


def open_account(client: TestClient, ledger_id: str, code: str, kind: str) -> str:
    body = {"code": code, "name": code.replace("-", " "), "kind": kind}
    return str(created(write(client, f"/v1/ledgers/{ledger_id}/accounts", body))["id"])


def build_world(client: TestClient) -> World:
    ledger_id = str(created(write(client, "/v1/ledgers", {"name": "Client trust", "currency": "USD"}))["id"])
    bank_id = open_account(client, ledger_id, "bank", "bank")
    client1_id = open_account(client, ledger_id, "client-1", "client")
    client2_id = open_account(client, ledger_id, "client-2", "client")
    firm_id = open_account(client, ledger_id, "firm-funds", "firm_funds")
    closed_client_id = open_account(client, ledger_id, "client-closed", "client")
    assert created(write(client, f"/v1/accounts/{closed_client_id}/close"), 200)["status"] == "closed"
    deposit = created(
        write(client, f"/v1/ledgers/{ledger_id}/deposits", {"client_account_id": client1_id, "amount": FUNDED})
    )
    other_ledger_id = str(created(write(client, "/v1/ledgers", {"name": "Euro trust", "currency": "EUR"}))["id"])
    other_bank_id = open_account(client, other_ledger_id, "bank", "bank")
    other_client_id = open_account(client, other_ledger_id, "client-1", "client")
    return World(
        ledger_id=ledger_id,
        bank_id=bank_id,
        client1_id=client1_id,
        client2_id=client2_id,
        firm_id=firm_id,
        closed_client_id=closed_client_id,
        other_ledger_id=other_ledger_id,
        other_bank_id=other_bank_id,
        other_client_id=other_client_id,
        deposit_id=str(deposit["id"]),
        ledger_ids=(ledger_id, other_ledger_id),
    )


@pytest.fixture
def client(any_container: Container) -> Iterator[TestClient]:
    with AuthorizedTestClient(create_app(any_container)) as test_client:
        yield test_client


@pytest.fixture
def world(client: TestClient) -> World:
    return build_world(client)


def _all_pages(client: TestClient, path: str, item_key: Callable[[dict[str, Any]], Any]) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": 500}
        if cursor is not None:
            params["after"] = cursor
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(item_key(item) for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError(f"{path} did not end within {MAX_PAGES} pages")


def snapshot(client: TestClient, world: World) -> dict[str, Any]:
    """Everything a write could change, read back through the API."""
    ledgers = sorted(_all_pages(client, "/v1/ledgers", lambda item: item["id"]))
    accounts: dict[str, Any] = {}
    statements: dict[str, int] = {}
    for ledger_id in world.ledger_ids:
        for account in _all_pages(client, f"/v1/ledgers/{ledger_id}/accounts", lambda item: item):
            accounts[account["id"]] = (account["balances"], account["version"], account["status"])
            statements[account["id"]] = len(
                _all_pages(client, f"/v1/accounts/{account['id']}/statement", lambda item: item)
            )
    return {"ledgers": ledgers, "accounts": accounts, "statements": statements}


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == f"urn:trust-ledger:problem:{code}"
    assert body.keys() >= PROBLEM_KEYS
    return body


# ---------------------------------------------------------------------------------------------------------------
# Requests. Each builder returns what to send; a ``follow_up`` is a valid body for the same endpoint, sent afterwards
# with the same Idempotency-Key to prove nothing was recorded under it.


@dataclass(frozen=True)
class Attempt:
    method: str
    path: str
    json_body: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    key: str | None = field(default_factory=new_key)
    follow_up: dict[str, Any] | None = None
    params: dict[str, Any] | None = None

    def send(self, client: TestClient) -> Response:
        headers: dict[str, str] = {}
        if self.key is not None:
            headers["Idempotency-Key"] = self.key
        if self.raw is not None:
            headers["Content-Type"] = self.content_type
            return client.request(self.method, self.path, content=self.raw, headers=headers, params=self.params)
        if self.json_body is not None:
            if self.content_type != "application/json":
                headers["Content-Type"] = self.content_type
                content = json.dumps(self.json_body).encode()
                return client.request(self.method, self.path, content=content, headers=headers, params=self.params)
            return client.request(self.method, self.path, json=self.json_body, headers=headers, params=self.params)
        return client.request(self.method, self.path, headers=headers, params=self.params)


def valid_transfer(world: World, amount: Any = 1_00) -> dict[str, Any]:
    """A generic transfer in the trust ledger: money in for client 2 (bank debit, client credit)."""
    return {
        "ledger_id": world.ledger_id,
        "postings": [
            {"account_id": world.bank_id, "side": "debit", "amount": amount},
            {"account_id": world.client2_id, "side": "credit", "amount": amount},
        ],
        "description": "money in",
    }


def valid_deposit(world: World, amount: Any = 1_00) -> dict[str, Any]:
    return {"client_account_id": world.client2_id, "amount": amount, "description": "retainer"}


def transfer_attempt(world: World, body: dict[str, Any], **options: Any) -> Attempt:
    return Attempt("POST", "/v1/transfers", json_body=body, follow_up=valid_transfer(world), **options)


def deposit_attempt(world: World, body: dict[str, Any], **options: Any) -> Attempt:
    path = f"/v1/ledgers/{world.ledger_id}/deposits"
    return Attempt("POST", path, json_body=body, follow_up=valid_deposit(world), **options)


def ledger_attempt(body: dict[str, Any], **options: Any) -> Attempt:
    return Attempt("POST", "/v1/ledgers", json_body=body, follow_up={"name": "Follow-up", "currency": "USD"}, **options)


def account_attempt(world: World, body: dict[str, Any], **options: Any) -> Attempt:
    path = f"/v1/ledgers/{world.ledger_id}/accounts"
    follow_up = {"code": f"follow-up-{uuid.uuid4().hex[:8]}", "name": "Follow up", "kind": "client"}
    return Attempt("POST", path, json_body=body, follow_up=follow_up, **options)


def raw_amount(body: dict[str, Any], literal: str) -> bytes:
    """The JSON text of ``body`` with every amount written as ``literal`` (to send 1e2 as such)."""
    text = json.dumps(body).replace('"amount": 100', '"amount": __AMOUNT__')
    assert "__AMOUNT__" in text
    return text.replace("__AMOUNT__", literal).encode()


AMOUNT_CASES: list[tuple[str, Any]] = [
    ("string", "100"),
    ("boolean", True),
    ("float-fraction", 100.5),
    ("float-integral", 100.0),
    ("zero", 0),
    ("negative", -100),
    ("too-large", 10**15 + 1),
    ("null", None),
]


def _amount_rows() -> list[Any]:
    rows: list[Any] = []
    for name, amount in AMOUNT_CASES:
        rows.append(pytest.param(lambda w, a=amount: transfer_attempt(w, valid_transfer(w, a)), id=f"transfer-{name}"))
        rows.append(pytest.param(lambda w, a=amount: deposit_attempt(w, valid_deposit(w, a)), id=f"deposit-{name}"))
    for literal in ("1e2", "1E2", "100.0", "1.0e2"):
        rows.append(
            pytest.param(
                lambda w, lit=literal: Attempt(
                    "POST", "/v1/transfers", raw=raw_amount(valid_transfer(w), lit), follow_up=valid_transfer(w)
                ),
                id=f"transfer-raw-{literal}",
            )
        )
        rows.append(
            pytest.param(
                lambda w, lit=literal: Attempt(
                    "POST",
                    f"/v1/ledgers/{w.ledger_id}/deposits",
                    raw=raw_amount(valid_deposit(w), lit),
                    follow_up=valid_deposit(w),
                ),
                id=f"deposit-raw-{literal}",
            )
        )
    return rows


def _with(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


def _posting_with(world: World, **changes: Any) -> dict[str, Any]:
    body = valid_transfer(world)
    body["postings"] = [{**body["postings"][0], **changes}, body["postings"][1]]
    return body


VALIDATION_ROWS: list[Any] = [
    pytest.param(
        lambda w: Attempt("POST", "/v1/transfers", raw=b'{"ledger_id": "', follow_up=valid_transfer(w)),
        id="transfer-malformed-json",
    ),
    pytest.param(
        lambda w: Attempt("POST", "/v1/transfers", raw=b"[1, 2", follow_up=valid_transfer(w)),
        id="transfer-malformed-json-array",
    ),
    pytest.param(
        lambda w: Attempt(
            "POST", f"/v1/ledgers/{w.ledger_id}/deposits", raw=b"{'amount': 1}", follow_up=valid_deposit(w)
        ),
        id="deposit-malformed-json",
    ),
    pytest.param(lambda w: ledger_attempt({"name": "x", "currency": "USD"} | {"bad": 1}), id="ledger-unknown-field"),
    pytest.param(
        lambda w: Attempt("POST", "/v1/ledgers", raw=b"{", follow_up={"name": "x", "currency": "USD"}),
        id="ledger-malformed-json",
    ),
    pytest.param(lambda w: ledger_attempt({"name": 5, "currency": "USD"}), id="ledger-name-wrong-type"),
    pytest.param(lambda w: ledger_attempt({"name": "nul\x00name", "currency": "USD"}), id="ledger-nul-in-name"),
    pytest.param(lambda w: ledger_attempt({"name": "Trust", "currency": "usd"}), id="ledger-bad-currency"),
    pytest.param(
        lambda w: account_attempt(w, {"code": "c-9", "name": "n", "kind": "client", "colour": "red"}),
        id="account-unknown-field",
    ),
    pytest.param(
        lambda w: account_attempt(w, {"code": "c\x009", "name": "n", "kind": "client"}), id="account-nul-in-code"
    ),
    pytest.param(lambda w: account_attempt(w, {"code": "c-9", "name": "n", "kind": "vault"}), id="account-bad-kind"),
    pytest.param(lambda w: transfer_attempt(w, _with(valid_transfer(w), colour="red")), id="transfer-unknown-field"),
    pytest.param(lambda w: transfer_attempt(w, _posting_with(w, colour="red")), id="transfer-posting-unknown-field"),
    pytest.param(lambda w: transfer_attempt(w, _posting_with(w, side="left")), id="transfer-bad-side"),
    pytest.param(lambda w: transfer_attempt(w, _posting_with(w, account_id="not-a-uuid")), id="transfer-bad-uuid"),
    pytest.param(lambda w: transfer_attempt(w, _with(valid_transfer(w), postings="x")), id="transfer-postings-type"),
    pytest.param(
        lambda w: transfer_attempt(w, _with(valid_transfer(w), description="a\x00b")), id="transfer-nul-description"
    ),
    pytest.param(
        lambda w: transfer_attempt(w, _with(valid_transfer(w), metadata=[1, 2])), id="transfer-metadata-not-object"
    ),
    pytest.param(lambda w: deposit_attempt(w, _with(valid_deposit(w), colour="red")), id="deposit-unknown-field"),
    pytest.param(
        lambda w: deposit_attempt(w, _with(valid_deposit(w), description="a\x00b")), id="deposit-nul-description"
    ),
    pytest.param(
        lambda w: deposit_attempt(w, _with(valid_deposit(w), client_account_id=5)), id="deposit-account-wrong-type"
    ),
    *_amount_rows(),
]


HTTP_GUARD_ROWS: list[Any] = [
    pytest.param(
        lambda w: transfer_attempt(w, valid_transfer(w), content_type="text/plain"),
        415,
        "unsupported_media_type",
        id="transfer-text-plain",
    ),
    pytest.param(
        lambda w: deposit_attempt(w, valid_deposit(w), content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        id="deposit-form-encoded",
    ),
    pytest.param(
        lambda w: ledger_attempt({"name": "x", "currency": "USD"}, content_type="text/plain"),
        415,
        "unsupported_media_type",
        id="ledger-text-plain",
    ),
    pytest.param(
        lambda w: Attempt(
            "POST",
            "/v1/transfers",
            raw=json.dumps(_with(valid_transfer(w), description="a" * (1 << 20))).encode(),
            follow_up=valid_transfer(w),
        ),
        413,
        "body_too_large",
        id="transfer-over-1MiB",
    ),
    pytest.param(
        lambda w: Attempt(
            "POST",
            f"/v1/ledgers/{w.ledger_id}/accounts",
            raw=b" " * (1 << 20) + b'{"code": "c-9", "name": "n", "kind": "client"}',
            follow_up={"code": "c-10", "name": "n", "kind": "client"},
        ),
        413,
        "body_too_large",
        id="account-over-1MiB",
    ),
]


def _key_rows() -> list[Any]:
    rows: list[Any] = []
    for key_name, key, code in (
        ("missing", None, "idempotency_key_required"),
        ("spaces", "has spaces in it", "invalid_idempotency_key"),
        ("300-chars", "k" * 300, "invalid_idempotency_key"),
        ("empty", "", "invalid_idempotency_key"),
    ):
        rows += [
            pytest.param(
                lambda w, k=key: transfer_attempt(w, valid_transfer(w), key=k), code, id=f"transfer-{key_name}"
            ),
            pytest.param(lambda w, k=key: deposit_attempt(w, valid_deposit(w), key=k), code, id=f"deposit-{key_name}"),
            pytest.param(
                lambda w, k=key: ledger_attempt({"name": "x", "currency": "USD"}, key=k), code, id=f"ledger-{key_name}"
            ),
            pytest.param(
                lambda w, k=key: account_attempt(w, {"code": "c-9", "name": "n", "kind": "client"}, key=k),
                code,
                id=f"account-{key_name}",
            ),
            pytest.param(
                lambda w, k=key: Attempt("POST", f"/v1/accounts/{w.client2_id}/close", key=k),
                code,
                id=f"close-{key_name}",
            ),
            pytest.param(
                lambda w, k=key: Attempt("POST", f"/v1/transfers/{w.deposit_id}/reversal", json_body={}, key=k),
                code,
                id=f"reversal-{key_name}",
            ),
        ]
    return rows


def run_refused(
    client: TestClient, world: World, attempt: Attempt, status: int, code: str, *, key_usable: bool = True
) -> dict[str, Any]:
    """Sends a request that must be refused, checks the problem and that nothing changed, then proves that its
    Idempotency-Key (if any) was not recorded by using it for a valid request."""
    before = snapshot(client, world)
    body = assert_problem(attempt.send(client), status, code)
    assert snapshot(client, world) == before
    if key_usable and attempt.key and attempt.follow_up is not None:
        follow_up = client.post(attempt.path, json=attempt.follow_up, headers={"Idempotency-Key": attempt.key})
        assert follow_up.status_code == 201, f"the refused request left its key behind: {follow_up.text}"
    return body


@pytest.mark.parametrize("make_attempt", VALIDATION_ROWS)
def test_validation_error_writes_nothing(
    client: TestClient, world: World, make_attempt: Callable[[World], Attempt]
) -> None:
    body = run_refused(client, world, make_attempt(world), 422, "validation_error")
    assert body["errors"], body
    assert all({"location", "message", "type"} <= error.keys() for error in body["errors"])


@pytest.mark.parametrize(("make_attempt", "status", "code"), HTTP_GUARD_ROWS)
def test_content_type_and_size_guards(
    client: TestClient, world: World, make_attempt: Callable[[World], Attempt], status: int, code: str
) -> None:
    run_refused(client, world, make_attempt(world), status, code)


@pytest.mark.parametrize(("make_attempt", "code"), _key_rows())
def test_missing_or_invalid_idempotency_key(
    client: TestClient, world: World, make_attempt: Callable[[World], Attempt], code: str
) -> None:
    attempt = make_attempt(world)
    run_refused(client, world, attempt, 400, code, key_usable=False)
    if attempt.follow_up is not None:
        # The refused request did not take effect under any key either: a valid retry with a good key succeeds.
        retry = client.post(attempt.path, json=attempt.follow_up, headers={"Idempotency-Key": new_key()})
        assert retry.status_code == 201, retry.text


def test_same_key_different_payload(client: TestClient, world: World) -> None:
    key = new_key()
    path = f"/v1/ledgers/{world.ledger_id}/deposits"
    first = created(write(client, path, valid_deposit(world, 5_00), key=key))
    after_first = snapshot(client, world)

    for other in (valid_deposit(world, 6_00), _with(valid_deposit(world, 5_00), description="another")):
        assert_problem(write(client, path, other, key=key), 422, "idempotency_key_reused")
    # The same key on another endpoint is another request too.
    assert_problem(write(client, "/v1/transfers", valid_transfer(world, 5_00), key=key), 422, "idempotency_key_reused")
    assert snapshot(client, world) == after_first

    statement = client.get(f"/v1/accounts/{world.client2_id}/statement").json()["items"]
    assert [line["transfer_id"] for line in statement] == [first["id"]]
    account = client.get(f"/v1/accounts/{world.client2_id}").json()
    assert account["balances"]["posted"] == 5_00
    # The first request's replay still answers the first response.
    replay = write(client, path, valid_deposit(world, 5_00), key=key)
    assert replay.status_code == 201
    assert replay.json() == first


# ---------------------------------------------------------------------------------------------------------------
# 404: unknown account, transfer or ledger; the body says which kind of thing, never which id.

UNKNOWN = "7d0d7a8e-0000-4000-8000-00000000dead"

NOT_FOUND_ROWS: list[Any] = [
    pytest.param(lambda w: Attempt("GET", f"/v1/accounts/{UNKNOWN}", key=None), "account_not_found", id="get-account"),
    pytest.param(
        lambda w: Attempt("GET", f"/v1/accounts/{UNKNOWN}/balance", key=None), "account_not_found", id="balance"
    ),
    pytest.param(
        lambda w: Attempt("GET", f"/v1/accounts/{UNKNOWN}/statement", key=None), "account_not_found", id="statement"
    ),
    pytest.param(lambda w: Attempt("GET", f"/v1/transfers/{UNKNOWN}", key=None), "transfer_not_found", id="transfer"),
    pytest.param(lambda w: Attempt("GET", f"/v1/ledgers/{UNKNOWN}", key=None), "ledger_not_found", id="get-ledger"),
    pytest.param(
        lambda w: Attempt("GET", f"/v1/ledgers/{UNKNOWN}/accounts", key=None), "ledger_not_found", id="list-accounts"
    ),
    pytest.param(
        lambda w: transfer_attempt(w, _posting_with(w, account_id=UNKNOWN)), "account_not_found", id="post-transfer"
    ),
    pytest.param(
        lambda w: transfer_attempt(w, _with(valid_transfer(w), ledger_id=UNKNOWN)),
        "ledger_not_found",
        id="post-transfer-ledger",
    ),
    pytest.param(
        lambda w: Attempt(
            "POST",
            f"/v1/transfers/{UNKNOWN}/reversal",
            json_body={},
            follow_up=None,
        ),
        "transfer_not_found",
        id="reverse",
    ),
    pytest.param(
        lambda w: deposit_attempt(w, _with(valid_deposit(w), client_account_id=UNKNOWN)),
        "account_not_found",
        id="deposit-client",
    ),
    pytest.param(
        lambda w: deposit_attempt(w, _with(valid_deposit(w), bank_account_id=UNKNOWN)),
        "account_not_found",
        id="deposit-bank",
    ),
    pytest.param(
        lambda w: Attempt("POST", f"/v1/ledgers/{UNKNOWN}/deposits", json_body=valid_deposit(w)),
        "ledger_not_found",
        id="deposit-ledger",
    ),
    pytest.param(
        lambda w: Attempt(
            "POST", f"/v1/ledgers/{UNKNOWN}/accounts", json_body={"code": "c-9", "name": "n", "kind": "client"}
        ),
        "ledger_not_found",
        id="open-account",
    ),
    pytest.param(lambda w: Attempt("POST", f"/v1/accounts/{UNKNOWN}/close"), "account_not_found", id="close-account"),
]


@pytest.mark.parametrize(("make_attempt", "code"), NOT_FOUND_ROWS)
def test_unknown_resources_answer_404(
    client: TestClient, world: World, make_attempt: Callable[[World], Attempt], code: str
) -> None:
    attempt = make_attempt(world)
    body = run_refused(client, world, attempt, 404, code)
    assert set(body) == PROBLEM_KEYS, body
    assert body["title"] == "Not Found"
    assert UNKNOWN not in json.dumps(body)
    if attempt.key and attempt.follow_up is None:
        # No valid body for the same path exists (the id is unknown): prove the key is free on another write.
        retry = write(client, "/v1/transfers", valid_transfer(world), key=attempt.key)
        assert retry.status_code == 201, retry.text


def test_not_found_bodies_are_alike(client: TestClient, world: World) -> None:
    """Apart from the kind of resource, a 404 says nothing: same keys, same title, nothing about the id."""
    bodies = [
        client.get(f"/v1/accounts/{UNKNOWN}").json(),
        client.get(f"/v1/accounts/{uuid.uuid4()}").json(),
        write(client, "/v1/transfers", _posting_with(world, account_id=str(uuid.uuid4()))).json(),
    ]
    assert bodies[0] == bodies[1] == bodies[2]


# ---------------------------------------------------------------------------------------------------------------
# Ledger rules: different ledgers, the same account twice, a closed account.

RULE_ROWS: list[Any] = [
    pytest.param(
        lambda w: transfer_attempt(w, _posting_with(w, account_id=w.other_bank_id)),
        "ledger_mismatch",
        id="transfer-account-of-other-ledger",
    ),
    pytest.param(
        lambda w: transfer_attempt(w, _with(valid_transfer(w), ledger_id=w.other_ledger_id)),
        "ledger_mismatch",
        id="transfer-names-other-currency-ledger",
    ),
    pytest.param(
        lambda w: deposit_attempt(w, _with(valid_deposit(w), client_account_id=w.other_client_id)),
        "ledger_mismatch",
        id="deposit-client-of-other-ledger",
    ),
    pytest.param(
        lambda w: transfer_attempt(w, _posting_with(w, account_id=w.client2_id)),
        "duplicate_account",
        id="transfer-same-account-twice",
    ),
    pytest.param(
        lambda w: Attempt(
            "POST",
            f"/v1/ledgers/{w.ledger_id}/client-transfers",
            json_body={"from_client_account_id": w.client1_id, "to_client_account_id": w.client1_id, "amount": 1_00},
            follow_up={"from_client_account_id": w.client1_id, "to_client_account_id": w.client2_id, "amount": 1_00},
        ),
        "duplicate_account",
        id="client-transfer-to-itself",
    ),
]


@pytest.mark.parametrize(("make_attempt", "code"), RULE_ROWS)
def test_ledger_mismatch_and_duplicate_account(
    client: TestClient, world: World, make_attempt: Callable[[World], Attempt], code: str
) -> None:
    run_refused(client, world, make_attempt(world), 422, code)


@pytest.mark.parametrize(
    "make_attempt",
    [
        pytest.param(
            lambda w: deposit_attempt(w, _with(valid_deposit(w), client_account_id=w.closed_client_id)), id="deposit"
        ),
        pytest.param(
            lambda w: transfer_attempt(
                w,
                {
                    "ledger_id": w.ledger_id,
                    "postings": [
                        {"account_id": w.client1_id, "side": "debit", "amount": 1_00},
                        {"account_id": w.closed_client_id, "side": "credit", "amount": 1_00},
                    ],
                },
            ),
            id="transfer",
        ),
        pytest.param(lambda w: Attempt("POST", f"/v1/accounts/{w.closed_client_id}/close"), id="close-again"),
    ],
)
def test_closed_account_is_refused_and_the_refusal_replayed(
    client: TestClient, world: World, make_attempt: Callable[[World], Attempt]
) -> None:
    attempt = make_attempt(world)
    before = snapshot(client, world)
    first = assert_problem(attempt.send(client), 422, "account_closed")
    assert snapshot(client, world) == before
    # A refusal by a ledger rule is recorded with its key: the replay answers the same, and nothing is written.
    replay = attempt.send(client)
    assert replay.status_code == 422
    assert replay.headers["content-type"].split(";")[0] == PROBLEM
    assert replay.json() == first
    assert snapshot(client, world) == before
    # It was recorded (not merely refused again): the key now belongs to that request.
    other = Attempt("POST", "/v1/transfers", json_body=valid_transfer(world), key=attempt.key)
    assert_problem(other.send(client), 422, "idempotency_key_reused")
    assert snapshot(client, world) == before


def test_insufficient_funds_while_the_bank_holds_other_clients_money(client: TestClient, world: World) -> None:
    bank = client.get(f"/v1/accounts/{world.bank_id}").json()
    assert bank["balances"]["available"] == FUNDED  # the pool could pay; client 2's share of it is zero
    key = new_key()
    path = f"/v1/ledgers/{world.ledger_id}/disbursements"
    disbursement = {"client_account_id": world.client2_id, "amount": 50_00, "description": "pay the vendor"}
    before = snapshot(client, world)
    refusal = assert_problem(write(client, path, disbursement, key=key), 422, "insufficient_funds")
    assert snapshot(client, world) == before

    # Also refused through the generic transfer endpoint and between clients (voluntary debits).
    assert_problem(
        write(
            client,
            "/v1/transfers",
            {
                "ledger_id": world.ledger_id,
                "postings": [
                    {"account_id": world.client2_id, "side": "debit", "amount": 1},
                    {"account_id": world.bank_id, "side": "credit", "amount": 1},
                ],
            },
        ),
        422,
        "insufficient_funds",
    )
    assert_problem(
        write(
            client,
            f"/v1/ledgers/{world.ledger_id}/client-transfers",
            {"from_client_account_id": world.client2_id, "to_client_account_id": world.client1_id, "amount": 1},
        ),
        422,
        "insufficient_funds",
    )
    assert_problem(
        write(
            client, f"/v1/ledgers/{world.ledger_id}/earned-fees", {"client_account_id": world.client2_id, "amount": 1}
        ),
        422,
        "insufficient_funds",
    )
    assert snapshot(client, world) == before

    # Fund client 2; the replay of the refused key still answers the refusal, and writes nothing.
    created(write(client, f"/v1/ledgers/{world.ledger_id}/deposits", valid_deposit(world, 80_00)))
    funded = snapshot(client, world)
    replay = write(client, path, disbursement, key=key)
    assert replay.status_code == 422
    assert replay.headers["content-type"].split(";")[0] == PROBLEM
    assert replay.json() == refusal
    assert snapshot(client, world) == funded
    # A new key with the same body now succeeds.
    assert created(write(client, path, disbursement))["kind"] == "disbursement"
    assert client.get(f"/v1/accounts/{world.client2_id}").json()["balances"]["posted"] == 30_00


@pytest.mark.parametrize(
    ("path_of", "limit"),
    [
        pytest.param(lambda w: f"/v1/accounts/{w.client1_id}/statement", 501, id="statement-501"),
        pytest.param(lambda w: f"/v1/accounts/{w.client1_id}/statement", 0, id="statement-0"),
        pytest.param(lambda w: f"/v1/accounts/{w.client1_id}/statement", -1, id="statement-negative"),
        pytest.param(lambda w: "/v1/ledgers", 501, id="ledgers-501"),
        pytest.param(lambda w: "/v1/ledgers", 0, id="ledgers-0"),
        pytest.param(lambda w: f"/v1/ledgers/{w.ledger_id}/accounts", 501, id="accounts-501"),
        pytest.param(lambda w: f"/v1/ledgers/{w.ledger_id}/accounts", 0, id="accounts-0"),
    ],
)
def test_page_size_out_of_bounds(client: TestClient, world: World, path_of: Callable[[World], str], limit: int) -> None:
    before = snapshot(client, world)
    assert_problem(client.get(path_of(world), params={"limit": limit}), 422, "validation_error")
    assert snapshot(client, world) == before
    assert client.get(path_of(world), params={"limit": 500}).status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# 503 when the database cannot be reached (PostgreSQL only).


@pytest.fixture
def unreachable_container(service_database: DatabaseCredentials) -> Iterator[Container]:
    container = build_container(settings_with_secret_url(service_database))
    url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nowhere"
    container.secret_provider.override(providers.Object(DatabaseUrlProvider(SecretStr(url))))
    try:
        yield container
    finally:
        container.shutdown_resources()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/ledgers", {"name": "Trust", "currency": "USD"}),
        ("GET", "/v1/ledgers", None),
        ("GET", f"/v1/ledgers/{UNKNOWN}", None),
        ("GET", f"/v1/accounts/{UNKNOWN}", None),
        ("GET", f"/v1/accounts/{UNKNOWN}/statement", None),
        ("POST", f"/v1/ledgers/{UNKNOWN}/accounts", {"code": "c", "name": "n", "kind": "client"}),
        (
            "POST",
            "/v1/transfers",
            {
                "ledger_id": UNKNOWN,
                "postings": [
                    {"account_id": str(uuid.UUID(int=1)), "side": "debit", "amount": 1},
                    {"account_id": str(uuid.UUID(int=2)), "side": "credit", "amount": 1},
                ],
            },
        ),
        ("POST", f"/v1/ledgers/{UNKNOWN}/deposits", {"client_account_id": UNKNOWN, "amount": 1}),
        ("GET", "/readyz", None),
    ],
)
def test_database_unavailable_answers_503_with_retry_after(
    unreachable_container: Container, method: str, path: str, body: dict[str, Any] | None
) -> None:
    # No lifespan (no context manager): the start-up check would refuse to start against this database.
    client = AuthorizedTestClient(create_app(unreachable_container), raise_server_exceptions=False)
    headers = {"Idempotency-Key": new_key()} if method == "POST" else {}
    # A well-formed key: checking it needs the database, so the answer is 503 (not 401, which would be a lie).
    headers["Authorization"] = "Bearer tlk_0123456789abcdef." + "A" * 43
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    retry_after = response.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
    assert response.json()["code"] == "database_unavailable"
    assert "secret" not in response.text
