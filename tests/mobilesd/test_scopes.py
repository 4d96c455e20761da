"""Users and scopes across the API (#13): two users' client keys (alice, bob) and an admin key
(boss) on every endpoint that shows or changes jobs, images, downloads or servers. A client
sees and changes its own user's work only (another user's is a 404 that changes nothing),
reads servers and models, and changes none; an admin sees and changes everything."""

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from model_bakery import baker
from rest_framework.test import APIClient

from civitai_app.models import Download, DownloadStatus
from core_app.models import ApiKey, KeyScope
from queue_app.models import Job, JobStatus
from queue_app.uploads import upload_create
from tests.queue_app.test_api_images import add_image, png_bytes
from tests.support import DOCUMENTED_GENERATE_REQUEST, assert_error, db_snapshot, key_client

ALL_TABLES = ("core_app", "servers_app", "queue_app", "civitai_app")


@pytest.fixture
def keys(db) -> dict[str, Any]:
    """A client for each caller: alice and bob (client keys), boss (an admin key)."""
    return {
        "alice": key_client("alice"),
        "bob": key_client("bob"),
        "boss": key_client("boss", scope="admin"),
    }


def user(username: str) -> Any:
    return get_user_model().objects.get(username=username)


def consumed(response: Any) -> Any:
    """Read a file response to its end (see tests/queue_app/test_api_images.body_of)."""
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)
    return response


# --- one object of alice's, on every endpoint that names one ----------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {job}, {image}, {download}: the object's id or name
    status: str  # the status the object is made with, so that the call can succeed
    not_found: str  # the code of the 404 another user's client key gets

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


JOBS = "/api/v1/queue/jobs/{job}"
DOWNLOADS = "/api/v1/civitai/downloads/{download}"
UPLOADS = "/api/v1/uploads/{upload}"
DONE, PENDING, FAILED = JobStatus.COMPLETED, JobStatus.PENDING, JobStatus.FAILED
ENDPOINTS = [
    Endpoint("get", JOBS, DONE, "job_not_found"),
    Endpoint("get", f"{JOBS}/status", DONE, "job_not_found"),
    Endpoint("post", f"{JOBS}/cancel", PENDING, "job_not_found"),
    Endpoint("post", f"{JOBS}/retry", FAILED, "job_not_found"),
    Endpoint("delete", JOBS, DONE, "job_not_found"),
    Endpoint("get", f"{JOBS}/images", DONE, "job_not_found"),
    Endpoint("get", f"{JOBS}/images/0", DONE, "job_not_found"),
    Endpoint("get", f"{JOBS}/images/0/thumbnail", DONE, "job_not_found"),
    Endpoint("get", "/outputs/{image}", DONE, "image_not_found"),
    Endpoint("get", DOWNLOADS, DownloadStatus.PENDING, "download_not_found"),
    Endpoint("post", f"{DOWNLOADS}/cancel", DownloadStatus.PENDING, "download_not_found"),
    Endpoint("post", f"{DOWNLOADS}/retry", DownloadStatus.FAILED, "download_not_found"),
    Endpoint("delete", DOWNLOADS, DownloadStatus.FAILED, "download_not_found"),
    Endpoint("get", UPLOADS, "", "upload_not_found"),
    Endpoint("get", f"{UPLOADS}/file", "", "upload_not_found"),
    Endpoint("delete", UPLOADS, "", "upload_not_found"),
]


def alices_object(endpoint: Endpoint, server: Any) -> str:
    """Make the object the endpoint names, alice's, and return the endpoint's path."""
    owner = user("alice")
    if "{upload}" in endpoint.path:
        upload = upload_create(owner=owner, data=png_bytes((64, 48)))
        return endpoint.path.format(upload=upload.pk)
    if "{download}" in endpoint.path:
        download = baker.make(Download, owner=owner, status=endpoint.status)
        return endpoint.path.format(download=download.pk)
    job = baker.make(
        Job,
        owner=owner,
        server=server,
        target_server_alias=server.alias,
        status=endpoint.status,
        generation_params={"positive_prompt": "a cat"},
    )
    image = add_image(job, png_bytes())
    return endpoint.path.format(job=job.pk, image=str(image.file.name).rsplit("/", 1)[-1])


def call(api_client: Any, endpoint: Endpoint, path: str) -> Any:
    return consumed(getattr(api_client, endpoint.method)(path))


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_client_key_uses_its_own_users_objects(keys, server, endpoint):
    path = alices_object(endpoint, server)

    assert call(keys["alice"], endpoint, path).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_another_users_object_is_a_404_that_changes_nothing(keys, server, endpoint):
    path = alices_object(endpoint, server)
    before = db_snapshot(ALL_TABLES)

    assert_error(call(keys["bob"], endpoint, path), 404, endpoint.not_found)
    assert db_snapshot(ALL_TABLES) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_an_admin_key_uses_every_users_objects(keys, server, endpoint):
    path = alices_object(endpoint, server)

    assert call(keys["boss"], endpoint, path).status_code == 200


