"""Chunked request bodies (no Content-Length) are read, or refused with 411 or 413."""

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections

from core_app.wsgi import ChunkedBodyMiddleware
from servers_app.models import Server


def call(app: Any, body: bytes, *, key: str, terminated: bool = True, chunked: bool = True):
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/servers",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
    }
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    if terminated:
        environ["wsgi.input_terminated"] = True
    status: list[str] = []

    def start_response(line: str, headers: list, exc_info: Any = None) -> None:
        status.append(line)

    chunks: Iterable[bytes] = app(environ, start_response)
    content = b"".join(chunks)
    return int(status[0].split()[0]), json.loads(content)


@pytest.fixture
def app() -> Iterator[Any]:
    """MobileSD's WSGI application; as in Django's test client, a request does not close
    the test's database connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield ChunkedBodyMiddleware(get_wsgi_application())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


BODY = json.dumps({"alias": "Chunky", "api_url": "http://127.0.0.1:9"}).encode()


def test_a_chunked_body_is_read(app, raw_api_key):
    status, body = call(app, BODY, key=raw_api_key)

    assert status == 201, body
    assert Server.objects.filter(alias="Chunky").exists()


def test_without_a_terminated_input_a_chunked_body_is_a_411(app, raw_api_key):
    status, body = call(app, BODY, key=raw_api_key, terminated=False)

    assert status == 411
    assert body["code"] == "length_required"
    assert body["error"] == body["message"]
    assert not Server.objects.exists()


def test_a_chunked_body_over_the_limit_is_a_413(app, raw_api_key, settings):
    settings.MOBILESD_MAX_BODY_BYTES = 100

    status, body = call(app, b" " * 200 + BODY, key=raw_api_key)

    assert status == 413
    assert body["code"] == "payload_too_large"


def test_a_body_with_its_length_is_left_alone(app, raw_api_key):
    # Without the header Django would read none of it; this checks the middleware only
    # steps in for chunked bodies.
    status, body = call(app, BODY, key=raw_api_key, chunked=False)

    assert status == 400
    assert "alias" in body["fields"]
