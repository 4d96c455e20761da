"""The worker's heartbeat thread (core_app.worker): it keeps its row fresh while it runs,
marks it stopped when stopped, and survives a failed write."""

from unittest import mock

import pytest
from django.db import connection

from core_app.models import WorkerHeartbeat
from core_app.worker import HeartbeatThread, WorkerHeartbeatStep, beat_heartbeat_start
from mobilesd.celery import app
from tests.integration.procs import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _row(hostname: str) -> WorkerHeartbeat | None:
    return WorkerHeartbeat.objects.filter(hostname=hostname).first()


def test_the_thread_renews_the_heartbeat_until_stopped():
    thread = HeartbeatThread(hostname="celery@unit", period=0.05)
    thread.start()
    try:
        first = wait_until(lambda: _row("celery@unit"), timeout=10, what="a first heartbeat")
        renewed = wait_until(
            lambda: (row := _row("celery@unit")) and row.last_seen_at > first.last_seen_at,
            timeout=10,
            what="a renewed heartbeat",
        )
        assert renewed
        assert first.stopped_at is None
    finally:
        thread.stop()

    assert not thread.is_alive()
    row = _row("celery@unit")
    assert row is not None
    assert row.stopped_at is not None
    assert row.started_at == first.started_at


def test_a_failed_write_is_retried_at_the_next_beat():
    calls: list[dict] = []
    real = __import__("core_app.services", fromlist=["x"]).worker_heartbeat_record

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("database is down")
        real(**kwargs)

    thread = HeartbeatThread(hostname="celery@flaky", period=0.05)
    with mock.patch("core_app.services.worker_heartbeat_record", flaky):
        thread.start()
        try:
            wait_until(lambda: _row("celery@flaky"), timeout=10, what="a heartbeat after the error")
        finally:
            thread.stop()

    assert calls[0]["started"] is True
    assert calls[1]["started"] is True  # the first write failed: it still counts as the start
    connection.close()


def test_every_worker_of_the_app_runs_the_heartbeat_step():
    assert "core_app.worker:WorkerHeartbeatStep" in app.steps["worker"]
    step = WorkerHeartbeatStep(mock.Mock())
    created = step.create(mock.Mock(hostname="celery@box"))
    assert isinstance(created, HeartbeatThread)
    assert created.hostname == "celery@box"


def test_beat_starts_its_own_heartbeat_as_beat(settings, monkeypatch):
    settings.MOBILESD_WORKER_HEARTBEAT_SECONDS = 0.05
    at_exit: list = []
    monkeypatch.setattr("core_app.worker.atexit.register", at_exit.append)

    thread = beat_heartbeat_start()
    try:
        row = wait_until(lambda: _row(thread.hostname), timeout=10, what="beat's heartbeat")
    finally:
        at_exit[0]()  # what the process runs at exit

    assert thread.hostname.startswith("beat@")
    assert row.process == "beat"
    assert not thread.is_alive()
    stopped = _row(thread.hostname)
    assert stopped is not None
    assert stopped.stopped_at is not None


def test_a_workers_heartbeat_carries_its_threads():
    parent = mock.Mock(hostname="celery@threads", concurrency=6)
    thread = WorkerHeartbeatStep(mock.Mock()).create(parent)
    thread.period = 0.05
    thread.start()
    try:
        row = wait_until(lambda: _row("celery@threads"), timeout=10, what="the heartbeat")
    finally:
        thread.stop()

    assert row.threads == 6
    assert row.process == "worker"
