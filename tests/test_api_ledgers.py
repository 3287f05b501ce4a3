"""The ledgers and accounts API, run on BOTH adapters: the same requests must get the same answers whether the
container serves the in-memory unit of work or PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ledger.api.app import create_app
from ledger.container import Container
from tests.http_clients import KeyedTestClient

PROBLEM_JSON = "application/problem+json"
MAX_LEDGER_PAGES = 200


@pytest.fixture
def client(any_container: Container) -> Iterator[TestClient]:
    """The ASGI app with its lifespan running (start-up check included); server errors come back as responses."""
    with KeyedTestClient(create_app(any_container), raise_server_exceptions=False) as test_client:
        yield test_client


def _json(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, f"{response.status_code} {response.text}"
    return response.json()


def _assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["type"], str) and body["type"]
    if code is not None:
        assert body["code"] == code, body
    return body


def _open_ledger(client: TestClient, name: str = "Client trust (IOLTA)", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = _json(client.post("/v1/ledgers", json={"name": name, "currency": "USD", **fields}), 201)
    return body


def _open_account(client: TestClient, ledger_id: str, code: str, kind: str = "client") -> dict[str, Any]:
    body: dict[str, Any] = _json(
        client.post(f"/v1/ledgers/{ledger_id}/accounts", json={"code": code, "name": f"Account {code}", "kind": kind}),
        201,
    )
    return body


def _all_ledgers(client: TestClient, page_size: int = 500) -> list[dict[str, Any]]:
    """Every ledger, following next_cursor (bounded)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": page_size}
    for _ in range(MAX_LEDGER_PAGES):
        page = _json(client.get("/v1/ledgers", params=params), 200)
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        params = {"limit": page_size, "after": page["next_cursor"]}
    pytest.fail(f"more than {MAX_LEDGER_PAGES} pages of ledgers: the cursor chain does not end")


def _all_accounts(client: TestClient, ledger_id: str) -> list[dict[str, Any]]:
    page = _json(client.get(f"/v1/ledgers/{ledger_id}/accounts", params={"limit": 500}), 200)
    assert page["next_cursor"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


# --- ledgers ---------------------------------------------------------------------------------------------------


def test_open_ledger_answers_201_with_the_ledger(client: TestClient) -> None:
    response = client.post("/v1/ledgers", json={"name": "Escrow", "currency": "JPY", "time_zone": "America/New_York"})
    body = _json(response, 201)
    assert set(body) == {"id", "name", "currency", "currency_exponent", "time_zone", "kind", "created_at"}
    uuid.UUID(body["id"])
    assert body["name"] == "Escrow"
    assert body["currency"] == "JPY"
    assert body["currency_exponent"] == 0
    assert body["time_zone"] == "America/New_York"
    assert body["created_at"]

    assert _json(client.get(f"/v1/ledgers/{body['id']}"), 200) == body


def test_time_zone_defaults_to_utc_and_exponent_follows_the_currency(client: TestClient) -> None:
    body = _json(client.post("/v1/ledgers", json={"name": "Kuwait trust", "currency": "KWD"}), 201)
    assert body["time_zone"] == "UTC"
    assert body["currency_exponent"] == 3


def test_list_ledgers_contains_the_new_ledger(client: TestClient) -> None:
    first = _open_ledger(client, name="First")
    second = _open_ledger(client, name="Second")
    listed = {item["id"]: item for item in _all_ledgers(client)}
    assert listed[first["id"]] == first
    assert listed[second["id"]] == second


def test_ledger_cursor_chain_covers_every_ledger_once_in_ascending_order(client: TestClient) -> None:
    created = {_open_ledger(client, name=f"Ledger {number}")["id"] for number in range(5)}
    chained = [item["id"] for item in _all_ledgers(client, page_size=2)]
    assert len(chained) == len(set(chained)), "a ledger appeared on two pages"
    assert chained == sorted(chained, key=uuid.UUID)
    assert created <= set(chained)
    assert chained == [item["id"] for item in _all_ledgers(client)]


def test_unknown_ledger_is_404_problem(client: TestClient) -> None:
    _assert_problem(client.get(f"/v1/ledgers/{uuid.uuid4()}"), 404, "ledger_not_found")


def test_malformed_ledger_id_is_422(client: TestClient) -> None:
    _assert_problem(client.get("/v1/ledgers/not-a-uuid"), 422, "validation_error")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"name": "Trust", "currency": "USD", "colour": "blue"}, "unknown field"),
        ({"name": 12, "currency": "USD"}, "name of the wrong type"),
        ({"name": "Trust", "currency": 840}, "currency of the wrong type"),
        ({"name": "Trust", "currency": "USD", "time_zone": 5}, "time zone of the wrong type"),
        ({"name": "Trust", "currency": "XXQ"}, "unknown currency"),
        ({"name": "Trust", "currency": "usd"}, "currency not upper case"),
        ({"name": "Trust", "currency": "USD", "time_zone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"name": "Trust", "currency": "USD", "time_zone": "../../etc/passwd"}, "path as time zone"),
        ({"name": "Tru\u0000st", "currency": "USD"}, "NUL in name"),
        ({"name": "", "currency": "USD"}, "empty name"),
        ({"name": "   ", "currency": "USD"}, "blank name"),
        ({"currency": "USD"}, "name missing"),
        ({"name": "x" * 201, "currency": "USD"}, "name too long"),
    ],
)
def test_invalid_ledger_is_422_and_writes_nothing(client: TestClient, payload: dict[str, Any], why: str) -> None:
    before = [item["id"] for item in _all_ledgers(client)]
    body = _assert_problem(client.post("/v1/ledgers", json=payload), 422)
    assert body["code"] in {"validation_error", "unknown_currency", "invalid_time_zone", "invalid_name"}, why
    after = [item["id"] for item in _all_ledgers(client)]
    assert after == before, f"{why}: a ledger was written"


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/ledgers", content=b'{"name": "Trust", "currency": ', headers={"content-type": "application/json"}
    )
    _assert_problem(response, 422)


