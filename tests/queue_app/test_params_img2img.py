"""generation_params -> POST /sdapi/v1/img2img body (queue_app.params.build_img2img_payload)."""

from typing import Any

from queue_app.params import build_img2img_payload, image_mode


def payload(params: dict[str, Any], *, mask: str | None = None) -> dict[str, Any]:
    return build_img2img_payload(
        {"positive_prompt": "a cat", **params},
        init_images=["SU5JVA=="],
        mask=mask,
        task_id="task-1",
        checkpoint_title="model.safetensors [abc]",
    )


def test_img2img_sends_the_init_images_and_the_txt2img_invariants():
    body = payload({"mode": "img2img", "denoising_strength": 0.4, "resize_mode": 1})

    assert body["init_images"] == ["SU5JVA=="]
    assert body["denoising_strength"] == 0.4
    assert body["resize_mode"] == 1
    assert body["include_init_images"] is False
    assert body["force_task_id"] == "task-1"
    assert body["override_settings"] == {"sd_model_checkpoint": "model.safetensors [abc]"}
    assert (body["save_images"], body["send_images"]) == (False, True)
    assert "mask" not in body


def test_img2img_has_no_hires_fix_and_no_hires_default_denoising():
    body = payload({"mode": "img2img", "enable_hires_fix": True, "hires_scale": 2})

    assert not {"enable_hr", "hr_scale", "denoising_strength"} & set(body)


def test_inpaint_sends_the_mask_and_its_settings():
    params = {
        "mode": "inpaint",
        "mask_blur": 8,
        "inpainting_fill": 1,
        "inpaint_full_res": False,
        "inpaint_full_res_padding": 32,
        "inpainting_mask_invert": 1,
    }

    body = payload(params, mask="TUFTSw==")

    assert body["mask"] == "TUFTSw=="
    assert {key: body[key] for key in params if key != "mode"} == {
        key: value for key, value in params.items() if key != "mode"
    }


def test_img2img_ignores_inpaint_settings():
    body = payload({"mode": "img2img", "mask_blur": 8, "inpainting_fill": 1}, mask="TUFTSw==")

    assert not {"mask", "mask_blur", "inpainting_fill"} & set(body)


def test_values_out_of_range_are_left_to_the_servers_default():
    body = payload({"mode": "inpaint", "resize_mode": 9, "mask_blur": -3}, mask="TUFTSw==")

    assert not {"resize_mode", "mask_blur"} & set(body)


def test_the_mode_names_the_endpoint():
    assert [image_mode({"mode": m}) for m in ("txt2img", "img2img", "inpaint", None)] == [
        None,
        "img2img",
        "inpaint",
        None,
    ]
