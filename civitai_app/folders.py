"""Where each Civitai model type goes on an A1111/Forge server (REFERENCE.md C.8), and
which list the server must refresh afterwards. The one place this mapping lives.

Folders are relative to a server's `models_dir` (its `models` folder as MobileSD sees it).
Textual-inversion embeddings are the exception: A1111 and Forge read them from
`embeddings/` at the install's root, a sibling of `models/`, so their folder is
`<models_dir>/../embeddings`. Because that is outside `models_dir`, MobileSD never creates
it: it must already exist (every A1111/Forge install has it), or the download is refused.
"""

from dataclasses import dataclass
from typing import Literal

Refresh = Literal["checkpoints", "loras", "embeddings", "vae", ""]

EMBEDDINGS_FOLDER = "../embeddings"


@dataclass(frozen=True)
class TypeFolder:
    """`folder` below models_dir; `refresh` = the server list to rescan afterwards
    ("" when the server has no API call for it: text encoders, upscalers and the like are
    found by its UI's refresh or a restart)."""

    folder: str
    refresh: Refresh


# Civitai ModelType (C.6) -> folder. Types missing here cannot be used by A1111/Forge as
# files in a models folder (workflows, wildcards, poses, ...) and are refused.
MODEL_TYPE_FOLDERS: dict[str, TypeFolder] = {
    "Checkpoint": TypeFolder("Stable-diffusion", "checkpoints"),
    # Forge lists UNet-only files (e.g. the Flux transformer) with the checkpoints.
    "UNet": TypeFolder("Stable-diffusion", "checkpoints"),
    "LORA": TypeFolder("Lora", "loras"),
    "LoCon": TypeFolder("Lora", "loras"),
    "DoRA": TypeFolder("Lora", "loras"),
    "TextualInversion": TypeFolder(EMBEDDINGS_FOLDER, "embeddings"),
    "VAE": TypeFolder("VAE", "vae"),
    "TextEncoder": TypeFolder("text_encoder", ""),
    "Hypernetwork": TypeFolder("hypernetworks", ""),
    "Controlnet": TypeFolder("ControlNet", ""),
    "Upscaler": TypeFolder("ESRGAN", ""),
}

# A file's own type wins over its model's: a checkpoint version may carry its VAE or text
# encoder as separate files, and a TI version a negative embedding.
FILE_TYPE_FOLDERS: dict[str, TypeFolder] = {
    "VAE": MODEL_TYPE_FOLDERS["VAE"],
    "Text Encoder": MODEL_TYPE_FOLDERS["TextEncoder"],
    "Negative": MODEL_TYPE_FOLDERS["TextualInversion"],
    "Upscaler": MODEL_TYPE_FOLDERS["Upscaler"],
    "ControlNet": MODEL_TYPE_FOLDERS["Controlnet"],
}
# File types that are not model files at all.
REFUSED_FILE_TYPES = frozenset({"Training Data", "Archive", "Workflow", "Config", "Other"})


def type_folder(model_type: str, file_type: str = "") -> TypeFolder | None:
    """The folder for a file of this model type and file type, or None if unsupported."""
    if file_type in REFUSED_FILE_TYPES:
        return None
    return FILE_TYPE_FOLDERS.get(file_type) or MODEL_TYPE_FOLDERS.get(model_type)


def refresh_for_folder(folder: str) -> Refresh:
    """The server list to rescan after a file landed in `folder`."""
    for entry in MODEL_TYPE_FOLDERS.values():
        if entry.folder == folder:
            return entry.refresh
    return ""


def creates_folder(folder: str) -> bool:
    """Whether MobileSD may create the folder (only below models_dir, never beside it)."""
    return not folder.startswith("..")
