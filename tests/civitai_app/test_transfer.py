"""The byte transfer: chunked and hashed streaming, resuming, placement in the model
folders (shared, copied, already there), and the disk-space check."""

import pytest
from model_bakery import baker

from civitai_app import download_runs, transfer
from civitai_app.models import Download, DownloadStatus, TargetState
from servers_app.models import Server
from tests.civitai_app.support import files_below, queue, reload, run, sha
from tests.integrations.civitai.catalog import CHECKPOINT, EMBEDDING, LORA

# --- streaming ------------------------------------------------------------------------------------


def test_the_transfer_is_chunked_hashed_and_never_sends_the_key_to_storage(
    civitai, laptop, settings
):
    settings.CIVITAI_API_KEY = "secret-key"
    queue(200)

    run()

    api, storage = civitai.requests_to("/api/download/")[0], civitai.requests_to("/storage/")[0]
    assert api.headers["authorization"] == "Bearer secret-key"
    assert "authorization" not in storage.headers
    assert "range" not in storage.headers
    assert civitai.storage_bytes_sent == len(LORA)


@pytest.mark.parametrize(
    ("version", "where", "content"),
    [
        (200, "models/Lora/add_detail.safetensors", LORA),
        (900, "embeddings/easynegative.safetensors", EMBEDDING),
    ],
)
def test_loras_and_embeddings_go_to_their_folders(
    civitai, laptop, gpu_root, version, where, content
):
    queue(version)

    run()

    assert (gpu_root / where).read_bytes() == content


# --- resume ---------------------------------------------------------------------------------------


def test_an_interrupted_transfer_resumes_from_where_it_stopped(civitai, laptop, gpu_root):
    civitai.faults.drop_after_bytes, civitai.faults.drop_times = 1_000_000, 1
    download = queue(100)

    run()

    storage = civitai.requests_to("/storage/")
    assert [r.headers.get("range") for r in storage] == [None, "bytes=1000000-"]
    assert civitai.storage_bytes_sent == len(CHECKPOINT)  # not one byte twice
    assert reload(download).status == DownloadStatus.COMPLETED
    target = gpu_root / "models" / "Stable-diffusion" / "juggernautXL_v9.safetensors"
    assert sha(target.read_bytes()) == sha(CHECKPOINT)


def test_a_storage_that_ignores_range_restarts_cleanly(civitai, laptop, gpu_root, settings):
    download = queue(200)
    part = gpu_root / "models" / settings.MOBILESD_DOWNLOAD_TMP_DIRNAME / f"{download.pk}.part"
    part.parent.mkdir()
    part.write_bytes(LORA[:5000])
    Download.objects.filter(pk=download.pk).update(part_path=str(part))
    civitai.faults.ignore_range = True

    run()

    assert reload(download).status == DownloadStatus.COMPLETED
    assert (gpu_root / "models" / "Lora" / "add_detail.safetensors").read_bytes() == LORA


def test_a_partial_file_longer_than_the_file_is_started_over(civitai, laptop, gpu_root, settings):
    download = queue(200)
    part = gpu_root / "models" / settings.MOBILESD_DOWNLOAD_TMP_DIRNAME / f"{download.pk}.part"
    part.parent.mkdir()
    part.write_bytes(LORA + b"stale tail")
    Download.objects.filter(pk=download.pk).update(part_path=str(part))

    run()

    assert [r.headers.get("range") for r in civitai.requests_to("/storage/")] == [
        f"bytes={len(LORA) + 10}-",
        None,
    ]
    assert (gpu_root / "models" / "Lora" / "add_detail.safetensors").read_bytes() == LORA


def test_a_partial_file_that_is_already_complete_needs_no_transfer(
    civitai, laptop, gpu_root, settings
):
    download = queue(200)
    part = gpu_root / "models" / settings.MOBILESD_DOWNLOAD_TMP_DIRNAME / f"{download.pk}.part"
    part.parent.mkdir()
    part.write_bytes(LORA)
    Download.objects.filter(pk=download.pk).update(part_path=str(part))

    run()

    assert reload(download).status == DownloadStatus.COMPLETED
    assert civitai.storage_bytes_sent == 0


