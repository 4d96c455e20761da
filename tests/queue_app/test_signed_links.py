"""Signed image links (`?exp=…&sig=…`): core_app.signed_links and queue_app.links, and the
image endpoints that open them without an API key."""

import base64
import io
import uuid
from pathlib import PurePosixPath
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse, set_script_prefix
from django.utils.crypto import salted_hmac
from PIL import Image
from rest_framework.test import APIClient

from core_app import signed_links
from core_app.signed_links import InvalidSignature, LinkSigner
from queue_app.images import THUMBNAIL_DEFAULT_SIZE
from queue_app.links import (
    file_name,
    image_link_signer,
    image_path,
    job_image_links,
    signed_image_url,
)
from queue_app.models import Job, JobImage, JobStatus
from tests.openapi_check import schema_document
from tests.queue_app.test_api_images import add_image, body_of, make_job, png_bytes
from tests.support import assert_error, new_key

WEEK = 7 * 24 * 3600


@pytest.fixture
def job(server):
    return make_job(server)


@pytest.fixture
def images(job):
    """Two images of `job` (different bytes, so that serving the wrong one shows)."""
    first = png_bytes((640, 480))
    second = png_bytes((320, 200))
    return [(add_image(job, first, index=0), first), (add_image(job, second, index=1), second)]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query.update(changes)
    return f"{parts.path}?{urlencode(query)}"


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


# --- the signer -------------------------------------------------------------------------------


def test_an_expiry_is_rounded_up_to_an_eighth_of_the_lifetime_so_links_stay_the_same():
    signer = LinkSigner(purpose="test", lifetime=800)

    assert signer.expiry(now=1000.0) == 1800
    assert signer.expiry(now=1099.0) == 1900
    assert signer.sign("/a", now=1001.0) == signer.sign("/a", now=1099.0)
    assert signer.sign("/a", now=1099.0) != signer.sign("/a", now=1101.0)
    assert 800 <= signer.expiry(now=1001.0) - 1001.0 <= 900


def test_a_signature_of_one_purpose_or_path_opens_nothing_else():
    images, other = LinkSigner(purpose="images", lifetime=WEEK), LinkSigner("other", WEEK)
    expiry = images.expiry()

    images.check("/a", str(expiry), images.signature("/a", expiry))
    with pytest.raises(InvalidSignature) as refused:
        other.check("/a", str(expiry), images.signature("/a", expiry))
    assert refused.value.code == "invalid_signature"
    with pytest.raises(InvalidSignature):
        images.check("/b", str(expiry), images.signature("/a", expiry))


@pytest.mark.parametrize("expiry", ["", "soon", "-5", "1e9", "١٢٣", "9" * 13])
def test_an_expiry_that_is_not_our_number_is_invalid(expiry):
    with pytest.raises(InvalidSignature) as refused:
        LinkSigner("test", WEEK).check("/a", expiry, "x")
    assert refused.value.code == "invalid_signature"


def test_a_link_made_for_a_longer_lifetime_than_the_setting_is_expired():
    long = LinkSigner("test", WEEK)
    expiry = long.expiry()

    with pytest.raises(InvalidSignature) as refused:
        LinkSigner("test", 3600).check("/a", str(expiry), long.signature("/a", expiry))
    assert refused.value.code == "expired_link"


def test_a_signature_is_djangos_salted_hmac_of_the_path_and_expiry():
    """The signer keys its HMAC once and copies it: the digest is still salted_hmac's."""
    signer = LinkSigner("test", WEEK)
    for path in ["/a", "/outputs/j%C3%B6b/images/0", "/b"]:
        expected = salted_hmac("test", f"{unquote(path)}\n1234", algorithm="sha256").digest()

        assert signer.signature(path, 1234) == (
            base64.urlsafe_b64encode(expected).rstrip(b"=").decode("ascii")
        )


def test_a_changed_secret_key_signs_with_the_new_key_at_once(settings):
    signer = LinkSigner("test", WEEK)
    before = signer.signature("/a", 1234)

    settings.SECRET_KEY = "another secret key, at least fifty characters long for Django"

    assert signer.signature("/a", 1234) != before
    with pytest.raises(InvalidSignature):
        signer.check("/a", "1234", before, now=1000)


@pytest.mark.parametrize(
    "path", ["x/y.png", "y.png", "x/y/", "x/.", "x/..", "", "/", "//", "./", "a//b.png", "."]
)
def test_an_images_file_name_is_its_paths_name(path):
    assert file_name(path) == PurePosixPath(path).name


