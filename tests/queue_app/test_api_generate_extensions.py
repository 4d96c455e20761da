"""POST /api/v1/generate with the extras of issue 16: VAE, text encoders, styles, hires-fix
fields and scripts, typed and range-checked, and checked against the server's fresh lists."""

from typing import Any

import pytest
from django.utils import timezone
from model_bakery import baker

from queue_app.models import Job
from servers_app.extension_cache import (
    controlnet_rows,
    file_rows,
    script_rows,
    style_rows,
    upscaler_rows,
)
from servers_app.models import CachedModel, ModelKind, Server
from tests.support import assert_error, db_snapshot

URL = "/api/v1/generate"

SCRIPTS = {"txt2img": ["x/y/z plot", "controlnet", "adetailer"], "img2img": ["controlnet"]}
SCRIPT_INFO = [
    {"name": "x/y/z plot", "is_alwayson": False, "is_img2img": False, "args": []},
    {"name": "controlnet", "is_alwayson": True, "is_img2img": False, "args": []},
    {"name": "adetailer", "is_alwayson": True, "is_img2img": False, "args": []},
]
CANNY = {"enabled": True, "model": "control_v11p_sd15_canny", "module": "canny", "weight": 1.0}


def fresh_lists(server: Server, *, flavour: str = "a1111", stale: bool = False) -> None:
    """The server's extension lists as a refresh caches them (A1111 with VAEs, or Forge with
    modules), just refreshed."""
    if flavour == "forge":
        files = file_rows(
            ModelKind.MODULE,
            [
                {"model_name": "ae.safetensors", "filename": "/sd/models/VAE/ae.safetensors"},
                {
                    "model_name": "clip_l.safetensors",
                    "filename": "/sd/models/te/clip_l.safetensors",
                },
            ],
        )
    else:
        files = file_rows(
            ModelKind.VAE, [{"model_name": "sdxl_vae.safetensors", "filename": "/sd/VAE/x"}]
        )
    rows = [
        *files,
        *style_rows([{"name": "Cinematic"}]),
        *upscaler_rows([{"name": "4x-UltraSharp"}], [{"name": "Latent"}]),
        *script_rows(SCRIPTS, SCRIPT_INFO),
        *controlnet_rows({"model_list": ["control_v11p_sd15_canny [d14c016b]"]}),
    ]
    for row in rows:
        CachedModel.objects.create(server=server, **row.fields())
    server.flavour = flavour
    server.listed_kinds = sorted({row.kind for row in rows})
    server.models_refreshed_at = timezone.now()
    server.models_stale = stale
    server.save()


def submit(client, target: str = "Laptop", **params: Any):
    body = {"target_server_alias": target, "generation_params": {"positive_prompt": "x", **params}}
    return client.post(URL, body, format="json")


# --- types and ranges --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"hr_scale": 5}, "hr_scale"),
        ({"hr_scale": "2"}, "hr_scale"),
        ({"hr_second_pass_steps": 151}, "hr_second_pass_steps"),
        ({"hr_denoising_strength": 1.5}, "hr_denoising_strength"),
        ({"hr_resize_x": -1}, "hr_resize_x"),
        ({"hr_cfg": 0}, "hr_cfg"),
        ({"hires_scale": 0.5}, "hires_scale"),
        ({"vae": 12}, "vae"),
        ({"styles": "Cinematic"}, "styles"),
        ({"styles": ["ok", 3]}, "styles.1"),
        ({"text_encoders": ["a", "b", "c", "d", "e"]}, "text_encoders"),
        ({"alwayson_scripts": ["controlnet"]}, "alwayson_scripts"),
        ({"alwayson_scripts": {"ADetailer": [True]}}, "alwayson_scripts.ADetailer"),
        ({"alwayson_scripts": {"ADetailer": {"args": "x"}}}, "alwayson_scripts.ADetailer.args"),
        (
            {"alwayson_scripts": {"ControlNet": {"args": [{"weight": 3}]}}},
            "alwayson_scripts.ControlNet.args.0.weight",
        ),
        (
            {"alwayson_scripts": {"ADetailer": {"args": [True, {"ad_confidence": 2}]}}},
            "alwayson_scripts.ADetailer.args.1.ad_confidence",
        ),
        ({"script_args": [1, 2]}, "script_args"),
        ({"script_name": ["x/y/z plot"]}, "script_name"),
    ],
)
def test_a_malformed_extra_is_a_400_naming_it_and_nothing_is_queued(client, server, params, field):
    before = db_snapshot()

    body = assert_error(submit(client, **params), 400, "validation_error")

    assert f"generation_params.{field}" in body["fields"], body
    assert db_snapshot() == before


