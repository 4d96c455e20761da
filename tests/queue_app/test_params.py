"""MobileSD generation_params -> txt2img payload, LoRA tags and the interim title resolver."""

from typing import Any

import pytest

from queue_app.params import (
    build_txt2img_payload,
    lora_prompt_suffix,
    loras_sent,
    requested_loras,
    rewrite_lora_tags,
    scheduler_for,
)
from tests.support import DOCUMENTED_GENERATE_REQUEST, DOCUMENTED_STATUS_PARAMS

TASK_ID = "88615c9d-71ec-4803-88b0-14f5162f6c66"
TITLE = "Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]"

# The `generation_params` of SEED_API.md's POST /api/v1/generate example, verbatim.
# SEED_API.md's examples, verbatim (kept once, in tests/support.py).
DOCUMENTED_GENERATE_PARAMS = DOCUMENTED_GENERATE_REQUEST["generation_params"]


def _build(params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("task_id", TASK_ID)
    kwargs.setdefault("checkpoint_title", TITLE)
    return build_txt2img_payload(params, **kwargs)


def test_documented_generate_example_maps_to_exact_payload() -> None:
    assert _build(DOCUMENTED_GENERATE_PARAMS) == {
        "prompt": "a beautiful landscape",
        "negative_prompt": "ugly, blurry",
        "seed": -1,
        "subseed": -1,
        "batch_size": 1,
        "n_iter": 1,
        "width": 512,
        "height": 512,
        "steps": 20,
        "cfg_scale": 7.0,
        "sampler_name": "Euler",
        "restore_faces": False,
        "save_images": False,
        "send_images": True,
        "override_settings": {"sd_model_checkpoint": TITLE},
        "override_settings_restore_afterwards": False,
        "force_task_id": TASK_ID,
    }


def test_documented_status_example_maps_to_exact_payload() -> None:
    title = "Pony\\cyberrealisticPony_v85.safetensors [0123456789]"

    assert _build(DOCUMENTED_STATUS_PARAMS, checkpoint_title=title) == {
        "prompt": "a pretty girl",
        "negative_prompt": "ugly",
        "seed": -1,
        "subseed": -1,
        "batch_size": 1,
        "n_iter": 1,
        "width": 512,
        "height": 512,
        "steps": 20,
        "cfg_scale": 7.0,
        "sampler_name": "Euler",
        "restore_faces": False,
        "save_images": False,
        "send_images": True,
        "override_settings": {"sd_model_checkpoint": title},
        "override_settings_restore_afterwards": False,
        "force_task_id": TASK_ID,
    }


def test_metadata_only_keys_are_not_sent() -> None:
    payload = _build(DOCUMENTED_STATUS_PARAMS)

    for key in ("style_preset", "sampling_category", "checkpoint_name", "num_images"):
        assert key not in payload
    assert "scheduler" not in payload


def test_without_checkpoint_title_no_checkpoint_override() -> None:
    payload = _build({"positive_prompt": "x"}, checkpoint_title=None)

    assert payload["override_settings"] == {}


def test_lone_prompt_is_accepted() -> None:
    assert _build({"prompt": "a fox"})["prompt"] == "a fox"


def test_positive_prompt_wins_over_prompt() -> None:
    assert _build({"positive_prompt": "a fox", "prompt": "a dog"})["prompt"] == "a fox"


def test_unknown_keys_are_ignored() -> None:
    params = {
        **DOCUMENTED_GENERATE_PARAMS,
        "brand_new_field": {"nested": [1, 2]},
        "override_settings": {"sd_vae": "evil"},
        "script_name": "x",
        "save_images": True,
    }

    assert _build(params) == _build(DOCUMENTED_GENERATE_PARAMS)


@pytest.mark.parametrize("value", ["", None, -1, "-1", "  ", "random", -7, 1.5, True])
def test_random_seed_forms_become_minus_one(value: Any) -> None:
    payload = _build({"seed": value, "subseed": value})

    assert (payload["seed"], payload["subseed"]) == (-1, -1)


@pytest.mark.parametrize(("value", "expected"), [(42, 42), ("42", 42), (0, 0), (7.0, 7)])
def test_fixed_seed_is_sent(value: Any, expected: int) -> None:
    assert _build({"seed": value})["seed"] == expected


def test_num_images_becomes_iterations_of_one_image() -> None:
    payload = _build({"num_images": 4})

    assert (payload["n_iter"], payload["batch_size"]) == (4, 1)


@pytest.mark.parametrize("value", [0, -2, "many", None])
def test_invalid_num_images_means_one(value: Any) -> None:
    assert _build({"num_images": value})["n_iter"] == 1


def test_numbers_are_coerced_and_garbage_dropped() -> None:
    payload = _build({"width": "768", "height": 512.0, "steps": "lots", "cfg_scale": "4.5"})

    assert payload["width"] == 768
    assert payload["height"] == 512
    assert "steps" not in payload
    assert payload["cfg_scale"] == 4.5


def test_restore_faces_string_is_coerced() -> None:
    assert _build({"restore_faces": "true"})["restore_faces"] is True


# --- scheduler ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Karras", "Karras"),
        ("karras", "Karras"),
        ("SGM Uniform", "SGM Uniform"),
        ("sgm_uniform", "SGM Uniform"),
        ("SGMUniform", "SGM Uniform"),
        ("align your steps", "Align Your Steps"),
        ("Turbo", "Turbo"),
        ("automatic", "Automatic"),
        ("Balanced", None),
        ("Quality", None),
        ("Speed", None),
        ("", None),
        (None, None),
    ],
)
def test_scheduler_for(value: Any, expected: str | None) -> None:
    assert scheduler_for(value) == expected


