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
    """A comparable form of a checkpoint name or title: `/` separators, no ` [hash]`, no
    leading `./`, case folded. `Pony\\x.safetensors [9f90c59f3a]` and `pony/X.safetensors`
    are equal, and so are `./x.safetensors` and `x.safetensors` (the original MobileSD
    builds a top-level model's name as `relativePath/filename` with `relativePath` ".")."""
    if not name:
        return ""
    key = strip_hash(name.strip()).replace("\\", "/").casefold()
    while key.startswith("./"):
        key = key[2:]
    return key


def checkpoint_hashes(title: str, *hashes: str) -> tuple[str, ...]:
    """The known hashes of a checkpoint, lowercase: the ` [hash]` of its title and the
    given ones (short hash, SHA-256), blanks left out."""
    found = HASH_SUFFIX.search(title or "")
    candidates = [found.group(1) if found else "", *hashes]
    return tuple(dict.fromkeys(h.strip().lower() for h in candidates if h and h.strip()))


def checkpoint_ran_as(
    *, title: str, hashes: tuple[str, ...], reported_hash: object, reported_name: object
) -> bool | None:
    """Whether the checkpoint the server reports it used (`sd_model_hash`, `sd_model_name`
    of a generation's info) is `title` (with its known `hashes`); None when it reported
    neither, so nothing can be said.

    A hash on both sides decides (one a prefix of the other: a 10-hex short hash against a
    SHA-256 or an older 8-hex hash); otherwise the file stem, case folded, does.
    """
    reported = reported_hash.strip().lower() if isinstance(reported_hash, str) else ""
    if len(reported) >= 8 and hashes:
        return any(known.startswith(reported) or reported.startswith(known) for known in hashes)
    name = reported_name.strip() if isinstance(reported_name, str) else ""
    if not name:
        return None
    return file_stem(strip_hash(title)).casefold() == file_stem(name).casefold()
