"""An infotext's values as generation_params that POST /api/v1/generate accepts."""

import pytest

from civitai_app.infotext import parse_infotext
from civitai_app.recipes import generation_params_from, split_sampler
from tests.support import INFOTEXT_SAMPLES

SAMPLES = INFOTEXT_SAMPLES
SAMPLE_1, SAMPLE_2, SAMPLE_3, SAMPLE_4 = (SAMPLES[n] for n in (1, 2, 3, 4))
SAMPLE_5, SAMPLE_6, SAMPLE_7, SAMPLE_8 = (SAMPLES[n] for n in (5, 6, 7, 8))


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M SDE Karras", ("DPM++ 2M SDE", "Karras")),
        ("Euler a", ("Euler a", None)),
        ("DDIM", ("DDIM", None)),
    ],
)
def test_old_sampler_names_carry_their_scheduler(sampler, expected):
    assert split_sampler(sampler) == expected


def test_sample_8_becomes_generation_params_generate_accepts():
    params = generation_params_from(parse_infotext(SAMPLE_8))

    assert params == {
        "positive_prompt": parse_infotext(SAMPLE_8)["Prompt"],
        "negative_prompt": "SmoothNegativePony-neg,\nscore_6, score_5, score_4",
        "steps": 60,
        "width": 896,
        "height": 1152,
        "seed": 1736401068,
        "clip_skip": 2,
        "cfg_scale": 7.0,
        "sampler_name": "DPM++ 3M SDE",
        "scheduler_or_quality_preset": "Karras",
        "checkpoint_name": "smoothMixOldVerNoobai_ponyV3",
        "num_images": 1,
        "alwayson_scripts": {
            "ADetailer": {
                "args": [
                    True,
                    False,
                    {
                        "ad_model": "face_yolov9c.pt",
                        "ad_prompt": "detailed face",
                        "ad_confidence": 0.3,
                        "ad_steps": 24,
                        "ad_use_steps": True,
                        "ad_cfg_scale": 2.0,
                        "ad_use_cfg_scale": True,
                    },
                ]
            }
        },
    }


def test_values_generate_would_refuse_are_left_out():
    params = generation_params_from(
        {"Prompt": "x", "Steps": "500", "Seed": str(2**40), "CFG scale": "7"}
    )

    assert "steps" not in params
    assert "seed" not in params
    assert params["cfg_scale"] == 7.0
