"""Downloads end to end against the Civitai simulator (real HTTP): the Celery tasks are
called as functions, files land in a temporary models folder."""

import hashlib
import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from model_bakery import baker
from PIL import Image

from civitai_app import downloads, tasks
from civitai_app.models import CivitaiSettings, Download, DownloadStatus, TargetState
from civitai_app.services import download_cancel, download_request
from integrations.forge.simulator import ForgeSimulator, SimLora, SimModel, SimulatorConfig
from servers_app.models import CachedModel, Server
from tests.integration.procs import wait_until
from tests.integrations.civitai.catalog import CHECKPOINT, EMBEDDING, LORA, OTHER


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def queue(version: int, aliases: tuple[str, ...] = ("Laptop",), **options) -> Download:
    download, created, _ = download_request(
        server_aliases=list(aliases), model_version_id=version, **options
    )
    assert created
    return download


def run() -> None:
    """What a worker does with a nudge."""
    tasks.run_downloads()


def reload(download: Download) -> Download:
    return Download.objects.get(pk=download.pk)


def files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- a download completes and verifies ------------------------------------------------------


def test_a_checkpoint_download_completes_verified_with_its_info_and_preview(
    civitai, laptop, gpu_root, published, django_capture_on_commit_callbacks
):
    download = queue(100)

    with django_capture_on_commit_callbacks(execute=True):
        run()

    done = reload(download)
    folder = gpu_root / "models" / "Stable-diffusion"
    assert done.status == DownloadStatus.COMPLETED
    assert (done.bytes_done, done.size_bytes) == (len(CHECKPOINT), len(CHECKPOINT))
    assert sha((folder / "juggernautXL_v9.safetensors").read_bytes()) == sha(CHECKPOINT)
    info = json.loads((folder / "juggernautXL_v9.civitai.info").read_text())
    assert (info["id"], info["modelId"]) == (100, 10)
    with Image.open(folder / "juggernautXL_v9.preview.png") as preview:
        assert preview.format == "PNG"
    assert done.targets.get().state == TargetState.PLACED
    # Nothing else anywhere: the temporary file was moved, not copied.
    assert files_below(gpu_root) == [
        "models/Stable-diffusion/juggernautXL_v9.civitai.info",
        "models/Stable-diffusion/juggernautXL_v9.preview.png",
        "models/Stable-diffusion/juggernautXL_v9.safetensors",
    ]
    assert ("civitai_app.tasks.refresh_after_download", (str(done.pk),), {}) in published


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


# --- resume ---------------------------------------------------------------------------------


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


def test_a_dead_workers_download_is_resumed_from_its_partial_file(
    civitai, laptop, gpu_root, settings
):
    download = queue(100)
    claim = downloads.download_claim_next()
    assert claim is not None
    # The worker wrote 1.5 MB, then died: its lease lapses.
    part = gpu_root / "models" / settings.MOBILESD_DOWNLOAD_TMP_DIRNAME / f"{download.pk}.part"
    part.parent.mkdir()
    part.write_bytes(CHECKPOINT[:1_500_000])
    Download.objects.filter(pk=download.pk).update(
        part_path=str(part), lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    tasks.reconcile_downloads()
    assert reload(download).status == DownloadStatus.PENDING
    run()

    assert reload(download).status == DownloadStatus.COMPLETED
    assert reload(download).attempts == 1
    assert [r.headers.get("range") for r in civitai.requests_to("/storage/")] == ["bytes=1500000-"]
    assert civitai.storage_bytes_sent == len(CHECKPOINT) - 1_500_000
    final = gpu_root / "models" / "Stable-diffusion" / "juggernautXL_v9.safetensors"
    assert sha(final.read_bytes()) == sha(CHECKPOINT)
    assert not part.exists()


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


def test_a_transfer_that_keeps_failing_waits_and_retries_later(civitai, laptop, settings):
    civitai.faults.drop_after_bytes, civitai.faults.drop_times = 0, 10
    download = queue(200)

    run()

    waiting = reload(download)
    assert waiting.status == DownloadStatus.PENDING
    assert waiting.attempts == 1
    assert waiting.next_attempt_at > timezone.now()
    assert waiting.error_code == "civitai_interrupted"
    assert "Retrying in 30 s" in waiting.error


# --- verification -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["corrupted in transit", "wrong published hash"])
def test_a_hash_mismatch_leaves_nothing_in_the_model_folder(civitai, laptop, gpu_root, how):
    if how == "corrupted in transit":
        civitai.faults.corrupt_transfer = True
        download = queue(200)
    else:
        download = queue(700)

    run()

    failed = reload(download)
    assert failed.status == DownloadStatus.FAILED
    assert failed.error_code == "hash_mismatch"
    assert "is not the one Civitai publishes" in failed.error
    assert "nothing was put in the model folder" in failed.error
    assert files_below(gpu_root) == []
    assert failed.part_path == ""


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
    fetch = downloads._fetch

    def fetch_while_another_download_lands(*args):
        fetched = fetch(*args)
        folder.mkdir()
        (folder / "add_detail.safetensors").write_bytes(LORA)
        return fetched

    monkeypatch.setattr(downloads, "_fetch", fetch_while_another_download_lands)
    download = queue(200)

    run()

    assert reload(download).status == DownloadStatus.COMPLETED
    assert reload(download).targets.get().state == TargetState.ALREADY_PRESENT
    assert files_below(gpu_root / "models" / ".mobilesd-downloads") == []


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


# --- disk space -------------------------------------------------------------------------------


def test_not_enough_disk_space_fails_before_downloading(civitai, laptop, gpu_root, monkeypatch):
    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: Usage())
    download = queue(100)

    run()

    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, "insufficient_disk_space")
    assert "Not enough free space" in failed.error
    assert "3.0 MiB" in failed.error
    assert civitai.requests_to("/api/download/") == []
    assert files_below(gpu_root) == []


