"""The engine's live previews and progress writes, against a real (in-process) Forge
simulator over HTTP, without Celery: the monitor reads previews while a job runs, writes
them with the progress (only when changed, at most every MOBILESD_PROGRESS_MIN_SECONDS),
and they are gone once the job ends. A server loop keeps its jobs' monitor and probe
threads, with the database connection and HTTP session they opened, from one job to the
next; the monitors, the probes and the notifications' fan-out give way to servers waiting
for their next request (queue_app.engine.servers_waiting)."""

import io
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.backends.signals import connection_created
from model_bakery import baker
from PIL import Image

from events_app.triggers import RAW_CHANNEL
from integrations.forge.client import ForgeClient
from integrations.forge.simulator import ForgeSimulator
from notifications_app import listener
from queue_app import dispatch, engine
from queue_app.engine import Monitor, ProgressReading
from queue_app.models import Job, JobPreview, JobStatus
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
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    settings.MOBILESD_PROGRESS_MIN_SECONDS = 0.1
    return checked_server(sim.url)


@pytest.fixture
def heartbeats(monkeypatch) -> list[tuple[float, dict[str, Any] | None, int | None]]:
    """Every heartbeat the monitors send: when, the progress written, the preview version."""
    calls: list[tuple[float, dict[str, Any] | None, int | None]] = []
    real = dispatch.job_heartbeat

    def recording(**kwargs: Any) -> Any:
        calls.append((time.monotonic(), kwargs.get("progress"), kwargs.get("preview_version")))
        return real(**kwargs)

    monkeypatch.setattr(dispatch, "job_heartbeat", recording)
    return calls


def preview_versions(job: Job) -> int | None:
    preview = JobPreview.objects.filter(job=job).first()
    return preview.version if preview else None


def test_a_running_jobs_preview_changes_and_goes_when_it_ends(server, sim):
    job = submit(steps=40)
    thread = run_queue_in_thread(server.pk)

    seen: set[int] = set()
    wait_until(lambda: seen.add(preview_versions(job) or 0) or len(seen - {0}) >= 2, timeout=10)
    running = Job.objects.get(pk=job.pk)
    stored = JobPreview.objects.get(job=job)
    thread.join(15)

    assert running.progress["preview_id"] >= 2
    assert running.progress["preview_url"].endswith(f"/preview?v={running.progress['preview_id']}")
    assert max(stored.width, stored.height) <= 256
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED
    assert not JobPreview.objects.filter(job=job).exists()


def test_progress_is_written_at_most_every_min_seconds(server, sim, settings, heartbeats):
    settings.MOBILESD_PROGRESS_MIN_SECONDS = 0.3
    job = submit(steps=40)

    run_queue_in_thread(server.pk).join(15)

    written = [at for at, progress, _ in heartbeats if progress is not None]
    assert len(written) >= 3
    assert min(b - a for a, b in itertools.pairwise(written)) >= 0.3 - 0.02
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED


def test_each_new_preview_is_written_once(server, sim, heartbeats):
    submit(steps=40)

    run_queue_in_thread(server.pk).join(15)

    versions = [version for _, _, version in heartbeats if version is not None]
    assert len(versions) >= 2
    assert versions == sorted(set(versions))


class _SteadyProbe(threading.Thread):
    """A probe whose reading never changes."""

    READING = ProgressReading({"fraction": 0.25, "textinfo": "steady"}, None, 0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)

    def begin(self) -> None:
        self.start()

    def latest(self) -> ProgressReading:
        return self.READING

    def stop(self) -> None:
        pass


def test_unchanged_progress_is_written_once_while_the_lease_is_renewed(
    settings, heartbeats, monkeypatch
):
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.02
    settings.MOBILESD_PROGRESS_MIN_SECONDS = 0.02
    monkeypatch.setattr(engine, "_ProgressProbe", _SteadyProbe)
    online = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)
    baker.make(Job, server=online, target_server_alias="Laptop", generation_params={"a": 1})
    monitor = Monitor(dispatch.job_claim_next(server_id=online.pk))
    monitor.start()
    try:
        wait_until(lambda: len(heartbeats) >= 10, timeout=10, interval=0.01)
    finally:
        monitor.stop()
        monitor.join(5)

    assert [progress for _, progress, _ in heartbeats if progress is not None] == [
        _SteadyProbe.READING.progress
    ]


def test_without_a_web_ui_previews_come_from_the_current_image(settings):
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    settings.MOBILESD_PROGRESS_MIN_SECONDS = 0.1
    sim = previewing_simulator(webui=False)
    try:
        server = checked_server(sim.url)
        job = submit(steps=40)
        thread = run_queue_in_thread(server.pk)
        preview = wait_until(lambda: JobPreview.objects.filter(job=job).first(), timeout=10)
        thread.join(15)
    finally:
        sim.stop()

    assert Image.open(io.BytesIO(bytes(preview.image))).format == "WEBP"
    assert not JobPreview.objects.filter(job=job).exists()


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
    """Every client made for progress probes (their reads are the quick ones)."""
    made: list[ForgeClient] = []
    real = engine.make_client

    def recording(server: Server, *, read_timeout: float = engine.READ_TIMEOUT) -> ForgeClient:
        client = real(server, read_timeout=read_timeout)
        if read_timeout == engine.QUICK_READ_TIMEOUT:
            made.append(client)
        return client

    monkeypatch.setattr(engine, "make_client", recording)
    return made


def test_a_loops_monitors_keep_one_database_connection_and_one_probe_session(
    server, connections_by_thread, probe_clients, beats_by_job
):
    jobs = [submit(steps=8, seed=seed) for seed in range(3)]

    run_queue_in_thread(server.pk).join(30)

    assert all(Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED for job in jobs)
    # Every job was watched: its lease renewed and its progress, probed, written.
    assert {job_id for job_id, progress in beats_by_job if progress} == {job.pk for job in jobs}
    monitor_connections = [name for name in connections_by_thread if name.startswith("monitor-")]
    assert monitor_connections == [f"monitor-{server.pk}_0"]
    assert len(probe_clients) == 1


@pytest.fixture
def beats_by_job(monkeypatch) -> list[tuple[Any, dict[str, Any] | None]]:
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
    server, beats_by_job, monkeypatch
):
    gate = _Gate()
    monkeypatch.setattr(engine.servers_waiting, "wait_until_none", gate.wait_until_none)
    baker.make(Job, server=server, target_server_alias=server.alias, generation_params={})
    monitor = engine.Monitor(dispatch.job_claim_next(server_id=server.pk))
    monitor.start()
    try:
        wait_until(lambda: monitor.name in gate.callers, timeout=10)
        assert beats_by_job == []  # due, and held back while the server waits
        gate.open.set()
        wait_until(lambda: len(beats_by_job) >= 1, timeout=10)
    finally:
        gate.open.set()
        monitor.stop()
        monitor.join(10)


def test_a_monitor_stopped_while_it_waits_beats_no_more(server, beats_by_job, monkeypatch):
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
    assert beats_by_job == []


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
