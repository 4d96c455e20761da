"""Fixtures shared by the whole suite."""

import os
import shutil
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery.app.task import Task
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import AsyncClient as DjangoAsyncClient
from django.test import Client as DjangoClient
from model_bakery import baker
from rest_framework.test import APIClient

from core_app import throttling
from core_app.models import WorkerHeartbeat
from core_app.services import worker_heartbeat_record
from queue_app.models import Job
from servers_app.models import Server
from tests.openapi_check import check_response, openapi
from tests.support import new_key
from tests.xdist_scheduling import ModuleSeconds

# Redis's default number of databases (`databases 16`): db 0 to 15.
REDIS_DATABASES = 16
_METRICS_DIR = pytest.StashKey[str]()


def _xdist_worker_index() -> int | None:
    """n of pytest-xdist's worker gwn running this session; None when not under xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) if worker else None


def _worker_broker_url(url: str, index: int) -> str:
    """The Redis URL `url` with its database number plus `index`."""
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) + index
    if database >= REDIS_DATABASES:
        raise pytest.UsageError(
            f"xdist worker gw{index} would use Redis database {database} of {url}, past the "
            f"last one ({REDIS_DATABASES - 1}): pick a lower database in the broker URL or "
            "fewer workers (-n)."
        )
    return urlunsplit(parts._replace(path=f"/{database}"))


def pytest_configure(config: pytest.Config) -> None:
    """What each test session (each xdist worker: gw0, gw1, ...) must not share with another
    one running at the same time, beside the test database pytest-django already gives it
    (test_<name>_gw<n>):

    - the Redis broker: the integration clusters flush theirs, and the cache tests empty
      it. Worker gw<n> takes the broker's database number plus n, for Celery (which reads
      CELERY_BROKER_URL from the environment first; its subprocesses inherit it) and for
      Django's settings;
    - prometheus-client's multiprocess folder: metric tests compare a server's counts
      before and after, and every process writing there counts. Each session gets a fresh
      one (stale files of an earlier run's process with the same pid would count too).
    """
    index = _xdist_worker_index()
    broker_url = str(getattr(django_settings, "CELERY_BROKER_URL", ""))
    if index is not None and broker_url.startswith(("redis://", "rediss://")):
        own = _worker_broker_url(broker_url, index)
        os.environ["CELERY_BROKER_URL"] = own
        django_settings.CELERY_BROKER_URL = own
    if not hasattr(config, "workerinput"):  # this process reports every test: not a worker
        config.pluginmanager.register(ModuleSeconds(), "mobilesd-module-seconds")
    metrics_dir = tempfile.mkdtemp(prefix="mobilesd-test-metrics-")
    config.stash[_METRICS_DIR] = metrics_dir
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    django_settings.PROMETHEUS_MULTIPROC_DIR = metrics_dir


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `--dist loadfile` (`make test`), the longest modules first
    (tests/xdist_scheduling.py); other modes as xdist has them."""
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.xdist_scheduling import LongestModulesFirst

    return LongestModulesFirst(config, log)


# User properties a test records to be read by whoever runs the suite (figures of a run).
SHOWN_PROPERTIES = ("fault_run",)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The SHOWN_PROPERTIES of the tests that recorded some, at the end of the run: a test's
    own output is not shown without -s, nor ever from an xdist worker."""
    for reports in list(terminalreporter.stats.values()):
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name in SHOWN_PROPERTIES and getattr(report, "when", "") == "call":
                    terminalreporter.write_line(f"{name.replace('_', ' ')}: {value}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _METRICS_DIR in config.stash:
        shutil.rmtree(config.stash[_METRICS_DIR], ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_media_and_cache(settings, tmp_path: Path) -> Iterator[None]:
    """Every test gets its own media folder and fresh throttling counters."""
    settings.MEDIA_ROOT = tmp_path / "media"
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def frozen_window(monkeypatch) -> None:
    """Throttling's clock stands still in the middle of a window, so that counts made
    to reach a limit cannot be split by a window's end however long the test takes."""
    clock = types.SimpleNamespace(time=lambda: 1_000_030.0, monotonic=throttling.time.monotonic)
    monkeypatch.setattr(throttling, "time", clock)


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
def no_heartbeats(db) -> None:
    """No worker or beat seen yet. The real workers of integration tests note that they
    stopped as their module's cluster stops, after its last test's flush: those rows are
    removed (within this test's transaction)."""
    WorkerHeartbeat.objects.all().delete()


@pytest.fixture
def worker_seen(no_heartbeats) -> None:
    """A worker and beat whose heartbeats were just written, as running ones keep them."""
    worker_heartbeat_record(hostname="celery@test", started=True)
    worker_heartbeat_record(hostname="beat@test", started=True, process="beat")


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
