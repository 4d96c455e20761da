"""A waiting job's place in the queue and its ETA (queue_app.eta), and how the API shows
them. The servers' measurements are written directly: 0.1 s per step at 512x512 (a job of
20 steps takes 2 s) and 5 s to load a checkpoint."""

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from model_bakery import baker

from core_app.scopes import local_user
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app.engine import server_run
from queue_app.eta import QueuePlace, job_queue_place, job_work
from queue_app.models import Job, JobStatus, QueueState
from servers_app.models import CachedModel, ModelKind, Server, ServerPerformance
from servers_app.performance import Work
from tests.support import checked_server, submit

A, B, C = "a.safetensors", "b.safetensors", "c.safetensors"
START = timezone.now() - timedelta(hours=1)


@pytest.fixture
def laptop(db) -> Server:
    server = baker.make(
        Server, alias="Laptop", is_online=True, loaded_checkpoint=f"{A} [0123456789]"
    )
    measure(server)
    return server


def with_checkpoints(server: Server) -> Server:
    """The server has A, B and C in its model cache (where "any" jobs may run)."""
    for name in (A, B, C):
        baker.make(
            CachedModel,
            server=server,
            kind=ModelKind.CHECKPOINT,
            title=f"{name} [0123456789]",
            name=name.split(".")[0],
            relative_path=name,
            filename=f"/models/{name}",
            lookup_key=name,
            stem_key=name.split(".")[0],
            identity=name,
        )
    return server


def measure(server: Server, *, per_step: float = 0.1, load: float = 5.0) -> None:
    ServerPerformance.objects.create(
        server=server,
        step_seconds={"512x512": {"mean": per_step, "n": 5}},
        load_seconds={key: {"mean": load, "n": 2} for key in (A, B, C)},
    )


AGE = iter(range(10**6))


def waiting(server: Server | None, checkpoint: str = A, *, priority: int = 0, **fields) -> Job:
    """A pending job of 20 steps at 512x512, younger than every job made before."""
    job = baker.make(
        Job,
        server=server,
        target_server_alias=server.alias if server else "any",
        generation_params={"checkpoint_name": checkpoint, "steps": 20, "width": 512, "height": 512},
        checkpoint_key=checkpoint,
        priority=priority,
        owner=local_user(),
        **fields,
    )
    Job.objects.filter(pk=job.pk).update(created_at=START + timedelta(seconds=next(AGE)))
    job.refresh_from_db()
    return job


def place(job: Job, *, now: datetime | None = None) -> QueuePlace | None:
    job.refresh_from_db()
    return job_queue_place(job=job, now=now)


def test_job_work_reads_the_parameters_with_the_servers_defaults():
    assert job_work({}) == Work(width=512, height=512, steps=20)
    assert job_work(
        {"width": "768", "steps": 30, "num_images": 2, "enable_hires_fix": True, "hires_steps": 0}
    ) == Work(width=768, height=512, steps=30, images=2, hires_scale=2.0, hires_steps=30)


def test_places_follow_priority_then_age(laptop):
    first, second = waiting(laptop), waiting(laptop)
    urgent = waiting(laptop, priority=5)

    assert place(urgent) == QueuePlace(1, 0.0, 2.0)
    assert place(first) == QueuePlace(2, 2.0, 4.0)
    assert place(second) == QueuePlace(3, 4.0, 6.0)


def test_at_equal_priority_places_follow_the_users_turns(laptop):
    """The order of the fair turns (queue_app.turns): an earlier turn starts first, even
    when the job is younger."""
    batch = [waiting(laptop, turn=turn) for turn in (1, 2, 3)]
    single = waiting(laptop, turn=2)

    assert [place(job).position for job in batch] == [1, 2, 4]
    assert place(single).position == 3


def test_the_running_jobs_remaining_time_comes_first(laptop):
    # One clock for both, so the time the test takes (long on a loaded machine) is not
    # counted as the running job's.
    now = timezone.now()
    waiting(laptop, status=JobStatus.PROCESSING, started_at=now - timedelta(seconds=0.5))
    job = waiting(laptop)

    found = place(job, now=now)

    assert found is not None
    assert found.position == 1
    assert found.start_seconds == pytest.approx(1.5, abs=0.1)
    assert found.end_seconds == pytest.approx(3.5, abs=0.1)


