"""One logging pipeline for the whole process, with secrets masked before anything is written.

The ledger handles money held in trust and talks to PostgreSQL, Secrets Manager and HTTP clients
whose libraries happily log DSNs, headers and secret values.  Routing our own structlog events and
every standard-library record through the same processors means there is exactly one place where
redaction happens, and one output format (a JSON object per line) that log shippers can rely on.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_REDACTED: Final = "***"
_HANDLER_NAME: Final = "ledger.structured_logging"
_FORMATS: Final = frozenset({"auto", "json", "console"})

# botocore logs request signing material and secret payloads at DEBUG.
_PINNED_AT_WARNING: Final = ("boto3", "botocore", "s3transfer", "urllib3")
_QUIET_UNLESS_DEBUG: Final = ("uvicorn.access", "alembic.runtime.migration")
_ROUTED_THROUGH_ROOT: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "sqlalchemy")

_PRESERVED_KEYS: Final = frozenset({"event", "level", "logger", "timestamp"})
_PROCESSOR_META_KEYS: Final = frozenset({"_record", "_from_structlog", "exc_info"})
_MAX_DEPTH: Final = 12

_SENSITIVE_WORDS: Final = r"passw(?:or)?d|secret|token|api[_-]?key|authorization|credential|cookie|dsn|private[_-]?key"
_SECRET_KEY_RE: Final = re.compile(_SENSITIVE_WORDS, re.IGNORECASE)

_URL_CREDENTIALS_RE: Final = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s:/@]{0,256}:)[^\s/]{1,256}(?=@)"
)
_AUTH_SCHEME_RE: Final = re.compile(r"\b(?P<scheme>(?i:bearer)|Basic|BASIC)(?P<sep>[ \t]+)[A-Za-z0-9\-._~+/]+=*")
# A bare `secret:name` is how ARNs are spelled, so a colon needs a space or a quote after it.
_KEY_VALUE_RE: Final = re.compile(
    r"(?P<head>(?<![\w-])[\w-]{0,64}?(?:" + _SENSITIVE_WORDS + r")[\w-]{0,64}(?<![_-]id)(?-i:(?<!Id))"
    r"\\?[\"']?[ \t]{0,8}(?:=[ \t]{0,8}|:(?:[ \t]{1,8}|(?=\\?[\"'])))(?:(?:bearer|basic|digest)[ \t]+)?)"
    r"(?:(?P<dq>\"(?:[^\"\\\n]|\\.)*\")"
    r"|(?P<sq>'(?:[^'\\\n]|\\.)*')"
    r"|(?P<open>\\?[\"']?)[^\s\"',;&]+)",
    re.IGNORECASE,
)
_API_KEY_RE: Final = re.compile(r"(?<![A-Za-z0-9])(?P<prefix>tlk_[A-Za-z0-9]{1,64}\.)[A-Za-z0-9_\-]+")


def _mask_key_value(match: re.Match[str]) -> str:
    head = match["head"]
    if match["dq"] is not None:
        return f'{head}"{_REDACTED}"'
    if match["sq"] is not None:
        return f"{head}'{_REDACTED}'"
    return f"{head}{match['open']}{_REDACTED}"


def redact_text(text: str) -> str:
    """Mask credentials embedded in free text.

    Exception messages, SQL errors and library log lines carry secrets in forms no key name can
    catch (a DSN inside an error, a header echoed back), so the text itself has to be scrubbed.
    All patterns use bounded or non-overlapping quantifiers so that hostile input stays linear.
    """
    text = _URL_CREDENTIALS_RE.sub(rf"\g<head>{_REDACTED}", text)
    text = _AUTH_SCHEME_RE.sub(rf"\g<scheme>\g<sep>{_REDACTED}", text)
    text = _KEY_VALUE_RE.sub(_mask_key_value, text)
    return _API_KEY_RE.sub(rf"\g<prefix>{_REDACTED}", text)


def _is_secret_key(key: str) -> bool:
    # A key like `secret_id` names a secret; it is what operators need to see.
    if key.lower().endswith(("_id", "-id")) or key.endswith("Id"):
        return False
    return _SECRET_KEY_RE.search(key) is not None


def _redact_value(value: object, depth: int) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return redact_text(repr(value))
    if isinstance(value, dict):
        return {
            key: _REDACTED if _is_secret_key(str(key)) else _redact_value(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(item, depth + 1) for item in value)
    # The renderers would fall back to these same representations, unredacted.
    structlog_hook = getattr(value, "__structlog__", None)
    rendered: object = structlog_hook() if callable(structlog_hook) else repr(value)
    return _redact_value(rendered, depth + 1)


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Structlog processor that masks secrets before any renderer sees the event.

    Masking by key name catches values we know are secret whatever they look like; masking by
    pattern catches the ones that leak into messages and exception text.
    """
    for key, value in list(event_dict.items()):
        if key in _PROCESSOR_META_KEYS:
            continue
        if key not in _PRESERVED_KEYS and _is_secret_key(key):
            event_dict[key] = _REDACTED
        else:
            event_dict[key] = _redact_value(value, 0)
    return event_dict


def _parse_level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    name = level.strip().upper()
    if name not in levels:
        raise ValueError(f"unknown log level {level!r}")
    return levels[name]


def _wants_json(log_format: str, stream: TextIO) -> bool:
    if log_format not in _FORMATS:
        raise ValueError(f"log_format must be one of {sorted(_FORMATS)}, not {log_format!r}")
    if log_format != "auto":
        return log_format == "json"
    try:
        return not stream.isatty()
    except (AttributeError, ValueError, OSError):
        return True


def configure_logging(level: str = "INFO", log_format: str = "auto", stream: TextIO | None = None) -> None:
    """Send structlog events and standard-library records through one redacting pipeline.

    Safe to call again (for example from tests or a CLI entry point): the handler installed by
    the previous call is replaced, so output is never duplicated.  Uvicorn must be started with
    ``log_config=None`` so that it does not install its own handlers afterwards.
    """
    numeric_level = _parse_level(level)
    out = sys.stdout if stream is None else stream
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if _wants_json(log_format.strip().lower(), out)
        else structlog.dev.ConsoleRenderer(colors=False)
    )

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(additional_ignores=["logging"]),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        # Caching would pin loggers created before a reconfiguration (or capture_logs) to stale settings.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )

    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in _ROUTED_THROUGH_ROOT:
        library_logger = logging.getLogger(name)
        for own_handler in list(library_logger.handlers):
            library_logger.removeHandler(own_handler)
        library_logger.propagate = True
        library_logger.disabled = False

    for name in _PINNED_AT_WARNING:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
    # At DEBUG, SQL statements (parameters hidden outside development) but never result rows: rows carry data,
    # such as API key hashes, that no log should hold.
    logging.getLogger("sqlalchemy.engine").setLevel(
        logging.INFO if numeric_level <= logging.DEBUG else max(numeric_level, logging.WARNING)
    )
    # Our request-id middleware logs every request (with its id); alembic's chatter is summed up by our own events.
    for name in _QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(
            numeric_level if numeric_level <= logging.DEBUG else max(numeric_level, logging.WARNING)
        )
