"""Happy paths of the transfer API over HTTP, on both adapters: general-ledger transfers, reversals, every trust
operation, statements, balances at a point in time, closing an account, replays of every write, and the OpenAPI
document's promises for writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from ledger.api import schemas
from ledger.api.app import create_app
from ledger.container import Container
from tests.http_clients import AuthorizedTestClient

MAX_PAGES = 100
FUNDED = 100_00


def new_key() -> str:
    return uuid.uuid4().hex


def write(client: TestClient, path: str, body: dict[str, Any] | None = None, *, key: str | None = None) -> Response:
    return client.post(path, json=body, headers={"Idempotency-Key": key or new_key()})


def expect(response: Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def write_and_replay(client: TestClient, path: str, body: dict[str, Any] | None = None, status: int = 201) -> Any:
    """Posts once, then replays with the same key: same status, same body, nothing written twice."""
    key = new_key()
    first = expect(write(client, path, body, key=key), status)
    replay = write(client, path, body, key=key)
    assert replay.status_code == status
    assert replay.json() == first
    return first


def account(client: TestClient, account_id: str) -> dict[str, Any]:
    return expect(client.get(f"/v1/accounts/{account_id}"), 200)


def posted(client: TestClient, account_id: str) -> int:
    value: int = account(client, account_id)["balances"]["posted"]
    return value


def open_account(client: TestClient, ledger_id: str, code: str, kind: str) -> str:
    body = {"code": code, "name": code.replace("-", " "), "kind": kind}
    return str(expect(write(client, f"/v1/ledgers/{ledger_id}/accounts", body))["id"])


@dataclass(frozen=True)
class TrustWorld:
    ledger_id: str
    bank_id: str
    client1_id: str
    client2_id: str
    firm_id: str
    deposit: dict[str, Any]


@pytest.fixture
def client(any_container: Container) -> Iterator[TestClient]:
    with AuthorizedTestClient(create_app(any_container)) as test_client:
        yield test_client


@pytest.fixture
def trust(client: TestClient) -> TrustWorld:
    """A trust ledger with a bank account, two clients and firm funds; client 1 funded with a deposit."""
    ledger_id = str(expect(write(client, "/v1/ledgers", {"name": "Client trust", "currency": "USD"}))["id"])
    bank_id = open_account(client, ledger_id, "bank", "bank")
    client1_id = open_account(client, ledger_id, "client-1", "client")
    client2_id = open_account(client, ledger_id, "client-2", "client")
    firm_id = open_account(client, ledger_id, "firm-funds", "firm_funds")
    deposit = expect(
        write(client, f"/v1/ledgers/{ledger_id}/deposits", {"client_account_id": client1_id, "amount": FUNDED})
    )
    return TrustWorld(ledger_id, bank_id, client1_id, client2_id, firm_id, deposit)


def assert_trust_invariant(client: TestClient, world: TrustWorld) -> None:
    bank = posted(client, world.bank_id)
    assert bank == posted(client, world.client1_id) + posted(client, world.client2_id) + posted(client, world.firm_id)


# ---------------------------------------------------------------------------------------------------------------
# Ledgers and accounts


def test_open_ledger_and_account_replay_the_first_response(client: TestClient) -> None:
    body = {"name": "Operating", "currency": "JPY", "time_zone": "Asia/Tokyo", "kind": "general"}
    ledger = write_and_replay(client, "/v1/ledgers", body)
    assert ledger["currency"] == "JPY"
    assert ledger["currency_exponent"] == 0
    assert ledger["time_zone"] == "Asia/Tokyo"
    assert ledger["kind"] == "general"
    assert expect(client.get(f"/v1/ledgers/{ledger['id']}"), 200) == ledger
    ledger_ids = [item["id"] for item in expect(client.get("/v1/ledgers", params={"limit": 500}), 200)["items"]]
    assert ledger_ids.count(ledger["id"]) == 1

    path = f"/v1/ledgers/{ledger['id']}/accounts"
    opened = write_and_replay(client, path, {"code": "cash", "name": "Cash", "kind": "asset"})
    assert opened["normal_side"] == "debit"
    assert opened["prevent_overdraft"] is False
    assert opened["version"] == 0
    assert opened["status"] == "open"
    assert expect(client.get(path), 200)["items"] == [opened]
    assert account(client, opened["id"]) == opened


# ---------------------------------------------------------------------------------------------------------------
# General ledger: multi-posting transfer, read back, reversal


@pytest.fixture
def general(client: TestClient) -> dict[str, str]:
    ledger_id = str(expect(write(client, "/v1/ledgers", {"name": "Ops", "currency": "USD", "kind": "general"}))["id"])
    return {
        "ledger": ledger_id,
        "cash": open_account(client, ledger_id, "cash", "asset"),
        "revenue": open_account(client, ledger_id, "revenue", "income"),
        "tax": open_account(client, ledger_id, "sales-tax", "liability"),
    }


def test_multi_posting_transfer_get_and_reversal(client: TestClient, general: dict[str, str]) -> None:
    body = {
        "ledger_id": general["ledger"],
        "postings": [
            {"account_id": general["cash"], "side": "debit", "amount": 110_00},
            {"account_id": general["revenue"], "side": "credit", "amount": 100_00},
            {"account_id": general["tax"], "side": "credit", "amount": 10_00},
        ],
        "description": "invoice 17 paid",
        "metadata": {"invoice": "17", "lines": [1, 2]},
    }
    transfer = write_and_replay(client, "/v1/transfers", body)
    assert transfer["kind"] == "transfer"
    assert transfer["ledger_id"] == general["ledger"]
    assert transfer["amount"] == 110_00
    assert transfer["description"] == "invoice 17 paid"
    assert transfer["metadata"] == {"invoice": "17", "lines": [1, 2]}
    assert transfer["actor"].startswith("key:")  # the API key that made it
    assert transfer["reverses_transfer_id"] is None
    assert date.fromisoformat(transfer["effective_date"])
    postings = {
        (p["account_id"], p["side"], p["amount"], p["account_version"], p["balance_after"])
        for p in transfer["postings"]
    }
    assert postings == {
        (general["cash"], "debit", 110_00, 1, 110_00),
        (general["revenue"], "credit", 100_00, 1, 100_00),
        (general["tax"], "credit", 10_00, 1, 10_00),
    }
    assert expect(client.get(f"/v1/transfers/{transfer['id']}"), 200) == transfer
    # The replay wrote nothing: every account moved once.
    for name, amount in (("cash", 110_00), ("revenue", 100_00), ("tax", 10_00)):
        state = account(client, general[name])
        assert (state["balances"]["posted"], state["version"]) == (amount, 1)

    reversal = write_and_replay(client, f"/v1/transfers/{transfer['id']}/reversal", {"description": "refunded"})
    assert reversal["kind"] == "reversal"
    assert reversal["reverses_transfer_id"] == transfer["id"]
    assert reversal["description"] == "refunded"
    assert reversal["amount"] == 110_00
    flipped = {(p["account_id"], p["side"], p["amount"]) for p in reversal["postings"]}
    assert flipped == {
        (general["cash"], "credit", 110_00),
        (general["revenue"], "debit", 100_00),
        (general["tax"], "debit", 10_00),
    }
    assert expect(client.get(f"/v1/transfers/{reversal['id']}"), 200) == reversal
    for name in ("cash", "revenue", "tax"):
        state = account(client, general[name])
        assert (state["balances"]["posted"], state["version"]) == (0, 2)
    # The original is unchanged (posted entries are immutable).
    assert expect(client.get(f"/v1/transfers/{transfer['id']}"), 200) == transfer

    # A reversal is allowed once; a reversal is not itself reversible. Both refusals replay.
    again = write(client, f"/v1/transfers/{transfer['id']}/reversal", {})
    assert again.status_code == 422
    assert again.json()["code"] == "transfer_already_reversed"
    of_reversal = write(client, f"/v1/transfers/{reversal['id']}/reversal", {})
    assert of_reversal.status_code == 422
    assert of_reversal.json()["code"] == "cannot_reverse_reversal"
    assert account(client, general["cash"])["version"] == 2


def test_reversal_without_body_uses_a_default_description(client: TestClient, general: dict[str, str]) -> None:
    transfer = expect(
        write(
            client,
            "/v1/transfers",
            {
                "ledger_id": general["ledger"],
                "postings": [
                    {"account_id": general["cash"], "side": "debit", "amount": 5},
                    {"account_id": general["revenue"], "side": "credit", "amount": 5},
                ],
            },
        )
    )
    reversal = write_and_replay(client, f"/v1/transfers/{transfer['id']}/reversal", {})
    assert transfer["id"] in reversal["description"]


def test_general_ledger_account_may_go_negative_and_max_amount_is_accepted(
    client: TestClient, general: dict[str, str]
) -> None:
    """A general ledger's accounts default to no overdraft protection; 10**15 is the largest amount."""
    body = {
        "ledger_id": general["ledger"],
        "postings": [
            {"account_id": general["revenue"], "side": "debit", "amount": 10**15},
            {"account_id": general["cash"], "side": "credit", "amount": 10**15},
        ],
    }
    transfer = write_and_replay(client, "/v1/transfers", body)
    assert transfer["amount"] == 10**15
    assert posted(client, general["cash"]) == -(10**15)