def test_the_checkpoint_switches_ahead_are_counted_from_the_loaded_one(laptop):
    waiting(laptop, B), waiting(laptop, B)
    job = waiting(laptop, C)

    # B is loaded (5 s) for two jobs (2 s each), then C (5 s).
    assert place(job) == QueuePlace(3, 9.0, 16.0)


def test_the_look_ahead_runs_the_loaded_checkpoints_job_first_as_the_scheduler_does(laptop):
    other = waiting(laptop, B)
    same = waiting(laptop, A)

    assert place(same) == QueuePlace(1, 0.0, 2.0)
    assert place(other) == QueuePlace(2, 2.0, 9.0)


def test_with_plain_fifo_the_order_is_the_queues(laptop, settings):
    settings.MOBILESD_SCHEDULER_LOOKAHEAD = 1
    waiting(laptop, B)
    same = waiting(laptop, A)

    assert place(same) == QueuePlace(2, 7.0, 14.0)  # B loaded, run; A loaded again


def test_a_reserved_job_runs_next_whatever_the_order(laptop):
    first = waiting(laptop)
    reserved = waiting(
        laptop,
        lease_token=uuid.uuid4(),
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )

    assert place(reserved) == QueuePlace(1, 0.0, 2.0)
    assert place(first) == QueuePlace(2, 2.0, 4.0)


def test_without_measurements_the_place_is_known_but_not_the_eta(db):
    server = baker.make(Server, alias="Desktop", is_online=True)
    waiting(server)
    job = waiting(server)

    assert place(job) == QueuePlace(2, None, None)


def test_a_job_of_an_offline_server_has_a_place_but_no_eta(laptop):
    Server.objects.filter(pk=laptop.pk).update(is_online=False)
    job = waiting(laptop)

    assert place(job) == QueuePlace(1, None, None)


@pytest.mark.parametrize("state", ["paused_at", "quarantined_at"])
def test_a_job_of_a_paused_or_quarantined_server_has_a_place_but_no_eta(laptop, state):
    Server.objects.filter(pk=laptop.pk).update(**{state: timezone.now()})
    waiting(laptop)
    job = waiting(laptop)

    assert place(job) == QueuePlace(2, None, None)


def test_while_the_queue_is_paused_jobs_have_places_but_no_eta(laptop):
    QueueState.objects.create(paused_at=timezone.now())
    waiting(laptop)
    job = waiting(laptop)

    assert place(job) == QueuePlace(2, None, None)


def desktop_beside(laptop: Server, *, loaded: str = A) -> Server:
    with_checkpoints(laptop)
    desktop = baker.make(
        Server, alias="Desktop", is_online=True, loaded_checkpoint=f"{loaded} [0123456789]"
    )
    measure(desktop)
    return with_checkpoints(desktop)


def test_a_pinned_job_waits_for_the_any_jobs_ahead_its_server_takes(laptop):
    desktop_beside(laptop)
    for _ in range(4):
        waiting(None)
    job = waiting(laptop)

    # Four "any" jobs ahead, two servers taking them: two of them here.
    assert place(job) == QueuePlace(3, 4.0, 6.0)


def test_an_any_job_goes_first_to_the_server_that_has_its_checkpoint_loaded(laptop):
    desktop_beside(laptop, loaded=B)
    waiting(laptop, A), waiting(laptop, A)
    job = waiting(None, B)

    # The laptop is busy with its own A jobs; the desktop has B loaded and is free.
    assert place(job) == QueuePlace(1, 0.0, 2.0)


def test_any_jobs_are_only_counted_where_their_checkpoint_is(laptop):
    desktop = baker.make(Server, alias="Desktop", is_online=True)
    measure(desktop)  # measured, but without A in its model cache
    with_checkpoints(laptop)
    for _ in range(4):
        waiting(None)
    job = waiting(laptop)

    assert place(job) == QueuePlace(5, 8.0, 10.0)


