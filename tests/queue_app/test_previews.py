"""Live previews of running jobs (queue_app.previews): downscaling, the heartbeat's write,
the trigger that deletes a preview whatever ends its job's run, and
GET /api/v1/queue/jobs/<id>/preview."""

import io
from datetime import timedelta

import pytest
from django.utils import timezone
from model_bakery import baker
from PIL import Image

from queue_app import dispatch
from queue_app.control import jobs_cancel
from queue_app.models import Job, JobPreview, JobStatus
from queue_app.previews import (
    PREVIEW_MAX_SIDE,
    InvalidPreviewError,
    job_previews_drop,
    job_previews_install,
    preview_url,
    preview_webp,
)
from queue_app.services import job_delete
from servers_app.models import Server
from tests.admin_support import press
from tests.support import assert_error, key_client


def encoded(size: tuple[int, int], fmt: str = "PNG", colour=(200, 40, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def online(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


@pytest.fixture
def claim(online, django_user_model) -> dispatch.Claim:
    """A running job (of the user "owner") and its worker's claim."""
    owner, _ = django_user_model.objects.get_or_create(username="owner")
    baker.make(
        Job,
        server=online,
        target_server_alias=online.alias,
        owner=owner,
        generation_params={"positive_prompt": "x"},
    )
    claimed = dispatch.job_claim_next(server_id=online.pk)
    assert claimed is not None
    return claimed


def beat(claim: dispatch.Claim, version: int = 1, colour=(200, 40, 90)):
    progress = {"fraction": 0.5, "preview_id": version}
    preview = preview_webp(encoded((64, 64), colour=colour))
    return dispatch.job_heartbeat(
        claim=claim, progress=progress, preview=preview, preview_version=version
    )


# --- downscaling ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_preview_becomes_a_webp_of_at_most_256_px_on_its_long_side(fmt):
    preview = preview_webp(encoded((1024, 768), fmt))

    image = opened(preview.webp)
    assert image.format == "WEBP"
    assert image.size == (preview.width, preview.height) == (PREVIEW_MAX_SIDE, 192)


def test_a_small_preview_is_never_enlarged():
    preview = preview_webp(encoded((64, 48)))

    assert (preview.width, preview.height) == (64, 48)


def test_a_preview_with_alpha_keeps_it():
    out = io.BytesIO()
    Image.new("RGBA", (300, 300), (1, 2, 3, 100)).save(out, "PNG")

    image = opened(preview_webp(out.getvalue()).webp)

    assert image.mode == "RGBA"


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_an_unreadable_preview_is_refused(data):
    with pytest.raises(InvalidPreviewError):
        preview_webp(data)


def test_a_preview_of_absurd_size_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr("queue_app.previews.PREVIEW_MAX_PIXELS", 100 * 100)

    with pytest.raises(InvalidPreviewError):
        preview_webp(encoded((101, 100)))


# --- the heartbeat's write ------------------------------------------------------------------


def test_the_heartbeat_writes_the_preview_with_the_progress(claim):
    assert beat(claim, version=3) is None

    preview = JobPreview.objects.get()
    assert (preview.job_id, preview.version, preview.width) == (claim.job_id, 3, 64)
    assert opened(bytes(preview.image)).format == "WEBP"
    assert Job.objects.get().progress["preview_id"] == 3


def test_a_newer_preview_replaces_the_last_one(claim):
    beat(claim, version=1, colour=(0, 0, 0))

    beat(claim, version=2, colour=(255, 255, 255))

    preview = JobPreview.objects.get()
    assert preview.version == 2
    assert opened(bytes(preview.image)).getpixel((5, 5))[0] > 200


def test_a_heartbeat_without_a_preview_keeps_the_last_one(claim):
    beat(claim, version=1)

    dispatch.job_heartbeat(claim=claim, progress={"fraction": 0.7, "preview_id": 1})

    assert JobPreview.objects.get().version == 1


def test_no_preview_is_written_for_a_job_that_is_no_longer_ours(claim):
    Job.objects.filter(pk=claim.job_id).update(status=JobStatus.CANCELLED, lease_token=None)

    assert beat(claim) is not None

    assert not JobPreview.objects.exists()


# --- previews go when their job's run ends ---------------------------------------------------


def test_the_preview_goes_when_the_job_completes(claim):
    beat(claim)

    assert dispatch.job_complete(claim=claim, images=[], generation_info={})

    assert not JobPreview.objects.exists()


def test_the_preview_goes_when_the_job_fails(claim):
    beat(claim)

    assert dispatch.job_fail(claim=claim, error="boom")

    assert not JobPreview.objects.exists()


def test_the_preview_goes_when_the_job_is_cancelled_by_the_api(claim, owner_client):
    beat(claim)

    response = owner_client.post(f"/api/v1/queue/jobs/{claim.job_id}/cancel")

    assert response.status_code == 200
    assert not JobPreview.objects.exists()


def test_the_preview_goes_when_the_job_is_cancelled_in_the_admin(claim, admin_client):
    beat(claim)

    press(admin_client, "queue_app_job_cancel", Job.objects.get())

    assert Job.objects.get().status == JobStatus.CANCELLED
    assert not JobPreview.objects.exists()


def test_the_preview_goes_when_running_jobs_are_cancelled_in_bulk(claim):
    beat(claim)

    assert jobs_cancel(owner=None, include_processing=True) == 1

    assert not JobPreview.objects.exists()


def test_the_preview_goes_when_the_job_loses_its_lease(claim):
    beat(claim)
    Job.objects.filter(pk=claim.job_id).update(lease_expires_at=timezone.now() - timedelta(1))

    assert dispatch.jobs_recover_expired_leases()

    assert Job.objects.get().status == JobStatus.PENDING
    assert not JobPreview.objects.exists()


def test_the_preview_goes_when_the_job_gets_another_lease(claim):
    beat(claim)

    Job.objects.filter(pk=claim.job_id).update(lease_token=None)

    assert not JobPreview.objects.exists()


def test_the_preview_goes_when_the_job_is_deleted_by_the_service(claim):
    beat(claim)

    job_delete(job_id=claim.job_id, owner=None)

    assert not JobPreview.objects.exists()


def test_the_preview_goes_with_a_running_job_deleted_outright(claim):
    beat(claim)

    Job.objects.filter(pk=claim.job_id).delete()

    assert not JobPreview.objects.exists()


def test_the_preview_stays_while_the_job_runs(claim):
    beat(claim)

    Job.objects.filter(pk=claim.job_id).update(
        lease_expires_at=timezone.now() + timedelta(1), progress={"fraction": 0.9}
    )

    assert JobPreview.objects.exists()


def test_install_recreates_a_missing_trigger_and_drops_stale_previews(claim, transactional_db):
    beat(claim)
    job_previews_drop()
    Job.objects.filter(pk=claim.job_id).update(status=JobStatus.FAILED)
    assert JobPreview.objects.exists()  # no trigger: the preview stayed

    assert job_previews_install()  # what post_migrate runs

    assert not JobPreview.objects.exists()
    assert not job_previews_install()  # installed: nothing to do


# --- the endpoint ---------------------------------------------------------------------------


@pytest.fixture
def owner_client(claim):
    return key_client("owner")


def test_the_preview_is_served_as_webp_not_to_be_cached(claim, owner_client):
    beat(claim, version=2)

    response = owner_client.get(f"/api/v1/queue/jobs/{claim.job_id}/preview?v=2")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert "no-store" in response["Cache-Control"]
    assert response["ETag"] == f'"preview-{claim.job_id.hex}-2"'
    assert opened(b"".join(response.streaming_content)).format == "WEBP"


def test_the_same_preview_again_is_not_modified(claim, owner_client):
    beat(claim, version=2)
    url = f"/api/v1/queue/jobs/{claim.job_id}/preview"
    etag = owner_client.get(url)["ETag"]

    again = owner_client.get(url, HTTP_IF_NONE_MATCH=etag)
    newer = (beat(claim, version=3), owner_client.get(url, HTTP_IF_NONE_MATCH=etag))[1]

    assert again.status_code == 304
    assert newer.status_code == 200


def test_a_running_job_without_a_preview_yet_is_preview_not_found(claim, owner_client):
    response = owner_client.get(f"/api/v1/queue/jobs/{claim.job_id}/preview")

    assert_error(response, 404, "preview_not_found")


def test_a_finished_job_has_no_preview(claim, owner_client):
    beat(claim)
    dispatch.job_complete(claim=claim, images=[], generation_info={})

    response = owner_client.get(f"/api/v1/queue/jobs/{claim.job_id}/preview")

    assert_error(response, 404, "preview_not_found")


def test_another_users_job_preview_is_not_found(claim):
    beat(claim)

    response = key_client("someone else").get(f"/api/v1/queue/jobs/{claim.job_id}/preview")

    assert_error(response, 404, "job_not_found")


def test_an_admin_key_sees_any_users_preview(claim):
    beat(claim)

    response = key_client("admin", scope="admin").get(f"/api/v1/queue/jobs/{claim.job_id}/preview")

    assert response.status_code == 200


def test_an_unknown_job_has_no_preview(db, owner_client):
    response = owner_client.get("/api/v1/queue/jobs/not-a-job/preview")

    assert_error(response, 404, "job_not_found")


def test_the_running_job_shows_where_its_preview_is(claim, owner_client):
    url = preview_url(claim.job_id, 4)
    dispatch.job_heartbeat(
        claim=claim, progress={"fraction": 0.4, "preview_id": 4, "preview_url": url}
    )

    body = owner_client.get(f"/api/v1/queue/jobs/{claim.job_id}/status").json()

    assert body["progress"]["preview_id"] == 4
    assert body["progress"]["preview_url"] == f"/api/v1/queue/jobs/{claim.job_id}/preview?v=4"


def test_the_preview_url_is_absolute_on_the_public_url(db, settings):
    settings.MOBILESD_PUBLIC_URL = "https://user@sd.example.org:8443/ignored"

    url = preview_url("0b2a1c8e-2f55-4b43-9c4a-4e5e9f2d7a10", 7)

    assert url == (
        "https://sd.example.org:8443/api/v1/queue/jobs/0b2a1c8e-2f55-4b43-9c4a-4e5e9f2d7a10"
        "/preview?v=7"
    )


# --- the admin ------------------------------------------------------------------------------


def test_the_job_page_shows_the_live_preview_while_the_job_runs(claim, admin_client):
    beat(claim, version=5)

    page = admin_client.get(f"/admin/queue_app/job/{claim.job_id}/change/").content.decode()
    image = admin_client.get(f"/api/v1/queue/jobs/{claim.job_id}/preview?v=5")

    assert f'src="/api/v1/queue/jobs/{claim.job_id}/preview?v=5"' in page
    assert image.status_code == 200


def test_the_job_page_shows_no_preview_once_the_job_ended(claim, admin_client):
    beat(claim)
    dispatch.job_complete(claim=claim, images=[], generation_info={})

    page = admin_client.get(f"/admin/queue_app/job/{claim.job_id}/change/").content.decode()

    assert "/preview?v=" not in page
