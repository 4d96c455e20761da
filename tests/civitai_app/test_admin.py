"""The admin's Civitai pages: downloads (progress, cancel, retry) and the settings."""

import uuid

import pytest
from django.urls import reverse
from model_bakery import baker

from civitai_app.models import CivitaiSettings, Download, DownloadStatus, DownloadTarget


@pytest.fixture
def running(laptop) -> Download:
    download = baker.make(
        Download,
        status=DownloadStatus.DOWNLOADING,
        lease_token=uuid.uuid4(),
        file_name="juggernautXL_v9.safetensors",
        model_name="Juggernaut XL",
        model_type="Checkpoint",
        folder="Stable-diffusion",
        size_bytes=4_000_000,
        bytes_done=1_000_000,
        speed_bytes_per_second=500_000.0,
    )
    baker.make(
        DownloadTarget, download=download, server=laptop, path="/x/juggernautXL_v9.safetensors"
    )
    return download


def test_the_download_list_shows_progress_speed_and_eta(admin_client, running):
    page = admin_client.get(reverse("admin:civitai_app_download_changelist")).content.decode()

    assert "juggernautXL_v9.safetensors" in page
    assert '<progress value="25"' in page
    assert "488.3 KiB/s" in page
    assert "6s" in page  # 3 MB left at 500 kB/s
    assert "Laptop" in page


def test_the_download_page_renders_read_only(admin_client, running):
    response = admin_client.get(reverse("admin:civitai_app_download_change", args=[running.pk]))

    assert response.status_code == 200
    assert "status" not in response.context["adminform"].form.fields


def test_cancel_and_retry_actions_use_the_services(admin_client, running):
    url = reverse("admin:civitai_app_download_changelist")

    admin_client.post(url, {"action": "cancel_downloads", "_selected_action": [running.pk]})
    cancelled = Download.objects.get(pk=running.pk).status
    admin_client.post(url, {"action": "retry_downloads", "_selected_action": [running.pk]})

    assert cancelled == DownloadStatus.CANCELLED
    assert Download.objects.get(pk=running.pk).status == DownloadStatus.PENDING


def test_downloads_cannot_be_added_by_hand(admin_client):
    assert admin_client.get(reverse("admin:civitai_app_download_add")).status_code == 403


def test_the_settings_keep_the_key_secret_and_override_the_environment(admin_client, settings):
    settings.CIVITAI_API_KEY = "from-env"
    row = CivitaiSettings.load()
    url = reverse("admin:civitai_app_civitaisettings_change", args=[row.pk])

    admin_client.post(url, {"api_key": "s3cret-key", "max_concurrent_downloads": "3"})
    after_set = CivitaiSettings.load()
    admin_client.post(url, {"api_key": "", "max_concurrent_downloads": "3"})
    kept = CivitaiSettings.load().api_key
    page = admin_client.get(url).content.decode()
    admin_client.post(url, {"api_key": "", "clear_api_key": "on", "max_concurrent_downloads": ""})

    assert (after_set.effective_api_key, after_set.effective_max_concurrent_downloads) == (
        "s3cret-key",
        3,
    )
    assert kept == "s3cret-key"
    assert "s3cret-key" not in page
    assert "set here" in page
    assert CivitaiSettings.load().effective_api_key == "from-env"


def test_there_is_one_settings_row_that_cannot_be_deleted(admin_client):
    admin_client.get(reverse("admin:civitai_app_civitaisettings_changelist"))
    row = CivitaiSettings.objects.get()

    assert row.pk == 1
    assert admin_client.get(reverse("admin:civitai_app_civitaisettings_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:civitai_app_civitaisettings_delete", args=[1])).status_code
        == 403
    )
