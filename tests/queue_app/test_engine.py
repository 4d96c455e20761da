"""The engine running jobs on a real (in-process) Forge simulator over HTTP, without Celery:
`server_run` is what a worker's run_server task calls."""

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core_app.errors import InvalidInput
from core_app.scopes import local_user
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app import dispatch, engine
from queue_app.engine import server_run
from queue_app.models import Job, JobImage, JobStatus
from queue_app.services import job_cancel, job_submit
from queue_app.tasks import run_server
from servers_app.models import Server
from servers_app.services import server_check_health
from tests.integration.procs import wait_until
from tests.support import checked_server, run_queue_in_thread, submit

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = [
    SimModel("Pony/cyberrealisticPony_v8.safetensors"),
    SimModel("sdxl/juggernaut.safetensors"),
]


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(flavour="forge-2", path_separator="\\", models=MODELS, seconds_per_step=0)
    ).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def server(sim, settings) -> Server:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    return checked_server(sim.url)


def test_health_check_learns_flavour_checkpoints_and_loaded_model(server):
    assert server.is_online is True
    assert server.flavour == "forge"
    titles = set(server.cached_models.values_list("title", flat=True))
    assert "Pony\\cyberrealisticPony_v8.safetensors" in titles
    assert server.loaded_checkpoint


def test_job_runs_to_completion_with_its_images(server, sim):
    job = submit(checkpoint_name="Pony/cyberrealisticPony_v8.safetensors", seed=1234, num_images=2)

    assert server_run(server.pk) == 1

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert job.forge_session_hash == str(job.pk)
    assert job.completed_at is not None
    names = job.result_details["images"]
    assert len(names) == 2
    assert re.fullmatch(rf"{job.pk.hex[:8]}_\d{{13}}_00000-1234\.png", names[0])
    assert names[1].endswith("_00001-1235.png")
    assert job.result_details["info"] == "Job completed and images downloaded by MobileSD backend."
    assert job.result_details["generation_info"]["all_seeds"] == [1234, 1235]
    images = list(JobImage.objects.filter(job=job))
    assert [(i.index, i.seed, i.width, i.height) for i in images] == [
        (0, 1234, 64, 64),
        (1, 1235, 64, 64),
    ]
    assert "Seed: 1234" in images[0].infotext
    assert images[0].file.storage.exists(images[0].file.name)


def test_checkpoint_is_sent_as_the_servers_exact_title(server, sim):
    submit(checkpoint_name="Pony/cyberrealisticPony_v8.safetensors")

    server_run(server.pk)

    received = sim.wait_for_event("txt2img_received")
    assert received["checkpoint"].startswith("Pony\\cyberrealisticPony_v8.safetensors")
    server.refresh_from_db()
    assert server.loaded_checkpoint.startswith("Pony\\cyberrealisticPony_v8.safetensors")


def test_unknown_checkpoint_is_refused_at_submit_when_the_cache_is_fresh(server, sim):
    with pytest.raises(InvalidInput) as refused:
        submit(checkpoint_name="Pony/cyberrealisticPony_v9.safetensors")

    message = refused.value.fields["generation_params.checkpoint_name"][0]
    assert "cyberrealisticPony_v9" in message
    assert "Did you mean: Pony\\cyberrealisticPony_v8.safetensors" in message
    assert not Job.objects.exists()


