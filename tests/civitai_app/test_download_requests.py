"""Download requests through the API: queueing (after commit, once per file), then the
download endpoints (list, detail, cancel, retry, delete)."""

import uuid

import pytest

from civitai_app.models import Download, DownloadStatus
from tests.civitai_app.support import request, run
from tests.support import assert_error, key_client

# --- queueing -------------------------------------------------------------------------------------


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


def test_a_repeated_request_returns_the_download_in_progress(client, civitai, laptop):
    first = request(client, model_version_id=200)
    second = request(client, model_version_id=200)

    assert second.status_code == 200
    assert second.json()["download_id"] == first.json()["download_id"]
    assert "already being downloaded" in second.json()["message"]
    assert Download.objects.count() == 1


def test_a_repeated_request_for_a_present_verified_file_does_nothing(civitai, laptop, client):
    first = client.post(
        "/api/v1/civitai/download-model",
        {"model_version_id": 200, "target_server_alias": "Laptop"},
        format="json",
    )
    run()
    asked = len(civitai.requests)

    second = client.post(
        "/api/v1/civitai/download-model",
        {
            "url": "https://civitai.com/models/20?modelVersionId=200",
            "target_server_alias": "Laptop",
        },
        format="json",
    )

    assert second.status_code == 200
    assert second.json()["download_id"] == first.json()["download_id"]
    assert second.json()["status"] == "completed"
    assert "already downloaded and verified" in second.json()["message"]
    assert Download.objects.count() == 1
    assert civitai.requests_to("/api/download/")[1:] == []
    assert [r.path for r in civitai.requests[asked:]] == ["/api/v1/model-versions/200"]


# --- the download endpoints -----------------------------------------------------------------------


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


def test_progress_is_null_while_the_size_is_unknown(client, queued):
    Download.objects.filter(pk=queued).update(size_bytes=None)

    detail = client.get(f"/api/v1/civitai/downloads/{queued}").json()

    assert detail["progress"] is None


# --- whose download -------------------------------------------------------------------------------


def test_a_client_keys_download_is_its_users(civitai, laptop):
    response = request(key_client("alice"), model_version_id=200)

    assert response.status_code == 202
    assert response.json()["download"]["owner"] == "alice"
    assert Download.objects.get().owner.username == "alice"


def test_a_repeated_request_of_the_same_user_returns_its_download(civitai, laptop):
    alice = key_client("alice")
    first = request(alice, model_version_id=200).json()["download_id"]

    again = request(key_client("alice"), model_version_id=200)

    assert again.status_code == 200
    assert again.json()["download_id"] == first


def test_another_client_asking_for_the_same_file_is_told_without_seeing_it(civitai, laptop):
    first = request(key_client("alice"), model_version_id=200).json()["download_id"]

    response = request(key_client("bob"), model_version_id=200)

    body = assert_error(response, 409, "download_exists")
    assert first not in body["message"]
    assert Download.objects.count() == 1


def test_an_admin_asking_for_a_file_a_user_downloads_gets_that_download(civitai, laptop):
    first = request(key_client("alice"), model_version_id=200).json()["download_id"]

    response = request(key_client("boss", scope="admin"), model_version_id=200)

    assert response.status_code == 200
    assert response.json()["download_id"] == first
    assert response.json()["download"]["owner"] == "alice"
