"""POST/GET/DELETE /api/v1/uploads: checked images stored as sent, owner-scoped, and the
removal of unused ones."""

import hashlib
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from model_bakery import baker
from PIL import Image

from queue_app.models import Job, JobInput, JobInputRole, Upload
from queue_app.tasks import remove_unused_uploads
from queue_app.uploads import upload_create, uploads_remove_unused
from tests.support import UUID_RE, assert_error, db_snapshot, key_client

URL = "/api/v1/uploads"


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 30), **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, fmt, **save)
    return out.getvalue()


def rotated_jpeg(size: tuple[int, int] = (40, 30), orientation: int = 6) -> bytes:
    """A JPEG stored 40x30 whose EXIF says: turn 90 degrees to show it (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes("JPEG", size, exif=exif.tobytes())


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "uploads"
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def upload_raw(api_client: Any, data: bytes, content_type: str = "image/png") -> Any:
    return api_client.generic("POST", URL, data, content_type=content_type)


def upload_multipart(api_client: Any, data: bytes, name: str = "photo.png") -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return api_client.post(URL, {"image": SimpleUploadedFile(name, data)}, format="multipart")


@pytest.fixture
def alice(db) -> Any:
    return key_client("alice")


def owner(username: str = "alice") -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


# --- uploading ------------------------------------------------------------------------------


def test_a_multipart_png_is_stored_byte_for_byte_and_described(alice):
    data = image_bytes()

    response = upload_multipart(alice, data)

    assert response.status_code == 201, response.content
    body = response.json()
    assert UUID_RE.match(body["upload_id"])
    assert (body["width"], body["height"], body["content_type"]) == (40, 30, "image/png")
    assert (body["bytes"], body["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    upload = Upload.objects.get(pk=body["upload_id"])
    with upload.file.open("rb") as handle:
        assert handle.read() == data


def test_a_raw_jpeg_body_is_accepted(alice):
    response = upload_raw(alice, image_bytes("JPEG"), "image/jpeg")

    assert response.status_code == 201
    assert response.json()["content_type"] == "image/jpeg"


def test_the_format_is_read_from_the_bytes_not_the_content_type_or_name(alice):
    webp = image_bytes("WEBP")

    raw = upload_raw(alice, webp, "application/octet-stream")
    named = upload_multipart(alice, webp, name="lies.png")

    assert raw.json()["content_type"] == named.json()["content_type"] == "image/webp"


def test_a_photo_turned_by_its_exif_is_stored_turned_as_a_png(alice):
    response = upload_raw(alice, rotated_jpeg(), "image/jpeg")

    body = response.json()
    assert (body["width"], body["height"], body["content_type"]) == (30, 40, "image/png")
    with Upload.objects.get(pk=body["upload_id"]).file.open("rb") as handle:
        assert Image.open(handle).size == (30, 40)


@pytest.mark.parametrize("orientation", [0, 1, 9, 65535])
def test_a_photo_whose_exif_orientation_turns_nothing_is_stored_byte_for_byte(alice, orientation):
    # 1 is "as stored"; 0 (which some devices write) and values past 8 mean nothing.
    data = rotated_jpeg(orientation=orientation)

    body = upload_raw(alice, data, "image/jpeg").json()

    assert (body["width"], body["height"], body["content_type"]) == (40, 30, "image/jpeg")
    with Upload.objects.get(pk=body["upload_id"]).file.open("rb") as handle:
        assert handle.read() == data


@pytest.mark.parametrize(
    ("orientation", "size"),
    [(2, (40, 30)), (3, (40, 30)), (4, (40, 30))] + [(n, (30, 40)) for n in (5, 6, 7, 8)],
)
def test_each_turning_exif_orientation_is_applied(alice, orientation, size):
    body = upload_raw(alice, rotated_jpeg(orientation=orientation), "image/jpeg").json()

    assert ((body["width"], body["height"]), body["content_type"]) == (size, "image/png")


@pytest.mark.parametrize(
    "data",
    [b"just some text", image_bytes("GIF"), image_bytes()[:-40], b""],
    ids=["text", "gif", "truncated", "empty"],
)
def test_a_non_image_is_a_400_and_nothing_is_stored(alice, data):
    before = db_snapshot()

    assert_error(upload_raw(alice, data, "image/png"), 400, "invalid_image")
    assert db_snapshot() == before
    assert stored_files() == []


def test_a_multipart_request_without_the_image_field_is_a_400(alice):
    response = alice.post(URL, {"other": "x"}, format="multipart")

    assert_error(response, 400, "validation_error")


@pytest.mark.parametrize("send", [upload_raw, upload_multipart], ids=["raw", "multipart"])
def test_an_upload_over_the_byte_limit_is_a_413_and_nothing_is_stored(alice, settings, send):
    data = image_bytes(size=(300, 300))
    settings.MOBILESD_UPLOAD_MAX_BYTES = len(data) - 1
    before = db_snapshot()

    assert_error(send(alice, data), 413, "upload_too_large")
    assert db_snapshot() == before
    assert stored_files() == []


def test_an_image_over_the_pixel_limit_is_a_413(alice, settings):
    settings.MOBILESD_UPLOAD_MAX_PIXELS = 40 * 30 - 1

    body = assert_error(upload_raw(alice, image_bytes()), 413, "upload_too_large")

    assert "pixels" in body["message"]
    assert stored_files() == []


# --- reading and deleting -------------------------------------------------------------------


def test_an_upload_shows_its_metadata(alice):
    upload_id = upload_raw(alice, image_bytes()).json()["upload_id"]

    response = alice.get(f"{URL}/{upload_id}")

    assert response.status_code == 200
    assert response.json()["upload_id"] == upload_id


@pytest.mark.parametrize("upload_id", ["0b5c7d1e-1111-4222-8333-444455556666", "not-a-uuid"])
def test_an_unknown_upload_is_a_404(alice, upload_id):
    assert_error(alice.get(f"{URL}/{upload_id}"), 404, "upload_not_found")


def test_the_list_shows_only_the_callers_own_uploads(alice):
    mine = upload_raw(alice, image_bytes()).json()["upload_id"]
    upload_raw(key_client("bob"), image_bytes())

    body = alice.get(URL).json()

    assert body["total"] == 1
    assert [item["upload_id"] for item in body["uploads"]] == [mine]


def test_deleting_an_unused_upload_removes_it_and_its_file(
    alice, django_capture_on_commit_callbacks
):
    upload_id = upload_raw(alice, image_bytes()).json()["upload_id"]

    with django_capture_on_commit_callbacks(execute=True):
        response = alice.delete(f"{URL}/{upload_id}")

    assert response.status_code == 200
    assert not Upload.objects.filter(pk=upload_id).exists()
    assert stored_files() == []
    assert_error(alice.get(f"{URL}/{upload_id}"), 404, "upload_not_found")


def test_deleting_an_upload_a_job_uses_hides_it_but_keeps_its_file(alice, server):
    upload_id = upload_raw(alice, image_bytes()).json()["upload_id"]
    upload = Upload.objects.get(pk=upload_id)
    job = baker.make(Job, owner=upload.owner, server=server, target_server_alias=server.alias)
    JobInput.objects.create(job=job, upload=upload, role=JobInputRole.INIT)

    alice.delete(f"{URL}/{upload_id}")

    assert_error(alice.get(f"{URL}/{upload_id}"), 404, "upload_not_found")
    assert Upload.objects.get(pk=upload_id).deleted_at is not None
    assert len(stored_files()) == 1


# --- removal of unused uploads --------------------------------------------------------------


def old_upload(*, days: float = 2) -> Upload:
    upload = upload_create(owner=baker.make("auth.User"), data=image_bytes())
    Upload.objects.filter(pk=upload.pk).update(last_used_at=timezone.now() - timedelta(days=days))
    return upload


def test_unused_uploads_older_than_the_retention_are_removed_with_their_files(
    db, settings, django_capture_on_commit_callbacks
):
    settings.MOBILESD_UPLOAD_RETENTION_SECONDS = 24 * 3600
    old, recent = old_upload(days=2), old_upload(days=0.5)

    with django_capture_on_commit_callbacks(execute=True):
        removed = uploads_remove_unused()

    assert removed == 1
    assert list(Upload.objects.values_list("pk", flat=True)) == [recent.pk]
    assert [path.name for path in stored_files()] == [Path(recent.file.name).name]
    assert not old.file.storage.exists(old.file.name)


def test_an_upload_a_job_uses_is_kept_however_old(db, server):
    upload = old_upload(days=30)
    job = baker.make(Job, owner=upload.owner, server=server, target_server_alias=server.alias)
    JobInput.objects.create(job=job, upload=upload, role=JobInputRole.INIT)

    assert uploads_remove_unused() == 0
    assert Upload.objects.filter(pk=upload.pk).exists()


def test_a_deleted_upload_goes_once_its_last_job_is_gone(db, server):
    upload = old_upload(days=0)
    job = baker.make(Job, owner=upload.owner, server=server, target_server_alias=server.alias)
    JobInput.objects.create(job=job, upload=upload, role=JobInputRole.MASK)
    Upload.objects.filter(pk=upload.pk).update(deleted_at=timezone.now())
    assert uploads_remove_unused() == 0

    job.delete()

    assert uploads_remove_unused() == 1


def test_the_periodic_task_and_the_command_remove_unused_uploads(db):
    old_upload()
    remove_unused_uploads()
    old_upload()

    call_command("remove_unused_uploads", stdout=io.StringIO())

    assert not Upload.objects.exists()


def test_the_beat_schedule_runs_the_removal():
    entries = settings.CELERY_BEAT_SCHEDULE.values()

    assert "queue_app.tasks.remove_unused_uploads" in {entry["task"] for entry in entries}


# --- the file -----------------------------------------------------------------------------


def test_the_file_is_served_as_stored(alice):
    data = image_bytes("WEBP")
    upload_id = upload_raw(alice, data, "image/webp").json()["upload_id"]

    response = alice.get(f"{URL}/{upload_id}/file")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert b"".join(response.streaming_content) == data


def test_another_users_file_is_a_404(alice):
    upload_id = upload_raw(alice, image_bytes()).json()["upload_id"]

    assert_error(key_client("bob").get(f"{URL}/{upload_id}/file"), 404, "upload_not_found")


def test_a_turned_cmyk_jpeg_is_stored_as_an_rgb_png(alice):
    exif = Image.Exif()
    exif[0x0112] = 8
    out = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 50, 50, 0)).save(out, "JPEG", exif=exif.tobytes())

    response = upload_raw(alice, out.getvalue(), "image/jpeg")

    assert response.status_code == 201
    assert (response.json()["width"], response.json()["content_type"]) == (30, "image/png")
