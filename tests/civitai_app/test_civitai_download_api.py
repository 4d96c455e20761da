"""POST /api/v1/civitai/download-model and the download endpoints (list, detail, cancel,
retry, delete). The downloads themselves are in test_civitai_downloads.py."""

import uuid

import pytest
from model_bakery import baker

from civitai_app.models import CivitaiSettings, Download, DownloadStatus, DownloadTarget
from servers_app.models import Server
from tests.support import assert_error, db_snapshot

URL = "/api/v1/civitai/download-model"


def snapshot() -> dict:
    rows = {
        "settings": list(CivitaiSettings.objects.values_list("pk", flat=True)),
        "downloads": sorted(str(pk) for pk in Download.objects.values_list("pk", flat=True)),
        "targets": sorted(DownloadTarget.objects.values_list("path", flat=True)),
    }
    return {**db_snapshot(), **rows}


def request(client, **body):
    """POST download-model; the target is Laptop unless given (None leaves it out)."""
    body.setdefault("target_server_alias", "Laptop")
    body = {key: value for key, value in body.items() if value is not None}
    return client.post(URL, body, format="json")


def test_a_download_is_accepted_with_its_id_and_queued_after_commit(
    client, civitai, laptop, gpu_root, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = request(client, model_version_id=100)

    assert response.status_code == 202
    body = response.json()
    download = Download.objects.get(pk=body["download_id"])
    assert body["status"] == "pending"
    assert body["message"] == "Download queued."
    assert download.file_name == "juggernautXL_v9.safetensors"
    assert download.folder == "Stable-diffusion"
    assert download.sha256 == civitai.config.catalog.file(1000)[2].hashes["SHA256"].lower()
    assert body["download"]["targets"] == [
        {
            "server_alias": "Laptop",
            "path": str(gpu_root / "models" / "Stable-diffusion" / "juggernautXL_v9.safetensors"),
            "state": "waiting",
            "error": "",
            "refreshed_at": None,
            "refresh_error": "",
        }
    ]
    assert [name for name, _, _ in published] == ["civitai_app.tasks.run_downloads"]


@pytest.mark.parametrize(
    ("url", "version"),
    [
        ("https://civitai.com/models/10", 100),
        ("https://civitai.com/models/10/juggernaut-xl", 100),
        ("https://civitai.com/models/20/detail-tweaker?modelVersionId=200", 200),
        ("https://civitai.com/api/download/models/200", 200),
        ("https://civitai.com/api/v1/model-versions/200", 200),
    ],
)
def test_a_civitai_url_names_the_version(client, civitai, laptop, url, version):
    response = request(client, url=url)

    assert response.status_code == 202, response.json()
    assert response.json()["download"]["model_version_id"] == version


def test_the_file_choice_picks_format_precision_or_id(client, civitai, laptop):
    by_fp = request(client, model_version_id=100, precision="FP32").json()["download"]
    by_id = request(client, model_version_id=100, file_id=1002).json()["download"]

    assert by_fp["file_name"] == "juggernautXL_v9_fp32.safetensors"
    assert (by_id["file_name"], by_id["folder"]) == ("juggernautXL_vae.safetensors", "VAE")


def test_each_type_goes_to_its_folder(client, civitai, laptop, gpu_root):
    lora = request(client, model_version_id=200).json()["download"]
    embedding = request(client, model_version_id=900).json()["download"]

    assert lora["targets"][0]["path"] == str(
        gpu_root / "models" / "Lora" / "add_detail.safetensors"
    )
    assert embedding["targets"][0]["path"] == str(
        gpu_root / "embeddings" / "easynegative.safetensors"
    )


def test_a_chosen_file_name_keeps_the_extension(client, civitai, laptop):
    download = request(client, model_version_id=200, file_name="detail v2").json()["download"]

    assert download["file_name"] == "detail v2.safetensors"


def test_several_target_servers(client, civitai, laptop, tmp_path):
    (tmp_path / "desk").mkdir()
    baker.make(Server, alias="Desktop", api_url="http://x:1", models_dir=str(tmp_path / "desk"))

    response = request(
        client,
        model_version_id=200,
        target_server_alias=None,
        target_server_aliases=["Laptop", "Desktop", "Laptop"],
    )

    assert response.status_code == 202, response.json()
    assert [t["server_alias"] for t in response.json()["download"]["targets"]] == [
        "Desktop",
        "Laptop",
    ]


def test_a_repeated_request_returns_the_download_in_progress(client, civitai, laptop):
    first = request(client, model_version_id=200)
    second = request(client, model_version_id=200)

    assert second.status_code == 200
    assert second.json()["download_id"] == first.json()["download_id"]
    assert "already being downloaded" in second.json()["message"]
    assert Download.objects.count() == 1


@pytest.mark.parametrize(
    "file_name",
    [
        "../escape.safetensors",
        "../../../../etc/cron.d/job",
        "/etc/passwd",
        "..\\..\\windows.safetensors",
        "C:\\models\\x.safetensors",
        "sub/dir.safetensors",
        "CON",
        ".hidden",
    ],
)
def test_file_names_that_could_escape_are_refused_and_change_nothing(
    client, civitai, laptop, file_name
):
    before = snapshot()

    body = assert_error(
        request(client, model_version_id=200, file_name=file_name), 400, "invalid_file_name"
    )

    assert "file_name" in body["message"]
    assert snapshot() == before
    assert civitai.requests == []  # refused before asking Civitai anything


def test_a_nul_in_the_file_name_is_refused(client, civitai, laptop):
    body = assert_error(
        request(client, model_version_id=200, file_name="a\u0000.x"), 400, "validation_error"
    )

    assert "file_name" in body["fields"]
    assert not Download.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model_version_id": "abc"}, 400, "validation_error"),
        ({"model_version_id": 0}, 400, "validation_error"),
        ({"model_version_id": 1.5}, 400, "validation_error"),
        (
            {"model_version_id": 100, "url": "https://civitai.com/models/10"},
            400,
            "validation_error",
        ),
        ({}, 400, "validation_error"),
        ({"url": "https://example.com/models/10"}, 400, "invalid_civitai_url"),
        ({"url": "https://civitai.com/images/10"}, 400, "invalid_civitai_url"),
        ({"url": "https://civitai.com/models/10?modelVersionId=x"}, 400, "invalid_civitai_url"),
        ({"model_version_id": 100, "format": "zip"}, 400, "validation_error"),
        ({"model_version_id": 100, "size": "huge"}, 400, "validation_error"),
        ({"model_version_id": 100, "target_server_alias": "Nope"}, 404, "server_not_found"),
        ({"model_version_id": 100, "target_server_alias": 7}, 400, "validation_error"),
        ({"model_version_id": 100, "target_server_aliases": []}, 400, "validation_error"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_changes_nothing(client, civitai, laptop, body, status, code):
    before = snapshot()

    assert_error(request(client, **body), status, code)
    assert snapshot() == before


def test_a_server_without_a_models_folder_is_refused(client, civitai, db):
    baker.make(Server, alias="Laptop", api_url="http://x:1")

    body = assert_error(request(client, model_version_id=100), 400, "models_dir_not_set")
    assert "models_dir" in body["message"]


def test_an_unmounted_models_folder_is_refused(client, civitai, db, tmp_path):
    baker.make(
        Server, alias="Laptop", api_url="http://x:1", models_dir=str(tmp_path / "not-mounted")
    )

    assert_error(request(client, model_version_id=100), 400, "models_dir_missing")


def test_embeddings_need_the_installs_embeddings_folder(client, civitai, laptop, gpu_root):
    (gpu_root / "embeddings").rmdir()

    assert_error(request(client, model_version_id=900), 400, "embeddings_dir_missing")
    assert not (gpu_root / "embeddings").exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model_version_id": 99999}, 404, "civitai_not_found"),
        ({"url": "https://civitai.com/models/99999"}, 404, "civitai_not_found"),
        ({"model_version_id": 100, "format": "GGUF"}, 404, "civitai_file_not_found"),
        ({"model_version_id": 100, "file_id": 2000}, 404, "civitai_file_not_found"),
        ({"model_version_id": 950}, 400, "unsupported_model_type"),
        ({"model_version_id": 500}, 410, "civitai_archived"),
    ],
)
def test_what_civitai_does_not_have_is_refused_before_queueing(
    client, civitai, laptop, body, status, code
):
    before = snapshot()

    assert_error(request(client, **body), status, code)
    assert snapshot() == before


