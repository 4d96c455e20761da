"""The engine through database outages shorter than the lease: a running job keeps its
lease, and a finished generation is recorded once the database is back, never generated
again. The engine runs a server's queue in-process against a Forge simulator over HTTP;
the outage is injected where Django reaches PostgreSQL (each query and each connect of the
chosen threads fails, and the connection they held is broken, as a restart breaks it)."""

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.db.backends.postgresql.base import DatabaseWrapper
from django.db.backends.utils import CursorWrapper

from integrations.forge.client import ForgeClient
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app import dispatch
from queue_app.engine import Monitor, server_run
from queue_app.models import Job, JobImage, JobStatus
from servers_app.models import Server
from tests.integration.procs import wait_until
from tests.support import checked_server, submit

pytestmark = pytest.mark.django_db(transaction=True)

# The outage is injected at PostgreSQL's connect (DatabaseWrapper of its backend): on
# SQLite the threads' connections never fail to open, so an outage is only half there.
POSTGRESQL_ONLY = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the outage breaks PostgreSQL's connects; SQLite's would still open",
)

PONY = "Pony/cyberrealisticPony_v8.safetensors"
SDXL = "sdxl/juggernaut.safetensors"


class DatabaseOutage:
    """The database unreachable for threads whose names start with a given prefix, for a
    number of failed queries or connects per prefix (`budget`), from `start()` on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, budget: dict[str, int]) -> None:
        self.left = dict(budget)
        self.failed: Counter[str] = Counter()
        self.started = threading.Event()
        self._lock = threading.Lock()
        real_execute = CursorWrapper.execute
        real_connect = DatabaseWrapper.get_new_connection
        outage = self

        def execute(cursor: CursorWrapper, sql: Any, params: Any = None) -> Any:
            outage.check(cursor.db)
            return real_execute(cursor, sql, params)

        def get_new_connection(db: Any, conn_params: Any) -> Any:
            outage.check(None)
            return real_connect(db, conn_params)

        monkeypatch.setattr(CursorWrapper, "execute", execute)
        monkeypatch.setattr(DatabaseWrapper, "get_new_connection", get_new_connection)

    def start(self) -> None:
        self.started.set()

    def check(self, db: Any) -> None:
        if not self.started.is_set():
            return
        name = threading.current_thread().name
        prefix = next((p for p in self.left if name.startswith(p)), None)
        if prefix is None:
            return
        with self._lock:
            if self.left[prefix] <= 0:
                return
            self.left[prefix] -= 1
            self.failed[prefix] += 1
        if db is not None and db.connection is not None:
            db.connection.close()  # broken under Django: only a new connection works again
        raise OperationalError("server closed the connection unexpectedly")


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(
            flavour="forge-2",
            models=[SimModel(SDXL), SimModel(PONY)],
            initial_checkpoint=SDXL,
            seconds_per_step=0,
        )
    ).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def server(sim, settings) -> Server:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    return checked_server(sim.url)


def run_queue(server_id: int) -> threading.Thread:
    """`server_run` in a thread named "loop" (the outage picks threads by name)."""

    def target() -> None:
        try:
            server_run(server_id)
        finally:
            connection.close()

    thread = threading.Thread(target=target, name="loop", daemon=True)
    thread.start()
    return thread


@POSTGRESQL_ONLY
def test_a_database_outage_shorter_than_the_lease_keeps_a_running_job(
    server, sim, settings, monkeypatch
):
    settings.MOBILESD_LEASE_SECONDS = 3.0
    sim.config.seconds_per_step = 0.1
    job = submit(steps=60)  # 6 s: twice the lease
    outage = DatabaseOutage(monkeypatch, {"monitor-": 20})  # 20 beats: about 1 s
    outage.start()
    recovered: list[dispatch.Orphan] = []

    thread = run_queue(server.pk)

    def finished() -> bool:
        # What the reconcile task does meanwhile: requeue the job if its lease lapsed.
        recovered.extend(dispatch.jobs_recover_expired_leases())
        return Job.objects.get(pk=job.pk).status != JobStatus.PROCESSING and not thread.is_alive()

    wait_until(finished, timeout=30, interval=0.1, what="the job to finish")
    assert recovered == []
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.result_details
    assert job.retry_count == 0
    assert outage.failed["monitor-"] == 20
    assert sim.request_count("POST", "/sdapi/v1/txt2img") == 1
    assert not any(e["interrupted"] for e in sim.events.of_type("txt2img_finished"))


def test_a_lease_taken_over_still_stops_the_monitor_without_interrupting(server, sim):
    sim.config.seconds_per_step = 0.1
    job = submit(steps=100)
    thread = run_queue(server.pk)
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == str(job.pk), timeout=10)
    claim = dispatch.Claim(
        job=Job.objects.get(pk=job.pk), server=server, token=job.lease_token, task_id=str(job.pk)
    )
    monitor = Monitor(claim)  # a monitor whose token is no longer the job's: another worker's

    monitor.start()
    monitor.join(5)

    assert not monitor.is_alive()
    assert sim.request_count("POST", "/sdapi/v1/interrupt") == 0
    sim.config.seconds_per_step = 0
    thread.join(20)


@POSTGRESQL_ONLY
def test_a_generation_finished_while_the_database_is_down_is_recorded_once_it_is_back(
    server, sim, monkeypatch
):
    generated = Counter[str]()
    real_txt2img = ForgeClient.txt2img

    def txt2img_then_outage(client: ForgeClient, *args: Any, **kwargs: Any) -> Any:
        result = real_txt2img(client, *args, **kwargs)
        generated[str(args[0]["force_task_id"])] += 1
        outage.start()  # the database drops the moment the generation is back
        return result

    # The loop thread (the loaded-checkpoint note, the next claim) and the storing thread
    # (the completion and the lease renewal before its retry) each fail twice.
    outage = DatabaseOutage(monkeypatch, {"loop": 2, "store-": 2})
    monkeypatch.setattr(ForgeClient, "txt2img", txt2img_then_outage)
    job = submit(checkpoint_name=PONY, num_images=2, seed=7)

    thread = run_queue(server.pk)
    thread.join(30)

    assert not thread.is_alive()
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.result_details
    assert job.retry_count == 0
    assert generated == {str(job.pk): 1}
    assert sim.request_count("POST", "/sdapi/v1/txt2img") == 1
    assert outage.failed == {"loop": 2, "store-": 2}
    images = list(JobImage.objects.filter(job=job).order_by("index"))
    assert [(image.index, image.seed) for image in images] == [(0, 7), (1, 8)]
    assert all(image.file.storage.exists(image.file.name) for image in images)
    assert job.result_details["checkpoint"].startswith(PONY)
    server.refresh_from_db()
    assert server.loaded_checkpoint.startswith(PONY)  # noted with the completion
