"""Behaviour of the Forge / A1111 simulator (integrations.forge.simulator), over real HTTP.

Every test starts its own simulator on port 0; sampling is 10 ms per step. Synchronisation
uses the simulator's event log (`wait_for_event`) or polls with a deadline, never bare sleeps.
"""

import base64
import hashlib
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from integrations.forge.client import ForgeClient, ForgeUnreachableError, ServerEndpoint
from integrations.forge.simulator import (
    ForgeSimulator,
    SimLora,
    SimModel,
    SimulatorConfig,
    format_infotext,
    parse_infotext,
)
from integrations.forge.simulator import server as simulator_server
from integrations.forge.simulator.api import Request
from integrations.forge.simulator.catalog import normalise_sampler

PONY = "Pony/cyberrealisticPony_v8.safetensors"
JUGGER = "sdxl/juggernautXL_v9.safetensors"
PONY_SHA = hashlib.sha256(b"pony").hexdigest()
JUGGER_SHA = hashlib.sha256(b"jugger").hexdigest()
MODELS = [SimModel(JUGGER, sha256=JUGGER_SHA), SimModel(PONY, sha256=PONY_SHA)]
LORAS = [
    SimLora(
        "add_detail.safetensors",
        sha256=hashlib.sha256(b"lora-file").hexdigest(),
        addnet_hash=hashlib.sha256(b"lora-tensors").hexdigest(),
        base_model_version="sd_v1",
        tag_frequency={"10_detail": {"detailed": 40}},
    ),
    SimLora("Pony/Smooth Pony Booster.safetensors", output_name="Smooth Pony Booster"),
]
TIMEOUT = 10


def _config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "flavour": "forge-2",
        "models": MODELS,
        "loras": LORAS,
        "seconds_per_step": 0.01,
    }
    values.update(overrides)
    return SimulatorConfig(**values)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., ForgeSimulator]]:
    started: list[ForgeSimulator] = []

    def factory(**overrides: Any) -> ForgeSimulator:
        sim = ForgeSimulator(_config(**overrides)).start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.faults.clear()
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., ForgeSimulator]) -> ForgeSimulator:
    return make_sim()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def txt2img(sim: ForgeSimulator, **payload: Any) -> requests.Response:
    return requests.post(f"{sim.url}/sdapi/v1/txt2img", json=payload, timeout=TIMEOUT)


def submit(pool: ThreadPoolExecutor, sim: ForgeSimulator, **payload: Any) -> Future:
    return pool.submit(txt2img, sim, **payload)


def internal_progress(sim: ForgeSimulator, task_id: str) -> dict[str, Any]:
    response = requests.post(f"{sim.url}/internal/progress", json={"id_task": task_id}, timeout=5)
    assert response.status_code == 200
    return response.json()


def poll(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


def info_of(response: requests.Response) -> dict[str, Any]:
    return json.loads(response.json()["info"])


def decode_png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def models_by_name(sim: ForgeSimulator) -> dict[str, dict[str, Any]]:
    listing = requests.get(f"{sim.url}/sdapi/v1/sd-models", timeout=5).json()
    return {item["model_name"]: item for item in listing}


def start_long_job(
    pool: ThreadPoolExecutor, sim: ForgeSimulator, task_id: str, **payload: Any
) -> Future:
    """Submit a job of ~10 s and return once it is sampling (sampling_step > 0)."""
    future = submit(pool, sim, force_task_id=task_id, steps=1000, **payload)
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == task_id)
    poll(lambda: (internal_progress(sim, task_id).get("progress") or 0) > 0)
    return future


# -- generation ------------------------------------------------------------------------------


def test_txt2img_returns_real_pngs_with_the_infotext_of_each_image(sim):
    response = txt2img(
        sim, prompt="a red fox", negative_prompt="blurry", seed=1234, batch_size=2, steps=3,
        cfg_scale=7, width=640, height=512,
    )  # fmt: skip

    assert response.status_code == 200
    body = response.json()
    info = json.loads(body["info"])
    assert info["all_seeds"] == [1234, 1235]
    assert info["sampler_name"] == "Euler"  # the API default when sampler_name is absent
    assert len(body["images"]) == 2 == len(info["infotexts"])
    for index, b64 in enumerate(body["images"]):
        image = decode_png(b64)
        assert image.format == "PNG"
        assert image.size == (640, 512)
        assert image.info["parameters"] == info["infotexts"][index]
    text = info["infotexts"][1]
    lines = text.split("\n")
    assert lines[0] == "a red fox"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0")
    parsed = parse_infotext(text)
    assert parsed["Seed"] == "1235"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("640", "512")
    assert parsed["Model"] == "juggernautXL_v9"
    assert parsed["Model hash"] == JUGGER_SHA[:10]
    assert parsed["Version"] == info["version"] == "f2.0.1v1.10.1-previous-669-gdfdcbab6"


def test_info_has_the_processed_js_keys_and_parameters_echo_the_request(sim):
    response = txt2img(sim, prompt="p", steps=2, n_iter=2, batch_size=2)

    body = response.json()
    info = json.loads(body["info"])
    expected = {
        "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds",
        "subseed", "all_subseeds", "subseed_strength", "width", "height", "sampler_name",
        "cfg_scale", "steps", "batch_size", "restore_faces", "face_restoration_model",
        "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash", "seed_resize_from_w",
        "seed_resize_from_h", "denoising_strength", "extra_generation_params",
        "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
        "is_using_inpainting_conditioning", "version",
    }  # fmt: skip
    assert set(info) == expected
    assert re.fullmatch(r"\d{14}", info["job_timestamp"])
    seeds = info["all_seeds"]
    assert seeds == [seeds[0] + i for i in range(4)]  # seed -1 became a random one
    assert body["parameters"]["seed"] == -1  # the echo keeps the request value
    assert body["parameters"]["steps"] == 2
    assert body["parameters"]["sampler_index"] == "Euler"
    assert body["parameters"]["denoising_strength"] is None  # Forge default
    assert len(body["images"]) == 4


