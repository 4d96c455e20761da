"""Chunked request bodies under ASGI (no Content-Length): read and handed on with their
length, or refused with a 413 past the limit (core_app.asgi)."""

import asyncio
import json
from typing import Any

from core_app.asgi import ChunkedBodyMiddleware

CHUNKED = [(b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")]


def call(parts: list[bytes], headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The scope and body the app behind the middleware saw, and what was sent back."""
    seen: dict[str, Any] = {"sent": []}
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        seen["sent"].append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["headers"] = dict(scope["headers"])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"] = body

    scope = {"type": "http", "method": "POST", "path": "/api/v1/servers", "headers": headers}
    asyncio.run(ChunkedBodyMiddleware(app)(scope, receive, send))
    return seen


def test_a_chunked_body_is_handed_on_whole_with_its_length():
    seen = call([b'{"alias": ', b'"Chunky"}'], CHUNKED)

    assert seen["body"] == b'{"alias": "Chunky"}'
    assert seen["headers"][b"content-length"] == b"19"
    assert b"transfer-encoding" not in seen["headers"]


def test_a_chunked_body_over_the_limit_is_a_413_in_the_error_shape(settings):
    settings.MOBILESD_MAX_BODY_BYTES = 10
    seen = call([b"x" * 8, b"x" * 8, b"x" * 8], CHUNKED)

    start, body = seen["sent"]
    assert "body" not in seen  # the app never saw it
    assert start["status"] == 413
    assert json.loads(body["body"])["code"] == "payload_too_large"


def test_a_body_with_a_length_passes_untouched():
    headers = [(b"content-length", b"2"), (b"content-type", b"application/json")]
    seen = call([b"{}"], headers)

    assert seen["headers"] == dict(headers)
    assert seen["body"] == b"{}"