def test_a_jobs_links_share_one_expiry_and_each_opens_its_own_path(job, images):
    links = job_image_links(job)

    assert [link["index"] for link in links] == [0, 1]
    expiries = {query_of(link[key])["exp"] for link in links for key in ("url", "thumbnail_url")}
    assert len(expiries) == 1
    signer = image_link_signer()
    for (image, _), link in zip(images, links, strict=True):
        for key, thumbnail in (("url", False), ("thumbnail_url", True)):
            assert urlsplit(link[key]).path == image_path(image, thumbnail=thumbnail)
            query = query_of(link[key])
            signer.check(urlsplit(link[key]).path, query["exp"], query["sig"])


# --- the endpoints ----------------------------------------------------------------------------


def test_a_signed_link_opens_the_image_without_an_api_key(anon_client, images):
    (image, data), _ = images

    response = anon_client.get(signed_image_url(image))

    assert response.status_code == 200
    assert body_of(response) == data
    assert anon_client.get(urlsplit(signed_image_url(image)).path).status_code == 401


def test_a_signed_link_opens_with_an_api_key_of_another_user_too(images):
    (image, data), _ = images
    _, raw = new_key("bob's phone", username="bob", scope="client")
    bob = APIClient()
    bob.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert bob.get(urlsplit(signed_image_url(image)).path).status_code == 404  # not his
    response = bob.get(signed_image_url(image))
    assert response.status_code == 200
    assert body_of(response) == data


def test_a_signed_thumbnail_link_takes_any_size_and_format(anon_client, images):
    (image, _), _ = images
    url = signed_image_url(image, thumbnail=True)

    default = anon_client.get(url)
    small = anon_client.get(f"{url}&size=64&format=jpeg")

    assert default.status_code == 200
    assert default["Content-Type"] == "image/webp"
    assert max(Image.open(io.BytesIO(body_of(default))).size) == THUMBNAIL_DEFAULT_SIZE
    assert small.status_code == 200
    assert small["Content-Type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(body_of(small))).size) == 64


def test_an_expired_link_is_a_403(anon_client, images, settings, monkeypatch):
    settings.MOBILESD_SIGNED_LINK_SECONDS = 80
    (image, _), _ = images
    url, thumbnail_url = signed_image_url(image), signed_image_url(image, thumbnail=True)
    expiry = int(query_of(url)["exp"])
    assert anon_client.get(url).status_code == 200

    # The signer's clock only: the rest of the request (rate windows, sessions) keeps its own.
    monkeypatch.setattr(signed_links, "time", SimpleNamespace(time=lambda: expiry))
    assert_error(anon_client.get(url), 403, "expired_link")
    assert_error(anon_client.get(thumbnail_url), 403, "expired_link")
    monkeypatch.setattr(signed_links, "time", SimpleNamespace(time=lambda: expiry - 1))
    assert anon_client.get(url).status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: {"sig": q["sig"][:-1] + ("A" if q["sig"][-1] != "A" else "B")},
        lambda q: {"sig": ""},
        lambda q: {"exp": str(int(q["exp"]) + 1)},
        lambda q: {"exp": str(int(q["exp"]) + 3600 * 24 * 365)},
    ],
    ids=["sig", "empty-sig", "exp", "exp-far"],
)
def test_a_tampered_signature_or_expiry_is_a_403(anon_client, images, tamper):
    (image, _), _ = images
    url = signed_image_url(image)

    response = anon_client.get(with_query(url, **tamper(query_of(url))))

    assert_error(response, 403, "invalid_signature")


def test_a_link_without_its_signature_or_expiry_is_a_403(anon_client, images):
    (image, _), _ = images
    query = query_of(signed_image_url(image))
    path = urlsplit(signed_image_url(image)).path

    assert_error(anon_client.get(f"{path}?exp={query['exp']}"), 403, "invalid_signature")
    assert_error(anon_client.get(f"{path}?sig={query['sig']}"), 403, "invalid_signature")


def test_a_signature_does_not_open_another_index_or_job_or_the_thumbnail(
    anon_client, server, images
):
    (first, _), (second, _) = images
    other_job = make_job(server)
    add_image(other_job, png_bytes((64, 64)), index=0)
    query = urlsplit(signed_image_url(first)).query

    for path in (
        f"/api/v1/queue/jobs/{first.job_id}/images/1",
        f"/api/v1/queue/jobs/{other_job.pk}/images/0",
        f"/api/v1/queue/jobs/{first.job_id}/images/0/thumbnail",
        f"/api/v1/queue/jobs/{str(first.job_id).upper()}/images/0",
    ):
        assert_error(anon_client.get(f"{path}?{query}"), 403, "invalid_signature")
    assert anon_client.get(signed_image_url(second)).status_code == 200


def test_a_tampered_link_is_a_403_with_a_key_too(client, images):
    (image, _), _ = images
    url = signed_image_url(image)

    assert_error(client.get(with_query(url, sig="nope")), 403, "invalid_signature")


def test_a_deleted_jobs_signed_link_is_a_404(anon_client, images, job):
    (image, _), _ = images
    url = signed_image_url(image)
    job.delete()

    assert_error(anon_client.get(url), 404, "job_not_found")


