"""The one reader of the A1111/Forge infotext inside image bytes (REFERENCE.md D.1,
"Container"): for the images a job stores and for the files sent to image-info.

* PNG: the `parameters` text chunk, `tEXt`, `zTXt` or `iTXt` (Pillow's `PngInfo.add_text`
  writes `tEXt`, or `iTXt` when the text is not Latin-1). The chunks are walked in the
  bytes, so a chunk after the image data is found too; the other text chunks are kept.
  A PNG without one falls back to the UserComment of its `eXIf` chunk.
* JPEG and WebP: the EXIF UserComment, in any of its character codes (A1111 writes
  `UNICODE\\0` + UTF-16 big-endian with piexif; other tools write ASCII, JIS, an
  undefined code or UTF-16 in the TIFF's byte order); else a JPEG comment (`COM`).

Invariants: no pixel is ever decoded (a small file cannot expand into a huge bitmap), and
only a well-formed PNG, JPEG or WebP is read: anything else is `UnreadableImage`. Pillow
only, no Django.
"""

import io
import logging
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import ExifTags, Image, UnidentifiedImageError

__all__ = [
    "IMAGE_FORMATS",
    "ImageText",
    "UnreadableImage",
    "decode_user_comment",
    "read_image_text",
]

logger = logging.getLogger(__name__)

# Pillow's names of the formats A1111/Forge write (option `samples_format`).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow's own ceiling for one text chunk: a zTXt/iTXt bomb is cut off here.
_MAX_TEXT_BYTES = 1024 * 1024
# What Pillow reads to tell formats apart.
_SIGNATURE_BYTES = 16


class UnreadableImage(ValueError):
    """The bytes are not a well-formed PNG, JPEG or WebP image; the message says which."""


@dataclass(frozen=True)
class ImageText:
    """What an image says about itself. `format` is Pillow's name (`PNG`, `JPEG`, `WEBP`);
    `infotext` is the text exactly as written, "" when the image carries none;
    `other_texts` are a PNG's other text chunks ({keyword: text}, the first of each)."""

    format: str
    width: int
    height: int
    infotext: str
    other_texts: dict[str, str] = field(default_factory=dict)


def read_image_text(data: bytes) -> ImageText:
    """The format, size and infotext of image bytes, without decoding a pixel.

    Raises `UnreadableImage` for anything but a well-formed PNG, JPEG or WebP.
    """
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            image_format = str(image.format)
            width, height = image.size
            if image_format == "PNG":
                texts, exif = _png_texts(data)
                infotext = texts.pop("parameters", None)
                if infotext is None:
                    infotext = _exif_user_comment(exif, image_format)
            else:
                texts = {}
                infotext = _exif_user_comment(image.info.get("exif"), image_format)
                infotext = infotext or _jpeg_comment(image)
            # Checks the structure (PNG: every chunk's CRC, so truncation) without decoding.
            image.verify()
    except UnidentifiedImageError as exc:
        raise UnreadableImage(_not_ours_message(data)) from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"The image is too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        # Pillow reports broken files with any of these.
        raise UnreadableImage(f"The image is damaged: {exc}") from exc
    return ImageText(image_format, width, height, infotext, texts)


def _not_ours_message(data: bytes) -> str:
    """Name a refused format when a Pillow plugin's signature check knows it (the check
    looks at the first bytes only: nothing of the file is parsed)."""
    prefix = data[:_SIGNATURE_BYTES]
    Image.init()
    for name, (_factory, accept) in Image.OPEN.items():
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            recognised = bool(accept(prefix))
        except (IndexError, SyntaxError, TypeError, struct.error):  # as Image.open does
            recognised = False
        if recognised:
            return f"{name} images are not supported: send a PNG, JPEG or WebP."
    return "The data is not a PNG, JPEG or WebP image."


# --- PNG --------------------------------------------------------------------------------------