def test_a_staff_session_uses_every_users_jobs(keys, server, admin_client):
    path = alices_object(ENDPOINTS[0], server)

    assert admin_client.get(path).status_code == 200


# --- lists --------------------------------------------------------------------------------


@pytest.fixture
def jobs_of_alice_and_bob(keys, server) -> dict[str, set[str]]:
    made: dict[str, set[str]] = {"alice": set(), "bob": set()}
    for username, count in (("alice", 2), ("bob", 1)):
        for _ in range(count):
            job = baker.make(
                Job, owner=user(username), server=server, target_server_alias=server.alias
            )
            made[username].add(str(job.pk))
    return made


def listed(api_client: Any, url: str, key: str, id_key: str, **query: str) -> tuple[int, set]:
    response = api_client.get(url, query)
    assert response.status_code == 200, response.content
    body = response.json()
    return body["total"], {item[id_key] for item in body[key]}


def jobs_listed(api_client: Any, **query: str) -> tuple[int, set]:
    return listed(api_client, "/api/v1/queue/jobs", "jobs", "mobilesd_job_id", **query)


def test_a_client_lists_and_counts_only_its_own_users_jobs(keys, jobs_of_alice_and_bob):
    assert jobs_listed(keys["bob"]) == (1, jobs_of_alice_and_bob["bob"])
    assert jobs_listed(keys["alice"]) == (2, jobs_of_alice_and_bob["alice"])
    assert jobs_listed(keys["bob"], status="pending") == (1, jobs_of_alice_and_bob["bob"])


def test_an_admin_lists_every_users_jobs_and_filters_by_owner(keys, jobs_of_alice_and_bob):
    everyone = jobs_of_alice_and_bob["alice"] | jobs_of_alice_and_bob["bob"]

    assert jobs_listed(keys["boss"]) == (3, everyone)
    assert jobs_listed(keys["boss"], owner="alice") == (2, jobs_of_alice_and_bob["alice"])
    assert jobs_listed(keys["boss"], owner="nobody") == (0, set())


def test_a_client_naming_another_owner_still_sees_only_its_own(keys, jobs_of_alice_and_bob):
    assert jobs_listed(keys["bob"], owner="alice") == (0, set())
    assert jobs_listed(keys["bob"], owner="bob") == (1, jobs_of_alice_and_bob["bob"])


def test_a_job_shows_its_owners_username(keys, jobs_of_alice_and_bob):
    job_id = next(iter(jobs_of_alice_and_bob["alice"]))

    assert keys["alice"].get(f"/api/v1/queue/jobs/{job_id}").json()["owner"] == "alice"
    jobs = keys["boss"].get("/api/v1/queue/jobs").json()["jobs"]
    assert sorted(job["owner"] for job in jobs) == ["alice", "alice", "bob"]


def test_a_client_lists_only_its_own_users_downloads(keys):
    mine = {str(baker.make(Download, owner=user("alice")).pk) for _ in range(2)}
    theirs = str(baker.make(Download, owner=user("bob")).pk)
    url = "/api/v1/civitai/downloads"

    assert listed(keys["alice"], url, "downloads", "download_id") == (2, mine)
    assert listed(keys["bob"], url, "downloads", "download_id") == (1, {theirs})
    assert listed(keys["boss"], url, "downloads", "download_id") == (3, mine | {theirs})


def test_a_client_lists_only_its_own_users_uploads(keys):
    mine = {str(upload_create(owner=user("alice"), data=png_bytes()).pk) for _ in range(2)}
    theirs = str(upload_create(owner=user("bob"), data=png_bytes()).pk)
    url = "/api/v1/uploads"

    assert listed(keys["alice"], url, "uploads", "upload_id") == (2, mine)
    assert listed(keys["bob"], url, "uploads", "upload_id") == (1, {theirs})
    assert listed(keys["boss"], url, "uploads", "upload_id") == (3, mine | {theirs})


def test_a_submit_naming_another_users_upload_is_a_404_that_stores_nothing(keys, server):
    theirs = str(upload_create(owner=user("alice"), data=png_bytes()).pk)
    request = {
        "target_server_alias": server.alias,
        "generation_params": {"positive_prompt": "x", "mode": "img2img", "init_images": [theirs]},
    }
    before = db_snapshot(ALL_TABLES)

    response = keys["bob"].post("/api/v1/generate", request, format="json")

    assert_error(response, 404, "upload_not_found")
    assert db_snapshot(ALL_TABLES) == before


# --- submitting -----------------------------------------------------------------------------


def submitted(api_client: Any, **headers: str) -> Job:
    response = api_client.post(
        "/api/v1/generate", DOCUMENTED_GENERATE_REQUEST, format="json", **headers
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["mobilesd_job_id"])


def test_a_submitted_job_belongs_to_the_keys_user(keys, server):
    assert submitted(keys["alice"]).owner == user("alice")
    assert submitted(keys["boss"]).owner == user("boss")