def test_a_batch_of_eight_1024px_images_is_fast(make_sim):
    sim = make_sim(seconds_per_step=0.0)
    started = time.monotonic()

    response = txt2img(sim, steps=1, batch_size=8, width=1024, height=1024)

    assert response.status_code == 200
    assert len(response.json()["images"]) == 8
    assert decode_png(response.json()["images"][7]).size == (1024, 1024)
    assert time.monotonic() - started < 5


def test_default_task_id_has_the_web_ui_format(sim):
    txt2img(sim, steps=1)

    event = sim.wait_for_event("txt2img_received")
    assert re.fullmatch(r"task\(txt2img-[A-Z0-9]{7}\)", event["task_id"])


def test_lora_hashes_are_written_for_known_loras_only(make_sim):
    forge = make_sim()
    a1111 = make_sim(flavour="a1111-1.10")
    prompt = "portrait <lora:add_detail:0.6> <lora:missing_lora:1> <lora:Smooth Pony Booster:1>"

    forge_text = info_of(txt2img(forge, prompt=prompt, steps=1))["infotexts"][0]
    a1111_text = info_of(txt2img(a1111, prompt=prompt, steps=1))["infotexts"][0]

    smooth_sha = str(LORAS[1].sha256)
    assert (
        f'Lora hashes: "add_detail: {str(LORAS[0].sha256)[:12]}, '
        f'Smooth Pony Booster: {smooth_sha[:12]}"'
    ) in forge_text
    assert f"add_detail: {str(LORAS[0].addnet_hash)[:12]}" in a1111_text
    assert "missing_lora" not in parse_infotext(forge_text)["Lora hashes"]
    assert parse_infotext(a1111_text)["Version"] == "v1.10.1"


@pytest.mark.parametrize(
    ("sampler_name", "scheduler", "expected_sampler", "expected_schedule"),
    [
        (None, None, "Euler", "Automatic"),
        ("DPM++ 2M Karras", None, "DPM++ 2M", "Karras"),
        ("DPM++ 2M", None, "DPM++ 2M", "Karras"),  # Automatic shows the sampler default
        ("Euler a", "karras", "Euler a", "Karras"),
        ("No Such Sampler", None, "DPM++ 2M", "Karras"),
        ("k_euler", "Simple", "Euler", "Simple"),
    ],
)
def test_sampler_and_scheduler_are_normalised(
    sim, sampler_name, scheduler, expected_sampler, expected_schedule
):
    payload: dict[str, Any] = {"steps": 1}
    if sampler_name is not None:
        payload["sampler_name"] = sampler_name
    if scheduler is not None:
        payload["scheduler"] = scheduler

    info = info_of(txt2img(sim, **payload))

    assert info["sampler_name"] == expected_sampler
    assert info["extra_generation_params"].get("Schedule type", "Automatic") == expected_schedule
    assert f"Schedule type: {expected_schedule}" in info["infotexts"][0]


def test_scheduler_equal_to_sampler_default_normalises_to_automatic():
    assert normalise_sampler("DPM++ 2M", "karras", is_forge=True) == ("DPM++ 2M", "Automatic")
    assert normalise_sampler("Euler", "Karras", is_forge=False) == ("Euler", "Karras")


def test_img2img_uses_the_init_image_and_writes_denoising_strength(sim):
    init = txt2img(sim, steps=1, width=64, height=64).json()["images"][0]

    response = requests.post(
        f"{sim.url}/sdapi/v1/img2img",
        json={"init_images": [f"data:image/png;base64,{init}"], "steps": 10, "width": 96},
        timeout=TIMEOUT,
    )

    assert response.status_code == 200
    body = response.json()
    assert body["parameters"]["init_images"] is None  # include_init_images is false
    assert decode_png(body["images"][0]).size == (96, 512)
    assert "Denoising strength: 0.75" in info_of(response)["infotexts"][0]


def test_img2img_without_init_images_is_404_and_garbage_is_500(sim):
    missing = requests.post(f"{sim.url}/sdapi/v1/img2img", json={"steps": 1}, timeout=5)
    garbage = requests.post(
        f"{sim.url}/sdapi/v1/img2img", json={"init_images": ["not an image"]}, timeout=5
    )

    assert (missing.status_code, missing.json()) == (404, {"detail": "Init image not found"})
    assert (garbage.status_code, garbage.json()) == (500, {"detail": "Invalid encoded image"})


def test_png_info_returns_the_parameters_of_a_generated_image(sim):
    image = txt2img(sim, prompt="a boat", seed=77, steps=1).json()["images"][0]

    response = requests.post(f"{sim.url}/sdapi/v1/png-info", json={"image": image}, timeout=5)

    assert response.status_code == 200
    assert response.json()["info"].startswith("a boat\nSteps: 1")
    assert response.json()["parameters"]["Seed"] == "77"


# -- queue, task ids, progress --------------------------------------------------------------


def test_concurrent_txt2img_requests_run_one_at_a_time_in_arrival_order(sim, pool):
    ids = [f"job-{i}" for i in range(4)]
    futures = []
    for task_id in ids:
        futures.append(submit(pool, sim, force_task_id=task_id, steps=3))
        sim.wait_for_event("txt2img_received", lambda e, t=task_id: e["task_id"] == t)

    assert [f.result(timeout=TIMEOUT).status_code for f in futures] == [200] * 4
    started = [e["task_id"] for e in sim.events.of_type("txt2img_started")]
    assert started == ids
    finished = {e["task_id"]: e["t"] for e in sim.events.of_type("txt2img_finished")}
    starts = {e["task_id"]: e["t"] for e in sim.events.of_type("txt2img_started")}
    for previous, following in itertools.pairwise(ids):
        assert finished[previous] <= starts[following]


