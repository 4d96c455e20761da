"""Comparing checkpoint names across OS separators and hash suffixes."""

import re

_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")


def checkpoint_key(name: str | None) -> str:
    """A comparable form of a checkpoint name or title: `/` separators, no ` [hash]`,
    case folded. `Pony\\x.safetensors [9f90c59f3a]` and `pony/X.safetensors` are equal."""
    if not name:
        return ""
    return _HASH_SUFFIX.sub("", name.strip()).replace("\\", "/").casefold()
