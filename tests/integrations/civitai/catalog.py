"""The Civitai catalogue the tests share: models with real file bytes, images with and
without A1111 metadata (test data for the Civitai client, simulator and app tests)."""

import random

from integrations.civitai.simulator import (
    Catalog,
    SimFile,
    SimImage,
    SimModel,
    SimVersion,
    safetensors_bytes,
)


def weights(seed: int, size: int, metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file of about `size` bytes of reproducible noise."""
    return safetensors_bytes(random.Random(seed).randbytes(size), metadata)


CHECKPOINT = weights(1, 3 * 1024 * 1024 + 123)  # > 2 MiB: it has an AutoV1 too
LORA = weights(2, 200_000, {"ss_output_name": "add_detail"})
EMBEDDING = weights(3, 20_000)
VAE = weights(4, 90_000)
OTHER = weights(5, 50_000)


def a1111_meta(checkpoint: SimFile, lora: SimFile) -> dict:
    """Civitai's flat meta of an image made with A1111 (infotext keys kept verbatim)."""
    return {
        "prompt": "a lighthouse at dusk, <lora:add_detail:0.6>",
        "negativePrompt": "blurry, lowres",
        "cfgScale": 6.5,
        "steps": 28,
        "sampler": "DPM++ 2M Karras",
        "seed": 1234567890,
        "clipSkip": 2,
        "Size": "832x1216",
        "Model": "juggernautXL_v9",
        "Model hash": checkpoint.hashes["AutoV2"].lower(),
        "Hires upscale": "1.5",
        "Hires steps": "10",
        "Hires upscaler": "4x-UltraSharp",
        "Denoising strength": "0.4",
        "Lora hashes": f"add_detail: {lora.hashes['AutoV3'].lower()}",
        "Version": "v1.10.1",
        "hashes": {
            "model": checkpoint.hashes["AutoV2"].lower(),
            "lora:add_detail": lora.hashes["AutoV3"].lower(),
        },
        "resources": [
            {"type": "model", "name": "juggernautXL_v9", "hash": checkpoint.hashes["AutoV2"]},
            {"type": "lora", "name": "add_detail", "weight": 0.6},
        ],
    }


def sample_catalog() -> Catalog:
    """Models with real file bytes and hashes, images with and without metadata."""
    checkpoint = SimFile(1000, "juggernautXL_v9.safetensors", CHECKPOINT, primary=True)
    checkpoint_fp32 = SimFile(
        1001, "juggernautXL_v9_fp32.safetensors", OTHER, fp="fp32", size="full"
    )
    vae = SimFile(1002, "juggernautXL_vae.safetensors", VAE, type="VAE")
    lora = SimFile(2000, "add_detail.safetensors", LORA, primary=True)
    embedding = SimFile(9000, "easynegative.safetensors", EMBEDDING, primary=True)

    def single(file_id: int, name: str, **flags) -> SimVersion:
        return SimVersion(
            file_id // 10, f"v{file_id}", [SimFile(file_id, name, OTHER, primary=True)], **flags
        )

    with_meta = SimImage(5001, meta=a1111_meta(checkpoint, lora), width=832, height=1216)
    without_meta = SimImage(5002, meta=None)
    on_site = SimImage(
        5003,
        meta={
            "prompt": "a red fox in snow",
            "negativePrompt": "",
            "steps": 25,
            "cfgScale": 4,
            "sampler": "Euler a",
            "seed": 42,
            "width": 1024,
            "height": 1024,
            "civitaiResources": [
                {"type": "checkpoint", "modelVersionId": 100},
                {"type": "lora", "weight": 0.8, "modelVersionId": 200},
            ],
        },
    )
    mature = SimImage(5004, meta={"prompt": "x", "steps": 20}, nsfw_level="X")
    models = [
        SimModel(
            10,
            "Juggernaut XL",
            "Checkpoint",
            [SimVersion(100, "v9", [checkpoint, checkpoint_fp32, vae], images=[with_meta])],
        ),
        SimModel(20, "Detail Tweaker", "LORA", [SimVersion(200, "v1", [lora])]),
        SimModel(
            30, "Login Only", "Checkpoint", [single(3000, "login.safetensors", require_auth=True)]
        ),
        SimModel(
            40,
            "Early Bird",
            "LORA",
            [single(4000, "early.safetensors", early_access_deadline="2030-01-01T00:00:00.000Z")],
        ),
        SimModel(50, "Old Model", "Checkpoint", [single(5000, "old.safetensors")], mode="Archived"),
        SimModel(
            60, "No Downloads", "LORA", [single(6000, "nodl.safetensors", downloads_disabled=True)]
        ),
        SimModel(
            70,
            "Wrong Hash",
            "Checkpoint",
            [
                SimVersion(
                    700,
                    "v1",
                    [
                        SimFile(
                            7000,
                            "wrong.safetensors",
                            OTHER,
                            primary=True,
                            published_sha256="AB" * 32,
                        )
                    ],
                )
            ],
        ),
        SimModel(80, "Escaper", "LORA", [single(8000, "../../escape.safetensors")]),
        SimModel(90, "EasyNegative", "TextualInversion", [SimVersion(900, "v1", [embedding])]),
        SimModel(95, "Poses", "Poses", [single(9500, "poses.zip")]),
        SimModel(
            96, "Paid", "LORA", [single(9600, "paid.safetensors", allowed_keys={"buyer-key"})]
        ),
    ]
    return Catalog(models, [with_meta, without_meta, on_site, mature])