def test_internal_progress_reports_queued_active_and_completed(sim, pool):
    first = start_long_job(pool, sim, "A")
    others = []
    for task_id in ("B", "C"):
        others.append(submit(pool, sim, force_task_id=task_id, steps=2))
        sim.wait_for_event("txt2img_received", lambda e, t=task_id: e["task_id"] == t)

    active = internal_progress(sim, "A")
    queued_b = internal_progress(sim, "B")
    queued_c = internal_progress(sim, "C")
    unknown = internal_progress(sim, "never-sent")
    pending = requests.get(f"{sim.url}/internal/pending-tasks", timeout=5).json()

    assert active["active"] is True
    assert active["queued"] is False
    assert 0 < active["progress"] < 1
    assert active["eta"] is not None
    assert (queued_b["active"], queued_b["queued"], queued_b["completed"]) == (False, True, False)
    assert queued_b["textinfo"] == "In queue: 1/2"
    assert queued_c["textinfo"] == "In queue: 2/2"
    assert queued_b["id_live_preview"] == -1
    assert queued_b["progress"] is None
    assert unknown == {
        "active": False, "queued": False, "completed": False, "progress": None, "eta": None,
        "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting...",
    }  # fmt: skip
    assert pending == {"size": 2, "tasks": ["B", "C"]}
    assert sim.current_task_id == "A"

    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    assert [f.result(timeout=TIMEOUT).status_code for f in (first, *others)] == [200] * 3
    for task_id in ("A", "B", "C"):
        done = internal_progress(sim, task_id)
        assert (done["active"], done["queued"], done["completed"]) == (False, False, True)
    assert sim.current_task_id is None


def test_sdapi_progress_reports_the_shared_state(sim, pool):
    idle = requests.get(f"{sim.url}/sdapi/v1/progress", timeout=5).json()
    job = start_long_job(pool, sim, "P", n_iter=2)

    busy = requests.get(f"{sim.url}/sdapi/v1/progress?skip_current_image=true", timeout=5).json()

    assert (idle["progress"], idle["eta_relative"], idle["state"]["job_count"]) == (0, 0, 0)
    assert busy["state"]["job"] == "scripts_txt2img"
    assert busy["state"]["job_count"] == 2
    assert busy["state"]["sampling_steps"] == 1000
    assert 0.01 < busy["progress"] < 1
    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    assert job.result(timeout=TIMEOUT).status_code == 200


def test_only_the_last_16_finished_tasks_are_completed(make_sim):
    sim = make_sim(seconds_per_step=0.0)
    for index in range(17):
        txt2img(sim, force_task_id=f"t{index}", steps=1, width=64, height=64)

    assert internal_progress(sim, "t0")["completed"] is False
    assert internal_progress(sim, "t1")["completed"] is True
    assert sim.completed_task_ids == [f"t{i}" for i in range(1, 17)]


def test_interrupt_returns_200_with_the_images_produced_so_far(sim, pool):
    job = start_long_job(pool, sim, "I", n_iter=3, batch_size=1)
    started = time.monotonic()

    response = requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)

    assert (response.status_code, response.json()) == (200, {})
    result = job.result(timeout=TIMEOUT)
    assert result.status_code == 200
    assert time.monotonic() - started < 5  # far less than the 30 s the job would take
    info = info_of(result)
    assert len(result.json()["images"]) == 1 == len(info["infotexts"])  # first batch only
    assert len(info["all_seeds"]) == 3
    assert sim.wait_for_event("interrupt")["task_id"] == "I"
    assert sim.wait_for_event("txt2img_finished")["interrupted"] is True


def test_interrupt_while_idle_does_not_affect_the_next_job(sim):
    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)

    response = txt2img(sim, steps=2, n_iter=2)

    assert len(response.json()["images"]) == 2
    assert sim.wait_for_event("interrupt")["task_id"] is None


def test_skip_ends_only_the_current_batch(sim, pool):
    job = submit(pool, sim, force_task_id="S", steps=60, n_iter=2)
    sim.wait_for_event("txt2img_started")
    poll(lambda: (internal_progress(sim, "S").get("progress") or 0) > 0)

    response = requests.post(f"{sim.url}/sdapi/v1/skip", timeout=5)

    assert (response.status_code, response.json()) == (200, None)
    result = job.result(timeout=TIMEOUT)
    assert len(result.json()["images"]) == 2
    assert sim.wait_for_event("txt2img_finished")["interrupted"] is False


# -- checkpoints ----------------------------------------------------------------------------


def test_hash_and_bracketed_title_appear_only_after_the_first_load(sim):
    before = models_by_name(sim)

    txt2img(sim, steps=1, override_settings={"sd_model_checkpoint": PONY})

    after = models_by_name(sim)
    for item in before.values():
        assert (item["hash"], item["sha256"]) == (None, None)
        assert "[" not in item["title"]
    pony = after["Pony_cyberrealisticPony_v8"]
    assert pony["hash"] == PONY_SHA[:10]
    assert pony["sha256"] == PONY_SHA
    assert pony["title"] == f"{PONY} [{PONY_SHA[:10]}]"
    assert after["sdxl_juggernautXL_v9"]["hash"] is None
    assert sim.loaded_checkpoint_title == pony["title"]


