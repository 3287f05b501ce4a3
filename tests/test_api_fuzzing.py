"""Schemathesis over the service's own OpenAPI document: every operation, every check, on both adapters.

Each operation gets the examples, coverage and fuzzing phases (positive and negative data), seeded so that a run is
reproducible: at most 60 fuzzed examples per operation on the in-memory adapters, 10 on PostgreSQL (about 50
operations: the suite's time budget). Every request
carries an admin key of the default tenant, every POST a fresh Idempotency-Key. Generated ids are replaced, most of
the time, by ids of real ledgers (a funded trust ledger, a general one, a sandbox), their accounts and transfers, so
that the fuzzer gets past the 404s into the ledger rules (test_fuzzing_reached_the_ledger_rules checks it did).

The real ids are new uuid4s on each run, so the fuzzer draws fixed stand-ins from schemathesis dictionaries and the
test swaps each stand-in for its real id just before the call: the generated cases, and so the run, stay the same.

Known product bugs that schemathesis found are pinned by their own failing tests at the end of the file; the fuzz runs
drop exactly those symptoms (see ``filter_failure``) so that they do not end an operation's run at its first coverage
case and hide what the rest of the run would find.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
import structlog
from fastapi import FastAPI
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.openapi.checks import AllowHeaderMismatch
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.schemas import OpenApiSchema
from starlette.types import ASGIApp, Receive, Scope, Send

from ledger.api.app import create_app
from ledger.container import Container, build_container, use_in_memory_adapters
from ledger.domain.api_keys import ApiKeyRole
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, LedgerKind
from ledger.domain.pending_transfers import PendingDraft
from ledger.domain.transfers import PostingDraft, Side, TransferDraft
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.settings import LedgerSettings
from tests.conftest import settings_with_secret_file
from tests.http_clients import KeyedTestClient

MEMORY_EXAMPLES = 60
POSTGRES_EXAMPLES = 10
SEED = 20_261_121
# The fuzzer sends thousands of requests with one key: the rate limiter must never be what answers.
UNLIMITED: dict[str, Any] = {"rate_limit_per_second": 1e9, "rate_limit_burst": 10**9}
# How often a generated id is replaced by a real one; the rest stay random and exercise the 404s.
REAL_ID_PROBABILITY = 0.8


def stand_in(kind: int, index: int) -> str:
    return str(uuid.UUID(f"5eed{kind:04x}-0000-4000-8000-{index:012x}"))


# The trust ledger the trust operations work on, a general ledger, and a sandbox trust ledger that takes the new
# accounts and the closing (a second bank or firm funds account in the trust ledger would make its default ambiguous,
# a closed client there would refuse every later operation).
LEDGERS = [stand_in(1, index) for index in range(3)]
TRUST, GENERAL, SANDBOX = LEDGERS
# Trust ledger: bank, a funded client, a client back at zero, funded firm funds; general ledger: cash and fees;
# sandbox: its bank and an empty client.
ACCOUNTS = [stand_in(2, index) for index in range(8)]
BANK, RICH, POOR, FIRM, CASH, FEES, SANDBOX_BANK, SANDBOX_EMPTY = ACCOUNTS
# A large and a small deposit, the small one's reversal (trust ledger); a sale (general ledger).
TRANSFERS = [stand_in(3, index) for index in range(4)]
BIG_DEPOSIT, SMALL_DEPOSIT, REVERSAL, SALE = TRANSFERS
# Pending transfers to post or void, uncleared deposits to clear, small deposits to return (bounce), a statement.
PENDING = [stand_in(4, index) for index in range(6)]
PENDING_TO_POST, PENDING_TO_VOID = PENDING[:3], PENDING[3:]
UNCLEARED = [stand_in(5, index) for index in range(3)]
RETURNABLE = [stand_in(6, index) for index in range(3)]
STATEMENTS = [stand_in(7, 0)]


def memory_settings() -> LedgerSettings:
    return LedgerSettings(_env_file=None, environment="test", **UNLIMITED)


def openapi_document() -> dict[str, Any]:
    """The document the app serves; building it needs no database."""
    container = build_container(memory_settings())
    use_in_memory_adapters(container)
    return create_app(container).openapi()


DOCUMENT = openapi_document()


def fuzz_config(max_examples: int) -> schemathesis.Config:
    def real(dictionary: str) -> dict[str, Any]:
        return {"dictionary": dictionary, "probability": REAL_ID_PROBABILITY}

    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # Requests go in-process to the app (see `AppSwitch`); the checks that re-send one need a base URL too.
            "base-url": "http://testserver",
            # Dictionaries draw their first entry most (hypothesis shrinks towards it): the likeliest success first.
            "dictionaries": {
                "ledgers": {"values": LEDGERS},
                "trust-ledgers": {"values": [TRUST]},
                "open-in": {"values": [SANDBOX, GENERAL]},
                "accounts": {"values": ACCOUNTS},
                "closable": {"values": [SANDBOX_EMPTY, RICH, CASH]},
                "clients": {"values": [RICH, POOR]},
                "other-clients": {"values": [POOR, RICH]},
                "banks": {"values": [BANK]},
                "transfers": {"values": TRANSFERS},
                "reversible": {"values": [SALE, SMALL_DEPOSIT, REVERSAL]},
                "pending": {"values": PENDING},
                "pending-to-post": {"values": PENDING_TO_POST},
                "pending-to-void": {"values": PENDING_TO_VOID},
                "uncleared": {"values": UNCLEARED},
                "returnable": {"values": RETURNABLE},
                "statements": {"values": STATEMENTS},
            },
            "parameters": {
                "path.ledger_id": real("ledgers"),
                "path.account_id": real("accounts"),
                "path.transfer_id": real("transfers"),
                "body.ledger_id": real("ledgers"),
                "body.postings[*].account_id": real("accounts"),
                "body.client_account_id": real("clients"),
                "body.from_client_account_id": real("clients"),
                "body.to_client_account_id": real("other-clients"),
                "body.bank_account_id": real("banks"),
                "body.debit_account_id": real("clients"),
                "body.credit_account_id": real("other-clients"),
                "path.pending_id": real("pending"),
                "path.statement_id": real("statements"),
            },
            # The first entry an operation matches is the one that applies: specific operations come first.
            "operations": [
                {
                    "include-name": "POST /v1/deposits/{transfer_id}/clearance",
                    "parameters": {"path.transfer_id": real("uncleared")},
                },
                {
                    "include-name": "POST /v1/deposits/{transfer_id}/return",
                    "parameters": {"path.transfer_id": real("returnable")},
                },
                {
                    "include-name": "POST /v1/pending-transfers/{pending_id}/post",
                    "parameters": {"path.pending_id": real("pending-to-post")},
                },
                {
                    "include-name": "POST /v1/pending-transfers/{pending_id}/void",
                    "parameters": {"path.pending_id": real("pending-to-void")},
                },
                {"include-tag": "trust operations", "parameters": {"path.ledger_id": real("trust-ledgers")}},
                {
                    "include-name": "POST /v1/ledgers/{ledger_id}/accounts",
                    "parameters": {"path.ledger_id": real("open-in")},
                },
                {
                    "include-name": "POST /v1/accounts/{account_id}/close",
                    "parameters": {"path.account_id": real("closable")},
                },
                {
                    "include-name": "POST /v1/transfers/{transfer_id}/reversal",
                    "parameters": {"path.transfer_id": real("reversible")},
                },
                {
                    "include-name": "POST /v1/ledgers/{ledger_id}/pending-transfers",
                    "parameters": {"path.ledger_id": real("trust-ledgers")},
                },
            ],
            "generation": {
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
                # The key is sent with every call (see `fuzz`); generated Authorization headers would only be replaced.
                "with-security-parameters": False,
            },
            # Every built-in check is on by default; only the statuses that count as expected are narrowed.
            "checks": {
                # 503 is documented (database unavailable or busy); a 500 never is.
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
                # Valid data may still break a ledger rule (insufficient funds, a closed account, an unbalanced
                # transfer, a taken code, an unknown id): the documented 404 / 409 / 422 refusals. That such a 422 is
                # a ledger rule and not the request validation is checked by `refusal_is_a_ledger_rule`. With an admin
                # key and no rate limit, 401 / 403 / 429 would be bugs, so they are not expected for valid data.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "422", "5xx"]},
            },
        }
    )


class AppSwitch:
    """The ASGI app a schema sends its requests to: forwards each one to the app its fixture started.

    The schema (and so the test per operation) must exist when pytest collects, the app only once a fixture has filled
    its store. Schemathesis' own answer, a schema loaded from a fixture (``schemathesis.pytest.from_fixture``), fails
    under pytest 9.2: it sets ``node._nodeid``, which pytest no longer has. Passing ``app=`` to each call is no answer
    either: the requests some checks re-send (``ignored_auth``) go through the schema's own transport.
    """

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no app started for this schema"
        await self.target(scope, receive, send)


def with_stand_in_examples(document: dict[str, Any]) -> dict[str, Any]:
    """The batch example names accounts of no ledger; in the fuzz run it names the trust ledger's bank and a funded
    client (stand-ins, swapped for real ids like every other), so the examples phase can post a batch."""
    batch = document["components"]["schemas"]["TransferBatchCreate"]
    for example in batch.get("examples", []):
        for transfer in example["transfers"]:
            transfer["postings"][0]["account_id"] = BANK
            transfer["postings"][1]["account_id"] = RICH
    return document


def fuzz_schema(max_examples: int) -> OpenApiSchema:
    document = with_stand_in_examples(copy.deepcopy(DOCUMENT))
    schema = schemathesis.openapi.from_dict(document, config=fuzz_config(max_examples))
    schema.app = AppSwitch()
    return schema


memory_schema = fuzz_schema(MEMORY_EXAMPLES)
postgres_schema = fuzz_schema(POSTGRES_EXAMPLES)


# Known product bugs, each pinned by its own failing test at the end of this file. Once the product is fixed, these
# symptoms no longer occur and the filters drop nothing.
def is_allow_of_one_route(failure: Failure) -> bool:
    """Bug 1 (test_405_allow_lists_every_method_of_the_resource): a 405 lists the methods of the first route that
    matches the path, not those of the resource."""
    return isinstance(failure, AllowHeaderMismatch) and bool(failure.missing_methods)


def is_fastapi_default_422(failure: Failure, case: schemathesis.Case[Any], response: schemathesis.Response) -> bool:
    """Bug 2 (test_422_is_documented_as_the_problem_the_app_answers): three GET routes document FastAPI's default
    422 (application/json HTTPValidationError) but answer application/problem+json, like every other route."""
    documented = DOCUMENT["paths"][case.operation.path][case.method.lower()]["responses"].get("422", {})
    return (
        response.status_code == 422
        and "application/problem+json" not in documented.get("content", {})
        and bool({"content_type_conformance", "response_schema_conformance"} & set(failure.checks))
    )


ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def is_lax_coercion(failure: Failure, case: schemathesis.Case[Any]) -> bool:
    """Bug 3 (test_values_of_another_json_type_are_refused): outside amounts, request values are validated in
    pydantic's lax mode, which turns `0` / `1` / `"yes"` into booleans and numbers (`0`, `"0"`, `"0.0"`) into dates
    and timestamps. Dropped only when the request carries a value of another kind where the document wants a
    boolean, a date or a timestamp."""
    if not isinstance(failure, AcceptedNegativeData):
        return False
    body = case.body if isinstance(case.body, dict) else {}
    query = case.query or {}

    def not_matching(value: Any, shape: re.Pattern[str]) -> bool:
        return value is not None and not (isinstance(value, str) and shape.match(value))

    overdraft = body.get("prevent_overdraft")
    return (
        (overdraft is not None and not isinstance(overdraft, bool))
        or not_matching(body.get("effective_date"), ISO_DATE)
        or not_matching(query.get("as_of_date"), ISO_DATE)
        or not_matching(query.get("known_at"), ISO_DATE_TIME)
    )


def filter_failure(
    context: schemathesis.HookContext, failure: Failure, case: schemathesis.Case[Any], response: schemathesis.Response
) -> bool:
    return not (
        is_allow_of_one_route(failure)
        or is_fastapi_default_422(failure, case, response)
        or is_lax_coercion(failure, case)
    )


for _schema in (memory_schema, postgres_schema):
    _schema.hook(filter_failure)


@dataclass(frozen=True)
class Target:
    """A running app with real resources of the default tenant, and the real id of each stand-in."""

    name: str
    app: FastAPI
    token: str
    real_ids: dict[str, str]


def populate(container: Container) -> tuple[str, dict[str, str]]:
    """An admin key, a funded trust ledger, a general ledger with a sale, a sandbox trust ledger; the real id of each
    stand-in."""
    _, token = container.api_key_service().create_key(
        DEFAULT_TENANT_ID, role=ApiKeyRole.ADMIN, name="fuzz", created_by="test"
    )
    ledgers = container.ledger_service()
    accounts = container.account_service()
    trust = container.trust_service()
    transfers = container.transfer_service()
    tenant = DEFAULT_TENANT_ID
    actor = "test"

    def open_account(ledger_id: uuid.UUID, code: str, kind: AccountKind) -> uuid.UUID:
        return accounts.open_account(tenant, ledger_id, code=code, name=code, kind=kind).id

    def trust_operation(kind: TrustOperationKind, ledger_id: uuid.UUID, amount: int, **ids: Any) -> uuid.UUID:
        return trust.execute(tenant, actor, TrustOperation(kind=kind, ledger_id=ledger_id, amount=amount, **ids)).id

    trust_ledger = ledgers.open_ledger(tenant, name="Fuzz trust", currency="USD").id
    bank = open_account(trust_ledger, "bank", AccountKind.BANK)
    rich = open_account(trust_ledger, "client-rich", AccountKind.CLIENT)
    poor = open_account(trust_ledger, "client-poor", AccountKind.CLIENT)
    firm = open_account(trust_ledger, "firm", AccountKind.FIRM_FUNDS)
    big_deposit = trust_operation(TrustOperationKind.DEPOSIT, trust_ledger, 10**12, client_account_id=rich)
    small_deposit = trust_operation(TrustOperationKind.DEPOSIT, trust_ledger, 5_00, client_account_id=poor)
    reversal = transfers.reverse_transfer(tenant, actor, small_deposit).id
    trust_operation(TrustOperationKind.FIRM_DEPOSIT, trust_ledger, 10**9)

    general = ledgers.open_ledger(tenant, name="Fuzz operating", currency="EUR", kind=LedgerKind.GENERAL).id
    cash = open_account(general, "cash", AccountKind.ASSET)
    fees = open_account(general, "fees", AccountKind.INCOME)
    sale = transfers.post_transfer(
        tenant,
        actor,
        TransferDraft(
            ledger_id=general,
            postings=(
                PostingDraft(account_id=cash, side=Side.DEBIT, amount=123_45),
                PostingDraft(account_id=fees, side=Side.CREDIT, amount=123_45),
            ),
        ),
    ).id

    sandbox = ledgers.open_ledger(tenant, name="Fuzz sandbox", currency="USD").id
    sandbox_bank = open_account(sandbox, "bank", AccountKind.BANK)
    sandbox_empty = open_account(sandbox, "client-empty", AccountKind.CLIENT)

    pending_service = container.pending_transfer_service()
    pending = [
        pending_service.create(tenant, actor, PendingDraft(trust_ledger, rich, poor, amount=1_00)).id for _ in PENDING
    ]
    uncleared = [
        trust_operation(TrustOperationKind.DEPOSIT, trust_ledger, 2_00, client_account_id=rich, cleared=False)
        for _ in UNCLEARED
    ]
    bouncer = open_account(trust_ledger, "client-bouncing", AccountKind.CLIENT)
    returnable = [
        trust_operation(TrustOperationKind.DEPOSIT, trust_ledger, 3_00, client_account_id=bouncer) for _ in RETURNABLE
    ]
    # A statement in a ledger of its own: the example statement of the document stays importable elsewhere.
    statements_ledger = ledgers.open_ledger(tenant, name="Fuzz statements", currency="USD").id
    open_account(statements_ledger, "bank", AccountKind.BANK)
    statement = container.bank_statement_service().import_statement(
        tenant,
        statements_ledger,
        "period_start,2026-01-01\nperiod_end,2026-01-31\nopening_balance,0.00\nclosing_balance,0.00\n"
        "date,amount,reference,description\n",
        actor,
    )

    real = [
        *zip(LEDGERS, [trust_ledger, general, sandbox], strict=True),
        *zip(ACCOUNTS, [bank, rich, poor, firm, cash, fees, sandbox_bank, sandbox_empty], strict=True),
        *zip(TRANSFERS, [big_deposit, small_deposit, reversal, sale], strict=True),
        *zip(PENDING, pending, strict=True),
        *zip(UNCLEARED, uncleared, strict=True),
        *zip(RETURNABLE, returnable, strict=True),
        *zip(STATEMENTS, [statement.id], strict=True),
    ]
    return token, {stand: str(real_id) for stand, real_id in real}


def serve(name: str, container: Container, schema: OpenApiSchema) -> Iterator[Target]:
    try:
        token, real_ids = populate(container)
        app = create_app(container)
        assert isinstance(schema.app, AppSwitch)
        schema.app.target = app
        yield Target(name=name, app=app, token=token, real_ids=real_ids)
    finally:
        # Schemathesis starts the app's lifespan on the first call and keeps it until told to stop (its pytest
        # plugin stops it after each test as well).
        shutdown_lifespans()
        container.shutdown_resources()


# Module scope: one world per adapter for the whole run (hypothesis refuses function-scoped fixtures, which it
# cannot reset between examples). What one operation's examples write, the next operations' examples see.
@pytest.fixture(scope="module")
def memory_target() -> Iterator[Target]:
    container = build_container(memory_settings())
    use_in_memory_adapters(container)
    yield from serve("memory", container, memory_schema)


@pytest.fixture(scope="module")
def postgres_target(
    service_database: DatabaseCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    settings = settings_with_secret_file(service_database, tmp_path_factory.mktemp("fuzz-secret"), **UNLIMITED)
    yield from serve("postgres", build_container(settings), postgres_schema)


@pytest.fixture(scope="module", autouse=True)
def _quiet_access_log() -> Iterator[None]:
    """Thousands of requests: keep warnings and errors (a 500 logs one), drop the line per request."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        structlog.configure(**saved)


