"""The admin's job pages: the list, search, the job page and its buttons, and the bulk
actions, which all call the services."""

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from model_bakery import baker

from core_app.scopes import local_user
from queue_app.batches import batch_submit
from queue_app.models import ANY_SERVER, Job, JobImage, JobStatus
from queue_app.services import job_run_again
from tests.admin_support import PARAMS, make_job, messages_of, press


def job_page(admin_client, job):
    return admin_client.get(reverse("admin:queue_app_job_change", args=[job.pk]))


# --- the list, search and bulk actions -------------------------------------------------------


def test_job_search_by_prompt_and_by_id(admin_client, job, server):
    other = baker.make(Job, server=server, generation_params={"positive_prompt": "a cat"})
    url = reverse("admin:queue_app_job_changelist")

    by_prompt = admin_client.get(url, {"q": "LIGHTHOUSE"}).context["cl"].result_list
    by_id = admin_client.get(url, {"q": str(other.pk)}).context["cl"].result_list

    assert list(by_prompt) == [job]
    assert list(by_id) == [other]


def test_worker_written_fields_are_read_only(admin_client, job):
    form = (
        admin_client.get(reverse("admin:queue_app_job_change", args=[job.pk]))
        .context["adminform"]
        .form
    )

    for name in ("status", "result_details", "forge_session_hash", "retry_count"):
        assert name not in form.fields


def test_cancel_action_uses_the_service(admin_client, job, server):
    done = baker.make(Job, server=server, status=JobStatus.COMPLETED, generation_params={"a": 1})

    admin_client.post(
        reverse("admin:queue_app_job_changelist"),
        {"action": "cancel_jobs", "_selected_action": [job.pk, done.pk]},
    )

    job.refresh_from_db()
    done.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.result_details == {"cancelled": True, "message": "Job cancelled by user"}
    assert done.status == JobStatus.COMPLETED


def test_delete_action_removes_jobs_and_files(
    admin_client, job, django_capture_on_commit_callbacks
):
    image = JobImage(job=job, index=0)
    image.file.save("x.png", ContentFile(b"png"), save=True)
    path = Path(image.file.path)

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:queue_app_job_changelist"),
            {"action": "delete_jobs", "_selected_action": [job.pk]},
        )

    assert not Job.objects.exists()
    assert not path.exists()


def test_run_again_action_queues_one_copy_per_selected_job(admin_client, server):
    jobs = [make_job(server, JobStatus.COMPLETED) for _ in range(2)]

    admin_client.post(
        reverse("admin:queue_app_job_changelist"),
        {"action": "run_again", "_selected_action": [job.pk for job in jobs]},
    )

    assert Job.objects.filter(status=JobStatus.PENDING).count() == 2


def test_job_list_shows_badges_progress_prompt_server_and_age(admin_client, server):
    make_job(server, JobStatus.PROCESSING, progress={"fraction": 0.37})

    page = admin_client.get(reverse("admin:queue_app_job_changelist")).content.decode()

    assert 'class="msd-badge msd-processing"' in page
    assert '<progress value="37" max="100"></progress>' in page
    assert "a lighthouse at dusk" in page
    assert "Laptop" in page
    assert "just now" in page


# --- the job page ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "buttons"),
    [
        (JobStatus.PENDING, {"cancel", "run-again"}),
        (JobStatus.PROCESSING, {"cancel", "run-again"}),
        (JobStatus.COMPLETED, {"run-again"}),
        (JobStatus.FAILED, {"retry", "run-again"}),
        (JobStatus.CANCELLED, {"retry", "run-again"}),
    ],
)
def test_job_page_offers_the_buttons_its_status_allows(admin_client, server, status, buttons):
    page = job_page(admin_client, make_job(server, status)).content.decode()

    shown = {
        name for name in ("cancel", "retry", "run-again") if f'data-msd-action="{name}"' in page
    }
    assert shown == buttons
    assert 'name="_save"' not in page  # nothing on a job is edited by hand


def test_job_page_shows_every_image_large_with_parameters_info_and_error(admin_client, server):
    job = make_job(
        server,
        JobStatus.FAILED,
        result_details={"error": "CUDA out of memory", "generation_info": {"seed": 1234}},
    )
    for index in range(2):
        image = JobImage(job=job, index=index, seed=1234 + index, width=64, height=64)
        image.file.save(f"x{index}.png", ContentFile(b"png"), save=True)

    page = job_page(admin_client, job).content.decode()

    for index in range(2):
        assert reverse("job-image-thumbnail", args=[job.pk, index]) + "?size=1024" in page
        assert reverse("admin:gallery_image", args=[job.pk, index]) in page
    assert "CUDA out of memory" in page
    assert "a lighthouse at dusk" in page  # the parameters
    assert "&quot;seed&quot;: 1234" in page  # the generation info


