"""Upgrading to users and scopes (core_app 0003, queue_app 0005, civitai_app 0002), run on
rows as a MobileSD without users stored them: every key keeps working, as an admin key of
the oldest superuser (or of the local user, created), and every job and download gets an
owner."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

from civitai_app.models import Download
from core_app.models import ApiKey, KeyScope, generate_raw_key, hash_key
from queue_app.models import Job
from tests.support import key_client

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_USERS = [
    ("core_app", "0002_worker_heartbeat"),
    ("queue_app", "0004_job_pending_heads"),
    ("civitai_app", "0001_initial"),
    ("servers_app", "0004_username_validator_and_url_credentials"),
]


@pytest.fixture
def old_apps() -> Iterator[Any]:
    """The models as they were before users; the test's rows are then migrated to today."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_USERS)
    yield executor.loader.project_state(BEFORE_USERS).apps
    upgrade()  # whatever the test did: the next tests need today's schema


def upgrade() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def old_rows(old_apps: Any) -> dict[str, Any]:
    """A key, a job it submitted, a job of anonymous mode, and a download, stored the old way."""
    server = old_apps.get_model("servers_app", "Server").objects.create(
        alias="Laptop", api_url="http://127.0.0.1:7860"
    )
    raw_key, prefix = generate_raw_key()
    key = old_apps.get_model("core_app", "ApiKey").objects.create(
        name="old phone", prefix=prefix, key_hash=hash_key(raw_key)
    )
    job_model = old_apps.get_model("queue_app", "Job")
    keyed = job_model.objects.create(
        server=server, target_server_alias="Laptop", generation_params={}, api_key=key
    )
    anonymous = job_model.objects.create(
        server=server, target_server_alias="Laptop", generation_params={}
    )
    download = old_apps.get_model("civitai_app", "Download").objects.create(
        model_version_id=1,
        model_type="Checkpoint",
        file_id=1,
        file_name="a.safetensors",
        folder="Stable-diffusion",
        download_url="https://civitai.com/api/download/models/1",
        sha256="b" * 64,
    )
    return {
        "key": key.pk,
        "raw_key": raw_key,
        "keyed": keyed.pk,
        "anonymous": anonymous.pk,
        "download": download.pk,
    }


def test_upgrading_gives_old_keys_the_oldest_superuser_as_admin_keys(old_apps):
    user_model = get_user_model()  # unchanged by these migrations
    user_model.objects.create(username="someone", password="!")
    root = user_model.objects.create(username="root", password="!", is_superuser=True)
    user_model.objects.create(username="later-root", password="!", is_superuser=True)
    rows = old_rows(old_apps)

    upgrade()

    key = ApiKey.objects.get(pk=rows["key"])
    assert (key.user.pk, key.scope) == (root.pk, KeyScope.ADMIN)
    assert Job.objects.get(pk=rows["keyed"]).owner.pk == root.pk
    local = Job.objects.get(pk=rows["anonymous"]).owner
    assert local.username == settings.MOBILESD_ANONYMOUS_USER
    assert Download.objects.get(pk=rows["download"]).owner.pk == root.pk


def test_upgrading_without_a_superuser_gives_everything_to_the_local_user(old_apps):
    rows = old_rows(old_apps)

    upgrade()

    key = ApiKey.objects.get(pk=rows["key"])
    local = settings.MOBILESD_ANONYMOUS_USER
    assert (key.user.username, key.scope) == (local, KeyScope.ADMIN)
    assert Job.objects.get(pk=rows["keyed"]).owner.username == local
    assert Job.objects.get(pk=rows["anonymous"]).owner.username == local
    assert Download.objects.get(pk=rows["download"]).owner.username == local


def test_an_upgraded_key_still_works_and_sees_every_users_jobs(old_apps):
    rows = old_rows(old_apps)
    upgrade()
    newcomer = key_client("newcomer")
    body = {"target_server_alias": "Laptop", "generation_params": {"positive_prompt": "x"}}
    assert newcomer.post("/api/v1/generate", body, format="json").status_code == 202

    response = APIClient(HTTP_X_API_KEY=rows["raw_key"]).get("/api/v1/queue/jobs")

    assert response.status_code == 200
    assert response.json()["total"] == 3
