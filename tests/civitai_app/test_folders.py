"""Where each Civitai model type goes on an A1111/Forge server, and what it rescans."""

import pytest

from civitai_app.folders import EMBEDDINGS_FOLDER, refresh_for_folder, type_folder


@pytest.mark.parametrize(
    ("model_type", "file_type", "folder"),
    [
        ("Checkpoint", "Model", "Stable-diffusion"),
        ("Checkpoint", "Pruned Model", "Stable-diffusion"),
        ("Checkpoint", "VAE", "VAE"),
        ("UNet", "Model", "Stable-diffusion"),
        ("LORA", "Model", "Lora"),
        ("LoCon", "Model", "Lora"),
        ("DoRA", "Model", "Lora"),
        ("TextualInversion", "Model", EMBEDDINGS_FOLDER),
        ("TextualInversion", "Negative", EMBEDDINGS_FOLDER),
        ("VAE", "Model", "VAE"),
        ("TextEncoder", "Model", "text_encoder"),
        ("Hypernetwork", "Model", "hypernetworks"),
        ("Controlnet", "Model", "ControlNet"),
        ("Upscaler", "Model", "ESRGAN"),
    ],
)
def test_each_type_has_its_folder(model_type, file_type, folder):
    found = type_folder(model_type, file_type)

    assert found is not None
    assert found.folder == folder


@pytest.mark.parametrize(
    ("model_type", "file_type"),
    [
        ("Poses", "Model"),
        ("Wildcards", "Model"),
        ("Workflows", "Model"),
        ("Checkpoint", "Training Data"),
    ],
)
def test_types_without_a_place_are_unsupported(model_type, file_type):
    assert type_folder(model_type, file_type) is None


def test_folders_the_server_can_rescan_name_their_rescan():
    assert refresh_for_folder("Stable-diffusion") == "checkpoints"
    assert refresh_for_folder("Lora") == "loras"
    assert refresh_for_folder(EMBEDDINGS_FOLDER) == "embeddings"
    assert refresh_for_folder("VAE") == "vae"
    assert refresh_for_folder("ESRGAN") == ""
