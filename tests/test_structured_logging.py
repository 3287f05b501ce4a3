"""Logging must emit one JSON object per line for every source and never leak a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
import structlog.testing

from ledger.infrastructure.structured_logging import configure_logging, redact_secrets, redact_text

CANARY = "CanaryPw123"
CANARY_DSN = f"postgresql://svc:{CANARY}@db/ledger"
API_KEY_SECRET = "CanarySecretPart_0123456789-xyz"
API_KEY = f"tlk_abcdefgh.{API_KEY_SECRET}"

_TOUCHED_LOGGERS = (
    "boto3",
    "botocore",
    "s3transfer",
    "urllib3",
    "sqlalchemy",
    "sqlalchemy.engine",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "alembic",
)


class _TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging_state() -> Iterator[None]:
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    root_level = root.level
    saved = {
        name: (lg.level, lg.propagate, lg.disabled, list(lg.handlers))
        for name in _TOUCHED_LOGGERS
        for lg in (logging.getLogger(name),)
    }
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in root_handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(root_level)
    for name, (level, propagate, disabled, handlers) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.propagate = propagate
        lg.disabled = disabled
        lg.handlers[:] = handlers


def _configure_json(level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level=level, log_format="json", stream=stream)
    return stream


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_standard_keys_and_bound_context() -> None:
    stream = _configure_json()
    structlog.contextvars.bind_contextvars(request_id="req-42")

    structlog.get_logger("ledger.test").info("posted transfer", transfer_id="t-1", amount_minor=1500)
    structlog.get_logger("ledger.test").debug("filtered out at INFO")

    [record] = _records(stream)
    assert record["event"] == "posted transfer"
    assert record["level"] == "info"
    assert record["logger"] == "ledger.test"
    assert record["request_id"] == "req-42"
    assert record["transfer_id"] == "t-1"
    assert record["amount_minor"] == 1500
    assert datetime.fromisoformat(record["timestamp"]).utcoffset() == UTC.utcoffset(None)


def test_auto_format_follows_the_stream() -> None:
    piped = io.StringIO()
    configure_logging(log_format="auto", stream=piped)
    structlog.get_logger("ledger.test").info("to a pipe")
    assert json.loads(piped.getvalue())["event"] == "to a pipe"

    terminal = _TtyStream()
    configure_logging(log_format="auto", stream=terminal)
    structlog.get_logger("ledger.test").info("to a terminal", password=CANARY)
    output = terminal.getvalue()
    assert "to a terminal" in output
    assert not output.lstrip().startswith("{")
    assert CANARY not in output


def test_console_format_renders_exceptions_redacted() -> None:
    stream = io.StringIO()
    configure_logging(log_format="console", stream=stream)
    try:
        raise RuntimeError(f"cannot connect to {CANARY_DSN}")
    except RuntimeError:
        structlog.get_logger("ledger.test").exception("boom")
    output = stream.getvalue()
    assert "RuntimeError" in output
    assert CANARY not in output


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="level"):
        configure_logging(level="LOUD", stream=io.StringIO())
    with pytest.raises(ValueError, match="log_format"):
        configure_logging(log_format="xml", stream=io.StringIO())


def test_stdlib_library_records_go_through_the_same_pipeline_once() -> None:
    # What uvicorn's default dictConfig would have left behind.
    uvicorn_private = io.StringIO()
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler(uvicorn_private))
    uvicorn_error.propagate = False

    stream = _configure_json()
    structlog.contextvars.bind_contextvars(request_id="req-7")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")
    logging.getLogger("sqlalchemy.engine").warning("slow query took %d ms", 1200)
    uvicorn_error.info("Started server process [%d]", 123)
    logging.getLogger("alembic.command").info("Running upgrade -> 0001")

    records = _records(stream)
    assert [(r["logger"], r["level"], r["event"]) for r in records] == [
        ("sqlalchemy.engine", "warning", "slow query took 1200 ms"),
        ("uvicorn.error", "info", "Started server process [123]"),
        ("alembic.command", "info", "Running upgrade -> 0001"),
    ]
    for record in records:
        assert record["request_id"] == "req-7"
        assert "timestamp" in record
    assert uvicorn_private.getvalue() == ""


def test_structlog_keyword_and_nested_secrets_are_masked() -> None:
    stream = _configure_json()
    log = structlog.get_logger("ledger.test")

    log.info(
        "loaded settings",
        password=CANARY,
        db_password=CANARY,
        secret_id="prod/ledger/db",
        aws_secret_id="arn:aws:secretsmanager:eu-west-1:1:secret:prod/ledger/db",
        settings={"db": {"Password": CANARY, "hosts": [{"api_key": CANARY}]}, "urls": (CANARY_DSN,)},
        headers={"Authorization": f"Bearer {CANARY}", "X-API-Key": API_KEY, "Accept": "application/json"},
        error=RuntimeError(f"password={CANARY}"),
    )

    output = stream.getvalue()
    assert CANARY not in output
    assert API_KEY_SECRET not in output
    [record] = _records(stream)
    assert record["password"] == "***"
    assert record["db_password"] == "***"
    assert record["secret_id"] == "prod/ledger/db"
    assert record["aws_secret_id"].endswith("secret:prod/ledger/db")
    assert record["settings"]["db"]["Password"] == "***"
    assert record["settings"]["db"]["hosts"] == [{"api_key": "***"}]
    assert record["settings"]["urls"] == ["postgresql://svc:***@db/ledger"]
    assert record["headers"] == {"Authorization": "***", "X-API-Key": "***", "Accept": "application/json"}
    assert record["error"] == "RuntimeError('password=***')"


def test_secrets_in_event_text_are_masked() -> None:
    stream = _configure_json()
    log = structlog.get_logger("ledger.test")

    log.info(f"connecting to {CANARY_DSN}")
    log.info(f"sent Authorization: Bearer {CANARY}")
    log.info(f"retrying with Bearer {CANARY}")
    log.info(f"client used {API_KEY}")

    output = stream.getvalue()
    assert CANARY not in output
    assert API_KEY_SECRET not in output
    assert [r["event"] for r in _records(stream)] == [
        "connecting to postgresql://svc:***@db/ledger",
        "sent Authorization: Bearer ***",
        "retrying with Bearer ***",
        "client used tlk_abcdefgh.***",
    ]


def test_exception_text_is_masked_for_structlog_and_stdlib_loggers() -> None:
    stream = _configure_json()
    message = f"could not connect to {CANARY_DSN} (password={CANARY})"

    try:
        raise ConnectionError(message)
    except ConnectionError:
        structlog.get_logger("ledger.test").exception("database unavailable")
        logging.getLogger("sqlalchemy.pool").exception("pool failure")

    output = stream.getvalue()
    assert CANARY not in output
    structlog_record, stdlib_record = _records(stream)
    for record in (structlog_record, stdlib_record):
        assert record["level"] == "error"
        assert "ConnectionError" in record["exception"]
        assert "postgresql://svc:***@db/ledger" in record["exception"]
        assert "password=***" in record["exception"]
    assert stdlib_record["logger"] == "sqlalchemy.pool"


def test_stdlib_message_arguments_are_masked() -> None:
    stream = _configure_json()
    logging.getLogger("uvicorn.error").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", f"/v1/accounts?token={CANARY}", "1.1", 200
    )
    logging.getLogger("sqlalchemy.engine").warning("engine url %s", CANARY_DSN)

    assert CANARY not in stream.getvalue()
    assert len(_records(stream)) == 2


def test_debug_level_keeps_aws_loggers_quiet() -> None:
    stream = _configure_json(level="DEBUG")

    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    logging.getLogger("botocore.endpoint").debug("Making request with SecretString %s", CANARY)
    logging.getLogger("botocore").debug("Response body: %s", CANARY)
    structlog.get_logger("ledger.test").debug("our own debug line")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")
    logging.getLogger("sqlalchemy.engine").debug("Row (%r,)", CANARY)  # result rows carry data: never logged

    output = stream.getvalue()
    assert CANARY not in output
    assert [r["event"] for r in _records(stream)] == ["our own debug line", "SELECT 1"]


def test_sqlalchemy_engine_stays_at_warning_unless_debug_and_never_logs_rows() -> None:
    configure_logging(level="INFO", log_format="json", stream=io.StringIO())
    assert logging.getLogger("sqlalchemy.engine").getEffectiveLevel() == logging.WARNING
    configure_logging(level="ERROR", log_format="json", stream=io.StringIO())
    assert logging.getLogger("sqlalchemy.engine").getEffectiveLevel() == logging.ERROR
    configure_logging(level="debug", log_format="json", stream=io.StringIO())
    assert logging.getLogger("sqlalchemy.engine").getEffectiveLevel() == logging.INFO


def test_configuring_twice_does_not_duplicate_output() -> None:
    root = logging.getLogger()
    handlers_before = len(root.handlers)
    first = _configure_json()
    second = _configure_json()

    structlog.get_logger("ledger.test").info("once")
    logging.getLogger("uvicorn.error").info("once from stdlib")

    assert len(root.handlers) == handlers_before + 1
    assert first.getvalue() == ""
    assert [r["event"] for r in _records(second)] == ["once", "once from stdlib"]


def test_capture_logs_still_works_after_configuration() -> None:
    _configure_json()
    with structlog.testing.capture_logs() as captured:
        structlog.get_logger("ledger.test").info("captured", transfer_id="t-9")
    assert captured == [{"event": "captured", "transfer_id": "t-9", "log_level": "info"}]


def test_redact_secrets_processor_masks_by_key_and_by_content() -> None:
    event = {
        "event": f"login with password={CANARY}",
        "level": "info",
        "logger": "ledger.api",
        "timestamp": "2024-01-01T00:00:00Z",
        "token": CANARY,
        "refresh_token": CANARY,
        "client_secret": None,
        "SecretId": "prod/ledger/db",
        "nested": [{"cookie": CANARY}, (f"password={CANARY}", 3)],
        "count": 3,
    }

    result = redact_secrets(None, "info", event)

    assert result == {
        "event": "login with password=***",
        "level": "info",
        "logger": "ledger.api",
        "timestamp": "2024-01-01T00:00:00Z",
        "token": "***",
        "refresh_token": "***",
        "client_secret": "***",
        "SecretId": "prod/ledger/db",
        "nested": [{"cookie": "***"}, ("password=***", 3)],
        "count": 3,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pa55@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg2://svc:p@ss@db:5432/ledger", "postgresql+psycopg2://svc:***@db:5432/ledger"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("GET https://bob:hunter2@example.com/x failed", "GET https://bob:***@example.com/x failed"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("host=db user=svc password=abc dbname=ledger", "host=db user=svc password=*** dbname=ledger"),
        ("password='a b c' host=db", "password='***' host=db"),
        ("PASSWORD: abc", "PASSWORD: ***"),
        ('{"password": "abc", "user": "svc"}', '{"password": "***", "user": "svc"}'),
        ("{'password': 'abc'}", "{'password': '***'}"),
        ('{"password":"abc","user":"svc"}', '{"password":"***","user":"svc"}'),
        ('password="unterminated', 'password="***'),
        ("secret=xyz", "secret=***"),
        ("GET /v1/x?token=abc&page=2", "GET /v1/x?token=***&page=2"),
        ("api_key=abc123", "api_key=***"),
        ("aws_secret_access_key=wJalr/K7MDENG+bPxRfi", "aws_secret_access_key=***"),
        ("PGPASSWORD=abc psql", "PGPASSWORD=*** psql"),
        ("Authorization: Bearer abc", "Authorization: Bearer ***"),
        ("authorization: bearer abc.def-ghi", "authorization: bearer ***"),
        ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Authorization: Basic ***"),
        ("token is Bearer abc", "token is Bearer ***"),
        ("Basic abc", "Basic ***"),
        ("key tlk_abc123.abcdefghijklmnopqrst_- used", "key tlk_abc123.*** used"),
        (f"x-api-key: {API_KEY}", "x-api-key: ***"),
        (f"Authorization: Bearer {API_KEY}", "Authorization: Bearer ***"),
        ("posted 3 transfers", "posted 3 transfers"),
        ("secret_id=prod/db", "secret_id=prod/db"),
        ('"secret_id": "prod/ledger/db"', '"secret_id": "prod/ledger/db"'),
        ("aws_access_key_id=AKIAEXAMPLE", "aws_access_key_id=AKIAEXAMPLE"),
        ("tlk_abcdefgh is the key id", "tlk_abcdefgh is the key id"),
        (
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/ledger/db-AbCdEf",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/ledger/db-AbCdEf",
        ),
        ("password reset requested for 2 tokens", "password reset requested for 2 tokens"),
        ("", ""),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "hostile",
    [
        "a." * 50_000,
        "a:" * 50_000,
        'password="' * 10_000,
        "x://" + "a:" * 50_000,
        "password" * 12_000,
        "Bearer " * 15_000,
        "'" + "\\" * 100_000,
    ],
)
def test_redact_text_stays_fast_on_hostile_input(hostile: str) -> None:
    # A backtracking blow-up would take minutes here, not milliseconds.
    assert len(redact_text(hostile)) > 0