def test_real_scheduler_is_sent() -> None:
    assert _build({"scheduler_or_quality_preset": "karras"})["scheduler"] == "Karras"


# --- loras -------------------------------------------------------------------------------


def test_loras_are_appended_to_prompt() -> None:
    params = {
        "positive_prompt": "a cat",
        "loras": [{"name": "detail", "weight": 0.75}, {"name": "style/ink"}],
    }

    assert _build(params)["prompt"] == "a cat <lora:detail:0.75> <lora:style/ink:1>"


def test_lora_already_in_prompt_is_not_duplicated() -> None:
    params = {
        "positive_prompt": "a cat <lora:Detail:0.5>",
        "loras": [{"name": "detail", "weight": 1}, {"name": "other", "weight": 2}],
    }

    assert _build(params)["prompt"] == "a cat <lora:Detail:0.5> <lora:other:2>"


def test_loras_with_empty_prompt() -> None:
    assert _build({"loras": [{"name": "a"}]})["prompt"] == "<lora:a:1>"


@pytest.mark.parametrize(
    ("loras", "expected"),
    [
        ([], ""),
        ([{"name": "a", "weight": 1.0}], "<lora:a:1>"),
        ([{"name": "a", "weight": "0.3"}], "<lora:a:0.3>"),
        ([{"name": "a", "weight": -0.5}], "<lora:a:-0.5>"),
        ([{"name": "a", "weight": 0}], "<lora:a:0>"),
        ([{"name": "a", "weight": None}], "<lora:a:1>"),
        ([{"name": "a", "weight": "heavy"}], "<lora:a:1>"),
        ([{"name": "a"}, {"name": "A", "weight": 0.2}], "<lora:a:1>"),
        ([{"name": ""}, {"weight": 1}, "b", None, {"name": "x>y"}], ""),
    ],
)
def test_lora_prompt_suffix(loras: list[Any], expected: str) -> None:
    assert lora_prompt_suffix(loras) == expected


def test_lora_prompt_suffix_skips_tag_without_weight_in_prompt() -> None:
    assert lora_prompt_suffix([{"name": "a"}], prompt="x <lora:a>") == ""


def test_lora_prefix_name_is_not_mistaken_for_present() -> None:
    assert lora_prompt_suffix([{"name": "detail"}], prompt="<lora:detailed:1>") == "<lora:detail:1>"


def test_requested_loras_lists_the_prompts_tags_then_the_list_each_once() -> None:
    params = {
        "positive_prompt": "a cat <lora: Ink Style :0.5>, <lyco:styles\\ink> <lora:>",
        "loras": [
            {"name": "add_detail.safetensors", "weight": 0.8},
            {"name": "Ink Style"},
            {"name": "   "},
            {"weight": 1},
            "not an entry",
        ],
    }

    assert requested_loras(params) == ["Ink Style", "styles\\ink", "add_detail.safetensors"]


def test_requested_loras_reads_a_lone_prompt() -> None:
    assert requested_loras({"prompt": "<lora:a:1>"}) == ["a"]


def test_loras_are_sent_under_the_servers_names() -> None:
    params = {
        "positive_prompt": "a cat",
        "loras": [{"name": "add_detail.safetensors", "weight": 0.8}, {"name": "styles\\ink"}],
    }
    names = {"add_detail.safetensors": "add_detail", "styles\\ink": "ink"}

    assert _build(params, lora_names=names)["prompt"] == "a cat <lora:add_detail:0.8> <lora:ink:1>"