@pytest.mark.parametrize("limit", [0, -1, 501])
def test_ledger_page_size_out_of_bounds_is_422(client: TestClient, limit: int) -> None:
    _assert_problem(client.get("/v1/ledgers", params={"limit": limit}), 422, "validation_error")


# --- accounts --------------------------------------------------------------------------------------------------


def test_open_account_answers_201_with_zero_balances(client: TestClient) -> None:
    ledger = _open_ledger(client)
    response = client.post(
        f"/v1/ledgers/{ledger['id']}/accounts", json={"code": "client-1042", "name": "Smith estate", "kind": "client"}
    )
    body = _json(response, 201)
    uuid.UUID(body["id"])
    assert body["ledger_id"] == ledger["id"]
    assert body["code"] == "client-1042"
    assert body["name"] == "Smith estate"
    assert body["kind"] == "client"
    assert body["normal_side"] == "credit"
    assert body["version"] == 0
    assert body["balances"] == {
        "posted_debits": 0,
        "posted_credits": 0,
        "pending_debits": 0,
        "pending_credits": 0,
        "uncleared": 0,
        "posted": 0,
        "available": 0,
        "shortfall": 0,
    }
    assert _json(client.get(f"/v1/accounts/{body['id']}"), 200) == body


def test_bank_account_is_debit_normal(client: TestClient) -> None:
    ledger = _open_ledger(client)
    assert _open_account(client, ledger["id"], "bank", kind="bank")["normal_side"] == "debit"


def test_list_accounts_of_a_ledger(client: TestClient) -> None:
    ledger = _open_ledger(client)
    other = _open_ledger(client, name="Other")
    mine = [_open_account(client, ledger["id"], code) for code in ("a", "b", "c")]
    _open_account(client, other["id"], "a")  # the same code in another ledger is fine
    listed = _all_accounts(client, ledger["id"])
    assert sorted(listed, key=lambda item: item["id"]) == sorted(mine, key=lambda item: item["id"])


def test_account_cursor_pages_cover_every_account_once_in_ascending_id_order(client: TestClient) -> None:
    ledger = _open_ledger(client)
    created = [_open_account(client, ledger["id"], f"client-{number}")["id"] for number in range(5)]

    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(10):
        page = _json(client.get(f"/v1/ledgers/{ledger['id']}/accounts", params=params), 200)
        ids = [item["id"] for item in page["items"]]
        pages.append(ids)
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == ids[-1]
        params = {"limit": 2, "after": page["next_cursor"]}
    else:
        pytest.fail("the cursor chain does not end")

    assert [len(page) for page in pages] == [2, 2, 1]
    chained = [account_id for page in pages for account_id in page]
    assert chained == sorted(created, key=uuid.UUID)


@pytest.mark.parametrize("limit", [0, 501])
def test_account_page_size_out_of_bounds_is_422(client: TestClient, limit: int) -> None:
    ledger = _open_ledger(client)
    _assert_problem(
        client.get(f"/v1/ledgers/{ledger['id']}/accounts", params={"limit": limit}), 422, "validation_error"
    )


