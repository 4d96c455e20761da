"""The one image-text reader: every real infotext sample (contracts/infotext-samples.json)
written into every container and EXIF character code as A1111/Forge and other tools write
it, read back; and the reader's refusals."""

import codecs
import io
import zlib
from collections.abc import Callable

import pytest
from PIL import ExifTags, Image, ImageFile, PngImagePlugin, WebPImagePlugin

from integrations.forge.image_text import UnreadableImage, decode_user_comment, read_image_text
from tests.support import INFOTEXT_SAMPLES

SAMPLES = INFOTEXT_SAMPLES
SAMPLE_2, SAMPLE_8 = SAMPLES[2], SAMPLES[8]


# --- writers: Pillow, as A1111/Forge (and the tools after them) write the text -----------------


def png_with(text: str | None, *, write: str = "add_text", zip: bool = False) -> bytes:
    """A PNG with the text in a `parameters` chunk (`add_text`: tEXt, or iTXt when not
    Latin-1, zTXt when zipped; `add_itxt`: always iTXt) and a `Software` chunk."""
    info = PngImagePlugin.PngInfo()
    if text is not None:
        getattr(info, write)("parameters", text, zip=zip)
    info.add_text("Software", "test")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 20, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def exif_with(comment: bytes, *, endian: str = ">") -> Image.Exif:
    """An EXIF block holding this UserComment, in a TIFF of this byte order (piexif, which
    A1111 uses, writes big-endian)."""
    exif = Image.Exif()
    exif.endian = endian
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = comment
    return exif


def saved(image_format: str, exif: Image.Exif) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buffer, format=image_format, exif=exif.tobytes())
    return buffer.getvalue()


# The EXIF UserComment encodings: (character code + text, TIFF byte order).
COMMENTS: dict[str, Callable[[str], tuple[bytes, str]]] = {
    # A1111/Forge: piexif.helper.UserComment.dump(text, encoding="unicode").
    "unicode-be": lambda text: (b"UNICODE\x00" + text.encode("utf-16-be"), ">"),
    "unicode-le": lambda text: (b"UNICODE\x00" + text.encode("utf-16-le"), "<"),
    "unicode-le-in-a-big-endian-tiff": lambda t: (b"UNICODE\x00" + t.encode("utf-16-le"), ">"),
    "unicode-bom-be": lambda text: (
        b"UNICODE\x00" + codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        "<",
    ),
    "unicode-bom-le": lambda text: (
        b"UNICODE\x00" + codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
        ">",
    ),
    "ascii": lambda text: (b"ASCII\x00\x00\x00" + text.encode("ascii"), ">"),
    "jis": lambda text: (b"JIS\x00\x00\x00\x00\x00" + text.encode("shift_jis"), ">"),
    "undefined": lambda text: (b"\x00" * 8 + text.encode("utf-8"), "<"),
}


def png_writer(write: str, *, zip: bool = False) -> Callable[[str], bytes]:
    return lambda text: png_with(text, write=write, zip=zip)


def exif_writer(image_format: str, encoding: str) -> Callable[[str], bytes]:
    def write(text: str) -> bytes:
        comment, endian = COMMENTS[encoding](text)
        return saved(image_format, exif_with(comment, endian=endian))

    return write


CONTAINERS: dict[str, tuple[str, Callable[[str], bytes]]] = {
    "png-tEXt": ("PNG", png_writer("add_text")),  # A1111/Forge
    "png-zTXt": ("PNG", png_writer("add_text", zip=True)),
    "png-iTXt": ("PNG", png_writer("add_itxt")),
    "png-iTXt-compressed": ("PNG", png_writer("add_itxt", zip=True)),
    "png-eXIf-unicode-be": ("PNG", exif_writer("PNG", "unicode-be")),
    **{
        f"{fmt.lower()}-exif-{encoding}": (fmt, exif_writer(fmt, encoding))
        for fmt in ("JPEG", "WEBP")
        for encoding in COMMENTS
    },
}


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("sample", SAMPLES)
def test_every_sample_reads_back_from_every_container(sample, container):
    image_format, write = CONTAINERS[container]

    found = read_image_text(write(SAMPLES[sample]))

    assert (found.format, found.width, found.height) == (image_format, 32, 24)
    assert found.infotext == SAMPLES[sample]


def test_the_samples_are_the_eight_of_the_reference():
    assert sorted(SAMPLES) == list(range(1, 9))
    assert SAMPLES[5].startswith("cat portrait, \nNegative prompt: \n")  # verbatim spaces


def refuse_to_decode(self):
    raise AssertionError("pixel data decoded")


# --- PNG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("zipped", [False, True])
def test_png_parameters_text_is_read_without_decoding_pixels(zipped, monkeypatch):
    data = png_with(SAMPLE_2, zip=zipped)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    found = read_image_text(data)

    assert (found.format, found.width, found.height) == ("PNG", 32, 24)
    assert found.infotext == SAMPLE_2
    assert found.other_texts == {"Software": "test"}