def test_well_formed_extras_are_queued_as_sent(client, server):
    params = {
        "vae": "sdxl_vae.safetensors",
        "styles": ["Cinematic"],
        "enable_hires_fix": True,
        "hr_scale": 1.5,
        "hr_upscaler": "Latent",
        "hr_second_pass_steps": 8,
        "hr_denoising_strength": 0.4,
        "alwayson_scripts": {"ControlNet": {"args": [CANNY]}, "ADetailer": {"args": [True]}},
        "script_name": "x/y/z plot",
        "script_args": [1, "10,20"],
    }

    response = submit(client, **params)

    assert response.status_code == 202, response.json()
    job = Job.objects.get()
    assert {key: job.generation_params[key] for key in params} == params
    assert job.requirement_keys == [
        "controlnet:control_v11p_sd15_canny",
        "file:sdxl_vae",
        "script:txt2img:adetailer",
        "script:txt2img:controlnet",
        "script:txt2img:x/y/z plot",
        "style:cinematic",
        "upscaler:latent",
    ]


# --- against the server's fresh lists ----------------------------------------------------


def test_a_script_the_server_lacks_is_a_400_script_not_found(client, server):
    fresh_lists(server)
    before = db_snapshot()

    body = assert_error(
        submit(client, alwayson_scripts={"Regional Prompter": {}}), 400, "script_not_found"
    )

    assert "Server 'Laptop' has no script 'Regional Prompter'." in body["message"]
    assert "generation_params.alwayson_scripts" in body["fields"]
    assert db_snapshot() == before


def test_a_selectable_script_the_server_lacks_is_a_400_script_not_found(client, server):
    fresh_lists(server)

    body = assert_error(submit(client, script_name="prompt matrix"), 400, "script_not_found")

    assert "generation_params.script_name" in body["fields"]


def test_adetailer_on_a_server_without_it_says_so(client, server):
    fresh_lists(server)
    CachedModel.objects.filter(kind=ModelKind.SCRIPT, title="adetailer").delete()

    body = assert_error(
        submit(client, alwayson_scripts={"ADetailer": {"args": [True]}}), 400, "script_not_found"
    )

    assert "Is the extension installed and enabled?" in body["message"]


def test_a_script_of_another_mode_is_not_found(client, server):
    fresh_lists(server)

    body = assert_error(
        submit(client, script_name="x/y/z plot", mode="img2img"), 400, "script_not_found"
    )

    assert "for txt2img only" in body["message"]


def test_a_selectable_script_among_the_always_on_ones_is_refused(client, server):
    fresh_lists(server)

    body = assert_error(
        submit(client, alwayson_scripts={"X/Y/Z plot": {"args": []}}), 400, "script_kind_mismatch"
    )

    assert "name it in script_name" in body["message"]


def test_scripts_the_server_has_are_accepted_in_any_case(client, server):
    fresh_lists(server)

    response = submit(
        client,
        script_name="X/Y/Z Plot",
        alwayson_scripts={"ControlNet": {"args": [CANNY]}, "ADetailer": {"args": [True]}},
    )

    assert response.status_code == 202, response.json()


def test_a_controlnet_model_not_in_the_extensions_list_is_refused(client, server):
    fresh_lists(server)
    unit = {**CANNY, "model": "control_v11p_sd15_openpose"}

    body = assert_error(
        submit(client, alwayson_scripts={"ControlNet": {"args": [unit]}}),
        400,
        "controlnet_model_not_found",
    )

    assert "control_v11p_sd15_openpose" in body["message"]


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"vae": "kl-f8-anime2.safetensors"}, "vae_not_found", "vae"),
        ({"styles": ["Cinematic", "Noir"]}, "style_not_found", "styles"),
        (
            {"enable_hires_fix": True, "hr_upscaler": "SwinIR 4x"},
            "upscaler_not_found",
            "hr_upscaler",
        ),
        (
            {"enable_hires_fix": True, "upscaler_model": "SwinIR 4x"},
            "upscaler_not_found",
            "hr_upscaler",
        ),
        ({"text_encoders": ["clip_l"]}, "module_not_found", "text_encoders"),
    ],
)
def test_a_vae_style_upscaler_or_module_the_server_lacks_is_refused(
    client, server, params, code, field
):
    fresh_lists(server)

    body = assert_error(submit(client, **params), 400, code)

    assert list(body["fields"]) == [f"generation_params.{field}"]


