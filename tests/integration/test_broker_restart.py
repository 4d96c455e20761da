"""A worker running a job survives a restart of its Redis broker, and the job completes.

Redis and the worker are this test's own (Redis on a free port, so it may be restarted
without touching the suite's broker); the job runs on a Forge simulator slow enough that
the restart falls in the middle of its generation.
"""

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import current_app as celery_app
from model_bakery import baker

from core_app.scopes import local_user
from integrations.forge.simulator import ForgeSimulator
from queue_app.models import Job, JobStatus
from queue_app.services import job_submit
from queue_app.tasks import run_server
from servers_app.models import Server
from tests.integration.conftest import _worker_database_url
from tests.integration.procs import REPO, OwnRedis, Process, clean_env, tail, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CELERY = str(Path(sys.executable).parent / "celery")


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    if OwnRedis.BINARY is None:
        pytest.skip("needs the redis-server binary")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def slow_sim(sims: Callable[..., ForgeSimulator]) -> ForgeSimulator:
    return sims(seconds_per_step=0.5)


@pytest.fixture
def worker(own_redis: OwnRedis, tmp_path, settings) -> Iterator[Process]:
    """A Celery worker as the Procfile runs it (thread pool), on the test database and the
    test's own Redis."""
    media_root = tmp_path / "media"
    settings.MEDIA_ROOT = media_root
    env = clean_env(
        DATABASE_URL=_worker_database_url(),
        CELERY_BROKER_URL=own_redis.url,
        MEDIA_ROOT=str(media_root),
        MOBILESD_DATA_DIR=str(tmp_path / "data"),
        MOBILESD_HEARTBEAT_SECONDS="0.5",
        MOBILESD_RECONCILE_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    proc = Process(
        [
            *(CELERY, "--app", "mobilesd", "worker", "--pool", "threads", "--concurrency", "4"),
            *("--loglevel", "INFO", "--hostname", "restart@%h"),
            *("--without-mingle", "--without-gossip"),
        ],
        cwd=REPO,
        env=env,
        log=tmp_path / "worker.log",
    )
    try:
        yield proc
    finally:
        print(f"--- worker log ---\n{tail(proc.output(), 120)}")
        proc.stop()


def submit(alias: str, *, steps: int) -> Job:
    params = {"positive_prompt": "a lighthouse", "steps": steps, "width": 64, "height": 64}
    job, _ = job_submit(owner=local_user(), target_server_alias=alias, generation_params=params)
    return job


def finished(job: Job) -> Job | None:
    row = Job.objects.get(pk=job.pk)
    return row if row.status not in (JobStatus.PENDING, JobStatus.PROCESSING) else None


def test_a_worker_running_a_job_survives_a_redis_restart(own_redis, slow_sim, worker):
    server = baker.make(Server, alias="restart-sim", api_url=slow_sim.url, is_online=True)
    job = submit(server.alias, steps=20)  # 10 s at 0.5 s a step
    worker.wait_for_output(" ready.", timeout=45)
    # The worker's start-up reconcile nudges the server; the job starts generating.
    wait_until(
        lambda: slow_sim.events.of_type("txt2img_received"), timeout=30, what="the generation"
    )
    assert Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING

    own_redis.stop()
    own_redis.start()
    assert Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING  # still generating

    row = wait_until(lambda: finished(job), timeout=60, what="the job to finish")
    assert worker.popen.poll() is None, "the worker exited"
    assert "Unrecoverable error" not in worker.output()
    assert row.status == JobStatus.COMPLETED, row.result_details
    # It ran once: the restart did not make another worker thread run it again.
    assert len(slow_sim.events.of_type("txt2img_received")) == 1

    # And the worker consumes again: a nudge sent through the restarted Redis runs the next.
    second = submit(server.alias, steps=4)  # 2 s
    with celery_app.connection_for_write(own_redis.url) as connection:
        run_server.apply_async((server.pk,), connection=connection)
    row = wait_until(lambda: finished(second), timeout=30, what="the second job to finish")
    assert row.status == JobStatus.COMPLETED, row.result_details


def test_the_worker_takes_its_messages_without_keeping_copies_in_redis(own_redis, sims, worker):
    """Messages are acknowledged on receipt, so kombu's emulation of acknowledgements
    (a copy of every message received, in a sorted set and a hash, until it is acked) is
    off: the consumer spends no round trips on it (mobilesd.settings)."""
    sim = sims()
    server = baker.make(Server, alias="acks-sim", api_url=sim.url, is_online=True)
    worker.wait_for_output(" ready.", timeout=45)
    client = redis.Redis.from_url(own_redis.url)
    try:
        client.config_resetstat()
        jobs = [submit(server.alias, steps=1) for _ in range(3)]
        # A nudge each, through the worker's Redis (job_submit's go to the suite's broker).
        with celery_app.connection_for_write(own_redis.url) as connection:
            for _ in jobs:
                run_server.apply_async((server.pk,), connection=connection)
        for job in jobs:
            row = wait_until(lambda job=job: finished(job), timeout=30, what="the job to finish")
            assert row.status == JobStatus.COMPLETED, row.result_details
        calls = client.info("commandstats")
    finally:
        client.close()
    # The worker took the messages off their list (BRPOP) ...
    assert calls["cmdstat_brpop"]["calls"] >= 1
    # ... and kept no copy: no unacked hash or index was ever written.
    assert {name for name in calls if name in ("cmdstat_zadd", "cmdstat_hset")} == set()
