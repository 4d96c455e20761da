"""GET /api/v1/queue/jobs/<id>/images, .../images/<index>, .../images/<index>/thumbnail, and
/outputs/<name>."""

import io
import uuid
from datetime import UTC, datetime
from pathlib import PurePosixPath

import jsonschema_rs
import pytest
from django.core.files.storage import default_storage
from model_bakery import baker
from PIL import Image, PngImagePlugin

from queue_app import images
from queue_app.images import image_storage_names, save_image_file, stored_name, thumbnail_name
from queue_app.models import Job, JobImage, JobStatus
from tests.openapi_check import schema_document
from tests.support import assert_error

WHEN = datetime(2025, 5, 14, 2, 40, 48, 393000, tzinfo=UTC)
INFOTEXT = "a cat\nNegative prompt: ugly\nSteps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 42"
IMMUTABLE = "private, max-age=31536000, immutable"


def png_bytes(size=(640, 480)) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", INFOTEXT)
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg_bytes(size=(320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def make_job(server) -> Job:
    return baker.make(
        Job,
        server=server,
        target_server_alias=server.alias,
        status=JobStatus.COMPLETED,
        generation_params={"positive_prompt": "a cat"},
    )


def add_image(job: Job, data: bytes, *, index: int = 0, seed: int | None = 42) -> JobImage:
    """An image of `job` as the engine stores one: its file, its row, and its name at
    `index` in `result_details.images` (queue_app.dispatch.job_complete)."""
    stored = save_image_file(job_id=job.pk, index=index, data=data, seed=seed, when=WHEN)
    details = dict(job.result_details or {})
    names = list(details.get("images") or [])
    names.extend([None] * (index + 1 - len(names)))
    names[index] = PurePosixPath(stored.name).name
    job.result_details = {**details, "images": names}
    Job.objects.filter(pk=job.pk).update(result_details=job.result_details)
    return JobImage.objects.create(
        job=job,
        index=index,
        file=stored.name,
        seed=seed,
        width=stored.width,
        height=stored.height,
        infotext=stored.infotext,
    )


def body_of(response) -> bytes:
    """Read a file response to its end. Reading, not response.close(), is what lets the test
    client close the file with its connection handling switched off: a direct close() ends
    the "request" and Django closes the database connection of the test transaction."""
    return b"".join(response.streaming_content)


@pytest.fixture
def job(server) -> Job:
    return make_job(server)


@pytest.fixture
def png_image(job) -> JobImage:
    return add_image(job, png_bytes())


# --- list ---------------------------------------------------------------------------------


def test_list_describes_every_image_with_links_on_the_public_url(client, job, settings):
    settings.MOBILESD_PUBLIC_URL = "https://sd.example.org"
    add_image(job, jpeg_bytes((320, 240)), index=1, seed=None)
    add_image(job, png_bytes((640, 480)), index=0, seed=1806652750)

    response = client.get(f"/api/v1/queue/jobs/{job.pk}/images")

    assert response.status_code == 200
    base = f"https://sd.example.org/api/v1/queue/jobs/{job.pk}/images"
    prefix = job.pk.hex[:8]
    body = response.json()
    for entry in body["images"]:  # the signed links: tests/queue_app/test_signed_links.py
        assert entry.pop("signed_url").startswith(f"{base}/{entry['index']}?exp=")
        assert entry.pop("signed_thumbnail_url").startswith(
            f"{base}/{entry['index']}/thumbnail?exp="
        )
    assert body == {
        "images": [
            {
                "index": 0,
                "name": f"{prefix}_1747190448393_00000-1806652750.png",
                "seed": 1806652750,
                "width": 640,
                "height": 480,
                "url": f"{base}/0",
                "thumbnail_url": f"{base}/0/thumbnail",
            },
            {
                "index": 1,
                "name": f"{prefix}_1747190448393_00001.jpg",
                "seed": None,
                "width": 320,
                "height": 240,
                "url": f"{base}/1",
                "thumbnail_url": f"{base}/1/thumbnail",
            },
        ]
    }


def test_links_are_paths_without_a_public_url_whatever_the_host_header(client, job, settings):
    settings.MOBILESD_PUBLIC_URL = ""
    settings.ALLOWED_HOSTS = ["*"]
    add_image(job, png_bytes((64, 64)), index=0, seed=1)

    response = client.get(f"/api/v1/queue/jobs/{job.pk}/images", HTTP_HOST="evil.example")

    (entry,) = response.json()["images"]
    assert entry["url"] == f"/api/v1/queue/jobs/{job.pk}/images/0"
    assert entry["thumbnail_url"] == f"/api/v1/queue/jobs/{job.pk}/images/0/thumbnail"


@pytest.mark.parametrize("public_url", ["", "http://192.168.1.5:8000"])
def test_links_are_what_the_document_says_they_are_paths_included(
    client, job, settings, public_url
):
    """Found by the fuzz run (tests/test_fuzz.py): the document said `format: uri`, which a
    path (the links without MOBILESD_PUBLIC_URL) is not; they are `uri-reference`."""
    settings.MOBILESD_PUBLIC_URL = public_url
    add_image(job, png_bytes((64, 64)), index=0, seed=1)

    (entry,) = client.get(f"/api/v1/queue/jobs/{job.pk}/images").json()["images"]

    image_schema = schema_document()["components"]["schemas"]["JobImage"]
    jsonschema_rs.validator_for(image_schema, validate_formats=True).validate(entry)


def test_public_url_links_ignore_the_host_header(client, job, settings):
    settings.MOBILESD_PUBLIC_URL = "http://192.168.1.5:8000"
    settings.ALLOWED_HOSTS = ["*"]
    add_image(job, png_bytes((64, 64)), index=0, seed=1)

    response = client.get(f"/api/v1/queue/jobs/{job.pk}/images", HTTP_HOST="evil.example")

    (entry,) = response.json()["images"]
    assert entry["url"] == f"http://192.168.1.5:8000/api/v1/queue/jobs/{job.pk}/images/0"


def test_list_of_a_job_without_images_is_empty(client, job):
    response = client.get(f"/api/v1/queue/jobs/{job.pk}/images")

    assert response.status_code == 200
    assert response.json() == {"images": []}


def test_listed_links_serve_the_image_and_its_thumbnail(client, png_image):
    entry = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images").json()["images"][0]

    image, thumb = client.get(entry["url"]), client.get(entry["thumbnail_url"])

    assert (image.status_code, thumb.status_code) == (200, 200)
    with default_storage.open(png_image.file.name) as stored:
        assert body_of(image) == stored.read()
    assert Image.open(io.BytesIO(body_of(thumb))).format == "WEBP"


@pytest.mark.parametrize("job_id", ["nope", "3e5128a1-456a-49d8-82f1-7c7351e8600a"])
def test_list_of_an_unknown_job_is_404(client, server, job_id):
    assert_error(client.get(f"/api/v1/queue/jobs/{job_id}/images"), 404, "job_not_found")


# --- the image file -----------------------------------------------------------------------


def test_image_is_served_unchanged_with_its_type_and_name(client, job):
    data = png_bytes()
    image = add_image(job, data)

    response = client.get(f"/api/v1/queue/jobs/{job.pk}/images/0")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    filename = stored_name(image).rsplit("/", 1)[1]
    assert response["Content-Disposition"] == f'inline; filename="{filename}"'
    assert response["Content-Length"] == str(len(data))
    assert body_of(response) == data


def test_jpeg_image_is_served_as_jpeg(client, job):
    add_image(job, jpeg_bytes())

    response = client.get(f"/api/v1/queue/jobs/{job.pk}/images/0")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Content-Disposition"].endswith('.jpg"')
    body_of(response)


def test_image_may_be_cached_forever(client, png_image):
    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0")

    assert response["Cache-Control"] == IMMUTABLE
    assert response["ETag"].startswith('"')
    body_of(response)


def test_image_with_a_matching_etag_is_not_modified(client, png_image):
    url = f"/api/v1/queue/jobs/{png_image.job_id}/images/0"
    first = client.get(url)
    body_of(first)

    second = client.get(url, HTTP_IF_NONE_MATCH=f'W/{first["ETag"]}, "other"')

    assert second.status_code == 304
    assert second["ETag"] == first["ETag"]
    assert second["Cache-Control"] == IMMUTABLE
    assert second.content == b""


def test_image_with_another_etag_is_sent_again(client, png_image):
    response = client.get(
        f"/api/v1/queue/jobs/{png_image.job_id}/images/0", HTTP_IF_NONE_MATCH='"stale"'
    )

    assert response.status_code == 200
    body_of(response)


@pytest.mark.parametrize("suffix", ["", "/thumbnail"])
def test_a_client_asking_for_octet_stream_only_gets_the_bytes_under_that_type(
    client, png_image, suffix
):
    url = f"/api/v1/queue/jobs/{png_image.job_id}/images/0{suffix}"
    response = client.get(url, HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert body_of(response) == body_of(client.get(url))


def test_an_image_type_beside_octet_stream_keeps_the_images_own_type(client, png_image):
    response = client.get(
        f"/api/v1/queue/jobs/{png_image.job_id}/images/0",
        HTTP_ACCEPT="application/octet-stream, image/*;q=0.8",
    )

    assert response["Content-Type"] == "image/png"


def test_image_loaders_accept_headers_are_answered(client, png_image):
    response = client.get(
        f"/api/v1/queue/jobs/{png_image.job_id}/images/0", HTTP_ACCEPT="image/webp,image/*"
    )

    assert response.status_code == 200
    body_of(response)


def test_unknown_image_index_is_404(client, png_image):
    assert_error(
        client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/1"), 404, "image_not_found"
    )


@pytest.mark.parametrize("job_id", ["nope", "3e5128a1-456a-49d8-82f1-7c7351e8600a"])
def test_image_of_an_unknown_job_is_404(client, server, job_id):
    assert_error(client.get(f"/api/v1/queue/jobs/{job_id}/images/0"), 404, "job_not_found")


def test_image_index_beyond_the_column_range_is_404(client, png_image):
    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/99999999999")

    assert_error(response, 404, "image_not_found")


def test_image_deleted_from_storage_by_hand_is_404(client, png_image):
    default_storage.delete(png_image.file.name)

    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0")

    assert_error(response, 404, "image_not_found")
    assert "Cache-Control" not in response


def test_error_of_an_image_request_is_json_whatever_it_accepts(client, job):
    response = client.get(f"/api/v1/queue/jobs/{job.pk}/images/0", HTTP_ACCEPT="image/*")

    assert_error(response, 404, "image_not_found")


# --- thumbnails ---------------------------------------------------------------------------


def test_thumbnail_defaults_to_webp_384(client, png_image):
    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["Cache-Control"] == IMMUTABLE
    assert response["ETag"].startswith('"')
    assert response["Content-Disposition"].startswith("inline; filename=")
    thumb = Image.open(io.BytesIO(body_of(response)))
    assert (thumb.format, thumb.size) == ("WEBP", (384, 288))


def test_thumbnail_in_the_asked_size_and_format(client, png_image):
    response = client.get(
        f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail?size=128&format=jpeg"
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(body_of(response)))
    assert (thumb.format, thumb.size) == ("JPEG", (128, 96))


def test_second_thumbnail_request_is_read_from_storage(client, png_image, monkeypatch):
    url = f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail?size=200"
    first = body_of(client.get(url))
    assert default_storage.exists(thumbnail_name(png_image.file.name, size=200, fmt="webp"))

    def refuse(*args, **kwargs):
        raise AssertionError("thumbnail made again")

    monkeypatch.setattr(images, "_render_thumbnail", refuse)
    second = client.get(url)

    assert second.status_code == 200
    assert body_of(second) == first


def test_thumbnail_with_a_matching_etag_is_not_modified(client, png_image):
    url = f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail"
    first = client.get(url)
    body_of(first)

    second = client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])

    assert second.status_code == 304
    assert second["Cache-Control"] == IMMUTABLE


def test_thumbnails_of_other_sizes_have_other_etags(client, png_image):
    url = f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail"
    etags = set()
    for query in ("", "?size=128", "?format=jpeg"):
        response = client.get(url + query)
        etags.add(response["ETag"])
        body_of(response)

    assert len(etags) == 3


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("size=63", "size"),
        ("size=1025", "size"),
        ("size=big", "size"),
        ("format=png", "format"),
        ("format=WEBP", "format"),
    ],
)
def test_thumbnail_with_a_bad_size_or_format_is_400(client, png_image, query, field):
    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail?{query}")

    body = assert_error(response, 400, "validation_error")
    assert list(body["fields"]) == [field]