# --- Civitai's refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "code", "words"),
    [
        (300, "civitai_login_required", "CIVITAI_API_KEY"),
        (600, "civitai_login_required", "disabled downloads"),
        (400, "civitai_early_access", "Early Access"),
    ],
)
def test_civitai_refusals_fail_with_their_clear_status(
    civitai, laptop, gpu_root, version, code, words
):
    download = queue(version)

    run()

    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, code)
    assert words in failed.error
    assert files_below(gpu_root) == []


def test_a_model_archived_after_the_request_fails_as_archived(civitai, laptop):
    download = queue(200)
    civitai.config.catalog.model(20).mode = "Archived"

    run()

    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, "civitai_archived")
    assert "archived on Civitai" in failed.error


def test_a_key_unlocks_a_download_that_needs_one(civitai, laptop, gpu_root):
    CivitaiSettings.objects.update_or_create(pk=1, defaults={"api_key": "buyer-key"})
    download = queue(960)

    run()

    assert reload(download).status == DownloadStatus.COMPLETED


def test_a_file_gone_from_civitai_fails_as_not_found(civitai, laptop):
    download = queue(200)
    civitai.config.catalog.version(200)[1].published = False

    run()

    assert reload(download).error_code == "civitai_not_found"


def test_rate_limiting_backs_off_then_fails_after_the_retries(civitai, laptop, settings):
    settings.MOBILESD_DOWNLOAD_MAX_RETRIES = 1
    civitai.faults.rate_limit_downloads = True
    download = queue(200)

    run()
    waiting = reload(download)
    Download.objects.filter(pk=download.pk).update(next_attempt_at=None)
    run()

    assert (waiting.status, waiting.error_code) == (DownloadStatus.PENDING, "civitai_rate_limited")
    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, "civitai_rate_limited")
    assert "gave up after 2 attempts" in failed.error


# --- concurrency, cancel, delete -----------------------------------------------------------------


def test_at_most_n_downloads_run_at_once(civitai, laptop, settings):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 2
    for version in (100, 200, 900):
        queue(version)

    claims = [downloads.download_claim_next() for _ in range(3)]

    assert [claim is not None for claim in claims] == [True, True, False]
    assert Download.objects.filter(status=DownloadStatus.DOWNLOADING).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_concurrent_workers(civitai, laptop, settings):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 2
    for version in (100, 200, 900, 300, 400, 600):
        queue(version)
    claims: list = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        claims.append(downloads.download_claim_next())
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(claim is not None for claim in claims) == 2
    assert Download.objects.filter(status=DownloadStatus.DOWNLOADING).count() == 2


def test_the_admin_setting_overrides_the_limit(civitai, laptop, settings):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 5
    CivitaiSettings.objects.update_or_create(pk=1, defaults={"max_concurrent_downloads": 1})
    queue(100)
    queue(200)

    assert downloads.download_claim_next() is not None
    assert downloads.download_claim_next() is None


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_download_stops_it_and_removes_the_partial_file(
    civitai, laptop, gpu_root
):
    civitai.faults.bytes_per_second = 400_000  # the 3 MiB file takes ~8 s
    download = queue(100)
    worker = threading.Thread(target=lambda: (run(), connection.close()))
    worker.start()
    wait_until(lambda: reload(download).bytes_done > 100_000, timeout=10, what="progress")
    running = reload(download)

    download_cancel(download_id=download.pk)
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert running.status == DownloadStatus.DOWNLOADING
    assert running.speed_bytes_per_second
    assert reload(download).status == DownloadStatus.CANCELLED
    assert files_below(gpu_root) == []