def test_a1111_loads_the_configured_checkpoint_at_startup(make_sim):
    sim = make_sim(flavour="a1111-1.10")

    listing = models_by_name(sim)
    options = requests.get(f"{sim.url}/sdapi/v1/options", timeout=5).json()

    title = f"{JUGGER} [{JUGGER_SHA[:10]}]"
    assert listing["sdxl_juggernautXL_v9"]["title"] == title
    assert options["sd_model_checkpoint"] == title
    assert sim.loaded_checkpoint_title == title


@pytest.mark.parametrize(
    ("separator", "title", "filename", "lora_path"),
    [
        (
            "\\",
            "Pony\\cyberrealisticPony_v8.safetensors",
            "C:\\sd\\models\\Stable-diffusion\\Pony\\cyberrealisticPony_v8.safetensors",
            "C:\\sd\\models\\Lora\\Pony\\Smooth Pony Booster.safetensors",
        ),
        (
            "/",
            "Pony/cyberrealisticPony_v8.safetensors",
            "/opt/sd/models/Stable-diffusion/Pony/cyberrealisticPony_v8.safetensors",
            "/opt/sd/models/Lora/Pony/Smooth Pony Booster.safetensors",
        ),
    ],
)
def test_names_and_paths_use_the_server_os_separator(
    make_sim, separator, title, filename, lora_path
):
    sim = make_sim(path_separator=separator)

    pony = models_by_name(sim)["Pony_cyberrealisticPony_v8"]
    loras = requests.get(f"{sim.url}/sdapi/v1/loras", timeout=5).json()

    assert (pony["title"], pony["filename"]) == (title, filename)
    assert lora_path in [lora["path"] for lora in loras]


def test_a_forward_slash_name_does_not_match_on_a_windows_server(make_sim):
    sim = make_sim(path_separator="\\")

    slash = info_of(txt2img(sim, steps=1, override_settings={"sd_model_checkpoint": PONY}))
    backslash = info_of(
        txt2img(sim, steps=1, override_settings={"sd_model_checkpoint": PONY.replace("/", "\\")})
    )

    assert slash["sd_model_name"] == "juggernautXL_v9"  # silently fell back
    assert backslash["sd_model_name"] == "cyberrealisticPony_v8"


def test_unknown_checkpoint_override_is_silently_dropped(sim):
    response = txt2img(sim, steps=1, override_settings={"sd_model_checkpoint": "nope.safetensors"})

    assert response.status_code == 200
    assert info_of(response)["sd_model_name"] == "juggernautXL_v9"
    assert sim.wait_for_event("checkpoint_override_ignored")["requested"] == "nope.safetensors"


def test_every_checkpoint_alias_selects_the_checkpoint(sim):
    txt2img(sim, steps=1, override_settings={"sd_model_checkpoint": PONY})  # hashes it
    short = PONY_SHA[:10]
    aliases = [
        f"{PONY} [{short}]",  # title
        PONY,  # name
        "Pony_cyberrealisticPony_v8",  # model_name
        "cyberrealisticPony_v8",  # name_for_extra
        short,
        PONY_SHA,
        f"cyberrealisticPony_v8 [{short}]",
        str(MODELS[1].autov1),  # legacy 8-hex hash
    ]

    for alias in aliases:
        txt2img(sim, steps=1, override_settings={"sd_model_checkpoint": JUGGER})
        info = info_of(txt2img(sim, steps=1, override_settings={"sd_model_checkpoint": alias}))
        assert info["sd_model_name"] == "cyberrealisticPony_v8", alias


def test_checkpoint_switch_happens_only_when_the_checkpoint_changes(make_sim):
    sim = make_sim(checkpoint_switch_seconds=0.05)
    pony = {"sd_model_checkpoint": PONY}

    txt2img(sim, steps=1, override_settings=pony)
    txt2img(sim, steps=1, override_settings=pony)
    loads_after_same = len(sim.events.of_type("model_loaded"))
    txt2img(sim, steps=1)  # restore_afterwards=True: the configured model is loaded back
    txt2img(sim, steps=1, override_settings=pony, override_settings_restore_afterwards=False)
    txt2img(sim, steps=1)  # the override stuck: no switch

    loaded = [e["name"] for e in sim.events.of_type("model_loaded")]
    assert loads_after_same == 1
    assert loaded == [PONY, JUGGER, PONY]
    assert sim.options["sd_model_checkpoint"] == PONY


def test_a1111_post_options_loads_the_checkpoint_behind_running_jobs(make_sim, pool):
    sim = make_sim(flavour="a1111-1.10")
    job = start_long_job(pool, sim, "R")
    change = pool.submit(
        requests.post,
        f"{sim.url}/sdapi/v1/options",
        json={"sd_model_checkpoint": PONY},
        timeout=TIMEOUT,
    )
    sim.wait_for_event("options_set")

    assert not change.done()
    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    assert change.result(timeout=TIMEOUT).json() is None
    assert job.result(timeout=TIMEOUT).status_code == 200
    loaded = sim.wait_for_event("model_loaded", lambda e: e.get("name") == PONY)
    assert loaded["t"] > sim.wait_for_event("txt2img_finished")["t"]
    assert sim.loaded_checkpoint_title == f"{PONY} [{PONY_SHA[:10]}]"


def test_new_models_and_loras_are_listed_after_a_refresh(sim):
    sim.set_models([*MODELS, SimModel("new/fresh.safetensors")])
    sim.set_loras([SimLora("fresh_lora.safetensors")])

    before = models_by_name(sim)
    refresh = requests.post(f"{sim.url}/sdapi/v1/refresh-checkpoints", timeout=5)
    lora_refresh = requests.post(f"{sim.url}/sdapi/v1/refresh-loras", timeout=5)
    after = models_by_name(sim)
    loras = requests.get(f"{sim.url}/sdapi/v1/loras", timeout=5).json()

    assert "new_fresh" not in before
    assert (refresh.status_code, refresh.json()) == (200, None)
    assert (lora_refresh.status_code, lora_refresh.json()) == (200, None)
    assert "new_fresh" in after
    assert [lora["name"] for lora in loras] == ["fresh_lora"]


