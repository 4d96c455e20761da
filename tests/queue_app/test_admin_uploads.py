"""The admin's job page shows an img2img / inpaint job's inputs; uploads have their own
read-only admin, whose delete goes through the service."""

import io

from django.urls import reverse
from model_bakery import baker
from PIL import Image

from core_app.scopes import local_user
from queue_app.models import Job, JobInput, JobInputRole, Upload
from queue_app.uploads import upload_create


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def test_the_job_page_shows_the_init_image_and_the_mask(admin_client, server):
    init = upload_create(owner=local_user(), data=png())
    mask = upload_create(owner=local_user(), data=png())
    job = baker.make(Job, owner=local_user(), server=server, target_server_alias=server.alias)
    JobInput.objects.create(job=job, upload=init, role=JobInputRole.INIT)
    JobInput.objects.create(job=job, upload=mask, role=JobInputRole.MASK)

    page = admin_client.get(reverse("admin:queue_app_job_change", args=[job.pk])).content.decode()

    assert reverse("upload-file", args=[init.pk]) in page
    assert reverse("upload-file", args=[mask.pk]) in page
    assert "init #0" in page
    assert "mask" in page


def test_the_job_page_captions_an_extension_units_image_apart_from_the_init_images(
    admin_client, server
):
    init = upload_create(owner=local_user(), data=png())
    unit = upload_create(owner=local_user(), data=png((64, 64)))
    job = baker.make(Job, owner=local_user(), server=server, target_server_alias=server.alias)
    JobInput.objects.create(job=job, upload=init, role=JobInputRole.INIT)
    JobInput.objects.create(job=job, upload=unit, role=JobInputRole.SCRIPT)

    page = admin_client.get(reverse("admin:queue_app_job_change", args=[job.pk])).content.decode()

    assert reverse("upload-file", args=[unit.pk]) in page
    assert page.count("init #0") == 1
    assert "script image #0 · 64&times;64" in page


def test_the_upload_list_shows_previews(admin_client):
    upload = upload_create(owner=local_user(), data=png())

    page = admin_client.get(reverse("admin:queue_app_upload_changelist")).content.decode()

    assert reverse("upload-file", args=[upload.pk]) in page


def test_deleting_an_upload_in_the_admin_removes_its_file(
    admin_client, django_capture_on_commit_callbacks
):
    upload = upload_create(owner=local_user(), data=png())
    url = reverse("admin:queue_app_upload_delete", args=[upload.pk])

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"post": "yes"})

    assert not Upload.objects.filter(pk=upload.pk).exists()
    assert not upload.file.storage.exists(upload.file.name)