# --- file names and folders -----------------------------------------------------------------------


def test_a_civitai_file_name_trying_to_escape_is_sanitized(civitai, laptop, gpu_root, tmp_path):
    download = queue(800)  # Civitai calls the file "../../escape.safetensors"

    run()

    assert reload(download).file_name == "escape.safetensors"
    assert files_below(tmp_path) == [
        "gpu-box/models/Lora/escape.civitai.info",
        "gpu-box/models/Lora/escape.safetensors",
    ]


def test_servers_sharing_a_models_folder_share_one_copy(civitai, laptop, gpu_root):
    baker.make(Server, alias="Desktop", api_url="http://x:1", models_dir=laptop.models_dir)
    download = queue(200, ("Laptop", "Desktop"))

    run()

    assert civitai.storage_bytes_sent == len(LORA)
    assert set(reload(download).targets.values_list("state", flat=True)) == {TargetState.PLACED}


def test_a_second_models_folder_gets_a_verified_copy(civitai, laptop, gpu_root, tmp_path):
    other = tmp_path / "desk" / "models"
    other.mkdir(parents=True)
    baker.make(Server, alias="Desktop", api_url="http://x:1", models_dir=str(other))
    queue(200, ("Laptop", "Desktop"))

    run()

    assert civitai.storage_bytes_sent == len(LORA)
    assert (other / "Lora" / "add_detail.safetensors").read_bytes() == LORA
    assert (gpu_root / "models" / "Lora" / "add_detail.safetensors").read_bytes() == LORA
    assert files_below(other / ".mobilesd-downloads") == []


def test_a_file_already_there_is_verified_not_downloaded(civitai, laptop, gpu_root):
    folder = gpu_root / "models" / "Lora"
    folder.mkdir()
    (folder / "add_detail.safetensors").write_bytes(LORA)
    download = queue(200)

    run()

    assert reload(download).status == DownloadStatus.COMPLETED
    assert reload(download).targets.get().state == TargetState.ALREADY_PRESENT
    assert civitai.requests_to("/storage/") == []


def test_a_different_file_with_the_same_name_is_left_alone(civitai, laptop, gpu_root):
    folder = gpu_root / "models" / "Lora"
    folder.mkdir()
    (folder / "add_detail.safetensors").write_bytes(b"my own lora")
    download = queue(200)

    run()

    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, "file_exists")
    assert (folder / "add_detail.safetensors").read_bytes() == b"my own lora"
    assert civitai.requests_to("/storage/") == []


def test_the_same_file_arriving_meanwhile_counts_as_present(civitai, laptop, gpu_root, monkeypatch):
    folder = gpu_root / "models" / "Lora"
    fetch = download_runs.stream_into_part

    def fetch_while_another_download_lands(*args):
        fetched = fetch(*args)
        folder.mkdir()
        (folder / "add_detail.safetensors").write_bytes(LORA)
        return fetched

    monkeypatch.setattr(download_runs, "stream_into_part", fetch_while_another_download_lands)
    download = queue(200)

    run()

    assert reload(download).status == DownloadStatus.COMPLETED
    assert reload(download).targets.get().state == TargetState.ALREADY_PRESENT
    assert files_below(gpu_root / "models" / ".mobilesd-downloads") == []


# --- disk space -----------------------------------------------------------------------------------


def test_not_enough_disk_space_fails_before_downloading(civitai, laptop, gpu_root, monkeypatch):
    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(transfer.shutil, "disk_usage", lambda path: Usage())
    download = queue(100)

    run()

    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, "insufficient_disk_space")
    assert "Not enough free space" in failed.error
    assert "3.0 MiB" in failed.error
    assert civitai.requests_to("/api/download/") == []
    assert files_below(gpu_root) == []


def test_a_models_folder_taken_out_of_the_roots_after_queueing_writes_nothing(
    civitai, laptop, gpu_root, tmp_path, settings
):
    download = queue(200)
    settings.MOBILESD_MODELS_ROOTS = [str(tmp_path / "elsewhere")]

    run()

    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, "models_dir_missing")
    assert not (gpu_root / "models" / "Lora").exists()