def test_thumbnail_with_empty_parameters_uses_the_defaults(client, png_image):
    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail?size=&format=")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(body_of(response))).size == (384, 288)


def test_thumbnail_of_an_unknown_index_is_404(client, png_image):
    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/3/thumbnail")

    assert_error(response, 404, "image_not_found")


@pytest.mark.parametrize("job_id", ["nope", "3e5128a1-456a-49d8-82f1-7c7351e8600a"])
def test_thumbnail_of_an_unknown_job_is_404(client, server, job_id):
    response = client.get(f"/api/v1/queue/jobs/{job_id}/images/0/thumbnail")

    assert_error(response, 404, "job_not_found")


def test_thumbnail_of_an_image_deleted_by_hand_is_404(client, png_image):
    default_storage.delete(png_image.file.name)

    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail")

    assert_error(response, 404, "image_not_found")


def test_thumbnail_of_a_damaged_image_is_404(client, png_image):
    with open(default_storage.path(png_image.file.name), "wb") as file:
        file.write(b"garbage")

    response = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail")

    assert_error(response, 404, "image_not_found")


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/0", "/0/thumbnail"])
def test_image_endpoints_need_an_api_key(anon_client, png_image, suffix):
    response = anon_client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images{suffix}")

    assert_error(response, 401, "authentication_required")


