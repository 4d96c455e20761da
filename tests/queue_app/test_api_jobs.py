"""GET status, GET list, POST cancel, DELETE of /api/v1/queue/jobs."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from model_bakery import baker
from rest_framework.test import APIClient

from queue_app.models import Job, JobImage, JobStatus
from tests.support import (
    DOCUMENTED_JOB_KEYS,
    DOCUMENTED_STATUS_PARAMS,
    assert_documented_job,
    assert_error,
    db_snapshot,
    new_key,
)


def make_job(server, **fields) -> Job:
    fields.setdefault("generation_params", {"positive_prompt": "a cat", "steps": 5})
    return baker.make(Job, server=server, target_server_alias=server.alias, **fields)


# --- status --------------------------------------------------------------------------------


def test_status_of_a_pending_job_has_the_documented_shape(client, server):
    job = make_job(server, generation_params=DOCUMENTED_STATUS_PARAMS)

    response = client.get(f"/api/v1/queue/jobs/{job.pk}/status")

    assert response.status_code == 200
    body = response.json()
    assert list(body)[: len(DOCUMENTED_JOB_KEYS)] == DOCUMENTED_JOB_KEYS
    assert_documented_job(body)
    assert body["mobilesd_job_id"] == str(job.pk)
    assert body["status"] == "pending"
    assert body["completion_timestamp"] is None
    assert body["target_server_alias"] == "Laptop"
    assert body["forge_session_hash"] is None
    assert body["generation_params"] == DOCUMENTED_STATUS_PARAMS
    assert body["result_details"] is None
    assert body["retry_count"] == 0


def test_status_timestamps_are_utc_with_milliseconds(client, server):
    job = make_job(server)
    moment = datetime(2025, 5, 14, 2, 34, 48, 985_123, tzinfo=UTC)
    Job.objects.filter(pk=job.pk).update(created_at=moment, updated_at=moment, completed_at=moment)

    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    assert body["creation_timestamp"] == "2025-05-14T02:34:48.985Z"
    assert body["last_updated_timestamp"] == "2025-05-14T02:34:48.985Z"
    assert body["completion_timestamp"] == "2025-05-14T02:34:48.985Z"


def test_status_of_a_completed_job_shows_its_results(client, server):
    details = {
        "images": ["88615c9d_1747190448393_00028-1806652750.png"],
        "info": "Job completed and images downloaded by MobileSD backend.",
        "generation_info": {"prompt": "a pretty girl", "seed": 1806652750},
    }
    job = make_job(
        server,
        status=JobStatus.COMPLETED,
        result_details=details,
        forge_session_hash="a28b22e6-57da-4362-923a-f61c55a37d81",
        completed_at=timezone.now(),
        retry_count=1,
    )

    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    assert_documented_job(body)
    assert body["status"] == "completed"
    assert body["result_details"] == details
    assert body["forge_session_hash"] == "a28b22e6-57da-4362-923a-f61c55a37d81"
    assert body["retry_count"] == 1


def test_status_follows_a_renamed_server(client, server):
    job = make_job(server)
    client.patch("/api/v1/servers/Laptop", {"alias": "Gaming PC"}, format="json")

    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    assert body["target_server_alias"] == "Gaming PC"


@pytest.mark.parametrize("job_id", ["not-a-uuid", "12345", "88615c9d-71ec-4803-88b0-14f5162f6c66"])
def test_status_of_unknown_or_malformed_id_is_404(client, server, job_id):
    response = client.get(f"/api/v1/queue/jobs/{job_id}/status")

    assert_error(response, 404, "job_not_found")


def test_a_client_keys_status_read_shows_its_owner_without_reading_the_user_again(server):
    key, raw = new_key("ann's phone", username="ann", scope="client")
    job = make_job(server, owner=key.user, status=JobStatus.COMPLETED)
    phone = APIClient()
    phone.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    with CaptureQueriesContext(connection) as queries:
        response = phone.get(f"/api/v1/queue/jobs/{job.pk}/status")

    assert response.status_code == 200
    assert response.json()["owner"] == "ann"
    (read,) = [q["sql"] for q in queries.captured_queries if '"queue_app_job"."id" =' in q["sql"]]
    assert "auth_user" not in read  # the key's user is the job's owner: no join


def test_an_admin_keys_status_read_shows_another_users_job_with_its_owner(client, server):
    other, _ = new_key("bob's phone", username="bob", scope="client")
    job = make_job(server, owner=other.user)

    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    assert body["owner"] == "bob"


def test_job_detail_get_is_the_status(client, server):
    job = make_job(server)

    assert (
        client.get(f"/api/v1/queue/jobs/{job.pk}").json()
        == client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()
    )


# --- list ----------------------------------------------------------------------------------


@pytest.fixture
def jobs(server) -> list[Job]:
    """Five jobs, one minute apart, oldest first: 3 pending, 1 completed, 1 failed."""
    start = timezone.now() - timedelta(hours=1)
    statuses = ["pending", "completed", "pending", "failed", "pending"]
    created = []
    for minute, status in enumerate(statuses):
        job = make_job(server, status=status)
        Job.objects.filter(pk=job.pk).update(created_at=start + timedelta(minutes=minute))
        created.append(job)
    return created


def test_list_has_the_documented_shape(client, jobs):
    response = client.get("/api/v1/queue/jobs")

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 5
    assert len(body["jobs"]) == 5
    for job in body["jobs"]:
        assert_documented_job(job)


def test_list_is_newest_first_by_default(client, jobs):
    ids = [job["mobilesd_job_id"] for job in client.get("/api/v1/queue/jobs").json()["jobs"]]

    assert ids == [str(job.pk) for job in reversed(jobs)]


def test_list_order_asc_is_oldest_first(client, jobs):
    body = client.get("/api/v1/queue/jobs?order=asc").json()

    assert [job["mobilesd_job_id"] for job in body["jobs"]] == [str(job.pk) for job in jobs]


def test_list_filters_by_status_and_total_counts_the_filter(client, jobs):
    body = client.get("/api/v1/queue/jobs?status=pending&limit=2").json()

    assert body["total"] == 3
    assert len(body["jobs"]) == 2
    assert {job["status"] for job in body["jobs"]} == {"pending"}


def test_list_limit_and_offset_page_through_everything(client, jobs):
    pages = [
        client.get(f"/api/v1/queue/jobs?order=asc&limit=2&offset={offset}").json()
        for offset in (0, 2, 4)
    ]

    ids = [job["mobilesd_job_id"] for page in pages for job in page["jobs"]]
    assert ids == [str(job.pk) for job in jobs]
    assert all(page["total"] == 5 for page in pages)
    assert pages[1]["limit"] == 2
    assert pages[1]["offset"] == 2


def test_list_offset_past_the_end_is_an_empty_page(client, jobs):
    body = client.get("/api/v1/queue/jobs?offset=100").json()

    assert body["total"] == 5
    assert body["jobs"] == []


def test_list_of_empty_queue(client, db):
    assert client.get("/api/v1/queue/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("order=newest", "order"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=201", "limit"),
        ("offset=-5", "offset"),
        ("offset=1.5", "offset"),
    ],
)
def test_list_bad_query_values_are_400(client, jobs, query, field):
    response = client.get(f"/api/v1/queue/jobs?{query}")

    error = assert_error(response, 400, "validation_error")
    assert field in error["fields"]


# --- cancel --------------------------------------------------------------------------------


def test_cancel_pending_job_has_the_documented_response(client, server):
    job = make_job(server)

    response = client.post(f"/api/v1/queue/jobs/{job.pk}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["message", "job"]
    assert body["message"] == "Job cancelled successfully."
    assert_documented_job(body["job"])
    assert body["job"]["status"] == "cancelled"
    assert body["job"]["result_details"] == {"cancelled": True, "message": "Job cancelled by user"}
    assert body["job"]["completion_timestamp"] is not None
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_finished_job_is_409_and_changes_nothing(client, server, status):
    job = make_job(server, status=status, result_details={"images": []})
    before = db_snapshot()

    response = client.post(f"/api/v1/queue/jobs/{job.pk}/cancel")

    error = assert_error(response, 409, "job_not_cancellable")
    assert status in error["message"]
    assert db_snapshot() == before


def test_cancel_unknown_job_is_404(client, db):
    assert_error(client.post("/api/v1/queue/jobs/xyz/cancel"), 404, "job_not_found")


# --- delete --------------------------------------------------------------------------------


def test_delete_has_the_documented_response(client, server):
    job = make_job(server, status=JobStatus.COMPLETED)

    response = client.delete(f"/api/v1/queue/jobs/{job.pk}")

    assert response.status_code == 200
    assert response.json() == {"message": f"Job {job.pk} deleted successfully."}
    assert not Job.objects.filter(pk=job.pk).exists()


def test_delete_removes_the_stored_images(
    client, server, settings, django_capture_on_commit_callbacks
):
    job = make_job(server, status=JobStatus.COMPLETED)
    image = JobImage(job=job, index=0, seed=1)
    image.file.save("88615c9d_1_00000-1.png", ContentFile(b"\x89PNG fake"), save=True)
    path = Path(image.file.path)
    assert path.exists()

    with django_capture_on_commit_callbacks(execute=True):
        client.delete(f"/api/v1/queue/jobs/{job.pk}")

    assert not path.exists()
    assert not JobImage.objects.exists()


def test_delete_pending_job_deletes_it(client, server):
    job = make_job(server)

    assert client.delete(f"/api/v1/queue/jobs/{job.pk}").status_code == 200
    assert not Job.objects.exists()


@pytest.mark.parametrize("job_id", ["nope", "3e5128a1-456a-49d8-82f1-7c7351e8600a"])
def test_delete_unknown_job_is_404(client, server, job_id):
    make_job(server)
    before = db_snapshot()

    assert_error(client.delete(f"/api/v1/queue/jobs/{job_id}"), 404, "job_not_found")
    assert db_snapshot() == before


def test_status_says_when_the_server_is_offline(client, server):
    job = make_job(server)
    server.is_online = False
    server.save()

    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    assert body["status"] == "pending"
    assert body["server_online"] is False


def test_status_shows_progress_while_processing(client, server):
    progress = {"fraction": 0.4, "eta_seconds": 3.5, "step": 8, "total_steps": 20}
    job = make_job(server, status=JobStatus.PROCESSING, progress=progress)
    done = make_job(server, status=JobStatus.COMPLETED, progress={"fraction": 1.0})

    assert client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["progress"] == progress
    assert client.get(f"/api/v1/queue/jobs/{done.pk}/status").json()["progress"] is None


def test_status_shows_progress_percentage_in_result_details_while_processing(client, server):
    job = make_job(server, status=JobStatus.PROCESSING, progress={"fraction": 0.37})

    details = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["result_details"]

    assert details == {"progress_percentage": 37}


def test_list_shows_progress_percentage_beside_what_result_details_holds(client, server):
    # A retried job keeps its last attempt's error while it runs again.
    make_job(
        server,
        status=JobStatus.PROCESSING,
        progress={"fraction": 0.999},
        result_details={"last_error": "timed out"},
    )

    (job,) = client.get("/api/v1/queue/jobs").json()["jobs"]

    assert job["result_details"] == {"last_error": "timed out", "progress_percentage": 99}


def test_progress_percentage_is_0_before_the_first_progress_reading(client, server):
    job = make_job(server, status=JobStatus.PROCESSING, progress=None)

    details = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["result_details"]

    assert details == {"progress_percentage": 0}


@pytest.mark.parametrize(
    ("fraction", "percent"), [(0.29, 29), (0.0, 0), (1.0, 100), (1.7, 100), (-0.2, 0)]
)
def test_progress_percentage_is_a_whole_number_from_0_to_100_rounded_down(
    client, server, fraction, percent
):
    job = make_job(server, status=JobStatus.PROCESSING, progress={"fraction": fraction})

    details = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["result_details"]

    assert details["progress_percentage"] == percent


@pytest.mark.parametrize(
    ("status", "details"),
    [(JobStatus.PENDING, None), (JobStatus.COMPLETED, {"images": ["a.png"]})],
)
def test_jobs_not_running_have_no_progress_percentage(client, server, status, details):
    job = make_job(server, status=status, progress={"fraction": 0.5}, result_details=details)

    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    assert body["result_details"] == details


def test_cancel_processing_job_queues_the_interrupt(
    client, server, published, django_capture_on_commit_callbacks
):
    job = make_job(server, status=JobStatus.PROCESSING, forge_session_hash="task-1")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/v1/queue/jobs/{job.pk}/cancel")

    assert response.json()["job"]["status"] == "cancelled"
    assert ("queue_app.tasks.interrupt_task", (server.pk, "task-1"), {}) in published


def test_delete_processing_job_cancels_it_first(
    client, server, published, django_capture_on_commit_callbacks
):
    job = make_job(server, status=JobStatus.PROCESSING, forge_session_hash="task-2")

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/api/v1/queue/jobs/{job.pk}").status_code == 200

    assert ("queue_app.tasks.interrupt_task", (server.pk, "task-2"), {}) in published
    assert not Job.objects.exists()


# --- retry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_retry_requeues_a_finished_job(
    client, server, status, published, django_capture_on_commit_callbacks
):
    job = make_job(
        server, status=status, result_details={"error": "boom"}, completed_at=timezone.now()
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/v1/queue/jobs/{job.pk}/retry")

    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Job queued again."
    assert_documented_job(body["job"])
    assert body["job"]["status"] == "pending"
    assert body["job"]["result_details"] is None
    assert body["job"]["completion_timestamp"] is None
    assert body["job"]["retry_count"] == 1
    assert ("queue_app.tasks.run_server", (server.pk,), {}) in published


@pytest.mark.parametrize("status", ["pending", "processing", "completed"])
def test_retry_of_a_job_that_did_not_fail_is_409(client, server, status):
    job = make_job(server, status=status)
    before = db_snapshot()

    assert_error(client.post(f"/api/v1/queue/jobs/{job.pk}/retry"), 409, "job_not_retryable")
    assert db_snapshot() == before