def test_a_signed_output_link_opens_the_original_route(anon_client, images):
    (image, data), _ = images
    path = f"/outputs/{image.file.name.rsplit('/', 1)[1]}"

    response = anon_client.get(image_link_signer().sign(path))

    assert response.status_code == 200
    assert body_of(response) == data
    assert anon_client.get(path).status_code == 401


# --- where the links are given ----------------------------------------------------------------


def test_a_completed_jobs_status_lists_signed_links_that_open(client, anon_client, job, images):
    body = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    links = body["image_links"]
    assert [(link["index"], link["name"]) for link in links] == [
        (image.index, image.file.name.rsplit("/", 1)[1]) for image, _ in images
    ]
    for link, (_, data) in zip(links, images, strict=True):
        opened = anon_client.get(link["url"])
        assert opened.status_code == 200
        assert body_of(opened) == data
        assert anon_client.get(link["thumbnail_url"]).status_code == 200


def test_the_links_are_absolute_on_the_public_url(client, job, images, settings):
    settings.MOBILESD_PUBLIC_URL = "https://sd.example.org"

    (link, _) = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["image_links"]
    listed = client.get(f"/api/v1/queue/jobs/{job.pk}/images").json()["images"][0]

    assert link["url"].startswith(f"https://sd.example.org/api/v1/queue/jobs/{job.pk}/images/0?")
    assert listed["signed_url"] == link["url"]
    assert listed["signed_thumbnail_url"] == link["thumbnail_url"]
    assert job_image_links(job) == client.get(f"/api/v1/queue/jobs/{job.pk}").json()["image_links"]


def test_a_job_not_completed_has_no_image_links(client, server):
    job = make_job(server)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PENDING)

    assert client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["image_links"] is None


def test_a_completed_job_without_images_has_an_empty_list(client, job):
    assert client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["image_links"] == []
    assert job_image_links(job) == []


def test_the_list_and_the_status_read_no_image_rows_for_their_links(client, server):
    job = make_job(server)
    add_image(job, png_bytes((64, 64)))
    add_image(job, png_bytes((64, 64)), index=1)
    for _ in range(7):
        add_image(make_job(server), png_bytes((64, 64)))
    client.get("/api/v1/queue/jobs")  # warm up (key lookup caches, events numbered)

    with CaptureQueriesContext(connection) as queries:
        jobs = client.get("/api/v1/queue/jobs").json()["jobs"]
        status = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()

    assert len(jobs) == 8
    assert sorted(len(job["image_links"]) for job in jobs) == [1] * 7 + [2]
    assert [link["index"] for link in status["image_links"]] == [0, 1]
    # The links name the rows' files, which result_details.images lists in index order.
    assert [link["name"] for link in status["image_links"]] == [
        PurePosixPath(image.file.name).name for image in job.images.order_by("index")
    ]
    assert not any("queue_app_jobimage" in q["sql"] for q in queries.captured_queries)


def test_a_list_without_completed_jobs_reads_no_images(client, server):
    job = make_job(server)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PENDING)
    client.get("/api/v1/queue/jobs")

    with CaptureQueriesContext(connection) as queries:
        (listed,) = client.get("/api/v1/queue/jobs").json()["jobs"]

    assert listed["image_links"] is None
    assert not any("queue_app_jobimage" in q["sql"] for q in queries.captured_queries)


def test_the_document_says_the_image_endpoints_open_by_a_signed_link_without_a_key(client):
    paths = schema_document()["paths"]

    for path in (
        "/api/v1/queue/jobs/{job_id}/images/{index}",
        "/api/v1/queue/jobs/{job_id}/images/{index}/thumbnail",
        "/outputs/{name}",
    ):
        operation = paths[path]["get"]
        assert {} in operation["security"], path
        assert {"exp", "sig"} <= {p["name"] for p in operation["parameters"]}
        assert "403" in operation["responses"]
    listing = paths["/api/v1/queue/jobs/{job_id}/images"]["get"]
    assert {} not in listing["security"]


@pytest.mark.parametrize("prefix", ["/", "/mobilesd/"])
def test_an_images_path_is_what_reverse_answers_under_any_script_prefix(prefix):
    job_id = uuid.uuid4()
    try:
        set_script_prefix(prefix)
        for index in (0, 1, 12):
            image = JobImage(job_id=job_id, index=index)
            kwargs = {"job_id": str(job_id), "index": index}
            assert image_path(image) == reverse("job-image", kwargs=kwargs)
            assert image_path(image, thumbnail=True) == reverse(
                "job-image-thumbnail", kwargs=kwargs
            )
        assert image_path(image).startswith(f"{prefix}api/v1/queue/jobs/{job_id}/images/12")
    finally:
        set_script_prefix("/")
