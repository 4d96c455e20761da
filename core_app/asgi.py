"""ASGI middleware: request bodies without a Content-Length (the ASGI twin of core_app.wsgi).

uvicorn decodes a chunked body (`Transfer-Encoding: chunked`) and hands it over in pieces,
but Django's ASGI request then has no CONTENT_LENGTH, and DRF reads no body at all without
one: the JSON would be "missing". Here such a body is read, up to MOBILESD_MAX_BODY_BYTES
(a 413 in the error shape past it, without reading the rest), and handed on in one piece
with its length.
"""

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from core_app.errors import PayloadTooLarge, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


class ChunkedBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _chunked_without_length(scope):
            await self.app(scope, receive, send)
            return
        limit = settings.MOBILESD_MAX_BODY_BYTES
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            part = message.get("body", b"")
            parts.append(part)
            size += len(part)
            if size > limit:
                await _refuse(send, PayloadTooLarge(limit))
                return
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"transfer-encoding",)]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app({**scope, "headers": headers}, replay, send)


def _chunked_without_length(scope: Scope) -> bool:
    names = {name: value for name, value in scope.get("headers", [])}
    return (
        b"content-length" not in names
        and b"chunked" in names.get(b"transfer-encoding", b"").lower()
    )


async def _refuse(send: Send, error: PayloadTooLarge) -> None:
    body = json.dumps(error_body(error.message, error.code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
