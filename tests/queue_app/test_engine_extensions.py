"""The extras of a job (VAE, modules, styles, hires fields, scripts) reach the server
(simulators over HTTP) under the names it knows; one it lacks fails the job with the
reason after one refresh of its lists."""

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from core_app.scopes import local_user
from integrations.forge.client import ForgeClient, ForgeTransientError
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app.models import Job, JobStatus
from servers_app.models import CachedModel, ModelKind, Server
from tests.queue_app.engine_support import run, submit
from tests.support import checked_server

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = [SimModel("sd_xl_base_1.0.safetensors")]
ADETAILER = {"ADetailer": {"args": [True, False, {"ad_model": "face_yolov8n.pt"}]}}


@pytest.fixture
def forge(settings) -> Iterator[ForgeSimulator]:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    with ForgeSimulator(SimulatorConfig(models=MODELS, adetailer=True)) as simulator:
        yield simulator


@pytest.fixture
def a1111(settings) -> Iterator[ForgeSimulator]:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    with ForgeSimulator(SimulatorConfig(flavour="a1111-1.10", models=MODELS)) as simulator:
        yield simulator


def received(simulator: ForgeSimulator) -> dict[str, Any]:
    (event,) = simulator.events.of_type("txt2img_received")
    return event


def test_forge_gets_the_vae_and_text_encoders_as_its_module_paths(forge):
    server = checked_server(forge.url, alias="Forge")
    job = submit("Forge", vae="ae", text_encoders=["clip_l.safetensors", "t5xxl_fp8_e4m3fn"])

    job = run(server, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    assert received(forge)["override_settings"]["forge_additional_modules"] == [
        "/opt/sd/models/VAE/ae.safetensors",
        "/opt/sd/models/text_encoder/clip_l.safetensors",
        "/opt/sd/models/text_encoder/t5xxl_fp8_e4m3fn.safetensors",
    ]


def test_a1111_gets_the_vae_as_sd_vae_and_the_styles_by_their_names(a1111):
    server = checked_server(a1111.url, alias="Old")
    job = submit("Old", vae="SDXL_VAE", styles=["cinematic"])

    job = run(server, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    event = received(a1111)
    assert event["override_settings"]["sd_vae"] == "sdxl_vae.safetensors"
    assert event["styles"] == ["Cinematic"]


def test_an_adetailer_unit_and_a_selectable_script_reach_the_server_as_sent(forge):
    server = checked_server(forge.url, alias="Forge")
    job = submit("Forge", alwayson_scripts=ADETAILER, script_name="X/Y/Z plot", script_args=[1])

    job = run(server, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    event = received(forge)
    assert event["alwayson_scripts"] == ADETAILER
    assert (event["script_name"], event["script_args"]) == ("X/Y/Z plot", [1])


def test_a_script_the_server_lacks_fails_the_job_after_one_refresh(a1111):
    server = checked_server(a1111.url, alias="Old")
    Server.objects.filter(pk=server.pk).update(models_stale=True)  # not refused at submit
    job = submit("Old", alwayson_scripts=ADETAILER)

    job = run(server, job)

    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "script_not_found"
    assert job.result_details["field"] == "alwayson_scripts"
    assert "Server 'Old' has no script 'ADetailer'." in job.result_details["error"]
    assert not a1111.events.of_type("txt2img_received")


def test_a_script_the_server_refuses_fails_the_job_with_that_code(forge):
    server = checked_server(forge.url, alias="Forge")
    job = submit("Forge", alwayson_scripts=ADETAILER)
    forge.config.adetailer = False  # uninstalled after the lists were read
    forge.restart()

    job = run(server, job)

    assert job.status == JobStatus.FAILED
    assert job.result_details["code"] == "script_not_found"
    assert "Script 'ADetailer' not found" in job.result_details["error"]


def test_a_style_gained_since_the_last_refresh_is_found(a1111):
    server = checked_server(a1111.url, alias="Old")
    CachedModel.objects.filter(server=server, kind=ModelKind.STYLE).delete()
    Server.objects.filter(pk=server.pk).update(models_stale=True)  # not refused at submit
    job = submit("Old", styles=["Watercolor"])

    job = run(server, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    assert received(a1111)["styles"] == ["Watercolor"]


def unit_image_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def controlnet(image: str) -> dict[str, Any]:
    unit = {"enabled": True, "module": "canny", "model": "control_v11p_sd15_canny", "image": image}
    return {"ControlNet": {"args": [unit]}}


@pytest.fixture
def forge_controlnet(settings) -> Iterator[ForgeSimulator]:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    config = SimulatorConfig(models=MODELS, controlnet=True)
    with ForgeSimulator(config) as simulator:
        yield simulator


def test_a_controlnet_units_image_named_by_upload_id_reaches_the_server_as_its_bytes(
    forge_controlnet,
):
    import base64

    from queue_app.models import JobInput, JobInputRole
    from queue_app.uploads import upload_create

    data = unit_image_png()
    upload = upload_create(owner=local_user(), data=data)
    server = checked_server(forge_controlnet.url, alias="Forge")
    job = submit("Forge", alwayson_scripts=controlnet(str(upload.pk)))
    assert list(JobInput.objects.filter(job=job).values_list("role", "upload_id")) == [
        (JobInputRole.SCRIPT, upload.pk)
    ]

    job = run(server, job)

    assert job.status == JobStatus.COMPLETED, job.result_details
    (unit,) = received(forge_controlnet)["alwayson_scripts"]["ControlNet"]["args"]
    assert base64.b64decode(unit["image"]) == data
    # The job keeps the reference as submitted.
    assert job.generation_params["alwayson_scripts"] == controlnet(str(upload.pk))


def test_a_controlnet_image_of_another_users_upload_is_refused_at_submit(forge_controlnet):
    from django.contrib.auth import get_user_model

    from core_app.errors import NotFound
    from queue_app.uploads import upload_create

    other = get_user_model().objects.create_user("bob")
    upload = upload_create(owner=other, data=unit_image_png())
    checked_server(forge_controlnet.url, alias="Forge")

    with pytest.raises(NotFound) as refused:
        submit("Forge", alwayson_scripts=controlnet(str(upload.pk)))

    assert refused.value.code == "upload_not_found"
    assert not Job.objects.exists()


AE = "/opt/sd/models/VAE/ae.safetensors"


def set_in_web_ui(simulator: ForgeSimulator, **options: Any) -> None:
    """What the server's owner picks in its web UI (the UI saves it as POST /options)."""
    requests.post(f"{simulator.url}/sdapi/v1/options", json=options, timeout=5).raise_for_status()


def last_override(simulator: ForgeSimulator) -> dict[str, Any]:
    return simulator.events.of_type("txt2img_received")[-1]["override_settings"]


def test_a_plain_job_leaves_the_modules_picked_in_forges_web_ui(forge):
    set_in_web_ui(forge, forge_additional_modules=[AE])
    server = checked_server(forge.url, alias="Forge")

    job = run(server, submit("Forge"))

    assert job.status == JobStatus.COMPLETED, job.result_details
    assert "Module 1: ae" in job.images.get().infotext
    assert "forge_additional_modules" not in last_override(forge)
    assert forge.options["forge_additional_modules"] == [AE]
    server.refresh_from_db()
    assert server.vae_baseline == {}


def test_a_plain_job_after_a_vae_job_runs_with_forges_own_modules_again(forge):
    set_in_web_ui(forge, forge_additional_modules=[AE])
    server = checked_server(forge.url, alias="Forge")
    first = run(server, submit("Forge", vae="None"))
    assert "Module 1" not in first.images.get().infotext

    second = run(server, submit("Forge"))

    assert second.status == JobStatus.COMPLETED, second.result_details
    assert "Module 1: ae" in second.images.get().infotext
    assert forge.options["forge_additional_modules"] == [AE]


def test_a_plain_job_after_a_vae_job_runs_with_a1111s_own_vae_again(a1111):
    set_in_web_ui(a1111, sd_vae="sdxl_vae.safetensors")
    server = checked_server(a1111.url, alias="Old")
    run(server, submit("Old", vae="None"))
    assert a1111.options["sd_vae"] == "None"

    second = run(server, submit("Old"))

    assert second.status == JobStatus.COMPLETED, second.result_details
    assert last_override(a1111)["sd_vae"] == "sdxl_vae.safetensors"
    assert a1111.options["sd_vae"] == "sdxl_vae.safetensors"


def test_the_servers_own_setting_is_remembered_in_the_database(forge):
    server = checked_server(forge.url, alias="Forge")
    run(server, submit("Forge", vae="ae"))
    assert forge.options["forge_additional_modules"] == [AE]
    assert Server.objects.get(pk=server.pk).vae_baseline == {"forge_additional_modules": []}

    # A new server loop (server_run reads the row by its pk), as after a worker restart.
    second = run(server, submit("Forge"))

    assert second.status == JobStatus.COMPLETED, second.result_details
    assert "Module 1" not in second.images.get().infotext
    assert forge.options["forge_additional_modules"] == []


def test_options_are_read_only_for_a_job_that_changes_the_setting_first(forge, monkeypatch):
    server = checked_server(forge.url, alias="Forge")
    reads = []
    read = ForgeClient.options
    monkeypatch.setattr(ForgeClient, "options", lambda self: reads.append(1) or read(self))

    run(server, submit("Forge"))
    assert reads == []
    run(server, submit("Forge", vae="ae"))
    run(server, submit("Forge", vae="ae"))
    run(server, submit("Forge"))

    assert reads == [1]


def test_a_vae_job_runs_when_the_options_cannot_be_read_and_nothing_is_remembered(
    a1111, monkeypatch, caplog
):
    server = checked_server(a1111.url, alias="Old")

    def broken(self: ForgeClient) -> dict[str, Any]:
        raise ForgeTransientError("HTTP 502 from /sdapi/v1/options")

    monkeypatch.setattr(ForgeClient, "options", broken)

    job = run(server, submit("Old", vae="SDXL_VAE"))

    assert job.status == JobStatus.COMPLETED, job.result_details
    assert a1111.options["sd_vae"] == "sdxl_vae.safetensors"
    assert Server.objects.get(pk=server.pk).vae_baseline == {}
    assert "its own sd_vae is not remembered" in caplog.text
