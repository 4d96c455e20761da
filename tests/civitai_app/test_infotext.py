"""The infotext parser on every real sample of REFERENCE.md D.3
(contracts/infotext-samples.json)."""

from civitai_app.infotext import parse_infotext, parse_name_hashes
from tests.support import INFOTEXT_SAMPLES

SAMPLES = INFOTEXT_SAMPLES
SAMPLE_1, SAMPLE_2, SAMPLE_3, SAMPLE_4 = (SAMPLES[n] for n in (1, 2, 3, 4))
SAMPLE_5, SAMPLE_6, SAMPLE_7, SAMPLE_8 = (SAMPLES[n] for n in (5, 6, 7, 8))


def test_sample_1_pre_1_0_infotext_with_an_8_hex_model_hash():
    parsed = parse_infotext(SAMPLE_1)

    assert parsed["Prompt"].startswith("girl with an artist's beret")
    assert parsed["Prompt"].endswith("detailed, intricate")
    assert parsed["Negative prompt"].startswith("ugly, fat, obese")
    assert parsed["Negative prompt"].endswith("messy drawing")
    assert parsed["Steps"] == "20"
    assert parsed["Sampler"] == "Euler a"
    assert parsed["CFG scale"] == "7"
    assert parsed["Seed"] == "965400086"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512")
    assert parsed["Model hash"] == "45dee52b"


def test_sample_2_parses_exactly_as_the_reference_expects():
    assert parse_infotext(SAMPLE_2) == {
        "Prompt": "photo of a duck",
        "Negative prompt": "monochrome",
        "Steps": "15",
        "Sampler": "UniPC",
        "CFG scale": "5",
        "Seed": "235284042",
        "Size-1": "512",
        "Size-2": "400",
        "Model hash": "c0d1994c73",
        "Model": "realistic_realisticVisionV20_v20",
    }


def test_sample_3_without_a_negative_prompt():
    parsed = parse_infotext(SAMPLE_3)

    assert parsed["Prompt"] == "chinese dragon, cartoon, 4k, masterpiece"
    assert parsed["Negative prompt"] == ""
    assert parsed["Sampler"] == "DPM++ 2M SDE Karras"
    assert parsed["Model"] == "chilloutmix_NiPrunedFp32Fix"
    assert parsed["Version"] == "v1.6.0"


def test_sample_4_flattened_by_an_exif_tool_is_put_back_on_its_lines():
    parsed = parse_infotext(SAMPLE_4)

    assert parsed["Prompt"] == (
        "<lora:generic_lora_a:1> generic prompt text <lora:generic_lora_b:1> more prompt text"
    )
    assert parsed["Negative prompt"] == "negative prompt text, low quality"
    assert parsed["Steps"] == "24"
    assert parsed["Schedule type"] == "Automatic"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("640", "980")
    assert parsed["Wildcard prompt"].startswith("  <lora:generic_lora_a:1>")
    assert parsed["Lora hashes"] == "generic_lora_a: bed61886a493"
    assert parsed["Version"] == "v1.9.3"


def test_sample_5_empty_negative_line_and_extra_keys():
    parsed = parse_infotext(SAMPLE_5)

    assert parsed["Prompt"] == "cat portrait,"
    assert parsed["Negative prompt"] == ""
    assert parsed["Face restoration"] == "CodeFormer"
    assert parsed["Model"] == "sd_xl_base_1.0"
    assert parsed["FP8 weight"] == "Enable for SDXL"
    assert parsed["Cache FP16 weight for LoRA"] == "True"


def test_sample_6_forge_flux_keeps_blank_lines_and_quotes_of_the_prompt():
    parsed = parse_infotext(SAMPLE_6)

    assert parsed["Prompt"] == (
        'FredFraiStyle "positive."\n\n<lora:FredFraiStyle-FLUX-Share:0.95>\n'
        "<lora:Ars_MidJourney_Style_-_Flux:0.6>\n<lora:- Flux1 - vanta_black_V2.0:0.55>"
    )
    assert parsed["Negative prompt"] == ""
    assert parsed["Distilled CFG Scale"] == "3.5"
    assert parsed["Lora hashes"] == (
        "FredFraiStyle-FLUX-Share: de92428f6411, Ars_MidJourney_Style_-_Flux: c4f0b45e6a60, "
        "- Flux1 - vanta_black_V2.0: 5d8cf3724039"
    )
    assert parsed["Version"] == "f2.0.1v1.10.1-previous-561-g82eb7566"
    assert parse_name_hashes(parsed["Lora hashes"])[2] == (
        "- Flux1 - vanta_black_V2.0",
        "5d8cf3724039",
    )


def test_sample_7_a_params_line_alone_has_an_empty_prompt():
    parsed = parse_infotext(SAMPLE_7)

    assert parsed["Prompt"] == ""
    assert parsed["Model"] == "flux-hyp16-Q5_0"
    assert parsed["Lora hashes"] == "flux_lora_nina1: e3b0c44298fc"
    assert parsed["Diffusion in Low Bits"] == "Automatic (fp16 LoRA)"
    assert [parsed[f"Module {n}"] for n in (1, 2, 3)] == ["ae", "clip_l", "t5xxl_fp8_e4m3fn"]


def test_sample_8_multi_line_negative_and_quoted_extension_values():
    parsed = parse_infotext(SAMPLE_8)

    assert parsed["Prompt"] == (
        "SmoothQualityPony,\n<lora:Smooth Pony Booster:1>,\n<lora:JADE-XSTAR-XL-FINAL:1>, J4D3"
    )
    assert parsed["Negative prompt"] == "SmoothNegativePony-neg,\nscore_6, score_5, score_4"
    assert parsed["ADetailer prompt"] == "detailed face"
    assert parsed["TI"] == "SmoothQualityPony, SmoothQualityPony"
    assert parsed["Clip skip"] == "2"
    assert parsed["NGMS all steps"] == "True"


def test_a_prompt_without_a_params_line_is_all_prompt():
    assert parse_infotext("just a prompt\nwith two lines") == {
        "Prompt": "just a prompt\nwith two lines",
        "Negative prompt": "",
    }
