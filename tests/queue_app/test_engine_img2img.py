"""The engine running img2img and inpaint jobs on a real (in-process) Forge simulator: the
stored uploads reach the server byte for byte, through POST /sdapi/v1/img2img."""

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from core_app.scopes import local_user
from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from queue_app.engine import server_run
from queue_app.models import JobStatus
from queue_app.uploads import upload_create
from servers_app.models import Server
from tests.support import checked_server, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(SimulatorConfig(flavour="forge-2", seconds_per_step=0)).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def server(sim) -> Server:
    return checked_server(sim.url)


def png(color: int | tuple[int, int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (64, 64), color).save(out, "PNG")
    return out.getvalue()


def test_an_inpaint_job_sends_its_uploads_as_stored_and_completes(server, sim):
    init_bytes, mask_bytes = png((5, 150, 5)), png(255, mode="L")
    init = upload_create(owner=local_user(), data=init_bytes)
    mask = upload_create(owner=local_user(), data=mask_bytes)
    job = submit(mode="inpaint", init_images=[str(init.pk)], mask=str(mask.pk), mask_blur=2)

    assert server_run(server.pk) == 1

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.result_details
    assert sim.request_count("POST", "/sdapi/v1/img2img") == 1
    assert sim.request_count("POST", "/sdapi/v1/txt2img") == 0
    inputs = sim.last_img2img_inputs
    assert inputs is not None
    assert (inputs.init_images, inputs.mask) == ([init_bytes], mask_bytes)


def test_a_job_whose_upload_file_is_gone_fails_with_input_missing(server, sim):
    init = upload_create(owner=local_user(), data=png((5, 150, 5)))
    job = submit(mode="img2img", init_images=[str(init.pk)])
    init.file.storage.delete(init.file.name)

    server_run(server.pk)

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "input_missing"
    assert sim.request_count("POST", "/sdapi/v1/img2img") == 0
