"""not_before and expiry: in a submit and a batch, at claim time, and by the tasks."""

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from model_bakery import baker

from queue_app import dispatch, tasks
from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.support import DOCUMENTED_GENERATE_REQUEST, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def online(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


def generate(client, **times):
    return client.post("/api/v1/generate", {**DOCUMENTED_GENERATE_REQUEST, **times}, format="json")


def pending(server: Server, **fields) -> Job:
    return baker.make(
        Job,
        server=server,
        target_server_alias=server.alias,
        generation_params={"positive_prompt": "x"},
        **fields,
    )


def test_a_submit_with_not_before_waits_until_then_and_says_so(
    client, online, published, django_capture_on_commit_callbacks
):
    at = timezone.now() + timedelta(minutes=5)

    with django_capture_on_commit_callbacks(execute=True):
        response = generate(client, not_before=at.isoformat(), expires_after=600)

    job = Job.objects.get()
    assert (job.not_before, job.next_attempt_at) == (at, at)
    assert job.expires_at == at + timedelta(seconds=600)
    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()
    assert body["not_before"] == at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert body["expires_at"] is not None
    # No nudge now; one release when it is due.
    ((name, _, _),) = published
    assert name == "queue_app.tasks.release_due_jobs"
    assert response.status_code == 202


def test_a_not_before_in_the_past_queues_at_once(client, online):
    generate(client, not_before=(timezone.now() - timedelta(minutes=1)).isoformat())

    assert Job.objects.get().next_attempt_at is None


@pytest.mark.parametrize(
    "times",
    [
        {"expires_at": "2001-01-01T00:00:00Z"},
        {"not_before": "2100-01-02T00:00:00Z", "expires_at": "2100-01-01T00:00:00Z"},
        {"expires_after": 0},
        {"expires_after": "60"},
        {"expires_after": 60, "expires_at": "2100-01-01T00:00:00Z"},
        {"not_before": "tomorrow"},
    ],
)
def test_impossible_times_are_refused(client, online, times):
    assert_error(generate(client, **times), 400, "validation_error")
    assert not Job.objects.exists()


def test_a_batch_gives_its_times_to_every_job(client, online):
    at = timezone.now() + timedelta(hours=1)
    body = {
        "target_server_alias": "Laptop",
        "items": [{"positive_prompt": "a"}, {"positive_prompt": "b"}],
        "not_before": at.isoformat(),
        "expires_at": (at + timedelta(hours=1)).isoformat(),
    }

    assert client.post("/api/v1/batches", body, format="json").status_code == 202

    assert {(j.next_attempt_at, j.expires_at) for j in Job.objects.all()} == {
        (at, at + timedelta(hours=1))
    }


def test_a_job_not_yet_due_is_not_claimed_and_is_once_due(online):
    later = pending(online, next_attempt_at=timezone.now() + timedelta(minutes=1))

    assert dispatch.job_claim_next(server_id=online.pk) is None
    Job.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert dispatch.job_claim_next(server_id=online.pk).job_id == later.pk


def test_the_claim_reads_no_job_that_waits_for_its_time(online):
    """The waiting jobs are outside the head's partial index: the plan reads none of them."""
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's plans")
    future = timezone.now() + timedelta(hours=1)
    ready = pending(online)
    Job.objects.bulk_create(
        Job(
            server=online,
            target_server_alias="Laptop",
            generation_params={},
            owner=ready.owner,
            next_attempt_at=future,
        )
        for _ in range(300)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queue_app_job")
    sql = dispatch._sql(dispatch._QUEUE_HEAD)
    params = {**dispatch._queue_head_params(online, timezone.now()), "lookahead": 8}
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0][0]["Plan"]

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    scans = [n for n in nodes(plan) if n.get("Relation Name") == "queue_app_job"]
    assert scans
    assert sum(n.get("Rows Removed by Filter", 0) for n in scans) == 0
    assert sum(n["Actual Rows"] for n in scans) <= 2
    assert dispatch.job_claim_next(server_id=online.pk).job_id == ready.pk


def test_an_expired_pending_job_is_never_claimed_and_fails_expired(online):
    job = pending(online, expires_at=timezone.now() - timedelta(seconds=1))

    assert dispatch.job_claim_next(server_id=online.pk) is None

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "expired"
    assert job.completed_at is not None


def test_an_expired_job_reserved_by_a_worker_is_not_started(online):
    running = pending(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    assert claim.job_id == running.pk
    soon = pending(online, expires_at=timezone.now() + timedelta(minutes=1))
    reserved = dispatch.job_reserve_next(running=claim)
    assert reserved.job_id == soon.pk
    Job.objects.filter(pk=soon.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert dispatch.job_start_reserved(reserved=reserved, finishing=claim) is False
    assert Job.objects.get(pk=soon.pk).status == JobStatus.PENDING


def test_reconcile_fails_the_expired_jobs_of_a_server_no_worker_runs(online):
    Server.objects.filter(pk=online.pk).update(is_online=False)
    job = pending(online, expires_at=timezone.now() - timedelta(seconds=1))
    keeps = pending(online, expires_at=timezone.now() + timedelta(minutes=1))

    tasks.reconcile()

    assert Job.objects.get(pk=job.pk).status == JobStatus.FAILED
    assert Job.objects.get(pk=keeps.pk).status == JobStatus.PENDING


def test_the_release_task_makes_due_jobs_claimable_and_nudges_their_server(online, published):
    job = pending(online, next_attempt_at=timezone.now() - timedelta(seconds=1))

    tasks.release_due_jobs()

    assert Job.objects.get(pk=job.pk).next_attempt_at is None
    assert ("queue_app.tasks.run_server", (online.pk,), {}) in published


def test_a_release_far_ahead_is_left_to_the_reconcile_task(published):
    now = timezone.now()

    tasks.release_when_due([now + timedelta(seconds=30)] * 3 + [now + timedelta(days=2)])

    assert [name for name, _, _ in published] == ["queue_app.tasks.release_due_jobs"]


def test_a_retried_job_keeps_its_not_before_and_loses_a_passed_expiry(client, online):
    job = pending(
        online,
        status=JobStatus.FAILED,
        not_before=timezone.now() + timedelta(hours=1),
        expires_at=timezone.now() - timedelta(seconds=1),
    )

    assert client.post(f"/api/v1/queue/jobs/{job.pk}/retry").status_code == 200

    job.refresh_from_db()
    assert (job.status, job.next_attempt_at, job.expires_at) == (
        JobStatus.PENDING,
        job.not_before,
        None,
    )


def test_the_probe_for_due_jobs_reads_only_their_indexes(online):
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's plans")
    owner = pending(online).owner
    Job.objects.bulk_create(
        Job(server=online, target_server_alias="Laptop", generation_params={}, owner=owner)
        for _ in range(500)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE queue_app_job")
        cursor.execute(
            "EXPLAIN (FORMAT JSON) " + dispatch._sql(dispatch._ANY_DUE), {"now": timezone.now()}
        )
        plan = json.dumps(cursor.fetchone()[0])

    assert set(re.findall(r'"Index Name": "(\w+)"', plan)) == {
        "job_pending_waiting",
        "job_pending_expiry",
    }
    assert '"Seq Scan"' not in plan