def test_the_same_idempotency_key_of_another_user_is_another_job(keys, server):
    alices = submitted(keys["alice"], HTTP_IDEMPOTENCY_KEY="tap-1")

    bobs = submitted(keys["bob"], HTTP_IDEMPOTENCY_KEY="tap-1")

    assert bobs.pk != alices.pk
    assert bobs.owner == user("bob")


# --- servers and models: every key reads, only the admin scope writes ---------------------


SERVER_READS = [
    "/api/v1/servers",
    "/api/v1/servers/Laptop",
    "/api/v1/checkpoints",
    "/api/v1/loras",
]
NEW_SERVER = {"alias": "Desk", "api_url": "http://127.0.0.1:7861"}
SERVER_WRITES = [
    ("post", "/api/v1/servers", NEW_SERVER),
    ("put", "/api/v1/servers/Laptop", {"alias": "Laptop", "api_url": "http://10.0.0.9:7860"}),
    ("patch", "/api/v1/servers/Laptop", {"enabled": False}),
    ("patch", "/api/v1/servers/Laptop", {"api_url": "http://10.0.0.9:7860"}),
    ("patch", "/api/v1/servers/Laptop", {"models_dir": "/tmp"}),
    ("delete", "/api/v1/servers/Laptop", None),
    ("post", "/api/v1/servers/Laptop/refresh-models", None),
    ("post", "/api/v1/servers/Nowhere/refresh-models", None),
]


@pytest.mark.parametrize("url", SERVER_READS)
def test_a_client_key_reads_servers_and_models(keys, server, url):
    assert keys["alice"].get(url).status_code == 200


@pytest.mark.parametrize(("method", "url", "body"), SERVER_WRITES)
def test_a_client_key_changes_no_server(keys, server, method, url, body):
    before = db_snapshot(ALL_TABLES)

    response = getattr(keys["alice"], method)(url, body, format="json")

    assert_error(response, 403, "admin_scope_required")
    assert db_snapshot(ALL_TABLES) == before


def test_an_admin_key_adds_changes_and_deletes_servers(keys, server):
    admin = keys["boss"]

    assert admin.post("/api/v1/servers", NEW_SERVER, format="json").status_code == 201
    assert admin.patch("/api/v1/servers/Desk", {"enabled": False}, format="json").status_code == 200
    assert admin.delete("/api/v1/servers/Desk").status_code == 200


# --- debug: the admin scope only; Civitai recipes: every key --------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/debug/models-cache",
        "/api/v1/debug/verify-checkpoint?checkpoint_path=a.safetensors&server_alias=Laptop",
    ],
)
def test_a_client_key_may_not_use_the_debug_endpoints(keys, server, url):
    assert_error(keys["alice"].get(url), 403, "admin_scope_required")


def test_an_admin_key_uses_the_debug_endpoints(keys, server):
    assert keys["boss"].get("/api/v1/debug/models-cache").status_code == 200


def test_a_client_key_reads_an_images_recipe(keys):
    response = keys["alice"].post(
        "/api/v1/civitai/image-info", png_bytes(), content_type="image/png"
    )

    assert response.status_code == 200
    assert response.json()["has_metadata"] is True


# --- who a key is -------------------------------------------------------------------------


def test_anonymous_mode_acts_as_the_local_user_with_the_admin_scope(
    anon_client, server, settings, keys
):
    settings.MOBILESD_ALLOW_ANONYMOUS = True
    alices = submitted(keys["alice"])

    job = submitted(anon_client)

    assert job.owner.username == settings.MOBILESD_ANONYMOUS_USER
    assert anon_client.get(f"/api/v1/queue/jobs/{alices.pk}").status_code == 200
    assert (
        anon_client.patch("/api/v1/servers/Laptop", {"enabled": False}, format="json").status_code
        == 200
    )


def test_a_deactivated_users_key_is_refused(keys):
    get_user_model().objects.filter(username="alice").update(is_active=False)

    assert_error(keys["alice"].get("/api/v1/queue/jobs"), 401, "inactive_user")
    assert keys["bob"].get("/api/v1/queue/jobs").status_code == 200


def test_create_api_key_makes_the_user_and_a_key_of_the_scope(db, capsys, server):
    call_command("create_api_key", "--name", "kid's tablet", "--user", "kid", "--scope", "client")

    out = capsys.readouterr().out
    raw_key = next(line for line in out.splitlines() if line.startswith("msd_"))
    assert "Created user 'kid'" in out
    api_key = ApiKey.objects.get(user__username="kid")
    assert (api_key.name, api_key.scope) == ("kid's tablet", KeyScope.CLIENT)
    assert not api_key.user.has_usable_password()
    tablet = APIClient(HTTP_X_API_KEY=raw_key)
    assert tablet.get("/api/v1/servers").status_code == 200
    assert_error(tablet.delete("/api/v1/servers/Laptop"), 403, "admin_scope_required")