def test_page_size_500_is_accepted(client: TestClient) -> None:
    ledger = _open_ledger(client)
    assert _json(client.get(f"/v1/ledgers/{ledger['id']}/accounts", params={"limit": 500}), 200)["items"] == []


def test_malformed_cursor_is_422(client: TestClient) -> None:
    ledger = _open_ledger(client)
    _assert_problem(client.get(f"/v1/ledgers/{ledger['id']}/accounts", params={"after": "zz"}), 422)


def test_unknown_account_is_404_problem(client: TestClient) -> None:
    _assert_problem(client.get(f"/v1/accounts/{uuid.uuid4()}"), 404, "account_not_found")


def test_accounts_of_an_unknown_ledger_are_404(client: TestClient) -> None:
    unknown = uuid.uuid4()
    _assert_problem(client.get(f"/v1/ledgers/{unknown}/accounts"), 404, "ledger_not_found")
    _assert_problem(
        client.post(f"/v1/ledgers/{unknown}/accounts", json={"code": "c", "name": "C", "kind": "client"}),
        404,
        "ledger_not_found",
    )
    _assert_problem(client.get(f"/v1/ledgers/{unknown}/accounts"), 404, "ledger_not_found")


def test_duplicate_account_code_is_409_and_keeps_the_first(client: TestClient) -> None:
    ledger = _open_ledger(client)
    first = _open_account(client, ledger["id"], "client-7")
    response = client.post(
        f"/v1/ledgers/{ledger['id']}/accounts", json={"code": "client-7", "name": "Impostor", "kind": "bank"}
    )
    _assert_problem(response, 409, "account_code_taken")
    assert _all_accounts(client, ledger["id"]) == [first]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"code": "c1", "name": "C", "kind": "client", "overdraft": True}, "unknown field"),
        ({"code": 17, "name": "C", "kind": "client"}, "code of the wrong type"),
        ({"code": "c1", "name": ["C"], "kind": "client"}, "name of the wrong type"),
        ({"code": "c1", "name": "C", "kind": "piggy_bank"}, "unknown kind"),
        ({"code": "c1", "name": "C", "kind": 3}, "kind of the wrong type"),
        ({"code": "c1", "name": "C\u0000lient", "kind": "client"}, "NUL in name"),
        ({"code": "c\u00001", "name": "C", "kind": "client"}, "NUL in code"),
        ({"code": "c1", "name": "  ", "kind": "client"}, "blank name"),
        ({"code": "c1", "kind": "client"}, "name missing"),
        ({"code": "c" * 65, "name": "C", "kind": "client"}, "code too long"),
    ],
)
def test_invalid_account_is_422_and_writes_nothing(client: TestClient, payload: dict[str, Any], why: str) -> None:
    ledger = _open_ledger(client)
    body = _assert_problem(client.post(f"/v1/ledgers/{ledger['id']}/accounts", json=payload), 422)
    assert body["code"] in {"validation_error", "invalid_name", "invalid_code"}, why
    assert _all_accounts(client, ledger["id"]) == [], f"{why}: an account was written"


# --- request ids -----------------------------------------------------------------------------------------------


def test_request_id_is_echoed_back(client: TestClient) -> None:
    response = client.get("/v1/ledgers", headers={"X-Request-ID": "req-4711.a:b_c"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-4711.a:b_c"


def test_request_id_is_echoed_on_errors_too(client: TestClient) -> None:
    response = client.get(f"/v1/accounts/{uuid.uuid4()}", headers={"X-Request-ID": "trace-404"})
    _assert_problem(response, 404)
    assert response.headers["x-request-id"] == "trace-404"


def test_request_id_is_generated_when_absent(client: TestClient) -> None:
    first = client.get("/healthz").headers.get("x-request-id")
    second = client.get("/v1/ledgers").headers.get("x-request-id")
    assert first and second
    assert first != second
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,128}", first)


def test_unacceptable_request_id_is_replaced(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "evil\tinjected value"})
    request_id = response.headers["x-request-id"]
    assert request_id != "evil\tinjected value"
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,128}", request_id)


# --- health ----------------------------------------------------------------------------------------------------


def test_health_and_readiness_answer(client: TestClient) -> None:
    assert _json(client.get("/healthz"), 200) == {"status": "ok"}
    assert _json(client.get("/readyz"), 200) == {"status": "ready"}