def test_refresh_checkpoints_waits_for_the_running_job(sim, pool):
    job = start_long_job(pool, sim, "L")
    refresh = pool.submit(requests.post, f"{sim.url}/sdapi/v1/refresh-checkpoints", timeout=10)

    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)

    assert refresh.result(timeout=TIMEOUT).status_code == 200
    assert job.result(timeout=TIMEOUT).status_code == 200
    finished = sim.wait_for_event("txt2img_finished")
    assert sim.wait_for_event("checkpoints_refreshed")["t"] >= finished["t"]


def test_loras_list_name_alias_path_and_kohya_metadata(sim):
    loras = {lora["name"]: lora for lora in requests.get(f"{sim.url}/sdapi/v1/loras").json()}

    detail = loras["add_detail"]
    smooth = loras["Smooth Pony Booster"]
    assert detail["alias"] == "add_detail"
    assert detail["metadata"]["ss_base_model_version"] == "sd_v1"
    assert detail["metadata"]["ss_tag_frequency"] == {"10_detail": {"detailed": 40}}
    assert smooth["alias"] == "Smooth Pony Booster"
    assert smooth["path"] == "/opt/sd/models/Lora/Pony/Smooth Pony Booster.safetensors"
    assert next(iter(detail["metadata"])).startswith("ss_")


# -- options --------------------------------------------------------------------------------


def test_options_are_read_and_written(sim):
    options = requests.get(f"{sim.url}/sdapi/v1/options", timeout=5).json()

    response = requests.post(
        f"{sim.url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=5
    )
    updated = requests.get(f"{sim.url}/sdapi/v1/options", timeout=5).json()
    text = info_of(txt2img(sim, steps=1))["infotexts"][0]

    assert options["sd_model_checkpoint"] == JUGGER
    assert options["CLIP_stop_at_last_layers"] == 1.0  # ints are rendered as floats
    assert "forge_additional_modules" in options
    assert (response.status_code, response.json()) == (200, None)
    assert updated["CLIP_stop_at_last_layers"] == 2.0
    assert "Clip skip: 2" in text
    assert sim.wait_for_event("options_set")["options"] == {"CLIP_stop_at_last_layers": 2}


def test_forge_post_options_records_the_checkpoint_without_loading_it(sim):
    requests.post(f"{sim.url}/sdapi/v1/options", json={"sd_model_checkpoint": PONY}, timeout=5)

    assert sim.loaded_checkpoint_title is None
    assert info_of(txt2img(sim, steps=1))["sd_model_name"] == "cyberrealisticPony_v8"


@pytest.mark.parametrize(
    ("flavour", "payload", "expected"),
    [
        (
            "forge-2",
            {"sd_model_checkpoint": "nope"},
            {
                "error": "RuntimeError",
                "detail": "",
                "body": "",
                "message": "model 'nope' not found",
            },
        ),
        (
            "forge-2",
            {"no_such_option": 1},
            {"error": "KeyError", "detail": "", "body": "", "message": "'no_such_option'"},
        ),
        (
            "a1111-1.10",
            {"sd_model_checkpoint": "nope"},
            {"error": "RuntimeError", "detail": "", "body": "", "errors": "model 'nope' not found"},
        ),
        (
            "a1111-1.10",
            {"no_such_option": 1},
            {"error": "KeyError", "detail": "", "body": "", "errors": "'no_such_option'"},
        ),
    ],
)
def test_bad_options_are_500_in_the_flavour_shape(make_sim, flavour, payload, expected):
    sim = make_sim(flavour=flavour)

    response = requests.post(f"{sim.url}/sdapi/v1/options", json=payload, timeout=5)

    assert (response.status_code, response.json()) == (500, expected)


def test_unknown_option_with_null_value_is_ignored(sim):
    response = requests.post(f"{sim.url}/sdapi/v1/options", json={"no_such_option": None})

    assert (response.status_code, response.json()) == (200, None)


def test_failing_override_leaves_the_task_active_until_the_next_starts(sim):
    failed = txt2img(sim, force_task_id="F", steps=1, override_settings={"no_such_option": 1})

    assert failed.status_code == 500
    assert failed.json()["error"] == "KeyError"
    progress = internal_progress(sim, "F")
    assert (progress["active"], progress["completed"]) == (True, False)
    assert sim.current_task_id == "F"
    txt2img(sim, force_task_id="G", steps=1)
    assert internal_progress(sim, "F")["active"] is False


# -- errors, auth, modes --------------------------------------------------------------------


def test_validation_errors_follow_pydantic_2_on_forge(sim):
    response = txt2img(sim, steps="abc", width=1.5, send_images=None)

    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "int_parsing",
                "loc": ["body", "steps"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": "abc",
            },
            {
                "type": "int_from_float",
                "loc": ["body", "width"],
                "msg": "Input should be a valid integer, got a number with a fractional part",
                "input": 1.5,
            },
            {
                "type": "bool_type",
                "loc": ["body", "send_images"],
                "msg": "Input should be a valid boolean",
                "input": None,
            },
        ]
    }


def test_validation_errors_follow_pydantic_1_on_a1111(make_sim):
    sim = make_sim(flavour="a1111-1.10")

    response = txt2img(sim, steps="abc")

    assert response.status_code == 422
    item = {"loc": ["body", "steps"], "msg": "value is not a valid integer"}
    assert response.json() == {"detail": [{**item, "type": "type_error.integer"}]}


