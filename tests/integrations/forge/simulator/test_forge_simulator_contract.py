"""Contract test: the forge-2 simulator's JSON responses validate against the real Forge 2
OpenAPI document (contracts/forge-f2-openapi.json), for every route it implements.

Known gaps of the document (see contracts/README.md): `/sdapi/v1/loras`,
`/sdapi/v1/refresh-loras`, `/internal/pending-tasks`, `/internal/ping` and the refresh routes
have an empty response schema (anything validates; loras' shape is checked by hand below),
and non-422 error bodies (401/404/500) are not described at all, so only 200 and 422 are
validated here.
"""

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.validation.response.exceptions import ResponseValidationError

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig

# The captured OpenAPI document of a real Forge 2 server (see contracts/README.md).
CONTRACT = Path(__file__).resolve().parents[4] / "contracts" / "forge-f2-openapi.json"


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    # The captured document fails spec validation on gradio routes; response schemas are fine.
    return OpenAPI.from_file_path(str(CONTRACT), config=Config(spec_validator_cls=None))


@pytest.fixture(scope="module")
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(SimulatorConfig(flavour="forge-2", seconds_per_step=0.01)).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def conforms(openapi: OpenAPI) -> Callable[[requests.Response], requests.Response]:
    def check(response: requests.Response) -> requests.Response:
        openapi.validate_response(
            RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
        )
        return response

    return check


def call(sim: ForgeSimulator, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{sim.url}{path}", json=body, timeout=10)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/sdapi/v1/sd-models", None),
        ("GET", "/sdapi/v1/sd-modules", None),
        ("GET", "/sdapi/v1/loras", None),
        ("GET", "/sdapi/v1/samplers", None),
        ("GET", "/sdapi/v1/schedulers", None),
        ("GET", "/sdapi/v1/upscalers", None),
        ("GET", "/sdapi/v1/latent-upscale-modes", None),
        ("GET", "/sdapi/v1/memory", None),
        ("GET", "/sdapi/v1/embeddings", None),
        ("GET", "/sdapi/v1/options", None),
        ("GET", "/sdapi/v1/progress", None),
        ("GET", "/sdapi/v1/progress?skip_current_image=true", None),
        ("GET", "/sdapi/v1/hypernetworks", None),
        ("GET", "/sdapi/v1/prompt-styles", None),
        ("GET", "/sdapi/v1/face-restorers", None),
        ("GET", "/sdapi/v1/scripts", None),
        ("GET", "/internal/pending-tasks", None),
        ("GET", "/internal/ping", None),
        ("GET", "/app_id", None),
        ("POST", "/sdapi/v1/interrupt", None),
        ("POST", "/sdapi/v1/skip", None),
        ("POST", "/sdapi/v1/options", {"CLIP_stop_at_last_layers": 1}),
        ("POST", "/sdapi/v1/refresh-checkpoints", None),
        ("POST", "/sdapi/v1/refresh-loras", None),
        ("POST", "/sdapi/v1/refresh-vae", None),
        ("POST", "/sdapi/v1/refresh-embeddings", None),
        ("POST", "/internal/progress", {"id_task": "unknown"}),
        ("POST", "/sdapi/v1/txt2img", {"prompt": "<lora:add_detail:1> x", "steps": 2}),
        (
            "POST",
            "/sdapi/v1/txt2img",
            {"steps": 1, "batch_size": 2, "enable_hr": True, "hr_additional_modules": []},
        ),
        ("POST", "/sdapi/v1/txt2img", {"steps": 1, "send_images": False}),
    ],
)
def test_successful_responses_match_the_contract(sim, conforms, method, path, body):
    response = conforms(call(sim, method, path, body))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/sdapi/v1/txt2img", {"steps": "abc"}),
        ("POST", "/sdapi/v1/txt2img", [1, 2]),
        ("POST", "/sdapi/v1/img2img", {"init_images": "not-a-list"}),
        ("POST", "/sdapi/v1/options", ["not", "a", "dict"]),
        ("POST", "/sdapi/v1/png-info", {}),
        ("POST", "/internal/progress", {"id_task": 5}),
        ("GET", "/sdapi/v1/progress?skip_current_image=maybe", None),
    ],
)
def test_validation_errors_match_the_contract(sim, conforms, method, path, body):
    response = conforms(call(sim, method, path, body))

    assert response.status_code == 422


