"""File names that cannot escape their folder.

Two entry points:

* `check_user_file_name`: a name a user typed. Anything that could name another folder or
  a device is refused (`InvalidFileName`), never silently rewritten.
* `sanitize_remote_name`: a name from Civitai (`files[].name`, `Content-Disposition`).
  It is untrusted input too, but there is no one to ask, so it is made safe: folders are
  stripped, forbidden characters replaced, reserved device names prefixed.

Both keep the model file's extension, and `path_inside` is the last guard: the resolved
final path must sit directly in the type folder.
"""

import os
import re
import unicodedata
from pathlib import Path

from core_app.text import UNSAFE_NAME_CHARACTERS

MAX_NAME_BYTES = 200
# Windows refuses these in names; `/` and `\` separate folders on one OS or the other;
# control characters and bidirectional formatting make a name show as another
# (`evil\u202egnp.safetensors`).
_FORBIDDEN = re.compile(rf'[<>:"|?*/\\]|{UNSAFE_NAME_CHARACTERS.pattern}')
# CON, PRN, AUX, NUL, COM1-9, LPT1-9 (also with any extension, also superscript digits).
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


class InvalidFileName(ValueError):
    """A file name that is refused, with the reason as its message."""


def extension_of(name: str) -> str:
    """The extension with its dot, lower-case (`.safetensors`), or ""."""
    suffix = os.path.splitext(name)[1]
    return suffix.lower() if 1 < len(suffix) <= 16 and suffix[1:].isalnum() else ""


def _with_extension(name: str, extension: str) -> str:
    if extension and extension_of(name) != extension:
        return f"{name}{extension}"
    return name


def check_user_file_name(name: str, *, extension: str) -> str:
    """`name` with the model file's `extension` kept (appended unless already there).

    Raises `InvalidFileName` for names that are empty, contain a NUL, a control character
    or a bidirectional formatting one, a folder (`/`, `\\`), `..`, a drive or an absolute
    path, a reserved device name, a character Windows refuses, or end in a dot or space.
    """
    if "\x00" in name:
        raise InvalidFileName("The file name contains a NUL character.")
    stripped = name.strip()
    if not stripped:
        raise InvalidFileName("The file name is empty.")
    if stripped.startswith(("/", "\\")) or _DRIVE.match(stripped):
        raise InvalidFileName("The file name must not be an absolute path.")
    if "/" in stripped or "\\" in stripped:
        raise InvalidFileName("The file name must not contain folders ('/' or '\\').")
    if stripped in (".", "..") or stripped.startswith(".."):
        raise InvalidFileName("The file name must not start with '..'.")
    if stripped.startswith("."):
        raise InvalidFileName("The file name must not start with '.' (a hidden file).")
    if _FORBIDDEN.search(stripped):
        raise InvalidFileName(
            "The file name must not contain control characters, bidirectional formatting "
            'or <>:"|?*.'
        )
    if stripped.endswith((".", " ")):
        raise InvalidFileName("The file name must not end with a dot or a space.")
    final = _with_extension(stripped, extension)
    if _RESERVED.match(final):
        raise InvalidFileName(f"'{final.split('.')[0]}' is a reserved device name on Windows.")
    if len(final.encode()) > MAX_NAME_BYTES:
        raise InvalidFileName(f"The file name is longer than {MAX_NAME_BYTES} bytes.")
    return final


def sanitize_remote_name(name: str, *, fallback: str, extension: str = "") -> str:
    """A safe file name from an untrusted remote `name`.

    Keeps only the last path component (either separator), replaces characters Windows
    refuses, trims leading dots and trailing dots/spaces, prefixes reserved device names
    with `_`, shortens over-long names (keeping the extension), and keeps `extension`
    (the remote name's own when not given). Falls back to `fallback` when nothing is left.
    """
    text = unicodedata.normalize("NFC", name.replace("\x00", ""))
    base = re.split(r"[/\\]", text)[-1]
    extension = extension or extension_of(base)
    base = _FORBIDDEN.sub("_", base).strip().lstrip(".").rstrip(". ").strip()
    if not base or base in ("_", "__"):
        base = fallback
    base = _with_extension(base, extension)
    if _RESERVED.match(base):
        base = f"_{base}"
    if len(base.encode()) > MAX_NAME_BYTES:
        stem_bytes = MAX_NAME_BYTES - len(extension.encode())
        stem = base[: len(base) - len(extension)] if extension else base
        stem = stem.encode()[:stem_bytes].decode(errors="ignore").rstrip(". ")
        base = f"{stem}{extension}"
    return base


def path_inside(folder: Path, name: str) -> Path:
    """`folder / name`, after proving it is a direct child of `folder` once resolved
    (symlinks included). Raises `InvalidFileName` otherwise."""
    base = folder.resolve()
    final = (base / name).resolve()
    if final.parent != base or final.name != name:
        raise InvalidFileName(f"'{name}' would be written outside {base}.")
    return final


def stem_of(name: str) -> str:
    """The name without its extension: what the `.civitai.info` and `.preview.png` files
    beside the model are named after."""
    extension = extension_of(name)
    return name[: -len(extension)] if extension else name
