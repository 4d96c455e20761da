"""queue_app.extension_params: the VAE, modules, styles, hires fields and scripts in the
request body, as A1111 and Forge take them."""

import pytest

from queue_app.extension_params import (
    ResolvedExtras,
    apply_extras,
    controlnet_models,
    requested_extras,
    resolve_script_images,
    vae_setting,
)
from queue_app.params import build_txt2img_payload


def payload(params, **kwargs):
    body = build_txt2img_payload(params, task_id="t", checkpoint_title=None)
    return apply_extras(body, params, **kwargs)


ADETAILER = {
    "ADetailer": {
        "args": [True, False, {"ad_model": "face_yolov8n.pt", "ad_prompt": "detailed face"}]
    }
}


def test_a1111_takes_the_vae_as_sd_vae_by_its_file_name():
    resolved = ResolvedExtras(files={"sdxl_vae": "sdxl_vae.safetensors"})

    body = payload({"vae": "sdxl_vae"}, resolved=resolved, flavour="a1111")

    assert body["override_settings"]["sd_vae"] == "sdxl_vae.safetensors"
    assert "forge_additional_modules" not in body["override_settings"]


@pytest.mark.parametrize(("choice", "sent"), [("Automatic", "Automatic"), ("none", "None")])
def test_a1111_takes_its_own_vae_choices(choice, sent):
    body = payload({"vae": choice}, flavour="a1111")

    assert body["override_settings"]["sd_vae"] == sent


def test_forge_takes_the_vae_and_text_encoders_as_module_paths():
    resolved = ResolvedExtras(
        forge=True,
        files={
            "ae": "/opt/sd/models/VAE/ae.safetensors",
            "clip_l": "/opt/sd/models/text_encoder/clip_l.safetensors",
        },
    )

    body = payload({"vae": "ae", "text_encoders": ["clip_l", "t5xxl"]}, resolved=resolved)

    assert body["override_settings"]["forge_additional_modules"] == [
        "/opt/sd/models/VAE/ae.safetensors",
        "/opt/sd/models/text_encoder/clip_l.safetensors",
        "t5xxl",
    ]
    assert "sd_vae" not in body["override_settings"]


@pytest.mark.parametrize("flavour", ["forge", "a1111", None])
def test_a_plain_job_gets_no_extension_fields_and_leaves_the_servers_vae_alone(flavour):
    body = payload({"positive_prompt": "x"}, flavour=flavour)

    assert not {"styles", "alwayson_scripts", "script_name", "script_args"} & set(body)
    assert body["override_settings"] == {}


@pytest.mark.parametrize(
    ("flavour", "setting", "value"),
    [
        ("forge", "forge_additional_modules", ["/m/VAE/ae.safetensors"]),
        ("a1111", "sd_vae", "sdxl_vae.safetensors"),
        (None, "sd_vae", "None"),
    ],
)
def test_a_job_without_a_vae_sends_the_servers_own_setting_back(flavour, setting, value):
    baseline = {"sd_vae": "Automatic", "forge_additional_modules": []} | {setting: value}

    body = payload({"positive_prompt": "x"}, flavour=flavour, baseline=baseline)

    # Only the option the server's flavour has (A1111 fails on Forge's).
    assert body["override_settings"] == {setting: value}


def test_a_job_naming_a_vae_sends_it_whatever_the_baseline():
    body = payload({"vae": "Automatic"}, flavour="a1111", baseline={"sd_vae": "mine.pt"})

    assert body["override_settings"] == {"sd_vae": "Automatic"}


@pytest.mark.parametrize(
    ("params", "forge", "setting"),
    [
        ({}, True, None),
        ({"vae": " "}, True, None),
        ({"vae": "None"}, True, "forge_additional_modules"),
        ({"text_encoders": ["clip_l"]}, True, "forge_additional_modules"),
        ({"text_encoders": ["clip_l"]}, False, None),  # A1111 has no text-encoder modules
        ({"vae": "Automatic"}, False, "sd_vae"),
        ({"vae": "ae"}, False, "sd_vae"),
    ],
)
def test_the_setting_a_jobs_vae_choice_changes(params, forge, setting):
    assert vae_setting(params, forge=forge) == setting


def test_a_forge_job_with_text_encoders_only_sends_just_those_modules():
    resolved = ResolvedExtras(
        forge=True, files={"clip_l": "/opt/sd/models/text_encoder/clip_l.safetensors"}
    )

    body = payload({"text_encoders": ["clip_l"]}, resolved=resolved)

    assert body["override_settings"] == {
        "forge_additional_modules": ["/opt/sd/models/text_encoder/clip_l.safetensors"]
    }


@pytest.mark.parametrize("choice", ["Automatic", "None"])
def test_forge_takes_a1111s_vae_choices_as_no_module(choice):
    body = payload({"vae": choice}, flavour="forge")

    assert body["override_settings"] == {"forge_additional_modules": []}