def with_real_ids(value: Any, real_ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return real_ids.get(value, value)
    if isinstance(value, list):
        return [with_real_ids(item, real_ids) for item in value]
    if isinstance(value, dict):
        return {key: with_real_ids(item, real_ids) for key, item in value.items()}
    return value


def plain_integers(value: Any) -> Any:
    """`2.0` as `2`, everywhere in a body. JSON Schema counts a whole float as an integer, so schemathesis sends
    `{"amount": 2.0}` as valid data; the service refuses floats for amounts by design (DESIGN: "floats or exponents
    for amounts" -> 422, pinned by test_api_errors) and no JSON Schema can tell `2.0` from `2`. A schemathesis
    limitation, not a bug: the plain spelling changes nothing JSON Schema can see; every other value goes out as drawn.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [plain_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: plain_integers(item) for key, item in value.items()}
    return value


def refusal_is_a_ledger_rule(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Schema-valid data refused with 422 must be refused by a ledger rule, never by the request validation: a
    `validation_error` for data the document admits means the document and the validation disagree."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return
    body = response.json()
    assert body.get("code") != "validation_error", f"schema-valid data refused by the request validation: {body}"


# Statuses per adapter and operation, for test_fuzzing_reached_the_ledger_rules.
STATUSES: defaultdict[tuple[str, str], Counter[int]] = defaultdict(Counter)


def fuzz(case: schemathesis.Case[Any], target: Target) -> None:
    if case.path_parameters:
        case.path_parameters = with_real_ids(case.path_parameters, target.real_ids)
    if isinstance(case.body, (dict, list)):
        case.body = plain_integers(with_real_ids(case.body, target.real_ids))
    # A generated key would repeat (hypothesis likes "0") and turn later writes into replays or key reuse. A case
    # without the header (it is required: a negative case) keeps going without one.
    if case.headers is not None and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"

    def record(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]) -> None:
        STATUSES[(target.name, case.operation.label)][response.status_code] += 1

    case.call_and_validate(
        headers={"Authorization": f"Bearer {target.token}"}, additional_checks=[record, refusal_is_a_ledger_rule]
    )


@memory_schema.parametrize()
def test_every_operation_in_memory(case: schemathesis.Case[Any], memory_target: Target) -> None:
    fuzz(case, memory_target)


@postgres_schema.parametrize()
def test_every_operation_on_postgres(case: schemathesis.Case[Any], postgres_target: Target) -> None:
    fuzz(case, postgres_target)


def test_fuzzing_reached_the_ledger_rules() -> None:
    """The stand-ins work: on the in-memory run, with 60 examples, every operation had at least one success, so
    the fuzzer got past authentication, validation and the 404s into the ledger. Checks the operations fuzzed in this
    process (all of them in a plain run; under xdist those of this worker, or none: then it skips)."""
    fuzzed = {label: statuses for (name, label), statuses in STATUSES.items() if name == "memory"}
    if not fuzzed:
        pytest.skip("the in-memory fuzz run did not run in this process")
    without_success = {
        label: dict(statuses) for label, statuses in fuzzed.items() if not any(200 <= s < 300 for s in statuses)
    }
    assert not without_success, f"operations that never succeeded (statuses seen): {without_success}"


# Product bugs found by the fuzz runs, one minimal reproduction each. They fail until the product is fixed.


@pytest.fixture
def client() -> Iterator[KeyedTestClient]:
    container = build_container(memory_settings())
    use_in_memory_adapters(container)
    with KeyedTestClient(create_app(container)) as test_client:
        yield test_client


def concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", lambda _: str(uuid.uuid4()), path)


def test_405_allow_lists_every_method_of_the_resource(client: KeyedTestClient) -> None:
    """RFC 9110, 15.5.6: a 405 carries `Allow` with the methods the resource supports. Found by schemathesis
    (allow_header_conformance): `OPTIONS /v1/ledgers` answers `Allow: POST` although GET /v1/ledgers is served too,
    and the same for /v1/ledgers/{ledger_id}/accounts."""
    wrong = {}
    for path, item in DOCUMENT["paths"].items():
        documented = {method.upper() for method in item}
        response = client.options(concrete(path))
        assert response.status_code == 405, (path, response.status_code)
        allowed = {method.strip() for method in response.headers.get("allow", "").split(",") if method.strip()}
        if not documented <= allowed:
            wrong[path] = {"Allow": response.headers.get("allow"), "documented": sorted(documented)}
    assert not wrong, f"Allow misses documented methods: {wrong}"


def test_422_is_documented_as_the_problem_the_app_answers(client: KeyedTestClient) -> None:
    """Every route answers a malformed request with an application/problem+json `validation_error`; the document
    must say so. Found by schemathesis (content_type_conformance): GET /v1/ledgers/{ledger_id},
    /v1/accounts/{account_id} and /v1/transfers/{transfer_id} document FastAPI's default 422 instead
    (application/json, HTTPValidationError)."""
    wrong = {}
    for path, item in DOCUMENT["paths"].items():
        if "{" not in path or "get" not in item:
            continue
        response = client.get(re.sub(r"\{[a-z_]+\}", "not-a-uuid", path))
        assert response.status_code == 422, (path, response.text)
        answered = response.headers["content-type"].split(";")[0]
        assert (answered, response.json()["code"]) == ("application/problem+json", "validation_error")
        documented = sorted(item["get"]["responses"].get("422", {}).get("content", {}))
        if documented != [answered]:
            wrong[f"GET {path}"] = documented
    assert not wrong, f"422 documented with another media type than the one answered: {wrong}"


def test_values_of_another_json_type_are_refused(client: KeyedTestClient) -> None:
    """The document says boolean for `prevent_overdraft` and an ISO 8601 string for dates and timestamps; the
    service coerces other JSON types instead of refusing them (pydantic's lax mode). Found by schemathesis
    (negative_data_rejection): `{"prevent_overdraft": 0}` opens an account. The same coercion turns `0` into the
    effective date 1970-01-01 and `known_at=0` (or `0.0`) into 1970-01-01T00:00:00Z."""
    ledger = client.post("/v1/ledgers", json={"name": "coerce", "currency": "USD", "kind": "general"}).json()["id"]

    def open_account(code: str, kind: str, **extra: Any) -> Any:
        return client.post(f"/v1/ledgers/{ledger}/accounts", json={"code": code, "name": code, "kind": kind, **extra})

    cash = open_account("cash", "asset").json()["id"]
    fees = open_account("fees", "income").json()["id"]
    postings = [
        {"account_id": cash, "side": "debit", "amount": 1},
        {"account_id": fees, "side": "credit", "amount": 1},
    ]
    accepted = {}
    for value in (0, 1, "yes", "off"):
        response = open_account(f"coerced-{value}", "asset", prevent_overdraft=value)
        if response.status_code != 422:
            accepted[f"prevent_overdraft={value!r}"] = response.status_code
    for value in (0, 86_400, "0"):
        response = client.post(
            "/v1/transfers", json={"ledger_id": ledger, "postings": postings, "effective_date": value}
        )
        if response.status_code != 422:
            accepted[f"effective_date={value!r}"] = response.status_code
    for query in ("as_of_date=0", "as_of_date=0.0", "known_at=0", "known_at=1700000000"):
        response = client.get(f"/v1/accounts/{cash}/balance?{query}")
        if response.status_code != 422:
            accepted[query] = response.status_code
    assert not accepted, f"values of another JSON type accepted (value: status): {accepted}"


def test_every_rfc3339_spelling_of_a_moment_and_date_is_accepted(client: KeyedTestClient) -> None:
    """The other side of the previous test: refusing numbers must not refuse text the document admits (`format:
    date-time` is RFC 3339: any number of fraction digits, `t` and `z` in either case, any offset)."""
    ledger = client.post("/v1/ledgers", json={"name": "moments", "currency": "USD", "kind": "general"}).json()["id"]
    account = client.post(f"/v1/ledgers/{ledger}/accounts", json={"code": "cash", "name": "cash", "kind": "asset"})
    refused = {}
    for moment in (
        "2026-11-20T17:00:00Z",
        "2026-11-20T17:00:00.5Z",
        "2026-11-20T17:00:00.123456789Z",
        "2026-11-20t17:00:00z",
        "2026-11-20T17:00:00+05:30",
        "2026-11-20T17:00:00-00:00",
    ):
        response = client.get(f"/v1/accounts/{account.json()['id']}/balance", params={"known_at": moment})
        if response.status_code != 200:
            refused[moment] = response.json().get("code")
    response = client.get(f"/v1/accounts/{account.json()['id']}/balance", params={"as_of_date": "2026-11-20"})
    if response.status_code != 200:
        refused["as_of_date=2026-11-20"] = response.json().get("code")
    assert not refused, f"RFC 3339 text refused (value: code): {refused}"
