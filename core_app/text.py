"""Rules for names people and programs read: aliases, user names, file names.

A name that shows one thing and means another is refused where it enters: control
characters (C0, DEL, C1) can rewrite a terminal or a log line, and the bidirectional
overrides, embeddings, isolates and marks make `evil\\u202egnp.safetensors` display as
`evilsrosnetefas.png`.
"""

import re

__all__ = ["UNSAFE_NAME_CHARACTERS", "has_unsafe_characters"]

UNSAFE_NAME_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def has_unsafe_characters(value: str) -> bool:
    """True when `value` holds a control character or a bidirectional formatting one."""
    return UNSAFE_NAME_CHARACTERS.search(value) is not None