# --- deletion -----------------------------------------------------------------------------


def test_thumbnails_are_among_the_files_a_job_delete_must_remove(client, png_image):
    for query in ("", "?size=128&format=jpeg"):
        body_of(client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0/thumbnail{query}"))

    names = image_storage_names(png_image)

    assert names == [
        png_image.file.name,
        thumbnail_name(png_image.file.name, size=128, fmt="jpeg"),
        thumbnail_name(png_image.file.name, size=384, fmt="webp"),
    ]
    assert all(default_storage.exists(name) for name in names)


def test_deleting_a_job_removes_its_cached_thumbnails(
    client, png_image, django_capture_on_commit_callbacks
):
    url = f"/api/v1/queue/jobs/{png_image.job_id}"
    body_of(client.get(f"{url}/images/0/thumbnail"))
    names = image_storage_names(png_image)
    assert len(names) == 2

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(url).status_code == 200

    assert [name for name in names if default_storage.exists(name)] == []


# --- OpenAPI ------------------------------------------------------------------------------


def test_schema_describes_the_image_endpoints_as_binary(client):
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]

    listing = paths["/api/v1/queue/jobs/{job_id}/images"]["get"]
    image = paths["/api/v1/queue/jobs/{job_id}/images/{index}"]["get"]
    thumb = paths["/api/v1/queue/jobs/{job_id}/images/{index}/thumbnail"]["get"]
    assert "application/json" in listing["responses"]["200"]["content"]
    octet = "application/octet-stream"
    images = {"image/png", "image/jpeg", "image/webp", octet}
    assert set(image["responses"]["200"]["content"]) == images
    assert set(thumb["responses"]["200"]["content"]) == {"image/webp", "image/jpeg", octet}
    assert {p["name"] for p in thumb["parameters"] if p["in"] == "query"} == {
        "size",
        "format",
        "exp",  # a signed link's (tests/queue_app/test_signed_links.py)
        "sig",
    }
    assert image["responses"]["200"]["content"]["image/png"]["schema"]["format"] == "binary"