def test_civitai_rate_limits_and_outages_have_their_status(client, civitai, laptop):
    civitai.faults.fail_next("/api/v1/model-versions/", 429, times=5)
    assert_error(request(client, model_version_id=100), 429, "civitai_rate_limited")

    civitai.faults.fail_next("/api/v1/model-versions/", 500, times=5)
    assert_error(request(client, model_version_id=100), 502, "civitai_unavailable")


def test_a_file_without_a_published_sha256_cannot_be_verified(client, civitai, laptop):
    civitai.config.catalog.file(2000)[2].hashes.pop("SHA256")

    assert_error(request(client, model_version_id=200), 409, "civitai_hash_unavailable")


# --- the download endpoints ---------------------------------------------------------------------


@pytest.fixture
def queued(client, civitai, laptop) -> str:
    return request(client, model_version_id=200).json()["download_id"]


def test_list_and_detail(client, queued):
    listing = client.get("/api/v1/civitai/downloads", {"status": "pending"}).json()
    detail = client.get(f"/api/v1/civitai/downloads/{queued}").json()

    assert listing["total"] == 1
    assert listing["downloads"][0]["download_id"] == queued
    assert detail["status"] == "pending"
    assert detail["bytes_done"] == 0
    assert detail["size_bytes"] == len(civitai_content(client))
    assert detail["progress"] == 0.0
    assert detail["eta_seconds"] is None
    assert detail["error"] is None