def test_numeric_strings_are_coerced_and_unknown_keys_ignored(sim):
    response = txt2img(sim, steps="2", cfg_scale="5", distilled_cfg_scale=3.5, not_a_field=1)

    assert response.status_code == 200
    assert response.json()["parameters"]["steps"] == 2
    assert "not_a_field" not in response.json()["parameters"]
    assert "CFG scale: 5.0" in info_of(response)["infotexts"][0]


def test_broken_json_is_a_422(sim):
    response = requests.post(
        f"{sim.url}/sdapi/v1/txt2img",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_unknown_script_is_a_422_http_exception(make_sim):
    # A1111/Forge `script_name_to_index`: an unknown title, selectable or always-on, is
    # "Script '<name>' not found" (the "always on script ... not found" branch after it is
    # unreachable in the real code).
    forge = make_sim()
    a1111 = make_sim(flavour="a1111-1.10")

    forge_response = txt2img(forge, script_name="No Such Plot")
    a1111_response = txt2img(a1111, alwayson_scripts={"NoSuchScript": {"args": []}})

    assert forge_response.status_code == 422
    assert forge_response.json() == {"detail": "Script 'No Such Plot' not found"}
    assert a1111_response.status_code == 422
    assert a1111_response.json() == {
        "error": "HTTPException",
        "detail": "Script 'NoSuchScript' not found",
        "body": "",
        "errors": "422: Script 'NoSuchScript' not found",
    }


@pytest.mark.parametrize(
    ("flavour", "auth", "expected", "challenge"),
    [
        ("forge-2", None, {"detail": "Not authenticated"}, "Basic"),
        ("forge-2", ("user", "wrong"), {"detail": "Incorrect username or password"}, "Basic"),
        (
            "a1111-1.10",
            None,
            {
                "error": "HTTPException",
                "detail": "Not authenticated",
                "body": "",
                "errors": "401: Not authenticated",
            },
            None,
        ),
        (
            "a1111-1.10",
            ("user", "wrong"),
            {
                "error": "HTTPException",
                "detail": "Incorrect username or password",
                "body": "",
                "errors": "401: Incorrect username or password",
            },
            None,
        ),
    ],
)
def test_api_auth_rejections_use_the_flavour_shape(make_sim, flavour, auth, expected, challenge):
    sim = make_sim(flavour=flavour, auth_users={"user": "pass"})

    response = requests.get(f"{sim.url}/sdapi/v1/sd-models", auth=auth, timeout=5)

    assert (response.status_code, response.json()) == (401, expected)
    assert response.headers.get("WWW-Authenticate") == challenge


def test_api_auth_spares_loras_and_internal_routes(make_sim):
    sim = make_sim(auth_users={"user": "pass"})

    assert requests.get(f"{sim.url}/sdapi/v1/sd-models", auth=("user", "pass")).status_code == 200
    assert requests.get(f"{sim.url}/sdapi/v1/loras").status_code == 200
    assert requests.post(f"{sim.url}/sdapi/v1/refresh-loras").status_code == 200
    assert requests.post(f"{sim.url}/internal/progress", json={"id_task": "x"}).status_code == 200
    assert requests.post(f"{sim.url}/sdapi/v1/txt2img", json={"steps": 1}).status_code == 401


def test_nowebui_mode_has_no_internal_routes(make_sim):
    api_only = make_sim(webui=False)
    webui = make_sim()

    assert requests.post(f"{api_only.url}/internal/progress", json={}).status_code == 404
    assert requests.get(f"{api_only.url}/internal/pending-tasks").json() == {"detail": "Not Found"}
    assert requests.get(f"{api_only.url}/app_id").status_code == 404
    assert requests.get(f"{api_only.url}/sdapi/v1/progress").status_code == 200
    assert requests.get(f"{webui.url}/internal/ping").json() == {}
    assert isinstance(requests.get(f"{webui.url}/app_id").json()["app_id"], int)


def test_each_flavour_lists_its_own_module_route(make_sim):
    forge = make_sim()
    a1111 = make_sim(flavour="a1111-1.10")

    assert requests.get(f"{forge.url}/sdapi/v1/sd-modules").status_code == 200
    assert requests.get(f"{forge.url}/sdapi/v1/sd-vae").status_code == 404
    assert (
        requests.get(f"{a1111.url}/sdapi/v1/sd-vae")
        .json()[0]["model_name"]
        .endswith(".safetensors")
    )
    assert requests.get(f"{a1111.url}/sdapi/v1/sd-modules").status_code == 404
    assert requests.get(f"{a1111.url}/sdapi/v1/schedulers").status_code == 200


def test_wrong_method_is_405(sim):
    response = requests.get(f"{sim.url}/sdapi/v1/txt2img", timeout=5)

    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})


# -- faults and restarts --------------------------------------------------------------------


def test_refuse_connections_really_refuses_tcp_connects_until_cleared(sim):
    port = sim.port

    sim.faults.refuse_connections = True
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sim.url}/internal/ping", timeout=5)
    sim.faults.refuse_connections = False

    assert sim.port == port
    assert requests.get(f"{sim.url}/internal/ping", timeout=5).status_code == 200


def test_drop_mid_job_closes_the_connection_but_the_job_completes(sim):
    sim.faults.drop_mid_job = 1

    with pytest.raises(requests.ConnectionError):
        txt2img(sim, force_task_id="D", steps=10)

    finished = sim.wait_for_event("txt2img_finished", lambda e: e["task_id"] == "D")
    assert finished["dropped"] is True
    assert sim.wait_for_event("connection_dropped")["task_id"] == "D"
    assert internal_progress(sim, "D")["completed"] is True
    assert sim.faults.drop_mid_job == 0
    assert txt2img(sim, steps=1).status_code == 200


