"""The generation engine for real: Celery worker and beat processes on PostgreSQL and Redis,
jobs submitted as the API does (the nudge is a real broker message), run on Forge
simulators over HTTP. Workers are killed, simulators restarted and refused, and every job
still ends exactly once, with its images stored once."""

import signal
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import requests
from django.conf import settings
from django.db import transaction
from model_bakery import baker

from core_app.models import WorkerHeartbeat
from core_app.scopes import local_user
from queue_app.models import FINISHED_STATUSES, Job, JobImage, JobStatus
from queue_app.services import CANCELLED_DETAILS, job_submit
from queue_app.tasks import run_server
from servers_app.models import Server
from tests.integration.procs import embedded_mobilesd, wait_until
from tests.support import assert_documented_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def submit(alias: str, **params: Any) -> Job:
    """Queue a job the way POST /api/v1/generate does (the nudge is published on commit)."""
    params.setdefault("positive_prompt", "a lighthouse at dusk")
    params.setdefault("steps", 8)
    params.setdefault("width", 64)
    params.setdefault("height", 64)
    job, _ = job_submit(owner=local_user(), target_server_alias=alias, generation_params=params)
    return job


def wait_finished(jobs: Iterable[Job], *, timeout: float = 30) -> list[Job]:
    """The jobs' rows once every one of them is completed, failed or cancelled."""
    ids = [job.pk for job in jobs]

    def finished() -> list[Job] | None:
        rows = {row.pk: row for row in Job.objects.filter(pk__in=ids)}
        if len(rows) == len(ids) and all(row.status in FINISHED_STATUSES for row in rows.values()):
            return [rows[pk] for pk in ids]
        return None

    try:
        return wait_until(finished, timeout=timeout, what="the jobs to finish")
    except TimeoutError:
        states = Job.objects.filter(pk__in=ids).values_list("pk", "status", "result_details")
        raise AssertionError(f"Jobs not finished in {timeout}s: {list(states)}") from None


def assert_all_completed(rows: list[Job]) -> None:
    assert [row.status for row in rows] == [JobStatus.COMPLETED] * len(rows), [
        (row.pk, row.status, row.result_details) for row in rows
    ]


def received(*sims: Any) -> Counter[str]:
    """How often each task id was sent to these simulators as a txt2img."""
    return Counter(
        event["task_id"] for sim in sims for event in sim.events.of_type("txt2img_received")
    )


def most_in_flight(sim: Any) -> int:
    """The most txt2img requests this simulator held at once (received, not yet finished)."""
    events = [e for e in sim.events if e["type"] in ("txt2img_received", "txt2img_finished")]
    in_flight = peak = 0
    for event in sorted(events, key=lambda e: e["seq"]):
        in_flight += 1 if event["type"] == "txt2img_received" else -1
        peak = max(peak, in_flight)
    return peak


def stored_files(job: Job) -> set[str]:
    """Storage names of every file under MEDIA_ROOT/jobs that belongs to this job."""
    root = Path(settings.MEDIA_ROOT)
    return {
        path.relative_to(root).as_posix()
        for path in (root / "jobs").rglob(f"{job.pk.hex[:8]}_*")
        if path.is_file()
    }


