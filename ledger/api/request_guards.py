"""Checks on the raw request before FastAPI parses it: JSON content type (415) and a bounded body size (413)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.api.problems import PROBLEM_MEDIA_TYPE, problem_body

DEFAULT_MAX_BODY_BYTES = 1_048_576
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self._app = app
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self._app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        declared_length = headers.get(b"content-length")
        if declared_length is not None and declared_length.isdigit() and int(declared_length) > self._max_body_bytes:
            await _send_problem(send, 413, "body_too_large", f"the body is larger than {self._max_body_bytes} bytes")
            return
        has_body = declared_length not in (None, b"0") or b"transfer-encoding" in headers
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if has_body and not (content_type == b"application/json" or content_type.endswith(b"+json")):
            await _send_problem(send, 415, "unsupported_media_type", "send the body as application/json")
            return

        # Read the whole (bounded) body first, so an oversized one is refused before anything parses it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self._app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self._max_body_bytes:
                await _send_problem(
                    send, 413, "body_too_large", f"the body is larger than {self._max_body_bytes} bytes"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self._app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}]), send)


def _replay(messages: list[Message]) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    return receive


async def _send_problem(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps(problem_body(status, code, detail)).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