def test_styles_are_sent_by_the_servers_names():
    resolved = ResolvedExtras(names={"cinematic": "Cinematic"})

    body = payload({"styles": ["cinematic", "Noir"]}, resolved=resolved)

    assert body["styles"] == ["Cinematic", "Noir"]


def test_hires_fields_go_as_named_only_with_the_hires_fix():
    params = {
        "enable_hires_fix": True,
        "hr_scale": 1.5,
        "hr_upscaler": "4x-UltraSharp",
        "hr_second_pass_steps": 10,
        "hr_denoising_strength": 0.35,
        "hr_sampler_name": "Euler a",
        "hr_prompt": "",
        "hr_cfg": 5.0,
        "hr_distilled_cfg": 3.0,
    }

    on = payload(params, flavour="forge")
    off = payload({**params, "enable_hires_fix": False}, flavour="forge")

    assert (on["enable_hr"], on["hr_scale"], on["hr_upscaler"]) == (True, 1.5, "4x-UltraSharp")
    assert (on["hr_second_pass_steps"], on["denoising_strength"]) == (10, 0.35)
    assert (on["hr_sampler_name"], on["hr_prompt"], on["hr_cfg"]) == ("Euler a", "", 5.0)
    assert on["hr_distilled_cfg"] == 3.0
    assert not {"hr_scale", "hr_upscaler", "hr_cfg"} & set(off)


def test_hr_fields_win_over_the_older_names():
    body = payload(
        {
            "enable_hires_fix": True,
            "hires_scale": 2.0,
            "upscaler_model": "Lanczos",
            "hr_scale": 1.25,
            "hr_upscaler": "Latent",
        }
    )

    assert (body["hr_scale"], body["hr_upscaler"]) == (1.25, "Latent")


def test_a1111_gets_no_distilled_hires_cfg():
    body = payload({"enable_hires_fix": True, "hr_distilled_cfg": 3.0}, flavour="a1111")

    assert "hr_distilled_cfg" not in body


def test_an_hr_upscaler_of_none_leaves_the_servers_default():
    body = payload({"enable_hires_fix": True, "upscaler_model": "Lanczos", "hr_upscaler": "None"})

    assert "hr_upscaler" not in body


def test_always_on_scripts_and_a_selectable_script_go_as_sent():
    params = {
        "alwayson_scripts": ADETAILER,
        "script_name": "x/y/z plot",
        "script_args": [1, "10,20", 0, ""],
    }

    body = payload(params)

    assert body["alwayson_scripts"] == ADETAILER
    assert (body["script_name"], body["script_args"]) == ("x/y/z plot", [1, "10,20", 0, ""])


def test_image_references_in_units_go_through_the_resolver_and_nothing_else_does():
    scripts = {
        "ControlNet": {
            "args": [
                {"enabled": True, "image": "upload:1", "model": "canny", "module": "canny"},
                {"image": {"image": "upload:2", "mask": "upload:3"}},
            ]
        },
        "ADetailer": {"args": [True, False, {"ad_prompt": "upload:9"}]},
    }

    resolved = resolve_script_images(scripts, lambda value: value.replace("upload:", "b64-"))

    units = resolved["ControlNet"]["args"]
    assert units[0]["image"] == "b64-1"
    assert units[0]["model"] == "canny"
    assert units[1]["image"] == {"image": "b64-2", "mask": "b64-3"}
    assert resolved["ADetailer"] == scripts["ADetailer"]
    assert scripts["ControlNet"]["args"][0]["image"] == "upload:1"  # the job's stays


def test_what_a_job_asks_for():
    extras = requested_extras(
        {
            "vae": "Automatic",
            "text_encoders": ["clip_l", " clip_l "],
            "styles": ["A"],
            "enable_hires_fix": True,
            "upscaler_model": "None",
            "script_name": "x/y/z plot",
            "alwayson_scripts": {
                "controlnet": {"args": [{"model": "canny [1234abcd]"}, {"model": "None"}]}
            },
            "mode": "inpaint",
        }
    )

    assert (extras.vae, extras.text_encoders, extras.styles) == ("", ("clip_l",), ("A",))
    assert (extras.hr_upscaler, extras.mode) == ("", "img2img")
    assert extras.scripts == ("x/y/z plot", "controlnet")
    assert extras.controlnet_models == ("canny [1234abcd]",)


def test_a_disabled_controlnet_unit_names_no_model():
    params = {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": False, "model": "x"}]}}}

    assert controlnet_models(params) == []


def test_forges_hires_pass_gets_its_modules_choice_and_the_jobs_cfg():
    body = payload({"enable_hires_fix": True, "cfg_scale": 6.0}, flavour="forge")

    assert body["hr_additional_modules"] == ["Use same choices"]
    assert body["hr_cfg"] == 6.0


def test_a1111s_hires_pass_gets_neither_forge_field():
    body = payload({"enable_hires_fix": True, "cfg_scale": 6.0, "hr_cfg": 4.0}, flavour="a1111")

    assert "hr_additional_modules" not in body
    assert "hr_cfg" not in body