def test_a_batch_on_two_servers_completes_with_its_images_in_the_documented_shape(
    engine, sims, client
):
    laptop_sim, desktop_sim = sims(), sims()
    laptop = baker.make(Server, alias="batch-laptop", api_url=laptop_sim.url)
    desktop = baker.make(Server, alias="batch-desktop", api_url=desktop_sim.url)
    plan = [
        (laptop if i % 2 else desktop, 2 if i % 3 == 0 else 1, 1000 * (i + 1)) for i in range(10)
    ]

    jobs = [(submit(server.alias, num_images=n, seed=seed), n, seed) for server, n, seed in plan]

    assert_all_completed(wait_finished(job for job, _, _ in jobs))
    for job, num_images, seed in jobs:
        body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()
        assert_documented_job(body)
        assert body["status"] == "completed"
        assert body["completion_timestamp"] is not None
        assert body["forge_session_hash"] == str(job.pk)
        assert body["retry_count"] == 0
        images = list(JobImage.objects.filter(job=job).order_by("index"))
        assert [image.index for image in images] == list(range(num_images))
        details = body["result_details"]
        assert details["images"] == [PurePosixPath(image.file.name).name for image in images]
        assert all(name.startswith(job.pk.hex[:8]) for name in details["images"])
        assert all(image.file.storage.exists(image.file.name) for image in images)
        assert stored_files(job) == {image.file.name for image in images}
        assert details["generation_info"]["all_seeds"] == [seed + k for k in range(num_images)]
        assert [image.seed for image in images] == details["generation_info"]["all_seeds"]
    # Each server ran exactly its own jobs, each once.
    assert received(laptop_sim) == {str(j.pk): 1 for j, _, _ in jobs if j.server_id == laptop.pk}
    assert received(desktop_sim) == {str(j.pk): 1 for j, _, _ in jobs if j.server_id == desktop.pk}
    assert JobImage.objects.count() == sum(n for _, n, _ in jobs)


def test_cancel_pending_never_reaches_the_server_and_cancel_processing_interrupts_it(
    engine, sims, client
):
    sim = sims(seconds_per_step=0.2)
    baker.make(Server, alias="cancel-laptop", api_url=sim.url)
    running = submit("cancel-laptop", steps=150)  # 30 s unless interrupted (150: the most)
    queued = submit("cancel-laptop")  # waits in MobileSD's queue: one slot
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == str(running.pk), timeout=15)

    cancel_queued = client.post(f"/api/v1/queue/jobs/{queued.pk}/cancel")
    cancel_running = client.post(f"/api/v1/queue/jobs/{running.pk}/cancel")

    assert cancel_queued.json()["job"]["status"] == "cancelled"
    assert cancel_running.json()["job"]["status"] == "cancelled"
    sim.wait_for_event("interrupt", lambda e: e["task_id"] == str(running.pk), timeout=10)
    finished = sim.wait_for_event(
        "txt2img_finished", lambda e: e["task_id"] == str(running.pk), timeout=10
    )
    assert finished["interrupted"] is True
    # A job submitted afterwards runs next on that server: the cancelled one was skipped.
    sim.config.seconds_per_step = 0.01
    later = submit("cancel-laptop")
    assert_all_completed(wait_finished([later]))
    sent = [event["task_id"] for event in sim.events.of_type("txt2img_received")]
    assert sent == [str(running.pk), str(later.pk)]
    for job in (running, queued):
        job.refresh_from_db()
        assert job.status == JobStatus.CANCELLED
        assert job.result_details == CANCELLED_DETAILS
        assert not JobImage.objects.filter(job=job).exists()
        assert stored_files(job) == set()


def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_exactly_once(engine, sims):
    sim = sims(seconds_per_step=0.1)
    baker.make(Server, alias="kill-laptop", api_url=sim.url)
    job = submit("kill-laptop", steps=30, num_images=2)  # 6 s on the server
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == str(job.pk), timeout=15)

    assert engine.kill_worker("w1") == -9
    sim.config.seconds_per_step = 0.01
    engine.start_worker("w1")

    [job] = wait_finished([job])
    assert job.status == JobStatus.COMPLETED, job.result_details
    assert job.retry_count == 1
    assert job.forge_session_hash == f"{job.pk}.1"
    assert received(sim) == {str(job.pk): 1, f"{job.pk}.1": 1}
    images = list(JobImage.objects.filter(job=job).order_by("index"))
    assert [image.index for image in images] == [0, 1]
    assert job.result_details["images"] == [PurePosixPath(i.file.name).name for i in images]
    assert stored_files(job) == {image.file.name for image in images}


