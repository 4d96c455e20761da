"""The infotext parser on every real sample of REFERENCE.md D.3, and reading the infotext
out of PNG, JPEG and WebP files."""

import io

import pytest
from PIL import Image, PngImagePlugin

from civitai_app.imagefile import NotAnImage, decode_user_comment, read_image_text
from civitai_app.infotext import parse_infotext, parse_name_hashes
from civitai_app.recipes import generation_params_from, split_sampler

SAMPLE_1 = """girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate
Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"""  # noqa: E501

SAMPLE_2 = """photo of a duck
Negative prompt: monochrome
Steps: 15, Sampler: UniPC, CFG scale: 5, Seed: 235284042, Size: 512x400, Model hash: c0d1994c73, Model: realistic_realisticVisionV20_v20"""  # noqa: E501

SAMPLE_3 = """chinese dragon, cartoon, 4k, masterpiece
Steps: 25, Sampler: DPM++ 2M SDE Karras, CFG scale: 7, Seed: 481945960, Size: 512x512, Model hash: fc2511737a, Model: chilloutmix_NiPrunedFp32Fix, Version: v1.6.0"""  # noqa: E501

SAMPLE_4 = """Parameters                      : <lora:generic_lora_a:1> generic prompt text <lora:generic_lora_b:1> more prompt text.Negative prompt: negative prompt text, low quality.Steps: 24, Sampler: Euler a, Schedule type: Automatic, CFG scale: 4, Seed: 2366756367, Size: 640x980, Model hash: 23d793a158, Model: GenericModel, Wildcard prompt: "  <lora:generic_lora_a:1> generic prompt text <lora:generic_lora_b:1> more prompt text", Lora hashes: "generic_lora_a: bed61886a493", Version: v1.9.3"""  # noqa: E501

SAMPLE_5 = """cat portrait, 
Negative prompt: 
Steps: 13, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4, Seed: 2535254266, Face restoration: CodeFormer, Size: 1216x832, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, FP8 weight: Enable for SDXL, Cache FP16 weight for LoRA: True, Version: v1.10.1"""  # noqa: E501, W291

SAMPLE_6 = """FredFraiStyle "positive."

<lora:FredFraiStyle-FLUX-Share:0.95>
<lora:Ars_MidJourney_Style_-_Flux:0.6>
<lora:- Flux1 - vanta_black_V2.0:0.55>
Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 3045329758, Size: 832x1216, Model hash: 06f96f89f6, Model: flux_dev, Lora hashes: "FredFraiStyle-FLUX-Share: de92428f6411, Ars_MidJourney_Style_-_Flux: c4f0b45e6a60, - Flux1 - vanta_black_V2.0: 5d8cf3724039", Version: f2.0.1v1.10.1-previous-561-g82eb7566"""  # noqa: E501

SAMPLE_7 = """Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 1083098466, Size: 1360x792, Model hash: 58725940e3, Model: flux-hyp16-Q5_0, Lora hashes: "flux_lora_nina1: e3b0c44298fc", Version: f2.0.1v1.10.1-previous-530-g8bd7e056, Diffusion in Low Bits: Automatic (fp16 LoRA), Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp8_e4m3fn"""  # noqa: E501

SAMPLE_8 = """SmoothQualityPony,
<lora:Smooth Pony Booster:1>,
<lora:JADE-XSTAR-XL-FINAL:1>, J4D3
Negative prompt: SmoothNegativePony-neg,
score_6, score_5, score_4
Steps: 60, Sampler: DPM++ 3M SDE, Schedule type: Karras, CFG scale: 7, Seed: 1736401068, Size: 896x1152, Model hash: 34d8e4c691, Model: smoothMixOldVerNoobai_ponyV3, Clip skip: 2, ADetailer model: face_yolov9c.pt, ADetailer prompt: "detailed face", ADetailer confidence: 0.3, ADetailer steps: 24, ADetailer CFG scale: 2.0, ADetailer version: 25.3.0, Lora hashes: "Smooth Pony Booster: ad1599fe9152, JADE-XSTAR-XL-FINAL: 0790afc4176e", TI: "SmoothQualityPony, SmoothQualityPony", NGMS: 3.0, NGMS all steps: True, Version: f2.0.1v1.10.1-previous-669-gdfdcbab6"""  # noqa: E501


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
    }


def test_values_generate_would_refuse_are_left_out():
    params = generation_params_from(
        {"Prompt": "x", "Steps": "500", "Seed": str(2**40), "CFG scale": "7"}
    )

    assert "steps" not in params
    assert "seed" not in params
    assert params["cfg_scale"] == 7.0


# --- image files ---------------------------------------------------------------------------------


def png_with(text: str | None, *, international: bool = False) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text, zip=international)
    info.add_text("Software", "test")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 20, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def exif_image(text: str, image_format: str, *, little_endian: bool = False) -> bytes:
    exif = Image.Exif()
    encoded = text.encode("utf-16-le" if little_endian else "utf-16-be")
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + encoded
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buffer, format=image_format, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("zipped", [False, True])
def test_png_parameters_text_is_read_without_decoding_pixels(zipped):
    found = read_image_text(png_with(SAMPLE_2, international=zipped))

    assert (found.format, found.width, found.height) == ("PNG", 32, 24)
    assert found.infotext == SAMPLE_2
    assert found.other == {"Software": "test"}


def test_png_utf8_text_in_an_itxt_chunk():
    found = read_image_text(png_with("un café, ネコ\nSteps: 5, Sampler: Euler, Seed: 1"))

    assert found.infotext is not None
    assert found.infotext.startswith("un café, ネコ")


@pytest.mark.parametrize("image_format", ["JPEG", "WEBP"])
def test_jpeg_and_webp_exif_user_comment(image_format):
    found = read_image_text(exif_image(SAMPLE_8, image_format))

    assert found.format == image_format
    assert found.infotext == SAMPLE_8


def test_little_endian_user_comment_is_read_too():
    assert decode_user_comment(b"UNICODE\x00" + "Steps: 5".encode("utf-16-le")) == "Steps: 5"
    assert decode_user_comment(b"ASCII\x00\x00\x00Steps: 5") == "Steps: 5"


def test_an_image_without_infotext_has_none():
    assert read_image_text(png_with(None)).infotext is None


@pytest.mark.parametrize(
    "data", [b"", b"not an image at all", b"GIF89a\x01\x00\x01\x00", b"\x89PNG\r\n\x1a\ntruncated"]
)
def test_anything_but_png_jpeg_webp_is_refused(data):
    with pytest.raises(NotAnImage):
        read_image_text(data)


def test_gif_is_refused_by_name():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")

    with pytest.raises(NotAnImage, match="GIF"):
        read_image_text(buffer.getvalue())
