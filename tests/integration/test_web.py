"""The web tier as the Procfile starts it (gunicorn with uvicorn workers, ASGI): its pool of
database connections, request bodies whatever their framing, and the address failed
sign-ins are counted for, behind a proxy or not."""

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection, transaction

from queue_app.models import Job, JobStatus
from queue_app.services import job_submit
from servers_app.models import Server
from tests.integration.conftest import _redis_broker_url, _worker_database_url
from tests.integration.procs import (
    clean_env,
    procfile_web,
    wait_until,
)
from tests.support import database_backends, new_key

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _web(tmp_path, **env: str) -> Iterator[str]:
    """The Procfile's `web` process on the test database; yields its base URL."""
    environment = clean_env(
        DATABASE_URL=_worker_database_url(),
        CELERY_BROKER_URL=_redis_broker_url(),
        MOBILESD_DATA_DIR=str(tmp_path / "data"),
        MOBILESD_FAILED_ATTEMPTS_LIMIT="3",
        # Windows are counted from the epoch: one longer than the time since then puts
        # the whole test in the first window, ending an hour from now.
        MOBILESD_FAILED_ATTEMPTS_WINDOW=str(int(time.time()) + 3600),
        **env,
    )
    with procfile_web(environment, tmp_path) as server:
        yield server.base


@pytest.fixture
def web(tmp_path) -> Iterator[str]:
    yield from _web(tmp_path)


@pytest.fixture
def web_behind_proxy(tmp_path) -> Iterator[str]:
    """The same, behind a proxy on this machine: the test's requests come from it."""
    yield from _web(tmp_path, MOBILESD_TRUSTED_PROXIES="127.0.0.1,::1")


def test_the_web_process_serves_requests_on_its_pooled_connections(tmp_path):
    """The Procfile's web process keeps a pool of connections (DATABASE_POOL_SIZE, 8 by
    default there): requests one after another are served on the same connection, not each
    on a new one (a new PostgreSQL server process each)."""
    env = clean_env(
        DATABASE_URL=f"{_worker_database_url()}?application_name=web",
        CELERY_BROKER_URL=_redis_broker_url(),
        MOBILESD_DATA_DIR=str(tmp_path / "data"),
    )
    _, key = new_key("polling phone")
    with procfile_web(env, tmp_path) as server:
        status = requests.Session()
        status.headers["Authorization"] = f"Bearer {key}"

        def read() -> None:
            response = status.get(f"{server.base}/api/v1/servers", timeout=10)
            assert response.status_code == 200, response.text

        read()
        first = database_backends("web")
        for _ in range(30):
            read()
        after = database_backends("web")

    assert first, "the web process opened no connection"
    assert len(after) <= 8
    assert first <= after  # the connections of the first request are still the ones used


def _backends_waiting_for_a_lock(application_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND wait_event_type = 'Lock'",
            [application_name],
        )
        return int(cursor.fetchone()[0])


def test_a_request_that_finds_no_free_pooled_connection_is_a_503_and_changes_nothing(tmp_path):
    """The pool's one connection held by a request blocked on a row lock: the next request
    waits DATABASE_POOL_TIMEOUT for it, then gets 503 database_unavailable with a
    Retry-After; once the lock is released the first request ends as it would have, and
    the next one is served."""
    env = clean_env(
        DATABASE_URL=f"{_worker_database_url()}?application_name=web-pool",
        CELERY_BROKER_URL=_redis_broker_url(),
        MOBILESD_DATA_DIR=str(tmp_path / "data"),
        DATABASE_POOL_SIZE="1",
        DATABASE_POOL_TIMEOUT="1",
    )
    owner, key = new_key("phone")
    Server.objects.create(alias="Laptop", api_url="http://127.0.0.1:9")
    job, _ = job_submit(
        owner=owner.user, target_server_alias="Laptop", generation_params={"prompt": "a fox"}
    )
    with procfile_web(env, tmp_path) as server:
        phone = requests.Session()
        phone.headers["Authorization"] = f"Bearer {key}"
        servers = f"{server.base}/api/v1/servers"
        assert phone.get(servers, timeout=10).status_code == 200
        with ThreadPoolExecutor(1) as background:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=job.pk)
                cancel = background.submit(
                    requests.post,
                    f"{server.base}/api/v1/queue/jobs/{job.pk}/cancel",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
                wait_until(
                    lambda: _backends_waiting_for_a_lock("web-pool"),
                    timeout=10,
                    what="the cancel waiting for the job's row",
                )
                refused = phone.get(servers, timeout=10)
            cancelled = cancel.result()
        served = phone.get(servers, timeout=10)

    assert refused.status_code == 503
    assert refused.json()["code"] == "database_unavailable"
    assert refused.headers["Retry-After"] == "5"
    assert cancelled.status_code == 200, cancelled.text
    assert served.status_code == 200
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_chunked_body_is_read_under_gunicorn(web):
    _, key = new_key("chunky phone")
    body = json.dumps({"alias": "Chunky", "api_url": "http://127.0.0.1:9"}).encode()

    response = requests.post(
        f"{web}/api/v1/servers",
        data=chunks(body),  # a generator: requests sends it chunked, without a length
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
    )

    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 201, response.text
    assert Server.objects.filter(alias="Chunky").exists()


def test_a_chunked_body_over_the_limit_is_a_413_under_gunicorn(web):
    _, key = new_key("chunky phone")
    body = b'{"alias": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    response = requests.post(
        f"{web}/api/v1/servers",
        data=chunks(body, 64 * 1024),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_forwarded_for_header_does_not_change_the_address_counted_for_failed_sign_ins(web):
    def guess(n: int) -> int:
        return requests.get(
            f"{web}/api/v1/servers",
            headers={"Authorization": f"Bearer wrong-{n}", "X-Forwarded-For": f"10.0.0.{n}"},
            timeout=10,
        ).status_code

    assert [guess(n) for n in range(3)] == [401, 401, 401]
    assert guess(99) == 429


def test_behind_a_trusted_proxy_failed_sign_ins_are_counted_per_client(web_behind_proxy):
    def guess(client: str) -> int:
        return requests.get(
            f"{web_behind_proxy}/api/v1/servers",
            # what the client wrote, then the address the proxy saw
            headers={"Authorization": "Bearer wrong", "X-Forwarded-For": f"6.6.6.6, {client}"},
            timeout=10,
        ).status_code

    assert [guess("192.168.1.66") for _ in range(3)] == [401, 401, 401]
    assert guess("192.168.1.66") == 429
    assert guess("192.168.1.10") == 401  # another phone of the household is not locked out