def test_job_ids_in_image_urls_are_the_full_uuid(client, server):
    job = make_job(server)
    add_image(job, png_bytes((64, 64)))

    entry = client.get(f"/api/v1/queue/jobs/{job.pk}/images").json()["images"][0]

    assert str(uuid.UUID(entry["url"].split("/")[-3])) == str(job.pk)


# --- /outputs/<name>, where the original served images ------------------------------------


def listed_name(image: JobImage) -> str:
    """The name `result_details.images` lists for the image (its file's base name)."""
    return stored_name(image).rsplit("/", 1)[1]


def test_output_serves_the_stored_image_by_its_listed_name(client, job):
    data = png_bytes()
    image = add_image(job, data)
    add_image(job, jpeg_bytes(), index=1)

    response = client.get(f"/outputs/{listed_name(image)}")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == IMMUTABLE
    assert body_of(response) == data


def test_output_has_the_etag_of_the_job_image_endpoint(client, png_image):
    by_index = client.get(f"/api/v1/queue/jobs/{png_image.job_id}/images/0")
    body_of(by_index)

    response = client.get(f"/outputs/{listed_name(png_image)}", HTTP_IF_NONE_MATCH=by_index["ETag"])

    assert response.status_code == 304


def test_output_of_an_unknown_name_is_404(client, png_image):
    assert_error(client.get("/outputs/nothing-here.png"), 404, "image_not_found")