def test_a_cancelled_pending_download_is_never_started(civitai, laptop):
    download = queue(200)
    download_cancel(download_id=download.pk)

    run()

    assert reload(download).status == DownloadStatus.CANCELLED
    assert civitai.requests_to("/api/download/") == []


def test_the_reconcile_task_nudges_one_worker_per_free_slot(civitai, laptop, settings, published):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 2
    for version in (100, 200, 900):
        queue(version)

    tasks.reconcile_downloads()

    assert [name for name, _, _ in published] == ["civitai_app.tasks.run_downloads"] * 2


def test_a_worker_lost_too_often_fails_the_download(civitai, laptop, settings):
    settings.MOBILESD_DOWNLOAD_MAX_RETRIES = 1
    download = queue(200)
    Download.objects.filter(pk=download.pk).update(
        status=DownloadStatus.DOWNLOADING,
        lease_token="00000000-0000-4000-8000-000000000000",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        attempts=1,
        speed_bytes_per_second=1e6,  # the dead worker's last reading
    )

    tasks.reconcile_downloads()

    failed = reload(download)
    assert failed.status == DownloadStatus.FAILED
    assert failed.error_code == "worker_lost"
    assert failed.lease_token is None
    assert failed.speed_bytes_per_second is None  # a failed download shows no speed


# --- after the download: the server rescans, our cache follows ---------------------------------


@pytest.mark.parametrize("kind", ["checkpoint", "lora"])
def test_the_server_rescans_and_our_cache_lists_the_new_model(civitai, gpu_root, db, kind):
    with ForgeSimulator(SimulatorConfig(models=[], loras=[])) as forge:
        server = baker.make(
            Server, alias="Laptop", api_url=forge.url, models_dir=str(gpu_root / "models")
        )
        if kind == "checkpoint":
            download = queue(100)
            forge.set_models([SimModel("juggernautXL_v9.safetensors", sha256=sha(CHECKPOINT))])
        else:
            download = queue(200)
            forge.set_loras([SimLora("add_detail.safetensors")])
        run()

        tasks.refresh_after_download(str(download.pk))

        event = "checkpoints_refreshed" if kind == "checkpoint" else "loras_refreshed"
        assert forge.events.of_type(event)
    cached = CachedModel.objects.get(server=server)
    assert cached.name in ("juggernautXL_v9", "add_detail")
    target = reload(download).targets.get()
    assert target.refreshed_at is not None
    assert target.refresh_error == ""


def test_an_unreachable_server_after_a_download_is_noted_on_its_target(civitai, laptop):
    download = queue(200)
    run()

    tasks.refresh_after_download(str(download.pk))

    target = reload(download).targets.get()
    assert reload(download).status == DownloadStatus.COMPLETED
    assert "could not be asked to rescan" in target.refresh_error


def test_other_files_are_not_mistaken(civitai, laptop, gpu_root):
    queue(100, file_id=1001)  # the fp32 file of the same version

    run()

    assert (
        gpu_root / "models" / "Stable-diffusion" / "juggernautXL_v9_fp32.safetensors"
    ).read_bytes() == OTHER


@pytest.mark.parametrize(
    ("folder", "route"),
    [("VAE", "/sdapi/v1/refresh-vae"), ("../embeddings", "/sdapi/v1/refresh-embeddings")],
)
def test_embeddings_and_vae_downloads_ask_for_their_own_rescan(gpu_root, db, folder, route):
    from civitai_app.models import Download, DownloadTarget, TargetState

    with ForgeSimulator(SimulatorConfig(flavour="a1111-1.10")) as forge:
        server = baker.make(Server, alias="Laptop", api_url=forge.url)
        download = baker.make(
            Download, status=DownloadStatus.COMPLETED, folder=folder, model_type="VAE"
        )
        baker.make(
            DownloadTarget, download=download, server=server, state=TargetState.PLACED, path="x"
        )

        tasks.refresh_after_download(str(download.pk))

        assert forge.request_count("POST", route) == 1
    assert reload(download).targets.get().refresh_error == ""