def test_unknown_checkpoint_fails_clearly_at_dispatch_when_the_cache_is_old(server, sim):
    Server.objects.filter(pk=server.pk).update(models_refreshed_at=None)
    job = submit(checkpoint_name="Pony/cyberrealisticPony_v9.safetensors")

    server_run(server.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "cyberrealisticPony_v9" in job.result_details["error"]
    assert "cyberrealisticPony_v8" in job.result_details["error"]  # the close match
    assert sim.request_count("POST", "/sdapi/v1/txt2img") == 0


def test_progress_is_written_while_running(server, sim, settings):
    sim.config.seconds_per_step = 0.05
    job = submit(steps=30)

    thread = run_queue_in_thread(server.pk)
    progress = wait_until(
        lambda: (Job.objects.get(pk=job.pk).progress or {}).get("fraction"), timeout=10
    )
    thread.join(10)

    assert 0 < progress < 1
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED


def test_cancel_while_processing_interrupts_the_server(server, sim):
    sim.config.seconds_per_step = 0.05
    job = submit(steps=200)
    thread = run_queue_in_thread(server.pk)
    sim.wait_for_event("txt2img_started", timeout=10)

    job_cancel(job_id=job.pk, owner=None)
    thread.join(15)

    interrupt = sim.wait_for_event("interrupt", timeout=5)
    assert interrupt["task_id"] == str(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.result_details == {"cancelled": True, "message": "Job cancelled by user"}
    assert not JobImage.objects.exists()


def test_a_500_is_retried_and_then_completes(server, sim, settings):
    settings.MOBILESD_RETRY_BACKOFF_SECONDS = 0.001
    sim.faults.error_500_next = 1
    job = submit()

    server_run(server.pk)  # fails once, the retry is due at once
    server_run(server.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert job.retry_count == 1
    assert job.forge_session_hash == f"{job.pk}.1"
    assert JobImage.objects.filter(job=job).count() == 1


def test_dropped_connection_is_retried(server, sim, settings):
    settings.MOBILESD_RETRY_BACKOFF_SECONDS = 0.001
    sim.faults.drop_mid_job = 1
    job = submit()

    server_run(server.pk)
    server_run(server.pk)

    job.refresh_from_db()
    assert (job.status, job.retry_count) == (JobStatus.COMPLETED, 1)


def test_unreachable_server_keeps_the_job_pending_uncounted(server, sim):
    sim.faults.refuse_connections = True
    job = submit()

    server_run(server.pk)

    job.refresh_from_db()
    server.refresh_from_db()
    assert (job.status, job.retry_count) == (JobStatus.PENDING, 0)
    assert server.is_online is False
    assert "could not connect" in server.last_error
    # Back online: the health check says so and the job runs.
    sim.faults.refuse_connections = False
    assert server_check_health(server=server).came_back
    server_run(server.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED


def test_loras_and_negative_prompt_reach_the_server(server, sim):
    submit(negative_prompt="blurry", loras=[{"name": "add_detail.safetensors", "weight": 0.6}])

    server_run(server.pk)

    image = JobImage.objects.get()
    assert "<lora:add_detail:0.6>" in image.infotext  # the name the server knows
    assert "Negative prompt: blurry" in image.infotext


# -- the next job, reserved while the current one generates ----------------------------------


def sent_order(sim: ForgeSimulator) -> list[str]:
    return [event["task_id"] for event in sim.events.of_type("txt2img_received")]


def reserved_while_pending(job: Job) -> bool:
    job.refresh_from_db()
    return job.status == JobStatus.PENDING and job.lease_token is not None


def running_with_a_reservation(server: Server, sim: Any) -> tuple[Job, Job, threading.Thread]:
    """A long job running on the server's loop (in a thread) and the next one reserved."""
    sim.config.seconds_per_step = 0.05
    first = submit(steps=40)
    reserved = submit()
    thread = run_queue_in_thread(server.pk)
    wait_until(lambda: reserved_while_pending(reserved), timeout=10, what="the reservation")
    return first, reserved, thread


def test_each_next_job_starts_from_its_reservation(server, sim, caplog):
    caplog.set_level("INFO", logger="queue_app.dispatch")
    jobs = [submit(seed=i) for i in range(3)]

    assert server_run(server.pk) == 3

    assert sent_order(sim) == [str(job.pk) for job in jobs]
    # The first is claimed; each later one is started from the reservation made while the
    # job before it generated.
    claimed = [m.split()[2] for m in caplog.messages if m.startswith("Claimed job")]
    started = [m.split()[3] for m in caplog.messages if m.startswith("Started reserved job")]
    assert claimed == [str(jobs[0].pk)]
    assert started == [str(jobs[1].pk), str(jobs[2].pk)]
    for job in jobs:
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED
        assert job.lease_token is None
    assert JobImage.objects.count() == 3
    # Pipelined: a job's images are stored (and it completes) only once the next job has
    # been started, so the server never waits for the storage.
    assert jobs[0].completed_at > jobs[1].started_at
    assert jobs[1].completed_at > jobs[2].started_at


def test_a_job_cancelled_while_reserved_never_runs(server, sim):
    sim.config.seconds_per_step = 0.05
    first = submit(steps=40)
    second, third = submit(), submit()
    thread = run_queue_in_thread(server.pk)
    wait_until(lambda: reserved_while_pending(second), timeout=10, what="the reservation")

    job_cancel(job_id=second.pk, owner=None)
    thread.join(20)

    assert sent_order(sim) == [str(first.pk), str(third.pk)]
    assert Job.objects.get(pk=second.pk).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=third.pk).status == JobStatus.COMPLETED


def test_a_job_queued_while_the_server_runs_is_reserved_at_its_nudge(
    server, sim, caplog, monkeypatch
):
    caplog.set_level("INFO", logger="queue_app.dispatch")
    sim.config.seconds_per_step = 0.05
    reservations: list[Any] = []
    reserve = dispatch.job_reserve_next

    def recorded_reserve(**kwargs: Any) -> Any:
        reservations.append(reserve(**kwargs))
        return reservations[-1]

    monkeypatch.setattr(dispatch, "job_reserve_next", recorded_reserve)
    first = submit(steps=40)
    thread = run_queue_in_thread(server.pk)
    wait_until(lambda: reservations == [None], timeout=10, what="a reservation finding nothing")
    # Queued after the running job's loop looked for the job after it: the job's nudge
    # reaches the worker running the server's loop.
    later = submit()
    run_server(server.pk)

    wait_until(lambda: reserved_while_pending(later), timeout=10, what="the reservation")
    first.refresh_from_db()
    assert first.status == JobStatus.PROCESSING
    thread.join(20)

    assert sent_order(sim) == [str(first.pk), str(later.pk)]
    started = [m.split()[3] for m in caplog.messages if m.startswith("Started reserved job")]
    assert started == [str(later.pk)]
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.COMPLETED}


def test_a_nudge_leaves_a_loop_that_holds_a_reservation_or_has_no_job_alone(server, sim):
    first, reserved, thread = running_with_a_reservation(server, sim)

    # One is held: the nudge of a third job begins no other.
    third = submit()
    assert engine.server_reserve_again(server.pk) is False
    thread.join(20)

    assert sent_order(sim) == [str(first.pk), str(reserved.pk), str(third.pk)]
    # No loop of the server runs here any more: nothing to ask.
    assert engine.server_reserve_again(server.pk) is False


def test_a_job_of_higher_priority_submitted_meanwhile_runs_next(server, sim):
    first, reserved, thread = running_with_a_reservation(server, sim)

    urgent, _ = job_submit(
        owner=local_user(),
        target_server_alias="Laptop",
        generation_params={"positive_prompt": "now", "steps": 4, "width": 64, "height": 64},
        priority=5,
    )
    thread.join(20)

    assert sent_order(sim) == [str(first.pk), str(urgent.pk), str(reserved.pk)]
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.COMPLETED}
    assert Job.objects.get(pk=reserved.pk).lease_token is None


def test_a_failed_job_gives_its_reservation_back_to_the_normal_claim(server, sim, settings):
    settings.MOBILESD_MAX_RETRIES = 0
    sim.faults.error_500_next = 1
    failing, following = submit(), submit()

    server_run(server.pk)

    assert Job.objects.get(pk=failing.pk).status == JobStatus.FAILED
    assert Job.objects.get(pk=following.pk).status == JobStatus.COMPLETED
    assert sent_order(sim) == [str(failing.pk), str(following.pk)]


def test_claims_starts_and_completions_flush_and_only_reservations_do_not(server, sim, monkeypatch):
    """A request goes out after a claim or a start: one lost in a PostgreSQL crash would
    leave the job pending while it generates, to be run again uncounted, so they wait for
    the disk, as completions do. Reservations need not (a lost one only makes the start
    fail and the job be claimed as usual). The loop's connection is left at the default."""
    from django.db import connection

    from queue_app import dispatch

    if connection.vendor != "postgresql":
        pytest.fail("synchronous_commit is PostgreSQL's: run the suite on it (make test).")

    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    seen: dict[str, list[str]] = {"claim": [], "reserve": [], "start": [], "complete": []}

    def spy(name, original):
        def wrapper(**kwargs):
            seen[name].append(setting())
            return original(**kwargs)

        return wrapper

    monkeypatch.setattr(dispatch, "job_claim_next", spy("claim", dispatch.job_claim_next))
    monkeypatch.setattr(dispatch, "job_reserve_next", spy("reserve", dispatch.job_reserve_next))
    monkeypatch.setattr(dispatch, "job_start_reserved", spy("start", dispatch.job_start_reserved))
    monkeypatch.setattr(dispatch, "job_complete", spy("complete", dispatch.job_complete))
    submit(), submit()

    assert server_run(server.pk) == 2

    assert set(seen["claim"]) == {"on"}  # the first job's, and the last look (none left)
    assert seen["start"] == ["on"]
    assert seen["complete"] == ["on", "on"]
    assert set(seen["reserve"]) == {"off"}
    assert setting() == "on"


def test_a_loop_counts_as_waiting_only_until_each_request_is_out(server, sim, monkeypatch):
    at_sending: list[bool] = []
    while_generating: list[bool] = []
    bookkeep, reserve = engine._ServerLoop._bookkeep, dispatch.job_reserve_next

    def probed_bookkeep(self, running, finished):  # called once each request is out
        at_sending.append(engine.servers_waiting.wait_until_none(0))
        bookkeep(self, running, finished)

    def probed_reserve(**kwargs):  # while the job before generates
        while_generating.append(engine.servers_waiting.wait_until_none(0))
        return reserve(**kwargs)

    monkeypatch.setattr(engine._ServerLoop, "_bookkeep", probed_bookkeep)
    monkeypatch.setattr(dispatch, "job_reserve_next", probed_reserve)
    submit(seed=1)
    submit(seed=2)

    assert server_run(server.pk) == 2
    assert server_run(server.pk) == 0  # none to claim: it counted, and no longer does

    assert at_sending == [False, False]  # its start, then the answer to the first job
    assert while_generating == [True, True]
    assert engine.servers_waiting.wait_until_none(0)


def test_helper_threads_wait_while_another_server_waits_at_most_the_bound(server, sim, monkeypatch):
    monkeypatch.setattr(engine, "YIELD_SECONDS", 0.3)
    jobs = [submit(seed=i) for i in range(2)]
    engine.servers_waiting.begin()  # another server's loop that has not sent its request
    try:
        began = time.monotonic()
        assert server_run(server.pk) == 2
        took = time.monotonic() - began
    finally:
        engine.servers_waiting.end()

    # The second job started from its reservation, made once the wait was over.
    assert took >= 0.3
    for job in jobs:
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED


def test_waiting_for_servers_ends_when_the_last_one_is_served():
    engine.servers_waiting.begin()
    engine.servers_waiting.begin()
    waited = threading.Event()
    waiter = threading.Thread(
        target=lambda: engine.servers_waiting.wait_until_none(30) and waited.set()
    )
    waiter.start()
    engine.servers_waiting.end()
    assert not engine.servers_waiting.wait_until_none(0)  # one still waits
    engine.servers_waiting.end()

    assert waited.wait(10)
    waiter.join(10)
