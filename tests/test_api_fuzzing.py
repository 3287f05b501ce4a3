"""Schemathesis over the service's own OpenAPI document: every operation, every check, on both adapters.

Each operation gets examples, coverage and fuzzing cases (positive and negative), seeded so a run is reproducible.
Requests carry an admin key of the default tenant and a fresh Idempotency-Key on every POST that has one; generated
ids are replaced, half of the time, by ids of a real trust ledger, its accounts and transfers, so the fuzzer reaches
the business rules and not only the 404s.

The real ids differ per run (uuid4), so the fuzzer draws stable stand-ins from schemathesis dictionaries and the test
swaps each stand-in for the real id just before the call: the generated cases, and so the run, stay reproducible.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.openapi.checks import AllowHeaderMismatch
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.schemas import OpenApiSchema
from starlette.types import ASGIApp, Receive, Scope, Send

from ledger.api.app import create_app
from ledger.container import Container, build_container, use_in_memory_adapters
from ledger.domain.api_keys import ApiKeyRole
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, LedgerKind
from ledger.domain.transfers import PostingDraft, Side, TransferDraft
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.settings import LedgerSettings
from tests.conftest import settings_with_secret_file
from tests.http_clients import AuthorizedTestClient

MEMORY_EXAMPLES = 200
POSTGRES_EXAMPLES = 25
SEED = 20_261_121
# The fuzzer sends thousands of requests with one key: the limiter must never be what answers.
UNLIMITED: dict[str, Any] = {"rate_limit_per_second": 1e9, "rate_limit_burst": 10**9}
REAL_ID_PROBABILITY = 0.5


def stand_in(kind: int, index: int) -> str:
    return str(uuid.UUID(f"5eed{kind:04x}-0000-4000-8000-{index:012x}"))


LEDGER_STAND_INS = [stand_in(1, index) for index in range(2)]
ACCOUNT_STAND_INS = [stand_in(2, index) for index in range(7)]
TRANSFER_STAND_INS = [stand_in(3, index) for index in range(4)]


def memory_settings() -> LedgerSettings:
    return LedgerSettings(_env_file=None, environment="test", **UNLIMITED)  # type: ignore[call-arg]


def openapi_document() -> dict[str, Any]:
    """The document the app serves; building it needs no database."""
    container = build_container(memory_settings())
    use_in_memory_adapters(container)
    return create_app(container).openapi()


def fuzz_config(max_examples: int) -> schemathesis.Config:
    def real(dictionary: str) -> dict[str, Any]:
        return {"dictionary": dictionary, "probability": REAL_ID_PROBABILITY}

    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # Requests go in-process to the app (`app=` in `fuzz`); checks that re-send a request need a base too.
            "base-url": "http://testserver",
            "dictionaries": {
                "ledgers": {"values": LEDGER_STAND_INS},
                "accounts": {"values": ACCOUNT_STAND_INS},
                "transfers": {"values": TRANSFER_STAND_INS},
            },
            "parameters": {
                "path.ledger_id": real("ledgers"),
                "path.account_id": real("accounts"),
                "path.transfer_id": real("transfers"),
                "body.ledger_id": real("ledgers"),
                "body.postings[*].account_id": real("accounts"),
                "body.client_account_id": real("accounts"),
                "body.bank_account_id": real("accounts"),
                "body.from_client_account_id": real("accounts"),
                "body.to_client_account_id": real("accounts"),
            },
            "generation": {
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
                # The key is sent explicitly with every call (see `fuzz`).
                "with-security-parameters": False,
            },
            "checks": {
                # 503 is documented (database unavailable, busy); a 500 never is.
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
                # Valid data may still break a ledger rule (insufficient funds, a closed account, an unbalanced
                # transfer, a taken code, an unknown id): documented 404 / 409 / 422 refusals. That such a 422 is a
                # ledger rule and not the schema validation is `refusal_is_a_ledger_rule`'s business.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "422", "5xx"]},
            },
        }
    )


class AppSwitch:
    """The ASGI app a schema sends its requests to: forwards each one to the app its fixture started.

    The schema (and so the tests per operation) must exist when pytest collects, the app only once the fixture has
    filled its database. Schemathesis' own answer, a schema from a fixture, does not run under pytest 9.2 (it sets
    ``node._nodeid``, which pytest no longer has), and passing ``app=`` to each call misses the requests some checks
    re-send (``ignored_auth`` sends them through the schema's own transport).
    """

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no app started for this schema"
        await self.target(scope, receive, send)


def fuzz_schema(max_examples: int) -> OpenApiSchema:
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=fuzz_config(max_examples))
    schema.app = AppSwitch()
    return schema


DOCUMENT = openapi_document()
memory_schema = fuzz_schema(MEMORY_EXAMPLES)
postgres_schema = fuzz_schema(POSTGRES_EXAMPLES)


# Known product bugs, each pinned by its own failing test below. The fuzz runs drop exactly these symptoms so that
# they do not stop an operation's run at its first coverage case and hide whatever else the run would find; once the
# product is fixed the symptoms are gone and these filters drop nothing.
def is_allow_of_one_route(failure: Any) -> bool:
    """Bug 1 (test_405_allow_lists_every_method_of_the_resource): a 405 lists the methods of the first route that
    matches the path, not of the resource."""
    return isinstance(failure, AllowHeaderMismatch) and bool(failure.missing_methods)


def is_fastapi_default_422(failure: Any, case: Any, response: Any) -> bool:
    """Bug 2 (test_422_is_documented_as_the_problem_the_app_answers): three GET routes document FastAPI's default
    422 (application/json HTTPValidationError) and answer application/problem+json."""
    documented = DOCUMENT["paths"][case.operation.path][case.method.lower()]["responses"].get("422", {})
    content = documented.get("content", {})
    return (
        response.status_code == 422
        and "application/problem+json" not in content
        and bool({"content_type_conformance", "response_schema_conformance"} & set(failure.checks))
    )


def filter_failure(context: schemathesis.HookContext, failure: Any, case: Any, response: Any) -> bool:
    return not (is_allow_of_one_route(failure) or is_fastapi_default_422(failure, case, response))


for _schema in (memory_schema, postgres_schema):
    _schema.hook(filter_failure)


@dataclass(frozen=True)
class Target:
    """A running app with real resources of the default tenant, and what each stand-in id stands for."""

    app: FastAPI
    token: str
    real_ids: dict[str, str]


def populate(container: Container) -> tuple[str, dict[str, str]]:
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

    def deposit(ledger_id: uuid.UUID, client_id: uuid.UUID, amount: int) -> uuid.UUID:
        operation = TrustOperation(
            kind=TrustOperationKind.DEPOSIT, ledger_id=ledger_id, amount=amount, client_account_id=client_id
        )
        return trust.execute(tenant, actor, operation).id

    trust_ledger = ledgers.open_ledger(tenant, name="Fuzz trust", currency="USD").id
    bank = open_account(trust_ledger, "bank", AccountKind.BANK)
    rich = open_account(trust_ledger, "client-rich", AccountKind.CLIENT)
    poor = open_account(trust_ledger, "client-poor", AccountKind.CLIENT)
    firm = open_account(trust_ledger, "firm", AccountKind.FIRM_FUNDS)
    empty = open_account(trust_ledger, "client-empty", AccountKind.CLIENT)
    big_deposit = deposit(trust_ledger, rich, 10**12)
    small_deposit = deposit(trust_ledger, poor, 5_00)
    reversal = transfers.reverse_transfer(tenant, actor, small_deposit).id

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

    real = {
        **dict(zip(LEDGER_STAND_INS, [trust_ledger, general], strict=True)),
        **dict(zip(ACCOUNT_STAND_INS, [bank, rich, poor, firm, empty, cash, fees], strict=True)),
        **dict(zip(TRANSFER_STAND_INS, [big_deposit, small_deposit, reversal, sale], strict=True)),
    }
    return token, {stand: str(real_id) for stand, real_id in real.items()}


def serve(container: Container, schema: OpenApiSchema) -> Iterator[Target]:
    try:
        token, real_ids = populate(container)
        app = create_app(container)
        schema.app.target = app
        yield Target(app=app, token=token, real_ids=real_ids)
    finally:
        # Schemathesis starts the app's lifespan on the first call and keeps it until told to stop.
        shutdown_lifespans()
        container.shutdown_resources()


# Module scope: one world per adapter for the whole run (hypothesis refuses function-scoped fixtures, which it
# cannot reset between examples); what one operation's examples write, the next operation's examples see.
@pytest.fixture(scope="module")
def memory_target() -> Iterator[Target]:
    container = build_container(memory_settings())
    use_in_memory_adapters(container)
    yield from serve(container, memory_schema)


@pytest.fixture(scope="module")
def postgres_target(
    service_database: DatabaseCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("fuzz-secret")
    yield from serve(build_container(settings_with_secret_file(service_database, directory, **UNLIMITED)), postgres_schema)


@pytest.fixture(scope="module", autouse=True)
def _quiet_access_log() -> Iterator[None]:
    """Thousands of requests: keep the warnings and errors (a 500 logs one), drop the per-request lines."""
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


def refusal_is_a_ledger_rule(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    """Schema-valid data refused with 422 must be refused by a ledger rule, never by the request validation: a
    `validation_error` for data the document admits means the document and the validation disagree."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return
    body = response.json()
    assert body.get("code") != "validation_error", f"valid data refused by the request validation: {body}"


def plain_integers(value: Any) -> Any:
    """`2.0` as `2`. JSON Schema counts a whole float as an integer, so schemathesis sends `{"amount": 2.0}` as
    valid data; the service refuses floats for amounts by design (DESIGN: "floats or exponents for amounts" -> 422,
    pinned by test_api_errors), and no JSON Schema can tell `2.0` from `2`. Sending the plain spelling changes no
    value JSON Schema can see; every other generated value goes out as drawn."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [plain_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: plain_integers(item) for key, item in value.items()}
    return value


import collections, atexit, json as _json
STATS = collections.defaultdict(collections.Counter)
STATUS = collections.defaultdict(collections.Counter)
atexit.register(lambda: open("/tmp/fuzz_stats.json", "w").write(_json.dumps({f"{k[0]} {k[1]}": [dict(v), dict(STATUS[k])] for k, v in STATS.items()}, indent=0)))


def fuzz(case: schemathesis.Case, target: Target) -> None:
    if case.path_parameters:
        case.path_parameters = with_real_ids(case.path_parameters, target.real_ids)
    if isinstance(case.body, (dict, list)):
        case.body = plain_integers(with_real_ids(case.body, target.real_ids))
    if case.headers is not None and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"
    STATS[(id(target), case.operation.label)][case.meta.phase.name.value if case.meta else "?"] += 1
    case.call_and_validate(
        headers={"Authorization": f"Bearer {target.token}"}, additional_checks=[refusal_is_a_ledger_rule, lambda ctx, r, c: STATUS[(id(target), c.operation.label)].update([f'{r.status_code} {r.json().get("code") if r.status_code >= 400 else ""} {c.meta.generation.mode.value if c.meta else ""}'])]
    )


@memory_schema.parametrize()
def test_every_operation_in_memory(case: schemathesis.Case, memory_target: Target) -> None:
    fuzz(case, memory_target)


@postgres_schema.parametrize()
def test_every_operation_on_postgres(case: schemathesis.Case, postgres_target: Target) -> None:
    fuzz(case, postgres_target)


@pytest.fixture
def client() -> Iterator[TestClient]:
    container = build_container(memory_settings())
    use_in_memory_adapters(container)
    with AuthorizedTestClient(create_app(container)) as test_client:
        yield test_client


def documented_operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def test_405_allow_lists_every_method_of_the_resource(client: TestClient) -> None:
    """RFC 9110 15.5.6: a 405 carries `Allow` with the resource's supported methods. Found by schemathesis
    (allow_header_conformance): `OPTIONS /v1/ledgers` answers `Allow: POST` although GET is served too."""
    wrong = {}
    for path in DOCUMENT["paths"]:
        documented = {method.upper() for method in DOCUMENT["paths"][path]}
        url = path.replace("{ledger_id}", str(uuid.uuid4())).replace("{account_id}", str(uuid.uuid4()))
        url = url.replace("{transfer_id}", str(uuid.uuid4()))
        response = client.options(url)
        assert response.status_code == 405, (path, response.status_code)
        allowed = {method.strip() for method in response.headers.get("allow", "").split(",") if method.strip()}
        if not documented <= allowed:
            wrong[path] = (response.headers.get("allow"), sorted(documented))
    assert not wrong, f"Allow misses documented methods (path: (Allow, documented)): {wrong}"


def test_422_is_documented_as_the_problem_the_app_answers(client: TestClient) -> None:
    """Every route answers a malformed request with a problem+json `validation_error`; the document must say so.
    Found by schemathesis (content_type_conformance): GET /v1/ledgers/{ledger_id}, /v1/accounts/{account_id} and
    /v1/transfers/{transfer_id} document FastAPI's default 422 (application/json HTTPValidationError)."""
    wrong = {}
    for path, method, operation in documented_operations():
        if "{" not in path or method != "GET":
            continue
        response = client.get(path.split("{")[0] + "not-a-uuid" + path.split("}")[1])
        assert response.status_code == 422, (path, response.text)
        answered = response.headers["content-type"].split(";")[0]
        assert answered == "application/problem+json"
        assert response.json()["code"] == "validation_error"
        documented = sorted(operation["responses"].get("422", {}).get("content", {}))
        if documented != [answered]:
            wrong[f"{method} {path}"] = documented
    assert not wrong, f"422 documented as another media type than application/problem+json: {wrong}"
