"""GET /api/v1/civitai/image-info (a Civitai image) and POST (an uploaded file)."""

import io

import pytest
from PIL import Image, PngImagePlugin

from civitai_app.models import Download
from servers_app.model_cache import ModelRow
from servers_app.models import CachedModel, ModelKind, Server
from tests.support import assert_error, db_snapshot

URL = "/api/v1/civitai/image-info"


def snapshot() -> dict:
    return {
        **db_snapshot(),
        "downloads": sorted(str(pk) for pk in Download.objects.values_list("pk", flat=True)),
    }


def cache(server: Server, kind: str, path: str, *, short_hash: str = "", sha256: str = "") -> None:
    name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    row = ModelRow(
        kind=kind, title=path, name=name, relative_path=path, short_hash=short_hash, sha256=sha256
    )
    CachedModel.objects.create(server=server, **row.fields())


@pytest.fixture
def cached(laptop, catalog) -> Server:
    """Laptop has the image's checkpoint (known by its short hash) and LoRA (by AutoV3)."""
    checkpoint, lora = catalog.file(1000)[2], catalog.file(2000)[2]
    cache(
        laptop,
        ModelKind.CHECKPOINT,
        "SDXL/juggernautXL_v9.safetensors",
        short_hash=checkpoint.hashes["AutoV2"].lower(),
    )
    cache(
        laptop, ModelKind.LORA, "add_detail.safetensors", short_hash=lora.hashes["AutoV3"].lower()
    )
    return laptop


def test_an_image_with_metadata_becomes_a_recipe_for_our_servers(client, civitai, cached):
    response = client.get(URL, {"image_id": 5001})

    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "civitai"
    assert body["has_metadata"] is True
    assert body["image"]["id"] == 5001
    assert (body["image"]["width"], body["image"]["height"]) == (832, 1216)
    assert body["generation_params"] == {
        "positive_prompt": "a lighthouse at dusk, <lora:add_detail:0.6>",
        "negative_prompt": "blurry, lowres",
        "steps": 28,
        "width": 832,
        "height": 1216,
        "seed": 1234567890,
        "clip_skip": 2,
        "hires_steps": 10,
        "cfg_scale": 6.5,
        "denoising_strength": 0.4,
        "hires_scale": 1.5,
        "sampler_name": "DPM++ 2M",
        "scheduler_or_quality_preset": "Karras",
        "enable_hires_fix": True,
        "upscaler_model": "4x-UltraSharp",
        "checkpoint_name": "SDXL/juggernautXL_v9.safetensors",
        "num_images": 1,
    }
    assert body["raw_metadata"]["Model"] == "juggernautXL_v9"
    assert body["warnings"] == []


def test_resources_name_civitai_ids_hashes_and_our_servers(client, civitai, cached, catalog):
    resources = client.get(URL, {"image_id": 5001}).json()["resources"]

    checkpoint, lora = resources
    assert checkpoint["type"] == "Checkpoint"
    assert (checkpoint["model_id"], checkpoint["model_version_id"]) == (10, 100)
    assert checkpoint["model_name"] == "Juggernaut XL"
    assert checkpoint["hashes"]["SHA256"] == catalog.file(1000)[2].hashes["SHA256"]
    assert checkpoint["servers"] == ["Laptop"]
    assert lora["type"] == "LORA"
    assert (lora["name"], lora["weight"]) == ("add_detail", 0.6)
    assert (lora["model_id"], lora["model_version_id"]) == (20, 200)
    assert lora["servers"] == ["Laptop"]


def test_the_recipe_is_accepted_by_generate(client, civitai, cached):
    params = client.get(URL, {"image_id": 5001}).json()["generation_params"]

    response = client.post(
        "/api/v1/generate",
        {"target_server_alias": "Laptop", "generation_params": params},
        format="json",
    )

    assert response.status_code == 202, response.json()


def test_a_server_that_has_a_resource_by_name_only_is_found(client, civitai, laptop):
    cache(laptop, ModelKind.LORA, "Styles/add_detail.safetensors")

    resources = client.get(URL, {"image_id": 5001}).json()["resources"]

    assert resources[1]["servers"] == ["Laptop"]
    assert resources[0]["servers"] == []


def test_an_on_site_image_lists_its_civitai_resources_with_weights(client, civitai, laptop):
    cache(laptop, ModelKind.LORA, "detail/add_detail.safetensors")

    body = client.get(URL, {"image_id": 5003}).json()

    assert [(r["type"], r["model_version_id"], r["weight"]) for r in body["resources"]] == [
        ("Checkpoint", 100, None),
        ("LORA", 200, 0.8),
    ]
    # Its prompt has no <lora:> tags: the LoRA comes as a `loras` entry, in our name.
    assert body["generation_params"]["loras"] == [{"name": "add_detail", "weight": 0.8}]
    assert (body["generation_params"]["width"], body["generation_params"]["height"]) == (1024, 1024)


def test_an_image_without_metadata_is_a_clear_answer_not_an_error(client, civitai):
    response = client.get(URL, {"image_id": 5002})

    assert response.status_code == 200
    body = response.json()
    assert body["has_metadata"] is False
    assert "no generation data" in body["message"]
    assert body["generation_params"] is None
    assert body["resources"] == []


def test_the_image_page_url_works_too(client, civitai):
    response = client.get(URL, {"url": "https://civitai.com/images/5002?period=AllTime"})

    assert response.status_code == 200
    assert response.json()["image"]["id"] == 5002