# ---------------------------------------------------------------------------------------------------------------
# Trust operations


def test_each_trust_operation(client: TestClient, trust: TrustWorld) -> None:
    base = f"/v1/ledgers/{trust.ledger_id}"
    assert trust.deposit["kind"] == "deposit"
    assert posted(client, trust.client1_id) == FUNDED
    assert account(client, trust.bank_id)["balances"]["available"] == FUNDED

    operations: list[tuple[str, dict[str, Any], str, str, str, int]] = [
        # path, body, kind, debited account, credited account, amount
        (
            "deposits",
            {"client_account_id": trust.client2_id, "amount": 40_00, "effective_date": None},
            "deposit",
            trust.bank_id,
            trust.client2_id,
            40_00,
        ),
        ("firm-deposits", {"amount": 10_00}, "firm_deposit", trust.bank_id, trust.firm_id, 10_00),
        (
            "client-transfers",
            {"from_client_account_id": trust.client1_id, "to_client_account_id": trust.client2_id, "amount": 30_00},
            "client_transfer",
            trust.client1_id,
            trust.client2_id,
            30_00,
        ),
        (
            "disbursements",
            {"client_account_id": trust.client2_id, "amount": 60_00, "bank_account_id": trust.bank_id},
            "disbursement",
            trust.client2_id,
            trust.bank_id,
            60_00,
        ),
        (
            "earned-fees",
            {"client_account_id": trust.client1_id, "amount": 20_00, "metadata": {"invoice": "F-9"}},
            "fee",
            trust.client1_id,
            trust.bank_id,
            20_00,
        ),
        (
            "bank-charges",
            {"amount": 2_00, "description": "wire fee"},
            "bank_charge",
            trust.firm_id,
            trust.bank_id,
            2_00,
        ),
    ]
    for path, body, kind, debited, credited, amount in operations:
        transfer = write_and_replay(client, f"{base}/{path}", {k: v for k, v in body.items() if v is not None})
        assert transfer["kind"] == kind, path
        assert transfer["ledger_id"] == trust.ledger_id
        assert transfer["amount"] == amount
        sides = {(p["account_id"], p["side"], p["amount"]) for p in transfer["postings"]}
        assert sides == {(debited, "debit", amount), (credited, "credit", amount)}, path
        assert expect(client.get(f"/v1/transfers/{transfer['id']}"), 200) == transfer
        if kind == "fee":
            assert transfer["metadata"] == {"invoice": "F-9", "category": "fee"}
        assert_trust_invariant(client, trust)

    assert posted(client, trust.client1_id) == FUNDED - 30_00 - 20_00
    assert posted(client, trust.client2_id) == 40_00 + 30_00 - 60_00
    assert posted(client, trust.firm_id) == 10_00 - 2_00
    assert posted(client, trust.bank_id) == FUNDED + 40_00 + 10_00 - 60_00 - 20_00 - 2_00
    # Every account moved exactly once per operation (the replays wrote nothing).
    assert account(client, trust.bank_id)["version"] == 6
    assert account(client, trust.client1_id)["version"] == 3
    assert account(client, trust.client2_id)["version"] == 3
    assert account(client, trust.firm_id)["version"] == 2