def test_png_utf8_text_in_an_itxt_chunk():
    found = read_image_text(png_with("un café, ネコ\nSteps: 5, Sampler: Euler, Seed: 1"))

    assert found.infotext.startswith("un café, ネコ")


def test_png_text_after_the_image_data_is_found_too():
    data = png_with(None)
    end = data.rindex(b"IEND") - 4  # the IEND chunk's length field
    body = b"parameters\x00" + SAMPLE_2.encode("latin-1")
    crc = zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    late = len(body).to_bytes(4, "big") + b"tEXt" + body + crc

    found = read_image_text(data[:end] + late + data[end:])

    assert found.infotext == SAMPLE_2


def test_an_image_without_infotext_has_none():
    assert read_image_text(png_with(None)).infotext == ""
    assert read_image_text(saved("JPEG", Image.Exif())).infotext == ""


# --- JPEG and WebP ---------------------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["JPEG", "WEBP"])
def test_jpeg_and_webp_exif_user_comment(image_format):
    found = read_image_text(exif_writer(image_format, "unicode-be")(SAMPLE_8))

    assert found.format == image_format
    assert found.infotext == SAMPLE_8


def test_a_jpeg_comment_is_the_infotext_when_there_is_no_exif():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", comment=SAMPLE_2.encode())

    assert read_image_text(buffer.getvalue()).infotext == SAMPLE_2


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_damaged_exif_block_costs_the_infotext_not_the_image():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=b"Exif\x00\x00MM\x00*garbage")

    found = read_image_text(buffer.getvalue())

    assert (found.format, found.infotext) == ("JPEG", "")


@pytest.mark.parametrize("container", ["png-tEXt", "jpeg-exif-unicode-be", "webp-exif-unicode-be"])
def test_reading_never_decodes_the_pixels(monkeypatch, container):
    data = CONTAINERS[container][1](SAMPLE_2)

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)
    # WebP has its own decoder.
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", refuse_to_decode)

    assert read_image_text(data).infotext == SAMPLE_2


# --- EXIF UserComment character codes -----------------------------------------------------------


def test_user_comment_in_piexif_unicode_is_utf16_big_endian():
    assert decode_user_comment(b"UNICODE\x00" + "Steps: 20, é".encode("utf-16-be")) == (
        "Steps: 20, é"
    )


def test_little_endian_user_comment_is_read_too():
    assert decode_user_comment(b"UNICODE\x00" + "Steps: 5".encode("utf-16-le")) == "Steps: 5"
    assert decode_user_comment(b"ASCII\x00\x00\x00Steps: 5") == "Steps: 5"


def test_user_comment_in_little_endian_utf16_is_recognised():
    value = b"UNICODE\x00" + "Steps: 20".encode("utf-16-le")

    assert decode_user_comment(value, byte_order=">") == "Steps: 20"


def test_user_comment_byte_order_follows_the_tiff_header_when_undecidable():
    value = b"UNICODE\x00" + "猫".encode("utf-16-le")

    assert decode_user_comment(value, byte_order="<") == "猫"


def test_user_comment_with_a_byte_order_mark():
    assert decode_user_comment(b"UNICODE\x00" + "a, b".encode("utf-16")) == "a, b"


def test_user_comment_in_ascii_and_undefined_codes():
    assert decode_user_comment(b"ASCII\x00\x00\x00Steps: 20\x00") == "Steps: 20"
    assert decode_user_comment(b"\x00" * 8 + b"Steps: 20") == "Steps: 20"
    assert decode_user_comment("Steps: 20") == "Steps: 20"


def test_user_comment_under_the_ascii_code_may_be_utf8_or_latin1():
    assert decode_user_comment(b"ASCII\x00\x00\x00" + "café".encode()) == "café"
    assert decode_user_comment(b"ASCII\x00\x00\x00" + "café".encode("latin-1")) == "café"


def test_user_comment_in_jis_is_shift_jis():
    assert decode_user_comment(b"JIS\x00\x00\x00\x00\x00" + "猫, Steps: 5".encode("shift_jis")) == (
        "猫, Steps: 5"
    )


def test_user_comment_without_a_character_code_is_utf8_as_a1111_reads_it():
    assert decode_user_comment("Steps: 20, café".encode()) == "Steps: 20, café"


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"not an image at all", b"GIF89a\x01\x00\x01\x00", b"\x89PNG\r\n\x1a\ntruncated"]
)
def test_anything_but_png_jpeg_webp_is_refused(data):
    with pytest.raises(UnreadableImage):
        read_image_text(data)


def test_gif_is_refused_by_name():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")

    with pytest.raises(UnreadableImage, match="GIF images are not supported"):
        read_image_text(buffer.getvalue())


def test_a_truncated_png_is_refused_as_damaged():
    with pytest.raises(UnreadableImage, match="damaged"):
        read_image_text(png_with(SAMPLE_2)[:-20])


def test_unreadable_image_is_a_value_error():
    assert issubclass(UnreadableImage, ValueError)
