"""A LoRA reaches the server under the name the server looks up, whatever form the job
used, on each server as that server stores it (Linux and Windows simulators over HTTP);
one the server does not have fails the job instead of being dropped silently; an "any"
job runs only where its LoRAs are."""

from collections.abc import Iterator

import pytest
import requests

from integrations.forge.simulator import ForgeSimulator, SimLora, SimModel, SimulatorConfig
from queue_app.engine import server_run
from queue_app.models import JobStatus
from servers_app.model_cache import lora_rows
from servers_app.models import CachedModel, Server
from tests.queue_app.engine_support import run, submit
from tests.support import checked_server

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = [SimModel("sd_xl_base_1.0.safetensors")]


def _simulator(separator: str, loras: list[SimLora]) -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(flavour="forge-2", path_separator=separator, models=MODELS, loras=loras)
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def linux() -> Iterator[ForgeSimulator]:
    yield from _simulator(
        "/",
        [
            SimLora("add_detail.safetensors"),
            SimLora("styles/ink_v2.safetensors", output_name="Ink Style"),
        ],
    )


@pytest.fixture
def windows() -> Iterator[ForgeSimulator]:
    yield from _simulator(
        "\\",
        [
            SimLora("Detail/add_detail.safetensors"),
            SimLora("styles/ink_v2.safetensors", output_name="Ink Style"),
            SimLora("Characters/only_here.safetensors"),
        ],
    )


def _checked(alias: str, simulator: ForgeSimulator) -> Server:
    server = checked_server(simulator.url, alias=alias)
    assert server.cached_models.filter(kind="lora").exists()
    return server


@pytest.fixture
def laptop(linux, settings) -> Server:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    return _checked("Laptop", linux)


@pytest.fixture
def desktop(windows, settings) -> Server:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    return _checked("Desktop", windows)


def test_a_lora_picked_by_file_name_is_sent_as_the_servers_name(laptop):
    job = submit("Laptop", loras=[{"name": "add_detail.safetensors", "weight": 0.8}])

    job = run(laptop, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    info = job.result_details["generation_info"]
    assert info["prompt"] == "a lighthouse <lora:add_detail:0.8>"
    assert "add_detail: " in info["extra_generation_params"]["Lora hashes"]  # the server found it
    assert job.result_details["loras"] == ["add_detail"]


def test_the_same_request_resolves_on_each_server_as_it_stores_the_lora(laptop, desktop):
    params = {
        "positive_prompt": "a cat <lora:styles/ink_v2.safetensors:0.5>",
        "loras": [{"name": "add_detail", "weight": 0.7}],
    }
    on_linux, on_windows = submit("Laptop", **params), submit("Desktop", **params)

    on_linux, on_windows = run(laptop, on_linux), run(desktop, on_windows)

    for job in (on_linux, on_windows):
        assert job.status == JobStatus.COMPLETED, job.result_details
        info = job.result_details["generation_info"]
        assert info["prompt"] == "a cat <lora:ink_v2:0.5> <lora:add_detail:0.7>"
        hashes = info["extra_generation_params"]["Lora hashes"]
        assert "ink_v2: " in hashes
        assert "add_detail: " in hashes
        assert job.result_details["loras"] == ["ink_v2", "add_detail"]


def test_a_windows_path_and_an_alias_resolve_on_a_windows_server(desktop):
    job = submit(
        "Desktop",
        positive_prompt="a cat <lora:ink style:0.4>",
        loras=[{"name": "detail\\ADD_DETAIL", "weight": 1}, {"name": "Ink Style"}],
    )

    job = run(desktop, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    # The alias in the prompt names the same LoRA as the list's: it is applied once.
    assert job.result_details["generation_info"]["prompt"] == (
        "a cat <lora:ink_v2:0.4> <lora:add_detail:1>"
    )


def test_an_unknown_lora_fails_the_job_after_one_refresh(laptop, linux):
    Server.objects.filter(pk=laptop.pk).update(models_stale=True)  # not refused at submit
    job = submit("Laptop", loras=[{"name": "add_details", "weight": 0.8}])
    read_before = Server.objects.get(pk=laptop.pk).models_refreshed_at

    job = run(laptop, job)

    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "lora_not_found"
    assert job.result_details["lora"] == "add_details"
    assert job.result_details["error"] == (
        "LoRA 'add_details' was not found on server 'Laptop'. Did you mean: add_detail?"
    )
    laptop.refresh_from_db()
    assert laptop.models_refreshed_at > read_before  # the list was read again first
    assert laptop.models_stale is False
    assert not linux.events.of_type("txt2img_received")  # nothing was generated without it


def test_a_lora_the_server_gained_since_the_last_refresh_is_found(laptop, linux):
    linux.set_loras([*linux.config.loras, SimLora("new/fresh_one.safetensors")])
    response = requests.post(f"{linux.url}/sdapi/v1/refresh-loras", timeout=5)  # its own rescan
    assert response.ok
    Server.objects.filter(pk=laptop.pk).update(models_stale=True)
    job = submit("Laptop", loras=[{"name": "new/fresh_one"}])

    job = run(laptop, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    assert job.result_details["loras"] == ["fresh_one"]


def test_an_any_job_runs_only_on_the_server_that_has_its_lora(laptop, desktop, windows):
    job = submit("any", loras=[{"name": "only_here.safetensors", "weight": 0.6}])

    assert server_run(laptop.pk) == 0
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    job = run(desktop, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    assert job.server == desktop
    assert job.result_details["generation_info"]["prompt"] == "a lighthouse <lora:only_here:0.6>"


def test_an_any_job_whose_lora_no_server_has_fails_with_the_reason(laptop, desktop):
    Server.objects.update(models_stale=True)  # not refused at submit
    job = submit("any", loras=[{"name": "nowhere"}])

    job = run(laptop, job)

    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "lora_not_found"
    assert "LoRA 'nowhere' was not found on server 'Laptop'." in job.result_details["error"]


def test_a_lora_that_names_two_of_the_servers_fails_the_job_naming_both(desktop, windows):
    (row,) = lora_rows([{"name": "add_detail", "path": "C:\\sd\\models\\Lora\\Old\\add_detail.pt"}])
    CachedModel.objects.create(server=desktop, **row.fields())
    Server.objects.filter(pk=desktop.pk).update(models_stale=True)  # not refused at submit
    job = submit("Desktop", loras=[{"name": "add_detail"}])

    job = run(desktop, job)

    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "lora_ambiguous"
    assert "Detail\\add_detail.safetensors, Old\\add_detail.pt" in job.result_details["error"]
    assert not windows.events.of_type("txt2img_received")
