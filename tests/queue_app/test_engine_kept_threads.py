"""A server loop keeps its jobs' monitor and progress-probe threads, with the database
connection and the HTTP session they opened, from one job to the next; and the monitors,
the probes and the notifications' fan-out give way to servers waiting for their next
request (queue_app.engine.servers_waiting). Against a real (in-process) Forge simulator
over HTTP, without Celery."""

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.backends.signals import connection_created
from model_bakery import baker

from events_app.triggers import RAW_CHANNEL
from integrations.forge.client import ForgeClient
from integrations.forge.simulator import ForgeSimulator
from notifications_app import listener
from queue_app import dispatch, engine
from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.integration.procs import wait_until
from tests.support import checked_server, previewing_simulator, run_queue_in_thread, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    started = previewing_simulator()
    yield started
    started.stop()


@pytest.fixture
def server(sim, settings) -> Server:
    # Each 8-step job (0.4 s) has several heartbeats and progress probes.
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    settings.MOBILESD_PROGRESS_MIN_SECONDS = 0.05
    return checked_server(sim.url)


@pytest.fixture
def connections_by_thread() -> Iterator[list[str]]:
    """The name of the thread of every database connection opened."""
    names: list[str] = []

    def opened(**kwargs: Any) -> None:
        names.append(threading.current_thread().name)

    connection_created.connect(opened, weak=False)
    yield names
    connection_created.disconnect(opened)


@pytest.fixture
def probe_clients(monkeypatch) -> list[ForgeClient]:
    """Every client made for progress probes (their reads are short: 5 s)."""
    made: list[ForgeClient] = []
    real = engine.make_client

    def recording(server: Server, *, read_timeout: float = 30.0) -> ForgeClient:
        client = real(server, read_timeout=read_timeout)
        if read_timeout == 5.0:
            made.append(client)
        return client

    monkeypatch.setattr(engine, "make_client", recording)
    return made


def test_a_loops_monitors_keep_one_database_connection_and_one_probe_session(
    server, connections_by_thread, probe_clients, heartbeats
):
    jobs = [submit(steps=8, seed=seed) for seed in range(3)]

    run_queue_in_thread(server.pk).join(30)

    assert all(Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED for job in jobs)
    # Every job was watched: its lease renewed and its progress, probed, written.
    assert {job_id for job_id, progress in heartbeats if progress} == {job.pk for job in jobs}
    monitor_connections = [name for name in connections_by_thread if name.startswith("monitor-")]
    assert monitor_connections == [f"monitor-{server.pk}_0"]
    assert len(probe_clients) == 1


@pytest.fixture
def heartbeats(monkeypatch) -> list[tuple[Any, dict[str, Any] | None]]:
    """Every heartbeat: (job id, the progress written)."""
    calls: list[tuple[Any, dict[str, Any] | None]] = []
    real = dispatch.job_heartbeat

    def recording(**kwargs: Any) -> Any:
        calls.append((kwargs["claim"].job_id, kwargs.get("progress")))
        return real(**kwargs)

    monkeypatch.setattr(dispatch, "job_heartbeat", recording)
    return calls


class _Gate:
    """Stands for `servers_waiting.wait_until_none`: whoever calls it waits until the
    test opens the gate, as if a server waited until then."""

    def __init__(self) -> None:
        self.callers: list[str] = []  # the threads that came to it
        self.open = threading.Event()

    def wait_until_none(self, timeout: float) -> bool:
        self.callers.append(threading.current_thread().name)
        self.open.wait(30)
        return True


def test_a_heartbeat_waits_while_a_server_waits_for_its_next_request(
    server, heartbeats, monkeypatch
):
    gate = _Gate()
    monkeypatch.setattr(engine.servers_waiting, "wait_until_none", gate.wait_until_none)
    baker.make(Job, server=server, target_server_alias=server.alias, generation_params={})
    monitor = engine.Monitor(dispatch.job_claim_next(server_id=server.pk))
    monitor.start()
    try:
        wait_until(lambda: monitor.name in gate.callers, timeout=10)
        assert heartbeats == []  # due, and held back while the server waits
        gate.open.set()
        wait_until(lambda: len(heartbeats) >= 1, timeout=10)
    finally:
        gate.open.set()
        monitor.stop()
        monitor.join(10)


def test_a_monitor_stopped_while_it_waits_beats_no_more(server, heartbeats, monkeypatch):
    gate = _Gate()
    monkeypatch.setattr(engine.servers_waiting, "wait_until_none", gate.wait_until_none)
    baker.make(Job, server=server, target_server_alias=server.alias, generation_params={})
    monitor = engine.Monitor(dispatch.job_claim_next(server_id=server.pk))
    monitor.start()
    wait_until(lambda: monitor.name in gate.callers, timeout=10)
    monitor.stop()
    gate.open.set()
    monitor.join(10)

    assert not monitor.is_alive()
    assert heartbeats == []


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the listener LISTENs on PostgreSQL only"
)
def test_the_fanout_waits_while_a_server_waits_for_its_next_request(monkeypatch):
    order: list[str] = []
    monkeypatch.setattr(
        engine.servers_waiting, "wait_until_none", lambda timeout: order.append("yield") or True
    )
    fanned = threading.Event()

    def fanout(self: listener.FanoutListener) -> None:
        order.append("fan-out")
        fanned.set()

    monkeypatch.setattr(listener.FanoutListener, "_fanout", fanout)
    thread = listener.FanoutListener()
    thread.start()
    try:
        # The listener's first fan-out (what came while nobody listened) does not wait;
        # one on a notification does.
        wait_until(lambda: order == ["fan-out"], timeout=10)
        fanned.clear()
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {RAW_CHANNEL}")
        assert fanned.wait(10)
    finally:
        thread.stop()

    assert order[:3] == ["fan-out", "yield", "fan-out"]
