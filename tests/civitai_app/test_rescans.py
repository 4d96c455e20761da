"""After a completed download: the target servers rescan (Forge simulator, real HTTP),
and MobileSD's model cache follows."""

import pytest
from model_bakery import baker

from civitai_app import tasks
from civitai_app.models import Download, DownloadStatus, TargetState
from integrations.forge.simulator import ForgeSimulator, SimLora, SimModel, SimulatorConfig
from servers_app.models import CachedModel, Server
from tests.civitai_app.support import queue, reload, run, sha
from tests.integrations.civitai.catalog import CHECKPOINT


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
    cached = CachedModel.objects.get(server=server, kind=kind)
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


@pytest.mark.parametrize(
    ("folder", "route"),
    [("VAE", "/sdapi/v1/refresh-vae"), ("../embeddings", "/sdapi/v1/refresh-embeddings")],
)
def test_embeddings_and_vae_downloads_ask_for_their_own_rescan(gpu_root, db, folder, route):
    from civitai_app.models import DownloadTarget

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
