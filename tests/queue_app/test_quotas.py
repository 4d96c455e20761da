"""Quotas per user (queue_app.quotas): the most pending jobs, the most images per job."""

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from core_app.errors import MobileSDError
from core_app.models import UserQuota
from queue_app.models import Job, JobStatus
from queue_app.quotas import user_limits
from queue_app.services import job_submit
from servers_app.models import Server
from tests.support import assert_error, new_key

URL = "/api/v1/generate"


def body(**params: Any) -> dict[str, Any]:
    return {
        "target_server_alias": "Laptop",
        "generation_params": {"positive_prompt": "a lighthouse", **params},
    }


def client_of(username: str, scope: str = "client") -> APIClient:
    _, raw = new_key(f"{username}-phone", username=username, scope=scope)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


def test_a_submit_beyond_the_pending_quota_is_a_429_saying_the_limit(server, settings):
    settings.MOBILESD_MAX_PENDING_PER_USER = 2
    alice = client_of("alice")
    for _ in range(2):
        assert alice.post(URL, body(), format="json").status_code == 202

    response = alice.post(URL, body(), format="json")

    error = assert_error(response, 429, "queue_limit")
    assert "at most 2 pending jobs" in error["message"]
    assert Job.objects.count() == 2


BATCHES = "/api/v1/batches"


def batch_body(seeds: int, **params: Any) -> dict[str, Any]:
    return {
        "target_server_alias": "Laptop",
        "generation_params": {"positive_prompt": "a lighthouse", **params},
        "axes": [{"field": "seed", "values": list(range(1, seeds + 1))}],
    }


def test_a_batch_beyond_the_pending_quota_is_refused_whole(server, settings):
    settings.MOBILESD_MAX_PENDING_PER_USER = 5
    alice = client_of("alice")
    assert alice.post(URL, body(), format="json").status_code == 202

    error = assert_error(alice.post(BATCHES, batch_body(5), format="json"), 429, "queue_limit")

    assert "at most 5 pending jobs" in error["message"]
    assert "room for 4" in error["message"]
    assert Job.objects.count() == 1
    assert alice.post(BATCHES, batch_body(4), format="json").status_code == 202
    assert Job.objects.filter(status=JobStatus.PENDING).count() == 5


def test_a_batch_asking_for_more_images_per_job_than_allowed_is_a_400(server, settings):
    settings.MOBILESD_MAX_IMAGES_PER_JOB = 2
    alice = client_of("alice")

    response = alice.post(BATCHES, batch_body(2, num_images=3), format="json")

    error = assert_error(response, 400, "validation_error")
    assert "At most 2 images per job" in str(error["fields"])
    assert not Job.objects.exists()


def test_the_pending_quota_is_per_user(server, settings):
    settings.MOBILESD_MAX_PENDING_PER_USER = 1
    alice, bob = client_of("alice"), client_of("bob")
    assert alice.post(URL, body(), format="json").status_code == 202

    assert bob.post(URL, body(), format="json").status_code == 202
    assert_error(alice.post(URL, body(), format="json"), 429, "queue_limit")


def test_jobs_that_started_or_finished_do_not_count_against_the_quota(server, settings):
    settings.MOBILESD_MAX_PENDING_PER_USER = 1
    alice = client_of("alice")
    assert alice.post(URL, body(), format="json").status_code == 202
    Job.objects.update(status=JobStatus.PROCESSING)

    assert alice.post(URL, body(), format="json").status_code == 202


def test_admin_keys_have_the_quota_too(server, settings):
    settings.MOBILESD_MAX_PENDING_PER_USER = 1
    admin = client_of("root", scope="admin")
    assert admin.post(URL, body(), format="json").status_code == 202

    assert_error(admin.post(URL, body(), format="json"), 429, "queue_limit")


def test_a_users_own_quota_overrides_the_default_and_zero_is_unlimited(server, settings):
    settings.MOBILESD_MAX_PENDING_PER_USER = 1
    alice = client_of("alice")
    user = get_user_model().objects.get(username="alice")
    UserQuota.objects.create(user=user, max_pending_jobs=0)

    for _ in range(3):
        assert alice.post(URL, body(), format="json").status_code == 202


def test_a_users_quota_may_be_lower_than_the_default(server, settings):
    settings.MOBILESD_MAX_PENDING_PER_USER = 0
    alice = client_of("alice")
    user = get_user_model().objects.get(username="alice")
    UserQuota.objects.create(user=user, max_pending_jobs=1)
    assert alice.post(URL, body(), format="json").status_code == 202

    error = assert_error(alice.post(URL, body(), format="json"), 429, "queue_limit")
    assert "at most 1 pending jobs" in error["message"]


def test_a_job_asking_for_more_images_than_allowed_is_a_400_naming_the_limit(server, settings):
    settings.MOBILESD_MAX_IMAGES_PER_JOB = 4
    alice = client_of("alice")

    response = alice.post(URL, body(num_images=5), format="json")

    error = assert_error(response, 400, "validation_error")
    assert "At most 4 images per job" in error["fields"]["generation_params.num_images"][0]
    assert not Job.objects.exists()
    assert alice.post(URL, body(num_images=4), format="json").status_code == 202


def test_the_images_quota_of_a_user_overrides_the_default(server, settings):
    settings.MOBILESD_MAX_IMAGES_PER_JOB = 16
    alice = client_of("alice")
    user = get_user_model().objects.get(username="alice")
    UserQuota.objects.create(user=user, max_images_per_job=2)

    assert_error(alice.post(URL, body(num_images=3), format="json"), 400, "validation_error")
    assert user_limits(user=user).max_images_per_job == 2


def test_a_retry_beyond_the_quota_is_refused(server, settings, client):
    settings.MOBILESD_MAX_PENDING_PER_USER = 1
    alice = client_of("alice")
    first = alice.post(URL, body(), format="json").json()["mobilesd_job_id"]
    Job.objects.filter(pk=first).update(status=JobStatus.FAILED)
    assert alice.post(URL, body(), format="json").status_code == 202

    response = alice.post(f"/api/v1/queue/jobs/{first}/retry", format="json")

    assert_error(response, 429, "queue_limit")
    assert Job.objects.get(pk=first).status == JobStatus.FAILED


@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_at_the_quota_queue_exactly_the_quota(settings):
    """The user's row is locked while their pending jobs are counted: submits racing at the
    limit queue exactly as many as it allows."""
    if connection.vendor != "postgresql":
        pytest.skip("needs concurrent writers (PostgreSQL)")
    settings.MOBILESD_MAX_PENDING_PER_USER = 3
    Server.objects.create(alias="Laptop", api_url="http://127.0.0.1:1")
    user = get_user_model().objects.create(username="alice")
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def one() -> None:
        try:
            start.wait()
            job_submit(owner=user, target_server_alias="Laptop", generation_params={"prompt": "x"})
            outcomes.append("queued")
        except MobileSDError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["queue_limit"] * 5 + ["queued"] * 3
    assert Job.objects.filter(owner=user, status=JobStatus.PENDING).count() == 3
