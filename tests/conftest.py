"""Fixtures shared by the whole suite."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.app.task import Task
from django.core.cache import cache
from django.test import AsyncClient as DjangoAsyncClient
from django.test import Client as DjangoClient
from model_bakery import baker
from rest_framework.test import APIClient

from core_app.services import worker_heartbeat_record
from queue_app.models import Job
from servers_app.models import Server
from tests.openapi_check import check_response, openapi
from tests.support import new_key


@pytest.fixture(autouse=True)
def _isolated_media_and_cache(settings, tmp_path: Path) -> Iterator[None]:
    """Every test gets its own media folder and fresh throttling counters."""
    settings.MEDIA_ROOT = tmp_path / "media"
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True, scope="session")
def _openapi_document(django_test_environment) -> None:
    """The OpenAPI document, built once before any test can patch a view it describes."""
    openapi()


@pytest.fixture(autouse=True)
def _responses_match_the_openapi_document(request, monkeypatch) -> None:
    """Every answer of a test client (Django's, sync or async, or DRF's) under /api/v1/ or
    /outputs/ must be one the OpenAPI document describes: an undocumented status or a body
    that does not validate fails the test that got it (tests/openapi_check.py). A test that
    checks the checker itself opts out with `@pytest.mark.unchecked_responses`."""
    if request.node.get_closest_marker("unchecked_responses") is not None:
        return
    original = DjangoClient.request
    original_async = DjangoAsyncClient.request

    def checked(self, **kwargs):
        response = original(self, **kwargs)
        check_response(response.wsgi_request, response)
        return response

    async def checked_async(self, **kwargs):
        # A stream's body is not read (the check reads a text/event-stream's headers only).
        response = await original_async(self, **kwargs)
        check_response(response.asgi_request, response)
        return response

    monkeypatch.setattr(DjangoClient, "request", checked)
    monkeypatch.setattr(DjangoAsyncClient, "request", checked_async)


@pytest.fixture(autouse=True)
def published(request, monkeypatch) -> list[tuple[str, tuple, dict]]:
    """Celery messages the code under test sent, recorded instead of published.

    Unit tests need no broker; integration tests (marked `integration`) publish for real.
    """
    sent: list[tuple[str, tuple, dict]] = []
    if request.node.get_closest_marker("integration") is None:

        def record(self, args=None, kwargs=None, **options):
            sent.append((self.name, tuple(args or ()), dict(kwargs or {})))

        monkeypatch.setattr(Task, "apply_async", record)
    return sent


@pytest.fixture
def raw_api_key(db) -> str:
    _, raw_key = new_key("test phone")
    return raw_key


@pytest.fixture
def client(raw_api_key: str) -> APIClient:
    """An API client that sends a valid key."""
    api_client = APIClient()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_api_key}")
    return api_client


@pytest.fixture
def anon_client(db) -> APIClient:
    return APIClient()


@pytest.fixture
def worker_seen(db) -> None:
    """A worker whose heartbeat was just written, as a running worker keeps it."""
    worker_heartbeat_record(hostname="celery@test", started=True)


@pytest.fixture
def server(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")


@pytest.fixture
def job(server) -> Job:
    """A pending job of the server "Laptop"."""
    return baker.make(
        Job,
        server=server,
        target_server_alias="Laptop",
        generation_params={"positive_prompt": "a lighthouse at dusk", "steps": 5},
    )
