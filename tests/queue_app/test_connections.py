"""The worker's pool of database connections and their warming (queue_app.connections); a
real worker's is in tests/integration/test_worker_connections.py."""

import threading
import time

import pytest
from django.db import OperationalError, connection
from django.db.backends.postgresql.base import DatabaseWrapper
from model_bakery import baker
from psycopg_pool import ConnectionPool

from queue_app import connections, dispatch
from queue_app.connections import (
    CONNECTIONS_PER_SERVER,
    SPARE_CONNECTIONS,
    connections_warm,
    reset_session,
    warm_count,
    worker_connections_warm,
    worker_pool_options,
)
from queue_app.models import Job, JobStatus
from servers_app.models import Server

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the worker pools PostgreSQL connections only"
)


def test_the_pool_has_room_for_a_server_loop_on_every_thread(settings):
    options = worker_pool_options(8)

    assert options["max_size"] == 8 * CONNECTIONS_PER_SERVER + SPARE_CONNECTIONS
    assert options["min_size"] == 1
    assert options["timeout"] == settings.DATABASE_POOL_TIMEOUT
    assert options["check"] is ConnectionPool.check_connection
    assert options["reset"] is reset_session


def test_the_warm_connections_are_those_of_the_servers_one_thread_each_can_run():
    assert warm_count(servers=3, concurrency=8) == 3 * CONNECTIONS_PER_SERVER
    assert warm_count(servers=20, concurrency=8) == 8 * CONNECTIONS_PER_SERVER
    assert warm_count(servers=0, concurrency=8) == 0


@pytest.mark.django_db
def test_a_pooled_connection_comes_back_flushing_its_commits_again():
    """The reserving thread commits without flush; the next thread to get its connection
    must not."""
    params = connection.get_connection_params()
    with ConnectionPool(
        kwargs={**params, "autocommit": True}, min_size=1, max_size=1, reset=reset_session
    ) as pool:
        with pool.connection() as conn:
            conn.execute("SET synchronous_commit = off")
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        with pool.connection() as conn:
            again = conn.execute("SHOW synchronous_commit").fetchone()

    assert again == ("on",)


@pytest.mark.django_db
def test_the_engine_statements_change_no_job():
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)
    job = baker.make(Job, server=server, target_server_alias=server.alias, status=JobStatus.PENDING)

    dispatch.engine_statements_warm()

    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert job.lease_token is None
    assert job.started_at is None


@pytest.mark.django_db(transaction=True)
def test_connections_are_warmed_together_each_on_a_connection_of_its_own(monkeypatch):
    backends: list[int] = []
    lock = threading.Lock()
    warm = dispatch.engine_statements_warm

    def recorded() -> None:
        warm()
        with lock:
            backends.append(connection.connection.info.backend_pid)

    monkeypatch.setattr(dispatch, "engine_statements_warm", recorded)

    assert connections_warm(3) == 3
    assert len(set(backends)) == 3


@pytest.mark.django_db(transaction=True)
def test_a_connection_whose_statements_fail_is_not_counted(monkeypatch):
    calls = []

    def failing() -> None:
        calls.append(1)
        raise OperationalError("the database went away")

    monkeypatch.setattr(dispatch, "engine_statements_warm", failing)

    assert connections_warm(2) == 0
    assert calls == [1, 1]


@pytest.mark.django_db(transaction=True)
def test_when_a_connection_cannot_open_the_others_stop_waiting_for_it(monkeypatch, settings):
    settings.DATABASE_POOL_TIMEOUT = 30  # the others would wait 35 s for it
    opened = DatabaseWrapper.ensure_connection
    first = threading.Lock()

    def ensure_connection(self) -> None:
        if first.acquire(blocking=False):
            raise OperationalError("connection refused")
        opened(self)

    monkeypatch.setattr(DatabaseWrapper, "ensure_connection", ensure_connection)
    started = time.monotonic()

    assert connections_warm(3) == 0
    assert time.monotonic() - started < 30


@pytest.mark.django_db
def test_without_a_pool_nothing_is_warmed(monkeypatch):
    assert getattr(connection, "pool", None) is None
    monkeypatch.setattr(
        connections, "connections_warm", lambda count: pytest.fail("warmed without a pool")
    )

    assert worker_connections_warm(servers=1, concurrency=8) == 0