def civitai_content(client) -> bytes:
    from tests.integrations.civitai.catalog import LORA

    return LORA


def test_list_filters_are_checked(client, queued):
    assert_error(
        client.get("/api/v1/civitai/downloads", {"status": "nope"}), 400, "validation_error"
    )
    assert_error(client.get("/api/v1/civitai/downloads", {"limit": 0}), 400, "validation_error")


def test_unknown_and_malformed_ids_are_404(client, queued):
    assert_error(client.get(f"/api/v1/civitai/downloads/{uuid.uuid4()}"), 404, "download_not_found")
    assert_error(client.get("/api/v1/civitai/downloads/not-a-uuid"), 404, "download_not_found")


def test_cancel_then_retry_then_delete(client, queued, published):
    cancelled = client.post(f"/api/v1/civitai/downloads/{queued}/cancel")
    again = client.post(f"/api/v1/civitai/downloads/{queued}/cancel")
    retried = client.post(f"/api/v1/civitai/downloads/{queued}/retry")
    retried_twice = client.post(f"/api/v1/civitai/downloads/{queued}/retry")
    deleted = client.delete(f"/api/v1/civitai/downloads/{queued}")

    assert cancelled.json()["download"]["status"] == "cancelled"
    assert_error(again, 409, "download_already_finished")
    assert retried.json()["download"]["status"] == "pending"
    assert_error(retried_twice, 409, "download_not_retryable")
    assert deleted.json() == {"message": f"Download {queued} deleted."}
    assert not Download.objects.exists()


def test_deleting_a_running_download_cancels_it_first(client, queued):
    Download.objects.filter(pk=queued).update(
        status=DownloadStatus.DOWNLOADING, lease_token=uuid.uuid4()
    )

    assert client.delete(f"/api/v1/civitai/downloads/{queued}").status_code == 200
    assert not Download.objects.exists()


def test_the_schema_documents_the_civitai_endpoints(client):
    paths = client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()["paths"]

    assert {"get", "post"} <= set(paths["/api/v1/civitai/image-info"])
    assert "post" in paths["/api/v1/civitai/download-model"]
    assert "get" in paths["/api/v1/civitai/downloads"]
    assert {"get", "delete"} <= set(paths["/api/v1/civitai/downloads/{download_id}"])
    assert "post" in paths["/api/v1/civitai/downloads/{download_id}/cancel"]
    assert "post" in paths["/api/v1/civitai/downloads/{download_id}/retry"]