def test_a_vae_and_text_encoders_are_checked_against_forges_modules(client, server):
    fresh_lists(server, flavour="forge")

    accepted = submit(client, vae="ae", text_encoders=["clip_l.safetensors"])
    refused = submit(client, text_encoders=["t5xxl_fp16"])

    assert accepted.status_code == 202, accepted.json()
    body = assert_error(refused, 400, "module_not_found")
    assert "Close matches" in body["message"] or "It has" in body["message"]


def test_nothing_is_refused_against_a_stale_cache(client, server):
    fresh_lists(server, stale=True)

    response = submit(client, script_name="prompt matrix", vae="other.safetensors")

    assert response.status_code == 202


def test_nothing_is_refused_against_a_list_the_server_does_not_have(client, server):
    fresh_lists(server)
    server.listed_kinds = [kind for kind in server.listed_kinds if kind != ModelKind.SCRIPT]
    server.save()

    response = submit(client, alwayson_scripts={"Regional Prompter": {}})

    assert response.status_code == 202


def test_problems_of_several_kinds_are_one_validation_error(client, server):
    fresh_lists(server)

    body = assert_error(submit(client, vae="nope", script_name="nope"), 400, "validation_error")

    assert set(body["fields"]) == {"generation_params.vae", "generation_params.script_name"}


def test_an_any_job_is_refused_only_when_no_server_has_it(client, server):
    fresh_lists(server)
    other = baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:7861")
    fresh_lists(other)
    CachedModel.objects.filter(server=other, kind=ModelKind.SCRIPT, title="adetailer").delete()
    CachedModel.objects.filter(server=server, kind=ModelKind.STYLE).delete()

    only_laptop = submit(client, "any", alwayson_scripts={"ADetailer": {"args": [True]}})
    neither = submit(
        client, "any", styles=["Cinematic"], alwayson_scripts={"ADetailer": {"args": [True]}}
    )

    assert only_laptop.status_code == 202
    body = assert_error(neither, 400, "validation_error")
    assert set(body["fields"]) == {
        "generation_params.alwayson_scripts",
        "generation_params.styles",
    }


def test_a_change_of_a_pending_job_is_checked_and_keeps_its_requirement_keys(client, server):
    fresh_lists(server)
    job_id = submit(client, styles=["Cinematic"]).json()["mobilesd_job_id"]

    refused = client.patch(
        f"/api/v1/queue/jobs/{job_id}",
        {"generation_params": {"script_name": "nope"}},
        format="json",
    )
    changed = client.patch(
        f"/api/v1/queue/jobs/{job_id}", {"generation_params": {"styles": []}}, format="json"
    )

    assert_error(refused, 400, "script_not_found")
    assert changed.status_code == 200
    assert Job.objects.get().requirement_keys == []


# --- batches ---------------------------------------------------------------------------------


def test_a_batch_item_naming_a_script_the_server_lacks_is_refused_at_its_place(client, server):
    fresh_lists(server)
    before = db_snapshot()
    body = {
        "target_server_alias": "Laptop",
        "generation_params": {"positive_prompt": "x"},
        "items": [{"styles": ["Cinematic"]}, {"alwayson_scripts": {"Regional Prompter": {}}}],
    }

    refused = assert_error(
        client.post("/api/v1/batches", body, format="json"), 400, "script_not_found"
    )

    assert list(refused["fields"]) == ["items.1.alwayson_scripts"]
    assert db_snapshot() == before


def test_a_batchs_jobs_keep_their_requirement_keys(client, server):
    fresh_lists(server)
    body = {
        "target_server_alias": "Laptop",
        "generation_params": {"positive_prompt": "x", "styles": ["Cinematic"]},
        "items": [{"seed": 1}, {"vae": "sdxl_vae"}],
    }

    response = client.post("/api/v1/batches", body, format="json")

    assert response.status_code == 202, response.json()
    keys = {tuple(job.requirement_keys) for job in Job.objects.all()}
    assert keys == {("style:cinematic",), ("file:sdxl_vae", "style:cinematic")}