def test_a_worker_killed_while_storing_images_leaves_no_orphan_files(engine, sims):
    sim = sims(seconds_per_step=0.1)
    baker.make(Server, alias="store-laptop", api_url=sim.url)
    job = submit("store-laptop", steps=10, num_images=2)
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == str(job.pk), timeout=15)
    with transaction.atomic():
        # Hold the completion at its last step: the worker's insert of image 0 waits for this
        # uncommitted row with the same (job, index), after it has written the image files.
        JobImage.objects.create(job=job, index=0, file="jobs/blocker.png")
        wait_until(lambda: len(stored_files(job)) == 2, timeout=15, what="the image files")
        assert engine.kill_worker("w1") == -9
        transaction.set_rollback(True)
    sim.config.seconds_per_step = 0.01
    engine.start_worker("w1")

    [job] = wait_finished([job])
    assert job.status == JobStatus.COMPLETED, job.result_details
    assert job.retry_count == 1
    images = list(JobImage.objects.filter(job=job).order_by("index"))
    assert [image.index for image in images] == [0, 1]
    # The files the killed worker wrote belong to no row: they must not stay behind.
    assert stored_files(job) == {image.file.name for image in images}


def test_a_worker_asked_to_stop_finishes_its_job_and_claims_no_more(engine, sims):
    sim = sims(seconds_per_step=0.05)
    baker.make(Server, alias="drain-laptop", api_url=sim.url)
    jobs = [submit("drain-laptop", steps=10) for _ in range(3)]  # 0.5 s each
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == str(jobs[0].pk), timeout=15)

    engine.workers["w1"].signal(signal.SIGTERM)  # warm shutdown, as a deploy or Ctrl-C does

    engine.workers["w1"].popen.wait(30)
    first, *rest = (Job.objects.get(pk=job.pk) for job in jobs)
    assert (first.status, first.retry_count) == (JobStatus.COMPLETED, 0)
    assert received(sim) == {str(first.pk): 1}, "the stopping worker claimed more jobs"
    assert [job.status for job in rest] == [JobStatus.PENDING] * len(rest)
    # The next worker runs them.
    engine.start_worker("w1")
    assert_all_completed(wait_finished(rest))


def test_a_simulator_restarted_mid_job_is_retried_and_the_job_completes(engine, sims):
    sim = sims(seconds_per_step=0.1)
    baker.make(Server, alias="restart-laptop", api_url=sim.url)
    job = submit("restart-laptop", steps=40)  # 4 s on the server
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == str(job.pk), timeout=15)

    sim.config.seconds_per_step = 0.01
    sim.restart()

    sim.wait_for_event("txt2img_aborted", lambda e: e["task_id"] == str(job.pk), timeout=5)
    [job] = wait_finished([job])
    assert job.status == JobStatus.COMPLETED, job.result_details
    assert job.retry_count >= 1
    assert received(sim)[job.forge_session_hash] == 1
    images = list(JobImage.objects.filter(job=job))
    assert len(images) == 1
    assert stored_files(job) == {images[0].file.name}


def test_jobs_of_an_offline_server_wait_and_run_when_it_is_back(engine, sims, client):
    sim = sims()
    sim.faults.refuse_connections = True
    server = baker.make(Server, alias="offline-laptop", api_url=sim.url)
    jobs = [submit("offline-laptop"), submit("offline-laptop")]

    def status(job: Job) -> dict[str, Any]:
        return client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    wait_until(lambda: status(jobs[0])["server_online"] is False, timeout=15, what="offline")
    checked = Server.objects.get(pk=server.pk).last_checked_at
    assert checked is not None
    # Checked again (offline servers are, at every reconcile): still offline, jobs still wait.
    wait_until(
        lambda: Server.objects.get(pk=server.pk).last_checked_at > checked,
        timeout=10,
        what="a second health check",
    )
    for job in jobs:
        body = status(job)
        assert (body["status"], body["server_online"], body["retry_count"]) == (
            "pending",
            False,
            0,
        )
    assert received(sim) == {}

    sim.faults.refuse_connections = False

    rows = wait_finished(jobs, timeout=20)
    assert_all_completed(rows)
    assert [row.retry_count for row in rows] == [0, 0]
    assert status(jobs[0])["server_online"] is True
    assert received(sim) == {str(job.pk): 1 for job in jobs}