@pytest.mark.parametrize("name", ["%25.png", "_{rest}", "%25"])
def test_output_name_is_not_a_pattern(client, png_image, name):
    rest = listed_name(png_image)[1:]

    assert_error(client.get("/outputs/" + name.format(rest=rest)), 404, "image_not_found")


def test_output_needs_an_api_key(anon_client, png_image):
    assert_error(
        anon_client.get(f"/outputs/{listed_name(png_image)}"), 401, "authentication_required"
    )


def test_output_is_open_in_anonymous_mode(anon_client, png_image, settings):
    settings.MOBILESD_ALLOW_ANONYMOUS = True

    response = anon_client.get(f"/outputs/{listed_name(png_image)}")

    assert response.status_code == 200
    body_of(response)


@pytest.mark.parametrize(
    "path",
    [
        "../settings.py",
        "..%2Fsettings.py",
        "jobs/{prefix}/{name}",
        "..\\{name}",
        "%2E%2E/%2E%2E/etc/passwd",
    ],
)
def test_output_name_with_a_path_is_404(client, png_image, path):
    prefix, name = stored_name(png_image).split("/")[1:]

    response = client.get("/outputs/" + path.format(prefix=prefix, name=name))

    assert_error(response, 404, "image_not_found")


def test_output_of_an_image_deleted_from_storage_by_hand_is_404(client, png_image):
    default_storage.delete(stored_name(png_image))

    assert_error(client.get(f"/outputs/{listed_name(png_image)}"), 404, "image_not_found")


def test_schema_describes_outputs_as_binary(client):
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()

    output = schema["paths"]["/outputs/{name}"]["get"]
    assert set(output["responses"]["200"]["content"]) == {
        "image/png",
        "image/jpeg",
        "image/webp",
        "application/octet-stream",
    }
    assert {"401", "404"} <= set(output["responses"])