def test_bank_charge_is_booked_even_when_it_overdraws_firm_funds(client: TestClient, trust: TrustWorld) -> None:
    charge = write_and_replay(client, f"/v1/ledgers/{trust.ledger_id}/bank-charges", {"amount": 15_00})
    assert charge["kind"] == "bank_charge"
    assert posted(client, trust.firm_id) == -15_00
    assert_trust_invariant(client, trust)


def test_disbursement_of_all_available_funds(client: TestClient, trust: TrustWorld) -> None:
    path = f"/v1/ledgers/{trust.ledger_id}/disbursements"
    write_and_replay(client, path, {"client_account_id": trust.client1_id, "amount": FUNDED})
    state = account(client, trust.client1_id)
    assert (state["balances"]["posted"], state["balances"]["available"]) == (0, 0)
    assert posted(client, trust.bank_id) == 0


# ---------------------------------------------------------------------------------------------------------------
# Statements and balances at a point in time


def test_statement_pages_through_next_cursor(client: TestClient, trust: TrustWorld) -> None:
    amounts = [1_00, 2_00, 3_00, 4_00, 5_00, 6_00]
    deposits = [
        expect(
            write(
                client,
                f"/v1/ledgers/{trust.ledger_id}/deposits",
                {"client_account_id": trust.client1_id, "amount": amount, "description": f"deposit {index}"},
            )
        )
        for index, amount in enumerate(amounts)
    ]
    expected_ids = [trust.deposit["id"], *(deposit["id"] for deposit in deposits)]

    lines: list[dict[str, Any]] = []
    page_sizes: list[int] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["after"] = cursor
        page = expect(client.get(f"/v1/accounts/{trust.client1_id}/statement", params=params), 200)
        assert page["account_id"] == trust.client1_id
        page_sizes.append(len(page["items"]))
        lines.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    else:
        raise AssertionError("the statement did not end")

    assert page_sizes == [3, 3, 1]
    assert [line["transfer_id"] for line in lines] == expected_ids
    assert [line["account_version"] for line in lines] == list(range(1, 8))
    running = 0
    for line, amount in zip(lines, [FUNDED, *amounts], strict=True):
        running += amount
        assert (line["side"], line["amount"], line["kind"]) == ("credit", amount, "deposit")
        assert line["running_balance"] == running
    assert lines[1]["description"] == "deposit 0"

    everything = expect(client.get(f"/v1/accounts/{trust.client1_id}/statement", params={"limit": 500}), 200)
    assert everything["items"] == lines
    assert everything["next_cursor"] is None
    # Past the end: an empty last page.
    tail = expect(client.get(f"/v1/accounts/{trust.client1_id}/statement", params={"after": "7"}), 200)
    assert tail == {"account_id": trust.client1_id, "items": [], "next_cursor": None}


