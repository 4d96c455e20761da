"""The infotext inside an image file (REFERENCE.md D.1 "Container").

* PNG: the `parameters` text chunk (`tEXt`, `zTXt` or `iTXt`). The chunks are walked
  directly, so no pixel is ever decoded (a small file cannot expand into a huge bitmap).
* JPEG and WebP: the EXIF `UserComment` (A1111 writes it with piexif as
  `UNICODE\\0` + UTF-16), else a JPEG comment.

Anything that is not a PNG, JPEG or WebP is refused with `NotAnImage`.
"""

import io
import struct
import zlib
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_TEXT_BYTES = 1024 * 1024
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
# Text chunks other than `parameters` kept in the answer, each cut to this many characters.
_MAX_OTHER_CHARS = 10_000


class NotAnImage(ValueError):
    """The bytes are not a PNG, JPEG or WebP image."""


@dataclass
class ImageText:
    format: str
    width: int
    height: int
    infotext: str | None
    other: dict[str, str] = field(default_factory=dict)


def read_image_text(data: bytes) -> ImageText:
    """The format, size and infotext (None when there is none) of an uploaded image."""
    try:
        image = Image.open(io.BytesIO(data))
        image_format = (image.format or "").upper()
        width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise NotAnImage("The file is not a PNG, JPEG or WebP image.") from exc
    if image_format not in ("PNG", "JPEG", "WEBP"):
        raise NotAnImage(
            f"{image_format or 'This'} images are not supported: send a PNG, JPEG or WebP."
        )
    if image_format == "PNG":
        texts = png_texts(data)
        infotext = texts.pop("parameters", None)
    else:
        texts = {}
        infotext = _exif_user_comment(image)
        comment = image.info.get("comment")
        if infotext is None and isinstance(comment, bytes) and comment.strip():
            infotext = comment.decode("utf-8", errors="replace")
    other = {key: value[:_MAX_OTHER_CHARS] for key, value in texts.items()}
    if infotext is not None and not infotext.strip():
        infotext = None
    return ImageText(image_format, width, height, infotext, other)


def png_texts(data: bytes) -> dict[str, str]:
    """Every text chunk of a PNG: {keyword: text} (the first of each keyword)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise NotAnImage("The file is not a PNG image.")
    texts: dict[str, str] = {}
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IEND":
            break
        try:
            decoded = _text_chunk(kind, body)
        except (ValueError, zlib.error):
            continue  # a damaged chunk: skip it, as viewers do
        if decoded is not None and decoded[0] not in texts:
            texts[decoded[0]] = decoded[1]
    return texts


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(raw, _MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("text chunk too large")
    return text


def _text_chunk(kind: bytes, body: bytes) -> tuple[str, str] | None:
    if kind == b"tEXt":
        keyword, _, text = body.partition(b"\x00")
        return keyword.decode("latin-1"), text.decode("latin-1")
    if kind == b"zTXt":
        keyword, _, rest = body.partition(b"\x00")
        return keyword.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    if kind == b"iTXt":
        keyword, _, rest = body.partition(b"\x00")
        compressed, rest = rest[0], rest[2:]
        _language, _, rest = rest.partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        raw = _inflate(text) if compressed else text
        return keyword.decode("latin-1"), raw.decode("utf-8", errors="replace")
    return None


def decode_user_comment(raw: bytes | str) -> str:
    """An EXIF UserComment: an 8-byte character-code prefix, then the text."""
    if isinstance(raw, str):
        return raw
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16")
        # piexif writes big-endian; some Windows tools little-endian. ASCII text shows
        # which: its zero bytes come first in big-endian.
        zeros_even = body[0::2].count(0)
        zeros_odd = body[1::2].count(0)
        return body.decode(
            "utf-16-be" if zeros_even >= zeros_odd else "utf-16-le", errors="replace"
        )
    if prefix.startswith(b"ASCII"):
        return body.decode("latin-1")
    return (body if prefix.strip(b"\x00") == b"" else raw).decode("utf-8", errors="replace")


def _exif_user_comment(image: Image.Image) -> str | None:
    try:
        exif = image.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except (OSError, ValueError, SyntaxError, struct.error):
        return None
    if not raw:
        return None
    return decode_user_comment(raw).rstrip("\x00")
