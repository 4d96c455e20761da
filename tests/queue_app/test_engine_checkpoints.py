"""A job never completes on another model than the one it asked for: after a server's
URL changes to another machine, and when the server drops the checkpoint MobileSD sent.
The engine runs a server's queue in-process against Forge simulators over HTTP."""

from collections.abc import Iterator

import pytest
from rest_framework.test import APIClient

from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app.engine import server_run
from queue_app.models import JobImage, JobStatus
from servers_app.model_cache import checkpoint_rows
from servers_app.models import CachedModel, Server
from servers_app.services import server_check_health
from tests.support import checked_server, submit

pytestmark = pytest.mark.django_db(transaction=True)

PONY = "Pony/cyberrealisticPony_v8.safetensors"
MODELS = [SimModel("sd_xl_base_1.0.safetensors"), SimModel(PONY)]


def _simulator(**config) -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(SimulatorConfig(flavour="forge-2", models=MODELS, **config))
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def linux() -> Iterator[ForgeSimulator]:
    yield from _simulator(path_separator="/", initial_checkpoint=PONY)


@pytest.fixture
def windows() -> Iterator[ForgeSimulator]:
    yield from _simulator(path_separator="\\", initial_checkpoint="sd_xl_base_1.0.safetensors")


@pytest.fixture
def server(linux, settings) -> Server:
    """A server first known at the Linux simulator's URL, checked and its models read."""
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    server = checked_server(linux.url)
    assert server.cached_models.filter(title__startswith=PONY).exists()
    return server


def move_to(windows: ForgeSimulator, client: APIClient) -> None:
    response = client.put(
        "/api/v1/servers/Laptop", {"alias": "Laptop", "apiUrl": windows.url}, format="json"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("checked_first", [True, False], ids=["checked", "not-yet-checked"])
def test_after_a_url_change_a_job_runs_on_the_model_it_asked_for(
    server, windows, client, checked_first
):
    move_to(windows, client)
    if checked_first:  # what the check queued by the update does
        server_check_health(server=Server.objects.get(pk=server.pk))
    job = submit(checkpoint_name=PONY)

    server_run(server.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert job.result_details["generation_info"]["sd_model_name"] == "cyberrealisticPony_v8"
    assert job.result_details["checkpoint"].startswith("Pony\\cyberrealisticPony_v8.safetensors")
    received = windows.wait_for_event("txt2img_received")
    assert received["checkpoint"].startswith("Pony\\cyberrealisticPony_v8.safetensors")


def test_after_a_url_change_the_old_catalogue_is_gone_before_the_check(server, windows, client):
    move_to(windows, client)

    server.refresh_from_db()
    assert not server.cached_models.exists()
    assert server.loaded_checkpoint == ""
    assert server.is_online is None


def test_a_job_the_server_ran_on_another_model_fails_and_is_never_completed(server, linux):
    # A cache row the server no longer has: it drops the override and uses its loaded model.
    (row,) = checkpoint_rows([{"title": "Pony/gone_v1.safetensors"}])
    CachedModel.objects.create(server=server, **row.fields())
    job = submit(checkpoint_name="Pony/gone_v1.safetensors")

    server_run(server.pk)

    assert linux.wait_for_event("checkpoint_override_ignored")["requested"] == row.title
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "checkpoint_mismatch"
    assert "Pony/gone_v1.safetensors" in job.result_details["error"]
    assert "cyberrealisticPony_v8" in job.result_details["error"]
    assert job.result_details["checkpoint"].startswith(PONY)
    assert not JobImage.objects.filter(job=job).exists()
    server.refresh_from_db()
    assert not server.cached_models.filter(title=row.title).exists()  # the list was re-read
    assert server.loaded_checkpoint.startswith(PONY)


def test_a_job_without_a_checkpoint_records_the_one_it_ran_on(server):
    job = submit()

    server_run(server.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert job.result_details["checkpoint"].startswith(PONY)