def test_balance_as_of_date_and_known_at(client: TestClient, trust: TrustWorld) -> None:
    today = date.fromisoformat(trust.deposit["effective_date"])
    path = f"/v1/ledgers/{trust.ledger_id}/deposits"
    back_dated = expect(
        write(
            client,
            path,
            {"client_account_id": trust.client2_id, "amount": 7_00, "effective_date": str(today - timedelta(days=10))},
        )
    )
    recent = expect(
        write(
            client,
            path,
            {"client_account_id": trust.client2_id, "amount": 5_00, "effective_date": str(today - timedelta(days=3))},
        )
    )
    latest = expect(write(client, path, {"client_account_id": trust.client2_id, "amount": 3_00}))
    assert back_dated["effective_date"] == str(today - timedelta(days=10))
    assert latest["effective_date"] == str(today)

    balance_path = f"/v1/accounts/{trust.client2_id}/balance"

    def balance(**params: str) -> dict[str, Any]:
        return expect(client.get(balance_path, params=params), 200)

    now = balance()
    assert (now["account_id"], now["balance"], now["credits"], now["debits"]) == (trust.client2_id, 15_00, 15_00, 0)
    assert now["effective_on_or_before"] is None
    assert now["known_at"] is None

    assert balance(as_of_date=str(today - timedelta(days=11)))["balance"] == 0
    assert balance(as_of_date=str(today - timedelta(days=10)))["balance"] == 7_00
    assert balance(as_of_date=str(today - timedelta(days=5)))["balance"] == 7_00
    assert balance(as_of_date=str(today - timedelta(days=3)))["balance"] == 12_00
    as_of = balance(as_of_date=str(today))
    assert (as_of["balance"], as_of["effective_on_or_before"]) == (15_00, str(today))

    # known_at: what was recorded by a moment (the "+" of an offset is URL-encoded by params=).
    first_recorded = datetime.fromisoformat(back_dated["recorded_at"])
    second_recorded = datetime.fromisoformat(recent["recorded_at"])
    assert first_recorded.tzinfo is not None
    assert first_recorded < second_recorded
    assert balance(known_at=(first_recorded - timedelta(microseconds=1)).isoformat())["balance"] == 0
    assert balance(known_at=first_recorded.isoformat())["balance"] == 7_00
    assert balance(known_at=second_recorded.isoformat())["balance"] == 12_00
    shifted = first_recorded.astimezone(datetime.fromisoformat("2000-01-01T00:00:00+05:30").tzinfo)
    assert balance(known_at=shifted.isoformat())["balance"] == 7_00
    # Both at once: back-dated entries known by the second recording, effective by five days ago.
    both = balance(as_of_date=str(today - timedelta(days=5)), known_at=second_recorded.isoformat())
    assert both["balance"] == 7_00
    assert datetime.fromisoformat(both["known_at"]) == second_recorded

    # The bank (debit-normal) counts the same deposits as debits.
    bank = expect(client.get(f"/v1/accounts/{trust.bank_id}/balance"), 200)
    assert (bank["debits"], bank["credits"], bank["balance"]) == (FUNDED + 15_00, 0, FUNDED + 15_00)