def test_cancel_button_cancels_the_job(admin_client, server):
    job = make_job(server, JobStatus.PENDING)

    response = press(admin_client, "queue_app_job_cancel", job)

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert messages_of(response) == ["Job cancelled."]


def test_cancel_button_on_a_finished_job_says_why_not(admin_client, server):
    job = make_job(server, JobStatus.COMPLETED)

    response = press(admin_client, "queue_app_job_cancel", job)

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert "cannot be cancelled" in messages_of(response)[0]


def test_buttons_accept_only_post(admin_client, server):
    job = make_job(server)

    response = admin_client.get(reverse("admin:queue_app_job_cancel", args=[job.pk]))

    assert response.status_code == 405
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING


def test_buttons_need_a_staff_login(anon_client, server):
    job = make_job(server)

    anon_client.post(reverse("admin:queue_app_job_cancel", args=[job.pk]))

    job.refresh_from_db()
    assert job.status == JobStatus.PENDING


def test_retry_button_requeues_a_failed_job_as_a_new_attempt(admin_client, server):
    job = make_job(server, JobStatus.FAILED, result_details={"error": "boom"})

    response = press(admin_client, "queue_app_job_retry", job)

    job.refresh_from_db()
    assert (job.status, job.retry_count, job.result_details) == (JobStatus.PENDING, 1, None)
    assert messages_of(response) == ["Job queued again."]


def test_run_again_button_queues_a_copy_with_a_new_seed(
    admin_client, server, django_capture_on_commit_callbacks, published
):
    job = make_job(server, JobStatus.COMPLETED, priority=3)

    with django_capture_on_commit_callbacks(execute=True):
        response = press(admin_client, "queue_app_job_run_again", job)

    new = Job.objects.exclude(pk=job.pk).get()
    assert new.generation_params == {**PARAMS, "seed": ""}
    assert (new.status, new.server, new.priority) == (JobStatus.PENDING, server, 3)
    assert response.redirect_chain[-1][0] == reverse("admin:queue_app_job_change", args=[new.pk])
    assert ("queue_app.tasks.run_server", (server.pk,), {}) in published
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED


def test_run_again_keeps_a_job_for_any_server_for_any_server(db):
    job = make_job(None, JobStatus.COMPLETED)

    new = job_run_again(job_id=job.pk, owner=None)

    assert (new.target_server_alias, new.server) == (ANY_SERVER, None)


def test_run_again_of_a_job_whose_server_is_gone_says_so(admin_client, server):
    job = make_job(server, JobStatus.COMPLETED)
    Job.objects.filter(pk=job.pk).update(server=None, target_server_alias="Gone")

    response = press(admin_client, "queue_app_job_run_again", job)

    assert Job.objects.count() == 1
    assert "Server 'Gone' not found." in messages_of(response)


def test_the_job_list_shows_filters_and_searches_owners(admin_client, server, django_user_model):
    kid = django_user_model.objects.create(username="kid")
    kids = baker.make(Job, server=server, owner=kid, generation_params={"positive_prompt": "x"})
    baker.make(Job, server=server, generation_params={"positive_prompt": "y"})
    url = reverse("admin:queue_app_job_changelist")

    listed = admin_client.get(url)
    filtered = admin_client.get(url, {"owner__id__exact": kid.pk}).context["cl"].result_list
    searched = admin_client.get(url, {"q": "KID"}).context["cl"].result_list

    assert '<td class="field-owner nowrap">kid</td>' in listed.content.decode()
    assert list(filtered) == [kids]
    assert list(searched) == [kids]


# --- batches -----------------------------------------------------------------------------


def test_deleting_a_batch_in_the_admin_deletes_its_jobs_and_their_files(
    admin_client, server, django_capture_on_commit_callbacks
):
    batch, (job_id,), _ = batch_submit(
        owner=local_user(), target_server_alias="Laptop", generation_params=None, items=[PARAMS]
    )
    image = JobImage(job_id=job_id, index=0)
    image.file.save("x.png", ContentFile(b"png"), save=True)
    path = Path(image.file.path)

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:queue_app_batch_delete", args=[batch.pk]), {"post": "yes"})

    assert not Job.objects.exists()
    assert not path.exists()


def test_the_cancel_action_cancels_the_jobs_of_the_selected_batches(admin_client, server):
    batch, _, _ = batch_submit(
        owner=local_user(), target_server_alias="Laptop", generation_params=PARAMS, items=[{}, {}]
    )

    admin_client.post(
        reverse("admin:queue_app_batch_changelist"),
        {"action": "cancel_batches", "_selected_action": [batch.pk]},
    )

    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.CANCELLED}
    assert (
        admin_client.get(reverse("admin:queue_app_batch_change", args=[batch.pk])).status_code
        == 200
    )
