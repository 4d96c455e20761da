"""Recipes beyond txt2img (civitai_app.extension_recipes): img2img and inpaint settings,
ADetailer and ControlNet units, the hires pass, VAE and Forge modules, as an image's
infotext (or Civitai's meta) says them, ready for POST /api/v1/generate."""

import io

from PIL import Image, PngImagePlugin

from civitai_app.extension_recipes import (
    adetailer_units,
    controlnet_units,
    extension_params_from,
    extension_warnings,
)
from civitai_app.infotext import parse_infotext
from civitai_app.recipes import generation_params_from, values_from_meta

BASE = "a castle\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
CONTROLNET = (
    'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.8, '
    "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, "
    'Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: True, Control Mode: Balanced"'
)


def values(params_line: str) -> dict[str, str]:
    return parse_infotext(BASE + "Size: 512x512, " + params_line)


def test_two_adetailer_units_become_its_args_with_their_switches():
    found = values(
        "ADetailer model: face_yolov8n.pt, ADetailer prompt: detailed face, "
        "ADetailer confidence: 0.3, ADetailer inpaint only masked: True, "
        "ADetailer inpaint padding: 32, ADetailer steps: 24, "
        "ADetailer model 2nd: hand_yolov8n.pt, ADetailer denoising strength 2nd: 0.5, "
        "ADetailer version: 25.3.0"
    )

    assert adetailer_units(found) == [
        {
            "ad_model": "face_yolov8n.pt",
            "ad_prompt": "detailed face",
            "ad_confidence": 0.3,
            "ad_inpaint_only_masked": True,
            "ad_inpaint_only_masked_padding": 32,
            "ad_steps": 24,
            "ad_use_steps": True,
        },
        {"ad_model": "hand_yolov8n.pt", "ad_denoising_strength": 0.5},
    ]
    params = extension_params_from(found)
    assert params["alwayson_scripts"]["ADetailer"]["args"][:2] == [True, False]


def test_a_controlnet_unit_comes_disabled_with_its_fields():
    (unit,) = controlnet_units(values(CONTROLNET))

    assert unit == {
        "enabled": False,
        "module": "canny",
        "model": "control_v11p_sd15_canny [d14c016b]",
        "weight": 0.8,
        "resize_mode": "Crop and Resize",
        "processor_res": 512,
        "threshold_a": 100,
        "threshold_b": 200,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "pixel_perfect": True,
        "control_mode": "Balanced",
    }


def test_a_controlnet_recipe_warns_that_its_image_is_missing():
    params = extension_params_from(values(CONTROLNET))

    (warning,) = extension_warnings(params)
    assert "ControlNet (1 unit) comes disabled" in warning


def test_an_inpainting_is_a_recipe_in_inpaint_mode():
    found = values(
        "Denoising strength: 0.75, Mask blur: 4, Masked content: original, "
        "Inpaint area: Only masked, Masked area padding: 32, Mask mode: Inpaint not masked, "
        "Resize mode: Crop and resize"
    )

    params = extension_params_from(found)

    assert params == {
        "mode": "inpaint",
        "resize_mode": 1,
        "mask_blur": 4,
        "inpainting_fill": 1,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 32,
        "inpainting_mask_invert": 1,
    }
    assert "add its init image and mask" in extension_warnings(params)[0]


def test_denoising_without_a_hires_pass_is_img2img():
    assert extension_params_from(values("Denoising strength: 0.5"))["mode"] == "img2img"


def test_a_hires_pass_keeps_its_own_fields_and_stays_txt2img():
    found = values(
        "Denoising strength: 0.4, Hires upscale: 1.5, Hires upscaler: 4x-UltraSharp, "
        'Hires sampler: DPM++ 2M, Hires prompt: "sharp castle", Hires CFG Scale: 5, '
        "Hires resize: 1024x1024"
    )

    params = generation_params_from(found)

    assert "mode" not in params
    assert (params["enable_hires_fix"], params["hires_scale"]) == (True, 1.5)
    assert (params["hr_sampler_name"], params["hr_prompt"], params["hr_cfg"]) == (
        "DPM++ 2M",
        "sharp castle",
        5.0,
    )
    assert (params["hr_resize_x"], params["hr_resize_y"]) == (1024, 1024)


def test_forges_modules_become_the_vae_and_text_encoders():
    found = values("Version: f2.0.1v1.10.1, Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16")

    params = extension_params_from(found)

    assert (params["vae"], params["text_encoders"]) == ("ae", ["clip_l", "t5xxl_fp16"])


def test_a1111s_vae_is_the_vae():
    assert extension_params_from(values("VAE: sdxl_vae.safetensors"))["vae"] == (
        "sdxl_vae.safetensors"
    )


def test_civitai_meta_carries_the_same_keys():
    meta = {
        "prompt": "a castle",
        "steps": 20,
        "ADetailer model": "face_yolov8n.pt",
        "ADetailer confidence": 0.3,
        "Module 1": "ae",
    }

    params = generation_params_from(values_from_meta(meta))

    assert params["alwayson_scripts"]["ADetailer"]["args"][2] == {
        "ad_model": "face_yolov8n.pt",
        "ad_confidence": 0.3,
    }
    assert params["vae"] == "ae"


def test_a_unit_generate_would_refuse_is_left_out_of_the_recipe():
    params = generation_params_from(
        values("ADetailer model: face_yolov8n.pt, ADetailer confidence: 7")
    )

    assert "alwayson_scripts" not in params
    assert params["steps"] == 20


def _png(text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_an_uploaded_images_adetailer_and_controlnet_recipe_is_accepted_by_generate(
    client, server, settings
):
    settings.CIVITAI_BASE_URL = "http://127.0.0.1:9"  # lookups fail: only warnings
    text = BASE + "Size: 512x512, ADetailer model: face_yolov8n.pt, " + CONTROLNET

    body = client.post(
        "/api/v1/civitai/image-info", {"image": io.BytesIO(_png(text))}, format="multipart"
    ).json()
    response = client.post(
        "/api/v1/generate",
        {"target_server_alias": "Laptop", "generation_params": body["generation_params"]},
        format="json",
    )

    assert set(body["generation_params"]["alwayson_scripts"]) == {"ADetailer", "ControlNet"}
    assert any("ControlNet (1 unit) comes disabled" in w for w in body["warnings"])
    assert response.status_code == 202, response.json()