def test_img2img_and_png_info_match_the_contract(sim, conforms):
    image = call(sim, "POST", "/sdapi/v1/txt2img", {"steps": 1, "width": 64, "height": 64})
    b64 = image.json()["images"][0]

    img2img = conforms(call(sim, "POST", "/sdapi/v1/img2img", {"init_images": [b64], "steps": 4}))
    png_info = conforms(call(sim, "POST", "/sdapi/v1/png-info", {"image": b64}))

    assert (img2img.status_code, png_info.status_code) == (200, 200)


def test_an_inpaint_answer_matches_the_contract(sim, conforms):
    image = call(sim, "POST", "/sdapi/v1/txt2img", {"steps": 1, "width": 64, "height": 64})
    b64 = image.json()["images"][0]
    body = {
        "init_images": [b64],
        "mask": b64,
        "steps": 2,
        "mask_blur": 4,
        "inpainting_fill": 1,
        "inpaint_full_res": False,
        "include_init_images": True,
    }

    inpaint = conforms(call(sim, "POST", "/sdapi/v1/img2img", body))

    assert inpaint.status_code == 200
    assert inpaint.json()["parameters"]["mask"] == b64


def test_progress_of_running_and_queued_tasks_matches_the_contract(sim, conforms):
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(
            call, sim, "POST", "/sdapi/v1/txt2img", {"force_task_id": "run", "steps": 1000}
        )
        sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == "run")
        queued = pool.submit(
            call, sim, "POST", "/sdapi/v1/txt2img", {"force_task_id": "wait", "steps": 1}
        )
        sim.wait_for_event("txt2img_received", lambda e: e["task_id"] == "wait")

        active = conforms(call(sim, "POST", "/internal/progress", {"id_task": "run"}))
        waiting = conforms(call(sim, "POST", "/internal/progress", {"id_task": "wait"}))
        shared = conforms(call(sim, "GET", "/sdapi/v1/progress"))
        pending = conforms(call(sim, "GET", "/internal/pending-tasks"))
        call(sim, "POST", "/sdapi/v1/interrupt")
        assert running.result(timeout=10).status_code == 200
        assert queued.result(timeout=10).status_code == 200

    assert active.json()["active"] is True
    assert waiting.json()["textinfo"] == "In queue: 1/1"
    assert shared.json()["state"]["job_count"] == 1
    assert pending.json() == {"size": 1, "tasks": ["wait"]}


def test_progress_with_live_previews_matches_the_contract(sim, conforms):
    assert call(sim, "POST", "/sdapi/v1/options", {"show_progress_every_n_steps": 1}).ok
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(
            call, sim, "POST", "/sdapi/v1/txt2img", {"force_task_id": "pv", "steps": 1000}
        )
        sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == "pv")
        deadline = time.monotonic() + 10
        while call(sim, "GET", "/sdapi/v1/progress").json()["state"]["sampling_step"] < 2:
            assert time.monotonic() < deadline

        internal = conforms(call(sim, "POST", "/internal/progress", {"id_task": "pv"}))
        shared = conforms(call(sim, "GET", "/sdapi/v1/progress?skip_current_image=false"))
        call(sim, "POST", "/sdapi/v1/interrupt")
        call(sim, "POST", "/sdapi/v1/options", {"show_progress_every_n_steps": 10})
        assert running.result(timeout=10).status_code == 200

    assert internal.json()["live_preview"].startswith("data:image/png;base64,")
    assert isinstance(shared.json()["current_image"], str)


def test_loras_have_the_shape_the_contract_leaves_open(sim):
    loras = call(sim, "GET", "/sdapi/v1/loras").json()

    assert loras
    for lora in loras:
        assert set(lora) == {"name", "alias", "path", "metadata"}
        assert all(isinstance(lora[k], str) for k in ("name", "alias", "path"))
        assert isinstance(lora["metadata"]["ss_tag_frequency"], dict)
        assert isinstance(lora["metadata"]["ss_base_model_version"], str)


def test_the_contract_check_rejects_a_non_conforming_body(sim, conforms):
    response = call(sim, "GET", "/sdapi/v1/sd-models")
    response._content = b'[{"title": 1}]'

    with pytest.raises(ResponseValidationError, match="not valid for schema"):
        conforms(response)