@pytest.mark.parametrize(
    ("flavour", "message_key"), [("forge-2", "message"), ("a1111-1.10", "errors")]
)
def test_error_500_next_fails_the_next_job_in_the_flavour_shape(make_sim, flavour, message_key):
    sim = make_sim(flavour=flavour)
    sim.faults.error_500_next = 1

    failed = txt2img(sim, force_task_id="E", steps=1)
    following = txt2img(sim, steps=1)

    assert failed.status_code == 500
    body = failed.json()
    assert set(body) == {"error", "detail", "body", message_key}
    assert body["error"] == "OutOfMemoryError"
    assert "CUDA out of memory" in body[message_key]
    assert following.status_code == 200
    assert sim.wait_for_event("txt2img_failed")["task_id"] == "E"


def test_stall_holds_the_lock_before_the_task_starts(sim, pool):
    sim.faults.stall_seconds = 0.3
    job = submit(pool, sim, force_task_id="H", steps=1)
    sim.wait_for_event("txt2img_stalled")
    follower = submit(pool, sim, force_task_id="K", steps=1)
    sim.wait_for_event("txt2img_received", lambda e: e["task_id"] == "K")

    during = internal_progress(sim, "H")
    current = sim.current_task_id
    sim.faults.stall_seconds = 0

    assert (during["active"], during["queued"], during["textinfo"]) == (
        False,
        True,
        "In queue: 1/2",
    )
    assert current is None
    assert job.result(timeout=TIMEOUT).status_code == 200
    assert follower.result(timeout=TIMEOUT).status_code == 200
    stalled = sim.wait_for_event("txt2img_stalled")
    started = sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == "H")
    assert started["t"] - stalled["t"] >= 0.3
    assert [e["task_id"] for e in sim.events.of_type("txt2img_started")] == ["H", "K"]


def test_restart_drops_in_flight_requests_queue_task_ids_and_loaded_model(sim, pool):
    requests.post(f"{sim.url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2})
    running = start_long_job(pool, sim, "A", override_settings={"sd_model_checkpoint": PONY})
    queued = submit(pool, sim, force_task_id="B", steps=1)
    sim.wait_for_event("txt2img_received", lambda e: e["task_id"] == "B")
    app_id = requests.get(f"{sim.url}/app_id").json()["app_id"]

    sim.restart()

    for future in (running, queued):
        with pytest.raises(requests.ConnectionError):
            future.result(timeout=TIMEOUT)
    for task_id in ("A", "B"):
        assert internal_progress(sim, task_id)["textinfo"] == "Waiting..."
        assert not any(internal_progress(sim, task_id)[k] for k in ("active", "queued"))
    assert requests.get(f"{sim.url}/internal/pending-tasks").json() == {"size": 0, "tasks": []}
    assert requests.get(f"{sim.url}/app_id").json()["app_id"] != app_id
    assert sim.loaded_checkpoint_title is None
    assert sim.current_task_id is None
    # config.json and the hash cache survive a restart
    assert sim.options["CLIP_stop_at_last_layers"] == 2
    assert models_by_name(sim)["Pony_cyberrealisticPony_v8"]["hash"] == PONY_SHA[:10]
    assert txt2img(sim, steps=1).status_code == 200
    assert [e["task_id"] for e in sim.events.of_type("txt2img_aborted")] == ["A"]


def test_stop_and_start_serve_again_on_the_same_port(sim):
    port = sim.port
    sim.stop()

    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sim.url}/internal/ping", timeout=5)
    sim.start()

    assert sim.port == port
    assert requests.get(f"{sim.url}/internal/ping", timeout=5).status_code == 200


# -- keep-alive connections -----------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    peer: tuple[str, int]  # the client's address
    nodelay: bool


@pytest.fixture
def accepted(sim: ForgeSimulator, monkeypatch: pytest.MonkeyPatch) -> list[Accepted]:
    """Every connection `sim` accepts from now on, recorded when its handler starts (before
    the first request on it is read, so before any answer reaches the client)."""
    connections: list[Accepted] = []
    track = sim._track

    def recording(conn: socket.socket) -> None:
        nodelay = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        connections.append(Accepted(conn.getpeername(), bool(nodelay)))
        track(conn)

    monkeypatch.setattr(sim, "_track", recording)
    return connections


def interrupt_in_process(sim: ForgeSimulator) -> None:
    """What POST /sdapi/v1/interrupt does, without a connection (the listener may be closed)."""
    sim.api.handle(
        Request(method="POST", path="/sdapi/v1/interrupt", query={}, body=b"", headers={})
    )


def test_a_session_reuses_one_connection_from_request_to_request(sim, accepted):
    with requests.Session() as session:
        options = session.get(f"{sim.url}/sdapi/v1/options", timeout=TIMEOUT)
        job = session.post(f"{sim.url}/sdapi/v1/txt2img", json={"steps": 1}, timeout=TIMEOUT)
        progress = session.get(f"{sim.url}/sdapi/v1/progress", timeout=TIMEOUT)

    assert [r.status_code for r in (options, job, progress)] == [200, 200, 200]
    assert "close" not in {r.headers.get("Connection", "").lower() for r in (options, job)}
    assert len(accepted) == 1


