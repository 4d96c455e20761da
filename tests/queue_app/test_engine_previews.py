"""The engine's live previews and progress writes, against a real (in-process) Forge
simulator over HTTP, without Celery: the monitor reads previews while a job runs, writes
them with the progress (only when changed, at most every MOBILESD_PROGRESS_MIN_SECONDS),
and they are gone once the job ends."""

import io
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from model_bakery import baker
from PIL import Image

from integrations.forge.simulator import ForgeSimulator
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