def test_two_workers_never_run_a_job_twice(engine, sims):
    w1_log_start = len(engine.workers["w1"].output())
    engine.start_worker("w2")
    laptop_sim, desktop_sim = sims(), sims()
    laptop = baker.make(Server, alias="pair-laptop", api_url=laptop_sim.url)
    desktop = baker.make(Server, alias="pair-desktop", api_url=desktop_sim.url)

    # One transaction: the 20 nudges are published together, so both workers race for them;
    # and each worker is also handed a nudge for both servers on its own queue, so that both
    # take part in the race however the shared queue's messages happen to be shared out.
    with transaction.atomic():
        jobs = [
            submit("pair-laptop" if i % 2 else "pair-desktop", num_images=1 + (i % 4 == 0))
            for i in range(20)
        ]
        for worker in ("w1", "w2"):
            for server in (laptop, desktop):
                transaction.on_commit(
                    lambda s=server.pk, w=worker: run_server.apply_async((s,), queue=w)
                )

    assert_all_completed(wait_finished(jobs, timeout=40))
    assert received(laptop_sim, desktop_sim) == {str(job.pk): 1 for job in jobs}
    # One slot each: never a second job sent to a server before its first one ended.
    assert most_in_flight(laptop_sim) == most_in_flight(desktop_sim) == 1
    assert JobImage.objects.count() == sum(job.generation_params["num_images"] for job in jobs)
    logs = {
        "w1": engine.workers["w1"].output()[w1_log_start:],
        "w2": engine.workers["w2"].output(),
    }
    # Between them the workers started each job once: by a claim, or by starting the job
    # reserved while the server's previous job ran.
    for name, log in logs.items():
        assert "queue_app.tasks.run_server[" in log, f"{name} received no run_server message"
    starts = Counter(
        str(job.pk)
        for job in jobs
        for log in logs.values()
        for line in log.splitlines()
        if f"Claimed job {job.pk} " in line or f"Started reserved job {job.pk} " in line
    )
    assert starts == {str(job.pk): 1 for job in jobs}


def test_the_embedded_default_runs_a_job_end_to_end(tmp_path, sims):
    sim = sims()
    with embedded_mobilesd(tmp_path) as app:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {app.key}"
        created = session.post(
            f"{app.base}/api/v1/servers", json={"alias": "Laptop", "apiUrl": sim.url}, timeout=5
        )
        assert created.status_code == 201, created.text
        submitted = session.post(
            f"{app.base}/api/v1/generate",
            json={
                "target_server_alias": "Laptop",
                "generation_params": {
                    "positive_prompt": "a lighthouse at dusk",
                    "steps": 8,
                    "width": 64,
                    "height": 64,
                    "seed": 42,
                },
            },
            timeout=5,
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["mobilesd_job_id"]
        status_url = f"{app.base}/api/v1/queue/jobs/{job_id}/status"

        body = wait_until(
            lambda: (
                (b := session.get(status_url, timeout=5).json())["status"]
                in {"completed", "failed", "cancelled"}
                and b
            ),
            timeout=60,
            what="the job to finish",
        )
        image = session.get(f"{app.base}/api/v1/queue/jobs/{job_id}/images/0", timeout=5)

        assert body["status"] == "completed", body
        assert_documented_job(body)
        [name] = body["result_details"]["images"]
        assert body["result_details"]["generation_info"]["all_seeds"] == [42]
        assert image.status_code == 200
        assert image.headers["Content-Type"] == "image/png"
        [stored] = (app.root / "data" / "media").rglob(name)
        assert stored.read_bytes() == image.content
        assert received(sim) == {job_id: 1}


def test_a_worker_with_too_few_threads_for_its_servers_says_so_at_start(engine):
    baker.make(Server, enabled=True, api_url="http://127.0.0.1:9", _quantity=7)
    baker.make(Server, enabled=False, api_url="http://127.0.0.1:9")

    worker = engine.start_worker("w2")  # 8 threads, as the cluster's workers have
    log = worker.output()
    heartbeat = wait_until(
        lambda: WorkerHeartbeat.objects.filter(hostname__startswith="w2@").first(),
        timeout=10,
        what="w2's heartbeat",
    )
    engine.stop_worker("w2")

    assert heartbeat.threads == 8

    assert "This worker has 8 threads for 7 enabled servers" in log
    assert "Set WORKER_CONCURRENCY to at least 9" in log