def test_prompt_tags_are_renamed_and_keep_their_weights() -> None:
    prompt = "x <lora:add_detail.safetensors:0.6:0.3>, <lora:unknown>, <lyco:Ink Style XL>"
    names = {"add_detail.safetensors": "add_detail", "Ink Style XL": "ink"}

    assert (
        rewrite_lora_tags(prompt, names)
        == "x <lora:add_detail:0.6:0.3>, <lora:unknown>, <lyco:ink>"
    )


def test_a_lora_tagged_in_the_prompt_is_not_added_again_under_another_spelling() -> None:
    params = {
        "positive_prompt": "a cat <lora:add_detail.safetensors:0.5>",
        "loras": [{"name": "styles/add_detail", "weight": 1}],
    }
    names = {"add_detail.safetensors": "add_detail", "styles/add_detail": "add_detail"}

    assert _build(params, lora_names=names)["prompt"] == "a cat <lora:add_detail:0.5>"


def test_a_name_with_a_colon_is_sent_once_resolved() -> None:
    params = {"loras": [{"name": "C:\\sd\\models\\Lora\\x.safetensors", "weight": 0.5}]}

    assert _build(params)["prompt"] == ""  # cannot be a tag as written
    names = {"C:\\sd\\models\\Lora\\x.safetensors": "x"}
    assert _build(params, lora_names=names)["prompt"] == "<lora:x:0.5>"


def test_loras_sent_names_each_lora_of_a_prompt_once() -> None:
    assert loras_sent("<lora:a:1> b <lora:c> <lyco:a:0.2> <lora::1>") == ["a", "c"]


# --- hires fix, refiner, flavours, clip skip ---------------------------------------------


def test_hires_fix_with_upscaler() -> None:
    payload = _build(
        {
            "enable_hires_fix": True,
            "upscaler_model": "4x-UltraSharp",
            "hires_scale": 1.5,
            "hires_steps": 10,
            "denoising_strength": 0.4,
        }
    )

    assert payload["enable_hr"] is True
    assert payload["hr_upscaler"] == "4x-UltraSharp"
    assert payload["hr_scale"] == 1.5
    assert payload["hr_second_pass_steps"] == 10
    assert payload["denoising_strength"] == 0.4


def test_hires_fix_with_upscaler_none_uses_latent_default() -> None:
    payload = _build({"enable_hires_fix": True, "upscaler_model": "None"})

    assert payload["enable_hr"] is True
    assert "hr_upscaler" not in payload
    assert "hr_scale" not in payload
    assert payload["denoising_strength"] == 0.7


def test_hires_fields_absent_when_hires_disabled() -> None:
    payload = _build(
        {"enable_hires_fix": False, "upscaler_model": "4x-UltraSharp", "hires_scale": 2}
    )

    assert not any(key.startswith("hr_") or key == "enable_hr" for key in payload)


def test_refiner_none_is_not_sent() -> None:
    payload = _build({"refiner_model": "None"})

    assert "refiner_checkpoint" not in payload
    assert "refiner_switch_at" not in payload


def test_refiner_with_default_switch() -> None:
    payload = _build({"refiner_model": "sdxl_refiner.safetensors"})

    assert payload["refiner_checkpoint"] == "sdxl_refiner.safetensors"
    assert payload["refiner_switch_at"] == 0.8


def test_refiner_title_and_switch_point() -> None:
    payload = _build(
        {"refiner_model": "XL/refiner.safetensors", "refiner_switch_at": 0.6},
        refiner_title="XL\\refiner.safetensors [abcdef0123]",
    )

    assert payload["refiner_checkpoint"] == "XL\\refiner.safetensors [abcdef0123]"
    assert payload["refiner_switch_at"] == 0.6


def test_clip_skip_goes_to_override_settings() -> None:
    payload = _build({"clip_skip": "2"})

    assert payload["override_settings"] == {
        "sd_model_checkpoint": TITLE,
        "CLIP_stop_at_last_layers": 2,
    }


@pytest.mark.parametrize(
    ("flavour", "sent"), [("forge", True), (None, True), ("a1111", False), ("A1111", False)]
)
def test_distilled_cfg_scale_only_for_forge(flavour: str | None, sent: bool) -> None:
    payload = _build({"distilled_cfg_scale": 3.5}, flavour=flavour)

    assert ("distilled_cfg_scale" in payload) is sent
    if sent:
        assert payload["distilled_cfg_scale"] == 3.5


def test_flavour_does_not_change_common_fields() -> None:
    forge = _build(DOCUMENTED_GENERATE_PARAMS, flavour="forge")
    a1111 = _build(DOCUMENTED_GENERATE_PARAMS, flavour="a1111")

    assert forge == a1111