def test_an_image_civitai_does_not_show_is_404(client, civitai):
    assert_error(client.get(URL, {"image_id": 424242}), 404, "civitai_image_not_found")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"image_id": "abc"}, "validation_error"),
        ({"image_id": "0"}, "validation_error"),
        ({"image_id": "99999999999"}, "validation_error"),
        ({}, "validation_error"),
        ({"image_id": "1", "url": "https://civitai.com/images/1"}, "validation_error"),
        ({"url": "https://evil.example/images/1"}, "invalid_civitai_url"),
        ({"url": "https://civitai.com/models/1"}, "invalid_civitai_url"),
        ({"url": "javascript:alert(1)"}, "invalid_civitai_url"),
        ({"url": "https://civitai.com/images/../models/1"}, "invalid_civitai_url"),
    ],
)
def test_malformed_ids_and_urls_are_400_and_ask_civitai_nothing(client, civitai, query, code):
    before = snapshot()

    assert_error(client.get(URL, query), 400, code)
    assert civitai.requests == []
    assert snapshot() == before


def test_civitai_rate_limiting_that_persists_is_429(client, civitai):
    civitai.faults.fail_next("/api/v1/images", 429, times=5)

    body = assert_error(client.get(URL, {"image_id": 5001}), 429, "civitai_rate_limited")
    assert "rate-limiting" in body["message"]


def test_civitai_down_is_502(client, civitai, settings):
    settings.CIVITAI_BASE_URL = "http://127.0.0.1:9"

    assert_error(client.get(URL, {"image_id": 5001}), 502, "civitai_unavailable")


def test_image_info_needs_an_api_key(anon_client, civitai):
    assert_error(anon_client.get(URL, {"image_id": 5001}), 401, "authentication_required")


# --- uploads ---------------------------------------------------------------------------------


def png(text: str | None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def jpeg(text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def infotext(catalog) -> str:
    checkpoint, lora = catalog.file(1000)[2], catalog.file(2000)[2]
    return (
        "a lighthouse, <lora:add_detail:0.7>\nNegative prompt: fog\n"
        "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5, Seed: 77, "
        "Size: 1024x768, "
        f"Model hash: {checkpoint.hashes['AutoV2'].lower()}, Model: jugg, "
        f'Lora hashes: "add_detail: {lora.hashes["AutoV3"].lower()}", Version: v1.10.1'
    )


def upload(client, data: bytes, name: str = "image.png"):
    return client.post(URL, {"image": io.BytesIO(data)}, format="multipart")


def test_an_uploaded_png_answers_in_the_same_shape(client, civitai, cached, catalog):
    response = upload(client, png(infotext(catalog)))

    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "file"
    assert body["image"]["format"] == "PNG"
    assert body["generation_params"]["positive_prompt"] == "a lighthouse, <lora:add_detail:0.7>"
    assert body["generation_params"]["checkpoint_name"] == "SDXL/juggernautXL_v9.safetensors"
    assert body["generation_params"]["scheduler_or_quality_preset"] == "Automatic"
    assert [(r["type"], r["model_version_id"], r["servers"]) for r in body["resources"]] == [
        ("Checkpoint", 100, ["Laptop"]),
        ("LORA", 200, ["Laptop"]),
    ]
    assert body["raw_metadata"]["infotext"] == infotext(catalog)
    assert body["raw_metadata"]["parameters"]["Model"] == "jugg"


def test_a_raw_jpeg_body_with_exif_is_read(client, civitai, catalog):
    response = client.generic("POST", URL, jpeg(infotext(catalog)), content_type="image/jpeg")

    assert response.status_code == 200
    assert response.json()["image"]["format"] == "JPEG"
    assert response.json()["generation_params"]["steps"] == 30


def test_a_raw_body_sent_as_octet_stream_is_read_by_its_bytes(client, civitai, catalog):
    # What generated API clients send for a binary body.
    response = client.generic(
        "POST", URL, jpeg(infotext(catalog)), content_type="application/octet-stream"
    )

    assert response.status_code == 200
    assert response.json()["image"]["format"] == "JPEG"


def test_an_upload_without_infotext_is_a_clear_answer(client, civitai):
    body = upload(client, png(None)).json()

    assert body["has_metadata"] is False
    assert body["generation_params"] is None


def test_civitai_down_only_warns_for_an_upload(client, settings, catalog, laptop):
    settings.CIVITAI_BASE_URL = "http://127.0.0.1:9"
    settings.CIVITAI_BACKOFF_SECONDS = 0.001

    response = upload(client, png(infotext(catalog)))

    assert response.status_code == 200
    assert response.json()["warnings"]
    assert response.json()["generation_params"]["steps"] == 30


@pytest.mark.parametrize(
    "data", [b"plain text, not an image", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", b""]
)
def test_a_non_image_upload_is_400(client, civitai, data):
    before = snapshot()

    assert_error(upload(client, data), 400, "invalid_image")
    assert snapshot() == before


def test_a_too_large_upload_is_413(client, civitai, settings):
    settings.MOBILESD_MAX_IMAGE_UPLOAD_BYTES = 1000
    big = png("x" * 5000)

    assert_error(upload(client, big + b"\x00" * 70_000), 413, "payload_too_large")
    assert_error(
        client.generic("POST", URL, big, content_type="image/png"), 413, "payload_too_large"
    )


def test_an_upload_needs_the_image_field_and_an_image_type(client, civitai):
    assert_error(client.post(URL, {"other": "x"}, format="multipart"), 400, "validation_error")
    assert_error(client.post(URL, {"image": "x"}, format="json"), 415, "unsupported_media_type")
