"""Comparing checkpoint and model names across OS separators and hash suffixes."""

import re

# " [9f90c59f3a]" after a title: the short hash (or an older 8-hex one), group 1.
HASH_SUFFIX = re.compile(r"\s*\[([0-9a-fA-F]{8,64})\]\s*$")
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".gguf", ".pt", ".pth", ".bin", ".sft")


def strip_hash(name: str) -> str:
    return HASH_SUFFIX.sub("", name)


def file_stem(path: str) -> str:
    """The file name without folders and without a model file extension: the stem of
    `Pony\\x.safetensors` is `x`, of `sd_xl_base_1.0` (no extension) `sd_xl_base_1.0`."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    for extension in MODEL_EXTENSIONS:
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return name


def checkpoint_key(name: str | None) -> str:
    """A comparable form of a checkpoint name or title: `/` separators, no ` [hash]`,
    case folded. `Pony\\x.safetensors [9f90c59f3a]` and `pony/X.safetensors` are equal."""
    if not name:
        return ""
    return strip_hash(name.strip()).replace("\\", "/").casefold()