def _png_texts(data: bytes) -> tuple[dict[str, str], bytes | None]:
    """Every text chunk of a PNG ({keyword: text}, the first of each keyword) and its
    `eXIf` chunk. A damaged text chunk is skipped, as viewers do."""
    texts: dict[str, str] = {}
    exif: bytes | None = None
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IEND":
            break
        if kind == b"eXIf" and exif is None:
            exif = body
            continue
        decode = _TEXT_CHUNKS.get(kind)
        if decode is None:
            continue
        try:
            keyword, text = decode(body)
        except (ValueError, IndexError, zlib.error):
            continue
        texts.setdefault(keyword, text)
    return texts, exif


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(raw, _MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("text chunk too large")
    return text


def _read_text(body: bytes) -> tuple[str, str]:
    keyword, _, text = body.partition(b"\x00")
    return keyword.decode("latin-1"), text.decode("latin-1")


def _read_compressed_text(body: bytes) -> tuple[str, str]:
    keyword, _, rest = body.partition(b"\x00")
    return keyword.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")


def _read_international_text(body: bytes) -> tuple[str, str]:
    keyword, _, rest = body.partition(b"\x00")
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    raw = _inflate(text) if compressed else text
    return keyword.decode("latin-1"), raw.decode("utf-8", errors="replace")


_TEXT_CHUNKS: dict[bytes, Callable[[bytes], tuple[str, str]]] = {
    b"tEXt": _read_text,
    b"zTXt": _read_compressed_text,
    b"iTXt": _read_international_text,
}


# --- EXIF ---------------------------------------------------------------------------------------


def _exif_user_comment(raw: object, image_format: str) -> str:
    """The decoded UserComment of an EXIF block (JPEG APP1, WebP EXIF, PNG eXIf), or ""."""
    if not isinstance(raw, bytes) or not raw:
        return ""
    try:
        exif = Image.Exif()
        exif.load(raw)
        comment = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    except Exception:  # a damaged EXIF block costs the infotext, not the image
        logger.warning("Unreadable EXIF block in a %s image", image_format, exc_info=True)
        return ""
    if not isinstance(comment, bytes | str) or not comment:
        return ""
    return decode_user_comment(comment, byte_order=exif.endian)


def _jpeg_comment(image: Image.Image) -> str:
    """A JPEG `COM` segment, where some tools put the infotext instead of the EXIF."""
    comment = image.info.get("comment")
    if isinstance(comment, bytes) and comment.strip():
        return comment.decode("utf-8", errors="replace")
    return ""


def _decode_unicode(body: bytes, byte_order: str | None) -> str:
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return body.decode("utf-16", errors="replace")
    # piexif writes big-endian; other tools the TIFF's byte order. The zero bytes of ASCII
    # characters come first in big-endian, so they tell; the TIFF header breaks a tie.
    zeros_even, zeros_odd = body[0::2].count(0), body[1::2].count(0)
    big = zeros_even > zeros_odd or (zeros_even == zeros_odd and byte_order != "<")
    return body.decode("utf-16-be" if big else "utf-16-le", errors="replace")


def _decode_ascii(body: bytes, byte_order: str | None) -> str:
    # UTF-8 under the ASCII code is common; bytes that are not UTF-8 are read as Latin-1.
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def _decode_jis(body: bytes, byte_order: str | None) -> str:
    return body.decode("shift_jis", errors="replace")


def _decode_undefined(body: bytes, byte_order: str | None) -> str:
    return body.decode("utf-8", errors="replace")


# EXIF 2.3 table 9: the 8-byte character code in front of the text, without its padding.
_CHARACTER_CODES: dict[bytes, Callable[[bytes, str | None], str]] = {
    b"UNICODE": _decode_unicode,
    b"ASCII": _decode_ascii,
    b"JIS": _decode_jis,
    b"": _decode_undefined,  # eight NUL bytes: an undefined code, UTF-8 in practice
}


def decode_user_comment(value: bytes | str, *, byte_order: str | None = None) -> str:
    """The text of an EXIF UserComment, trailing NULs removed. `byte_order` is the TIFF's
    ("<" or ">"), for UTF-16 without a byte-order mark. A value without a character code
    is read as A1111's reader reads it: the whole value as UTF-8."""
    if isinstance(value, str):  # typed ASCII by its writer, so Pillow decoded it
        return value.rstrip("\x00")
    decode = _CHARACTER_CODES.get(value[:8].rstrip(b"\x00 "))
    if decode is None:
        text = value.decode("utf-8", errors="ignore")
    else:
        text = decode(value[8:], byte_order)
    return text.rstrip("\x00")
