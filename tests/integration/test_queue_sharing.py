"""Several people, one queue, for real (#13): fair turns between users and the quarantine
of a server that fails everything, with Celery worker and beat processes on PostgreSQL and
Redis and Forge simulators over HTTP."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from model_bakery import baker

from queue_app.models import FINISHED_STATUSES, Job, JobStatus
from queue_app.services import job_submit
from servers_app.models import Server
from tests.integration.conftest import SHORT_PERIODS, Cluster, running_cluster
from tests.integration.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Long enough that the quarantine cannot end by itself while the test looks at it, however
# loaded the machine; the test then moves the quarantine's start back past the cooldown,
# as time would.
COOLDOWN = 600.0


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory) -> Iterator[Cluster]:
    """The engine tests' cluster, with a quarantine after 3 failures."""
    with running_cluster(
        tmp_path_factory.mktemp("sharing"),
        **SHORT_PERIODS,
        MOBILESD_MAX_RETRIES="10",
        MOBILESD_QUARANTINE_AFTER_FAILURES="3",
        MOBILESD_QUARANTINE_COOLDOWN_SECONDS=str(COOLDOWN),
    ) as engine_cluster:
        yield engine_cluster


def user(name: str) -> Any:
    return get_user_model().objects.get_or_create(username=name)[0]


def submit(owner: Any, alias: str, **params: Any) -> Job:
    params.setdefault("positive_prompt", f"a lighthouse for {owner.username}")
    params.setdefault("steps", 8)
    params.setdefault("width", 64)
    params.setdefault("height", 64)
    job, _ = job_submit(owner=owner, target_server_alias=alias, generation_params=params)
    return job


def wait_finished(jobs: list[Job], *, timeout: float = 60) -> list[Job]:
    ids = [job.pk for job in jobs]

    def finished() -> list[Job] | None:
        rows = {row.pk: row for row in Job.objects.filter(pk__in=ids)}
        if all(rows[pk].status in FINISHED_STATUSES for pk in ids):
            return [rows[pk] for pk in ids]
        return None

    return wait_until(finished, timeout=timeout, what="the jobs to finish")


def test_a_users_single_job_runs_second_after_another_users_ten(engine, sims):
    # 1.2 s a job (8 steps): B's job is queued while A's first still runs, however loaded
    # the machine is.
    sim = sims(seconds_per_step=0.15)
    server = baker.make(Server, alias="shared", api_url=sim.url)
    alice, bob = user("alice"), user("bob")

    alices = [submit(alice, server.alias) for _ in range(10)]
    bobs = submit(bob, server.alias)

    rows = wait_finished([*alices, bobs])
    assert {row.status for row in rows} == {JobStatus.COMPLETED}
    started = [row.pk for row in sorted(rows, key=lambda row: row.started_at)]
    assert started[1] == bobs.pk
    # The simulator received them in that order too.
    received = [event["task_id"] for event in sim.events.of_type("txt2img_received")]
    assert received[1] == str(bobs.pk)
    assert received[0] == str(alices[0].pk)


def test_a_server_failing_everything_is_quarantined_and_comes_back(engine, sims, client):
    bad_sim, good_sim = sims(), sims()
    bad = baker.make(Server, alias="oom-box", api_url=bad_sim.url)
    baker.make(Server, alias="good-box", api_url=good_sim.url)
    owner = user("alice")
    bad_sim.faults.error_500_next = 3  # CUDA out of memory on the next 3 jobs, then fixed

    pinned = [submit(owner, bad.alias) for _ in range(2)]

    def quarantined() -> dict[str, Any] | None:
        return client.get(f"/api/v1/servers/{bad.alias}").json()["quarantine"]

    quarantine = wait_until(quarantined, timeout=30, what="the server's quarantine")
    assert "3 jobs in a row failed" in quarantine["reason"]
    assert "OutOfMemoryError" in quarantine["reason"]
    sent_to_bad = bad_sim.request_count("POST", "/sdapi/v1/txt2img")
    assert sent_to_bad == 3
    # Meanwhile "any" jobs run on the other server; the pinned ones wait.
    anywhere = [submit(owner, "any") for _ in range(3)]
    rows = wait_finished(anywhere, timeout=30)
    assert {row.status for row in rows} == {JobStatus.COMPLETED}
    assert {row.server.alias for row in rows} == {"good-box"}
    assert Server.objects.get(pk=bad.pk).quarantined_at is not None
    assert {Job.objects.get(pk=job.pk).status for job in pinned} == {JobStatus.PENDING}
    assert bad_sim.request_count("POST", "/sdapi/v1/txt2img") == sent_to_bad

    # Once the cooldown has passed, a health check (the reconcile task's, every second here)
    # brings it back, and its pinned jobs run there.
    Server.objects.filter(pk=bad.pk).update(
        quarantined_at=timezone.now() - timedelta(seconds=COOLDOWN + 1)
    )
    rows = wait_finished(pinned, timeout=30)
    assert {row.status for row in rows} == {JobStatus.COMPLETED}
    assert {row.server.alias for row in rows} == {bad.alias}
    body = client.get(f"/api/v1/servers/{bad.alias}").json()
    assert body["quarantine"] is None
    assert body["consecutive_failures"] == 0