def test_an_any_jobs_place_is_among_the_any_jobs_and_its_eta_over_the_online_servers(laptop):
    desktop_beside(laptop)
    waiting(None), waiting(None)
    job = waiting(None)

    # Two "any" jobs ahead (2 s each), shared by two idle servers.
    assert place(job) == QueuePlace(3, 2.0, 4.0)


def test_a_job_beyond_the_exact_ones_is_estimated_from_their_mean(laptop, settings):
    settings.MOBILESD_ETA_EXACT_JOBS = 3
    jobs = [waiting(laptop) for _ in range(6)]

    assert place(jobs[-1]) == QueuePlace(6, 10.0, 12.0)


def test_the_work_is_bounded_however_deep_the_queue(
    laptop, settings, django_assert_max_num_queries
):
    settings.MOBILESD_ETA_EXACT_JOBS = 5
    jobs = [waiting(laptop, B if i % 2 else A) for i in range(40)]
    last = jobs[-1]
    last.refresh_from_db()

    with django_assert_max_num_queries(7):
        found = job_queue_place(job=last)

    assert found is not None
    assert found.position == 40


def test_only_a_pending_job_has_a_place(laptop):
    job = waiting(laptop, status=JobStatus.PROCESSING, started_at=timezone.now())

    assert place(job) is None


# --- the API ------------------------------------------------------------------------------


def test_a_pending_jobs_status_carries_its_place_and_eta(client, laptop):
    waiting(laptop)
    job = waiting(laptop)

    for path in (f"/api/v1/queue/jobs/{job.pk}/status", f"/api/v1/queue/jobs/{job.pk}"):
        body = client.get(path).json()

        assert body["queue_position"] == 2
        assert body["eta_seconds"] == {"start": 2.0, "end": 4.0}


def test_a_running_or_finished_jobs_status_has_no_place(client, laptop):
    running = waiting(laptop, status=JobStatus.PROCESSING, started_at=timezone.now())
    done = waiting(laptop, status=JobStatus.COMPLETED)

    for job in (running, done):
        body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

        assert body["queue_position"] is None
        assert body["eta_seconds"] is None


def test_the_list_leaves_place_and_eta_out_to_stay_cheap(client, laptop):
    waiting(laptop)

    body = client.get("/api/v1/queue/jobs").json()

    assert body["jobs"][0]["status"] == "pending"
    assert body["jobs"][0]["queue_position"] is None
    assert body["jobs"][0]["eta_seconds"] is None


# --- measured by the engine ----------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(
            models=[SimModel(A), SimModel(B)],
            seconds_per_step=0.02,
            checkpoint_switch_seconds=0.3,
        )
    ).start()
    yield simulator
    simulator.stop()


@pytest.mark.django_db(transaction=True)
def test_completed_jobs_record_the_servers_speed_and_the_load_they_caused(sim):
    server = checked_server(sim.url)
    loaded = server.loaded_checkpoint.split(" [")[0]
    other = B if loaded == A else A
    # The simulator loads its first checkpoint at its first job (a real server, at start).
    sim.config.checkpoint_switch_seconds = 0.0
    submit(checkpoint_name=loaded, steps=1)
    assert server_run(server.pk) == 1
    ServerPerformance.objects.all().delete()
    sim.config.checkpoint_switch_seconds = 0.3
    submit(checkpoint_name=loaded, steps=10)
    submit(checkpoint_name=other, steps=10)

    assert server_run(server.pk) == 2

    row = ServerPerformance.objects.get(server=server)
    per_step = row.step_seconds["64x64"]
    assert per_step["n"] == 1
    assert per_step["mean"] == pytest.approx(0.02, rel=0.5)
    assert set(row.load_seconds) == {other}
    assert row.load_seconds[other]["mean"] == pytest.approx(0.3, abs=0.15)


def test_an_any_job_beyond_the_exact_ones_is_estimated_from_their_mean(laptop, settings):
    settings.MOBILESD_ETA_EXACT_JOBS = 2
    with_checkpoints(laptop)
    jobs = [waiting(None) for _ in range(5)]

    assert place(jobs[-1]) == QueuePlace(5, 8.0, 10.0)
