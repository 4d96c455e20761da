"""Django admin: every registered model's pages, search, and the actions that call services."""

from pathlib import Path

import pytest
from django.apps import apps
from django.contrib import admin
from django.core.files.base import ContentFile
from django.urls import reverse
from model_bakery import baker

from core_app.models import ApiKey
from core_app.services import api_key_create
from queue_app.models import Job, JobImage, JobStatus
from servers_app.models import Server


@pytest.fixture
def job(server) -> Job:
    return baker.make(
        Job,
        server=server,
        target_server_alias="Laptop",
        generation_params={"positive_prompt": "a lighthouse at dusk", "steps": 5},
    )


def registered_models():
    return [model for model in admin.site._registry if model._meta.app_label.endswith("_app")]


def project_models():
    return {m for m in apps.get_models() if m._meta.app_label.endswith("_app")}


def inline_models():
    return {
        inline.model
        for model_admin in admin.site._registry.values()
        for inline in model_admin.inlines
    }


def test_every_project_model_has_an_admin_page():
    # JobImage rows are shown large on their job's page and in the gallery instead.
    missing = project_models() - set(registered_models()) - inline_models()

    assert {m._meta.label for m in missing} == {"queue_app.JobImage"}
    assert {
        "core_app.ApiKey",
        "servers_app.Server",
        "servers_app.CachedModel",
        "queue_app.Job",
        "civitai_app.Download",
        "civitai_app.CivitaiSettings",
    } <= {m._meta.label for m in registered_models()}


def make_instance(model, job):
    """A saved instance of `model` that its change page can show."""
    if model is Job:
        return job
    if model is Server:
        return job.server
    if model is ApiKey:
        return api_key_create(name="phone")[0]
    return baker.make(model, _fill_optional=False)


@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m._meta.label)
def test_changelist_and_search_render(admin_client, job, model):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")

    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": "lighthouse"}).status_code == 200


@pytest.mark.parametrize("model", registered_models(), ids=lambda m: m._meta.label)
def test_change_page_renders(admin_client, job, model):
    obj = make_instance(model, job)
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])

    assert admin_client.get(url).status_code == 200


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


def test_server_delete_action_refuses_servers_with_active_jobs(admin_client, job):
    idle = baker.make(Server, alias="Idle", api_url="http://idle:1")

    admin_client.post(
        reverse("admin:servers_app_server_changelist"),
        {"action": "delete_idle_servers", "_selected_action": [job.server.pk, idle.pk]},
    )

    assert list(Server.objects.values_list("alias", flat=True)) == ["Laptop"]


def test_server_admin_keeps_the_password_when_left_empty(admin_client, db):
    server = baker.make(Server, alias="L", api_url="http://a:1", username="u", password="s3cr3t-pw")

    admin_client.post(
        reverse("admin:servers_app_server_change", args=[server.pk]),
        {
            "alias": "L",
            "api_url": "http://b:1",
            "username": "u",
            "password": "",
            "slots": 1,
            "enabled": "on",
        },
    )

    server.refresh_from_db()
    assert (server.api_url, server.password) == ("http://b:1", "s3cr3t-pw")
    page = admin_client.get(reverse("admin:servers_app_server_change", args=[server.pk]))
    assert "s3cr3t-pw" not in page.content.decode()


def test_a_server_added_in_the_admin_is_health_checked_at_once(
    admin_client, db, django_capture_on_commit_callbacks, published
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:servers_app_server_add"),
            {
                "alias": "Desktop",
                "api_url": "http://127.0.0.1:7861",
                "username": "u",
                "password": "s3cr3t-pw",
                "slots": 2,
                "enabled": "on",
            },
        )

    server = Server.objects.get(alias="Desktop")
    assert response.status_code == 302
    assert (server.api_url, server.username, server.password, server.slots) == (
        "http://127.0.0.1:7861",
        "u",
        "s3cr3t-pw",
        2,
    )
    assert ("queue_app.tasks.check_server", (server.pk,), {}) in published


def test_a_server_changed_in_the_admin_is_checked_again_and_its_jobs_follow_a_rename(
    admin_client, job, django_capture_on_commit_callbacks, published
):
    server = job.server

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:servers_app_server_change", args=[server.pk]),
            {"alias": "Gaming-PC", "api_url": server.api_url, "slots": 1, "enabled": "on"},
        )

    job.refresh_from_db()
    assert job.target_server_alias == "Gaming-PC"  # server_update renamed the jobs' alias
    assert ("queue_app.tasks.check_server", (server.pk,), {}) in published


def test_the_server_form_refuses_what_the_api_refuses(admin_client, server):
    response = admin_client.post(
        reverse("admin:servers_app_server_add"),
        {"alias": "Laptop", "api_url": "ftp://nowhere", "slots": 0, "enabled": "on"},
    )

    errors = response.context["adminform"].form.errors
    assert {"alias", "api_url", "slots"} <= set(errors)
    assert Server.objects.count() == 1


def test_creating_a_key_in_the_admin_shows_it_once(admin_client, db):
    response = admin_client.post(
        reverse("admin:core_app_apikey_add"), {"name": "tablet"}, follow=True
    )

    shown = [str(m) for m in response.context["messages"]]
    raw_key = shown[0].rsplit(" ", 1)[1]
    assert raw_key.startswith("msd_")
    api_client_response = admin_client.get("/api/v1/servers", HTTP_X_API_KEY=raw_key)
    assert api_client_response.status_code == 200
    assert raw_key not in str(list(ApiKey.objects.values_list()))


def test_revoke_action(admin_client, db):
    api_key_create(name="old phone")

    admin_client.post(
        reverse("admin:core_app_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [ApiKey.objects.get().pk]},
    )

    assert ApiKey.objects.get().revoked_at is not None