def test_connections_are_served_without_nagle_delay(sim, accepted):
    assert requests.get(f"{sim.url}/internal/ping", timeout=TIMEOUT).status_code == 200

    assert [c.nodelay for c in accepted] == [True]


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(sim, accepted, monkeypatch):
    monkeypatch.setattr(simulator_server, "KEEP_ALIVE_SECONDS", 0.2)

    with requests.Session() as session:
        first = session.get(f"{sim.url}/internal/ping", timeout=TIMEOUT)
        poll(lambda: not sim._connections)  # the server hung up on the idle connection
        second = session.get(f"{sim.url}/internal/ping", timeout=TIMEOUT)

    assert (first.status_code, second.status_code) == (200, 200)
    assert len(accepted) == 2  # the client noticed and connected again


def test_refusing_connections_cuts_off_a_kept_alive_client(sim, accepted):
    with ForgeClient(ServerEndpoint(sim.url)) as forge:
        forge.options()  # leaves a kept-alive connection in the client's pool
        sim.faults.refuse_connections = True

        # The engine marks a server offline on this error: the job was never sent.
        with pytest.raises(ForgeUnreachableError):
            forge.txt2img({"prompt": "x", "steps": 1})

    assert len(accepted) == 1
    assert sim.request_count("POST", "/sdapi/v1/txt2img") == 0


def test_a_kept_alive_client_is_answered_by_the_restarted_server(sim, accepted):
    with requests.Session() as session:
        before = session.get(f"{sim.url}/app_id", timeout=TIMEOUT).json()["app_id"]
        sim.restart()
        after = session.get(f"{sim.url}/app_id", timeout=TIMEOUT)

    assert after.status_code == 200
    assert after.json()["app_id"] != before  # the fresh process answered
    assert len(accepted) == 2  # over a new connection: restarting closed the idle one


def test_a_request_in_flight_is_answered_while_connections_are_refused(sim, pool):
    job = start_long_job(pool, sim, "A")

    sim.faults.refuse_connections = True
    interrupt_in_process(sim)  # ends the job now, listener still closed
    response = job.result(timeout=TIMEOUT)

    assert response.status_code == 200
    assert sim.faults.refuse_connections is True
    assert sim.wait_for_event("txt2img_finished")["interrupted"] is True


def test_a_connection_in_flight_when_refusing_starts_is_closed_after_its_response(sim, pool):
    with ForgeClient(ServerEndpoint(sim.url)) as forge:
        job = pool.submit(forge.txt2img, {"force_task_id": "A", "steps": 1000})
        sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == "A")
        sim.faults.refuse_connections = True
        interrupt_in_process(sim)
        job.result(timeout=TIMEOUT)

        with pytest.raises(ForgeUnreachableError):
            forge.options()


# -- infotext writer and parser -------------------------------------------------------------


def test_infotext_writer_quotes_values_with_commas_colons_or_newlines():
    text = format_infotext(
        "a cat",
        "",
        {"Steps": 20, "CFG scale": 7.0, "Lora hashes": "a: 123, b: 456", "Skipped": None},
    )

    assert text == 'a cat\nSteps: 20, CFG scale: 7.0, Lora hashes: "a: 123, b: 456"'


def test_infotext_parser_reads_the_reference_samples():
    sample_2 = (
        "photo of a duck\nNegative prompt: monochrome\nSteps: 15, Sampler: UniPC, CFG scale: 5, "
        "Seed: 235284042, Size: 512x400, Model hash: c0d1994c73, "
        "Model: realistic_realisticVisionV20_v20"
    )
    sample_8 = (
        "SmoothQualityPony,\n<lora:Smooth Pony Booster:1>,\n<lora:JADE-XSTAR-XL-FINAL:1>, J4D3\n"
        "Negative prompt: SmoothNegativePony-neg,\nscore_6, score_5, score_4\n"
        "Steps: 60, Sampler: DPM++ 3M SDE, Schedule type: Karras, CFG scale: 7, Seed: 1736401068, "
        'Size: 896x1152, ADetailer prompt: "detailed face", '
        'TI: "SmoothQualityPony, SmoothQualityPony", Version: f2.0.1v1.10.1-previous-669-gdfdcbab6'
    )

    duck = parse_infotext(sample_2)
    pony = parse_infotext(sample_8)

    assert {k: duck[k] for k in ("Prompt", "Negative prompt", "Steps", "Size-1", "Size-2")} == {
        "Prompt": "photo of a duck",
        "Negative prompt": "monochrome",
        "Steps": "15",
        "Size-1": "512",
        "Size-2": "400",
    }
    assert duck["Model"] == "realistic_realisticVisionV20_v20"
    assert pony["Negative prompt"] == "SmoothNegativePony-neg,\nscore_6, score_5, score_4"
    assert pony["ADetailer prompt"] == "detailed face"
    assert pony["TI"] == "SmoothQualityPony, SmoothQualityPony"


def _python(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter in the repository's root (its output as text)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[4],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_package_imports_without_django():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys; from integrations.forge.simulator import ForgeSimulator; "
        "sys.exit(1 if any(m == 'django' or m.startswith('django.') for m in sys.modules) else 0)"
    )

    result = _python(code, env=env)

    assert result.returncode == 0, result.stderr


def test_a_simulator_warms_its_imaging_on_start_without_logging_it():
    # A fresh process: in this one, another test's simulator has warmed it already.
    code = (
        "import json\n"
        "from integrations.forge.simulator import ForgeSimulator\n"
        "from integrations.forge.simulator.imaging import warm_up\n"
        "before = warm_up.cache_info().currsize\n"
        "sim = ForgeSimulator().start()\n"
        "after = warm_up.cache_info().currsize\n"
        "types = [e['type'] for e in sim.events.snapshot()]\n"
        "sim.stop()\n"
        "print(json.dumps([before, after, types]))\n"
    )

    result = _python(code)
    assert result.returncode == 0, result.stderr

    before, after, types = json.loads(result.stdout.strip().splitlines()[-1])
    assert (before, after) == (0, 1)
    assert types == ["started"]
