"""The run of a claimed download against the Civitai simulator (real HTTP), to each of its
ends: completed and verified, or failed with Civitai's reason. The Celery task is called
as a function; files land in a temporary models folder."""

import json

import pytest
from PIL import Image

from civitai_app.models import CivitaiSettings, DownloadStatus, TargetState
from tests.civitai_app.support import files_below, queue, reload, run, sha
from tests.integrations.civitai.catalog import CHECKPOINT, OTHER

# --- a download completes and verifies ------------------------------------------------------------


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


def test_other_files_are_not_mistaken(civitai, laptop, gpu_root):
    queue(100, file_id=1001)  # the fp32 file of the same version

    run()

    assert (
        gpu_root / "models" / "Stable-diffusion" / "juggernautXL_v9_fp32.safetensors"
    ).read_bytes() == OTHER


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


# --- Civitai's refusals ---------------------------------------------------------------------------


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
