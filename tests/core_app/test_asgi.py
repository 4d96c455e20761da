"""The ASGI side (core_app.asgi): chunked request bodies (no Content-Length) read and handed
on with their length, or refused with a 413 past the limit; and the handler, whose event
stream requests share one thread for their thread-sensitive steps instead of holding one
each."""

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.signals import request_started
from django.utils.module_loading import import_string

from core_app.asgi import ChunkedBodyMiddleware, _path_info

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


# --- the handler: long-lived requests share one thread ---------------------------------------


def get(application: Any, path: str) -> dict[str, Any]:
    """GET `path` from the ASGI `application`: the answer's status, headers and body."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the answer ends the request
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(application(scope, receive, send))
    return {
        "status": sent[0]["status"],
        "headers": {k.decode().lower(): v.decode() for k, v in sent[0]["headers"]},
        "body": b"".join(m.get("body", b"") for m in sent[1:]),
    }


@pytest.fixture
def request_threads() -> Iterator[list[str]]:
    """The names of the threads request_started's (sync) receivers run on, request by request."""
    names: list[str] = []

    def record(**kwargs: Any) -> None:
        names.append(threading.current_thread().name)

    request_started.connect(record)
    yield names
    request_started.disconnect(record)


@pytest.mark.django_db(transaction=True)
def test_the_streams_requests_share_one_thread_and_the_others_have_their_own(request_threads):
    from mobilesd.asgi import application

    statuses = [
        get(application, path)["status"]
        for path in ("/api/v1/events", "/api/v1/events", "/api/v1/queue/jobs", "/api/v1/queue/jobs")
    ]

    assert statuses == [401, 401, 401, 401]  # no key: each answered, in the error shape
    stream, again, other, another = request_threads
    assert stream == again
    assert stream.startswith("long-lived-requests")
    assert len({stream, other, another}) == 3  # Django's thread of each request's own


def test_the_handler_sees_a_long_lived_path_under_a_script_prefix():
    scope = {"path": "/mobilesd/api/v1/events", "root_path": "/mobilesd"}

    assert _path_info(scope) == "/api/v1/events"
    assert _path_info({"path": "/api/v1/events", "root_path": ""}) == "/api/v1/events"


def test_every_middleware_runs_on_the_event_loop_under_asgi(settings):
    # A sync-only one would hold the thread the streams' requests share while a stream
    # opens (and cost every request a hop to a thread and back).
    sync_only = [
        name
        for name in settings.MIDDLEWARE
        if not getattr(import_string(name), "async_capable", False)
    ]

    assert sync_only == []


# WhiteNoise's file response iterates a file: Django's ASGI handler reads it on a thread.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
def test_static_files_are_served_under_asgi_and_wsgi(client):
    from mobilesd.asgi import application

    under_asgi = get(application, "/static/admin/css/base.css")
    under_wsgi = client.get("/static/admin/css/base.css")

    assert under_asgi["status"] == under_wsgi.status_code == 200
    assert under_asgi["headers"]["content-type"].startswith("text/css")
    assert under_asgi["body"] == b"".join(under_wsgi.streaming_content)
    assert under_asgi["body"]
