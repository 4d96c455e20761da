"""Batches and job times for real: a Celery worker and beat on PostgreSQL and Redis, jobs
submitted through the API, run on Forge simulators over HTTP."""

import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from queue_app.models import Job, JobStatus
from tests.integration.test_engine import assert_all_completed, received, wait_finished
from tests.support import checked_server

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHECKPOINTS = (
    "Pony/cyberrealisticPony_v8.safetensors",
    "SD15/realisticVisionV60B1_v51VAE.safetensors",
    "Flux/flux1-dev-bnb-nf4-v2.safetensors",
)
SMALL = {"positive_prompt": "a lighthouse at dusk", "steps": 4, "width": 64, "height": 64}


def wall_time(monotonic: float) -> datetime:
    """The wall-clock time of a simulator event's `t` (time.monotonic() in this process)."""
    return timezone.now() - timedelta(seconds=time.monotonic() - monotonic)


def test_a_batch_of_three_checkpoints_by_two_seeds_loads_each_checkpoint_once(engine, sims, client):
    sim = sims(checkpoint_switch_seconds=0.3)
    checked_server(sim.url, alias="plot-laptop")
    # Items in the worst order for a FIFO queue: a switch before every job.
    items = [
        {**SMALL, "checkpoint_name": name, "seed": seed} for seed in (1, 2) for name in CHECKPOINTS
    ]

    answer = client.post(
        "/api/v1/batches", {"target_server_alias": "plot-laptop", "items": items}, format="json"
    ).json()

    jobs = list(Job.objects.filter(batch_id=answer["batch_id"]))
    assert_all_completed(wait_finished(jobs))
    loads = Counter(
        event["name"] for event in sim.events.of_type("model_loading") if event["task_id"]
    )
    assert loads == dict.fromkeys(CHECKPOINTS, 1), loads
    assert received(sim) == {job_id: 1 for job_id in answer["mobilesd_job_ids"]}
    body = client.get(f"/api/v1/batches/{answer['batch_id']}").json()
    assert body["counts"]["completed"] == 6
    assert body["finished"] is True
    assert len(body["images"]) == 6


def test_a_job_with_not_before_starts_no_earlier(engine, sims, client):
    sim = sims()
    checked_server(sim.url, alias="later-laptop")
    not_before = timezone.now() + timedelta(seconds=3)

    response = client.post(
        "/api/v1/generate",
        {
            "target_server_alias": "later-laptop",
            "generation_params": SMALL,
            "not_before": not_before.isoformat(),
        },
        format="json",
    )
    job = Job.objects.get(pk=response.json()["mobilesd_job_id"])
    now_job = Job.objects.get(
        pk=client.post(
            "/api/v1/generate",
            {"target_server_alias": "later-laptop", "generation_params": SMALL},
            format="json",
        ).json()["mobilesd_job_id"]
    )

    assert_all_completed(wait_finished([now_job, job], timeout=30))
    sent = {e["task_id"]: e for e in sim.events.of_type("txt2img_received")}
    assert wall_time(sent[str(job.pk)]["t"]) >= not_before
    # The job submitted after it, without a time, did not wait for it.
    assert wall_time(sent[str(now_job.pk)]["t"]) < not_before
    job.refresh_from_db()
    assert job.started_at >= not_before


def test_a_job_that_cannot_start_before_its_expiry_fails_expired(engine, sims, client):
    sim = sims(seconds_per_step=0.1)
    checked_server(sim.url, alias="busy-laptop")
    long = client.post(
        "/api/v1/generate",
        {"target_server_alias": "busy-laptop", "generation_params": {**SMALL, "steps": 100}},
        format="json",
    ).json()["mobilesd_job_id"]
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == long, timeout=15)

    response = client.post(
        "/api/v1/generate",
        {"target_server_alias": "busy-laptop", "generation_params": SMALL, "expires_after": 2},
        format="json",
    )

    (expired,) = wait_finished([Job.objects.get(pk=response.json()["mobilesd_job_id"])])
    assert expired.status == JobStatus.FAILED
    assert expired.result_details["code"] == "expired"
    assert expired.started_at is None
    client.post(f"/api/v1/queue/jobs/{long}/cancel")
    wait_finished([Job.objects.get(pk=long)])
    assert str(expired.pk) not in received(sim)
