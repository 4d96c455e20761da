"""The ASGI side of the web tier: Django's handler, with long-lived requests that hold no
thread while they wait (LongLivedRequestsHandler); and request bodies without a
Content-Length (ChunkedBodyMiddleware, the ASGI twin of core_app.wsgi).

Bodies without a Content-Length:

uvicorn decodes a chunked body (`Transfer-Encoding: chunked`) and hands it over in pieces,
but Django's ASGI request then has no CONTENT_LENGTH, and DRF reads no body at all without
one: the JSON would be "missing". Here such a body is read, up to MOBILESD_MAX_BODY_BYTES
(a 413 in the error shape past it, without reading the rest), and handed on in one piece
with its length.
"""

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler, get_script_prefix

from core_app.errors import PayloadTooLarge, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


class LongLivedRequestsHandler(ASGIHandler):
    """Django's ASGI handler, except that the requests of `long_lived` paths (path_info, such
    as the event stream's) hold no thread of their own while they wait.

    Django runs a request's thread-sensitive sync code (the receivers of request_started and
    request_finished, the middleware's process_request / process_response) on a thread it
    makes for that request and keeps until the request ends (asgiref's ThreadSensitiveContext
    without an executor): an open event stream kept one idle thread, and a thousand streams a
    thousand threads. The long-lived requests share one thread for those steps instead, which
    are all short: their views do their own sync work on the loop's pool, and the middleware
    is async-capable (a sync one would hold the shared thread while the view runs)."""

    def __init__(self, long_lived: Iterable[str]) -> None:
        super().__init__()
        self.long_lived = frozenset(long_lived)
        # One call at a time on one thread, as thread-sensitive code expects; made once per
        # process, its thread lives as long as the process.
        self.long_lived_executor = ThreadPoolExecutor(1, thread_name_prefix="long-lived-requests")

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http" and _path_info(scope) in self.long_lived:
            async with ThreadSensitiveContext(executor=self.long_lived_executor):
                await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _path_info(scope: Scope) -> str:
    """The path Django's URL conf sees (as ASGIRequest computes it)."""
    path: str = scope["path"]
    script_name = (get_script_prefix(scope) or "").rstrip("/")
    if script_name and (path.startswith(script_name + "/") or path == script_name):
        return path[len(script_name) :]
    return path


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