# ---------------------------------------------------------------------------------------------------------------
# Closing an account


def test_close_account_and_replay(client: TestClient, trust: TrustWorld) -> None:
    before = account(client, trust.client2_id)
    closed = write_and_replay(client, f"/v1/accounts/{trust.client2_id}/close", None, status=200)
    assert closed["id"] == trust.client2_id
    assert closed["status"] == "closed"
    assert closed["version"] == before["version"] + 1
    assert account(client, trust.client2_id) == closed

    # A non-empty account stays open; the refusal is recorded and replayed.
    key = new_key()
    refused = write(client, f"/v1/accounts/{trust.client1_id}/close", key=key)
    assert refused.status_code == 422
    assert refused.json()["code"] == "account_not_empty"
    assert write(client, f"/v1/accounts/{trust.client1_id}/close", key=key).json() == refused.json()
    assert account(client, trust.client1_id)["status"] == "open"

    # After disbursing everything, client 1 can be closed.
    expect(
        write(
            client,
            f"/v1/ledgers/{trust.ledger_id}/disbursements",
            {"client_account_id": trust.client1_id, "amount": FUNDED},
        )
    )
    assert write_and_replay(client, f"/v1/accounts/{trust.client1_id}/close", None, status=200)["status"] == "closed"


# ---------------------------------------------------------------------------------------------------------------
# OpenAPI

WRITE_PROBLEM_STATUSES = {"400", "404", "409", "422", "503"}


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    return expect(client.get("/openapi.json"), 200)


def _post_operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    operations = [(path, item["post"]) for path, item in document["paths"].items() if "post" in item]
    assert len(operations) >= 11, [path for path, _ in operations]
    return operations


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.rsplit("/", 1)[-1]
    resolved: dict[str, Any] = document["components"]["schemas"][name]
    return resolved


def test_every_post_declares_the_idempotency_key(openapi: dict[str, Any]) -> None:
    for path, operation in _post_operations(openapi):
        headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
        names = [p["name"] for p in headers]
        assert "Idempotency-Key" in names, path
        parameter = headers[names.index("Idempotency-Key")]
        assert parameter.get("description"), path


def test_every_post_documents_its_problem_responses(openapi: dict[str, Any]) -> None:
    problem = openapi["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "code", "detail"} <= set(problem["properties"])
    for path, operation in _post_operations(openapi):
        # Opening a ledger names no existing resource, so it cannot answer 404.
        expected = WRITE_PROBLEM_STATUSES - {"404"} if path == "/v1/ledgers" else WRITE_PROBLEM_STATUSES
        responses = operation["responses"]
        assert expected <= set(responses), (path, sorted(responses))
        for status in expected:
            content = responses[status]["content"]
            assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}, (
                path,
                status,
            )
            assert responses[status]["description"]


def test_request_bodies_carry_their_examples(openapi: dict[str, Any]) -> None:
    """Every example a request model defines reaches the document, and the examples are valid requests."""
    seen_model_examples = 0
    for path, operation in _post_operations(openapi):
        if "requestBody" not in operation:
            assert path.endswith(("/close", "/expiry")), path
            continue
        reference = operation["requestBody"]["content"]["application/json"]["schema"]
        component_name = reference["$ref"].rsplit("/", 1)[-1]
        model = getattr(schemas, component_name)
        declared = model.model_json_schema(ref_template="#/components/schemas/{model}")
        published = _resolve(openapi, reference)
        if "examples" in declared:
            assert published.get("examples") == declared["examples"], path
            for example in published["examples"]:
                model.model_validate(example)
            seen_model_examples += 1
        for name, field_schema in declared.get("properties", {}).items():
            if "examples" in field_schema:
                assert published["properties"][name].get("examples") == field_schema["examples"], (path, name)
        if "amount" in published.get("properties", {}):
            amount = published["properties"]["amount"]
            # An optional amount (posting part of a pending transfer) is integer-or-null, never a number.
            types = {alternative["type"] for alternative in amount.get("anyOf", [amount])}
            assert types <= {"integer", "null"} and "integer" in types, path
            examples = amount.get("examples") or [
                example for alternative in amount.get("anyOf", []) for example in alternative.get("examples", [])
            ]
            assert examples, path
    assert seen_model_examples >= 1  # TransferCreate defines a whole example request
    posting = openapi["components"]["schemas"]["PostingIn"]
    assert posting["properties"]["amount"]["examples"] == [125_00]
