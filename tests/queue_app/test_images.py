"""queue_app.images: file names, saving generated images, infotext, thumbnails."""

import io
import struct
import uuid
from datetime import UTC, datetime

import pytest
from django.core.files.storage import default_storage
from model_bakery import baker
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from queue_app import images
from queue_app.images import (
    InvalidImageError,
    delete_image_files,
    image_filename,
    image_storage_names,
    save_image_file,
    stored_name,
    thumbnail,
    thumbnail_name,
)
from queue_app.models import Job, JobImage, image_upload_to

JOB_ID = uuid.UUID("88615c9d-71ec-4803-88b0-14f5162f6c66")
# 1747190448393 ms after the epoch: the time in SEED_API.md's example file name.
WHEN = datetime(2025, 5, 14, 2, 40, 48, 393000, tzinfo=UTC)
INFOTEXT = (
    "photo of a duck\n"
    "Negative prompt: monochrome\n"
    "Steps: 15, Sampler: UniPC, CFG scale: 5, Seed: 235284042, Size: 512x400, "
    "Model hash: c0d1994c73, Model: realistic_realisticVisionV20_v20"
)


def make_image(size=(64, 48), mode="RGB", color=(200, 30, 30)) -> Image.Image:
    return Image.new(mode, size, color)


def png_bytes(size=(64, 48), *, parameters: str | None = None, mode="RGB") -> bytes:
    """A PNG as A1111 returns it: the infotext in a `parameters` text chunk."""
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)  # tEXt, or iTXt when not Latin-1
    out = io.BytesIO()
    color = (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30)
    make_image(size, mode, color).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def a1111_exif(infotext: str) -> bytes:
    """What A1111/Forge pass as `exif=` for JPEG/WebP:
    `piexif.dump({"Exif": {UserComment: piexif.helper.UserComment.dump(text, "unicode")}})`.

    piexif writes a big-endian ("MM") TIFF: IFD0 holding only the Exif IFD pointer, then the
    Exif IFD holding UserComment (type UNDEFINED) = b"UNICODE\\0" + UTF-16-BE text.
    """
    comment = b"UNICODE\x00" + infotext.encode("utf-16-be")
    exif_ifd = 8 + 2 + 12 + 4
    value = exif_ifd + 2 + 12 + 4
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, exif_ifd) + b"\0" * 4
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x9286, 7, len(comment), value)
    tiff += b"\0" * 4 + comment
    return b"Exif\x00\x00" + tiff


def encoded(fmt: str, size=(64, 48), *, infotext: str | None = None, **options) -> bytes:
    """JPEG/WebP bytes as A1111's encode_pil_to_base64 makes them."""
    out = io.BytesIO()
    if infotext is not None:
        options["exif"] = a1111_exif(infotext)
    make_image(size).save(out, fmt, **options)
    return out.getvalue()


def stored_image(name_or_data, *, index=0, seed=1) -> JobImage:
    """A JobImage row whose file was stored by save_image_file."""
    job = baker.make(Job, id=uuid.uuid4(), target_server_alias="Laptop", generation_params={})
    data = name_or_data if isinstance(name_or_data, bytes) else png_bytes()
    stored = save_image_file(job_id=job.pk, index=index, data=data, seed=seed, when=WHEN)
    return JobImage.objects.create(
        job=job,
        index=index,
        file=stored.name,
        seed=seed,
        width=stored.width,
        height=stored.height,
        infotext=stored.infotext,
    )


def media_files(settings) -> list[str]:
    root = settings.MEDIA_ROOT
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- image_filename ---------------------------------------------------------------------------


def test_filename_matches_the_documented_example():
    name = image_filename(job_id=JOB_ID, index=28, seed=1806652750, when=WHEN)

    assert name == "88615c9d_1747190448393_00028-1806652750.png"


def test_filename_omits_the_seed_when_unknown():
    assert image_filename(job_id=JOB_ID, index=3, seed=None, when=WHEN) == (
        "88615c9d_1747190448393_00003.png"
    )


def test_filename_uses_the_given_extension():
    assert image_filename(job_id=JOB_ID, index=0, seed=7, when=WHEN, ext="jpg").endswith(
        "_00000-7.jpg"
    )


def test_filename_takes_a_naive_time_as_utc():
    naive = WHEN.replace(tzinfo=None)

    assert image_filename(job_id=JOB_ID, index=0, seed=None, when=naive) == (
        image_filename(job_id=JOB_ID, index=0, seed=None, when=WHEN)
    )


def test_filename_refuses_a_negative_index():
    with pytest.raises(ValueError, match="negative"):
        image_filename(job_id=JOB_ID, index=-1, seed=None, when=WHEN)


# --- save_image_file ----------------------------------------------------------------------


def test_save_png_stores_the_original_bytes_where_the_model_would(db):
    data = png_bytes((64, 48), parameters=INFOTEXT)

    stored = save_image_file(job_id=JOB_ID, index=28, data=data, seed=1806652750, when=WHEN)

    filename = "88615c9d_1747190448393_00028-1806652750.png"
    assert stored.name == f"jobs/88/{filename}"
    assert stored.name == image_upload_to(JobImage(job_id=JOB_ID), filename)
    with default_storage.open(stored.name, "rb") as file:
        assert file.read() == data


def test_save_png_reads_size_format_and_parameters_chunk(db):
    stored = save_image_file(
        job_id=JOB_ID, index=0, data=png_bytes((64, 48), parameters=INFOTEXT), seed=1, when=WHEN
    )

    assert (stored.width, stored.height, stored.format) == (64, 48, "png")
    assert stored.infotext == INFOTEXT


def test_save_png_reads_a_non_latin1_infotext_from_itxt(db):
    text = "猫, エモい\nSteps: 20, Sampler: Euler, Seed: 1"

    stored = save_image_file(
        job_id=JOB_ID, index=0, data=png_bytes(parameters=text), seed=1, when=WHEN
    )

    assert stored.infotext == text


def test_save_png_without_infotext_has_empty_infotext(db):
    stored = save_image_file(job_id=JOB_ID, index=0, data=png_bytes(), seed=None, when=WHEN)

    assert stored.infotext == ""
    assert stored.name == "jobs/88/88615c9d_1747190448393_00000.png"


def test_save_jpeg_reads_the_a1111_exif_user_comment(db):
    text = INFOTEXT + ', Lora hashes: "näive: 0123456789ab"'
    data = encoded("JPEG", (80, 60), infotext=text, quality=90)

    stored = save_image_file(job_id=JOB_ID, index=1, data=data, seed=5, when=WHEN)

    assert stored.format == "jpeg"
    assert stored.name.endswith("_00001-5.jpg")
    assert (stored.width, stored.height) == (80, 60)
    assert stored.infotext == text
    with default_storage.open(stored.name, "rb") as file:
        assert file.read() == data


def test_save_webp_reads_the_a1111_exif_user_comment(db):
    data = encoded("WEBP", (70, 50), infotext=INFOTEXT, quality=90)

    stored = save_image_file(job_id=JOB_ID, index=2, data=data, seed=None, when=WHEN)

    assert stored.format == "webp"
    assert stored.name.endswith("_00002.webp")
    assert (stored.width, stored.height) == (70, 50)
    assert stored.infotext == INFOTEXT


def test_save_jpeg_without_exif_has_empty_infotext(db):
    stored = save_image_file(job_id=JOB_ID, index=0, data=encoded("JPEG"), seed=None, when=WHEN)

    assert stored.infotext == ""


def test_save_defaults_the_time_to_now(db):
    before = int(datetime.now(UTC).timestamp() * 1000)

    stored = save_image_file(job_id=JOB_ID, index=0, data=png_bytes(), seed=None)

    millis = int(stored.name.rsplit("/", 1)[1].split("_")[1])
    assert before - 1 <= millis <= int(datetime.now(UTC).timestamp() * 1000) + 1


def test_save_never_decodes_the_pixels(db, monkeypatch):
    def refuse(self):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", refuse)  # its own decoder

    for data in (
        png_bytes(parameters=INFOTEXT),
        encoded("JPEG", infotext=INFOTEXT),
        encoded("WEBP", infotext=INFOTEXT),
    ):
        assert save_image_file(job_id=JOB_ID, index=0, data=data, seed=1).infotext == INFOTEXT


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b'{"images": []}',
        png_bytes()[:60],  # truncated inside the image data
    ],
    ids=["empty", "text", "json", "truncated-png"],
)
def test_save_refuses_what_is_not_an_image_and_stores_nothing(db, settings, data):
    with pytest.raises(InvalidImageError):
        save_image_file(job_id=JOB_ID, index=0, data=data, seed=None, when=WHEN)

    assert media_files(settings) == []


def test_save_refuses_formats_generation_servers_do_not_return(db, settings):
    out = io.BytesIO()
    make_image().save(out, "GIF")

    with pytest.raises(InvalidImageError, match="PNG, JPEG or WebP"):
        save_image_file(job_id=JOB_ID, index=0, data=out.getvalue(), seed=None, when=WHEN)
    assert media_files(settings) == []


def test_invalid_image_error_is_a_value_error():
    assert issubclass(InvalidImageError, ValueError)


# --- EXIF UserComment (decoded by integrations.forge.image_text, tested there) ----------


def test_user_comment_written_by_pillow_in_either_byte_order_is_read(db):
    for endian in ("<", ">"):
        exif = Image.Exif()
        exif.endian = endian
        comment = b"UNICODE\x00" + INFOTEXT.encode("utf-16-le" if endian == "<" else "utf-16-be")
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = comment
        out = io.BytesIO()
        make_image().save(out, "JPEG", exif=exif.tobytes())

        stored = save_image_file(job_id=JOB_ID, index=0, data=out.getvalue(), seed=None)

        assert stored.infotext == INFOTEXT


# --- thumbnails ---------------------------------------------------------------------------


def open_thumbnail(body) -> Image.Image:
    data = body if isinstance(body, bytes) else body.read()
    if not isinstance(body, bytes):
        body.close()
    return Image.open(io.BytesIO(data))


def test_thumbnail_is_webp_with_the_longest_side_as_asked(db):
    image = stored_image(png_bytes((1024, 768)))

    body, content_type = thumbnail(image=image)

    assert content_type == "image/webp"
    thumb = open_thumbnail(body)
    assert thumb.format == "WEBP"
    assert thumb.size == (384, 288)


def test_thumbnail_in_jpeg_at_another_size(db):
    image = stored_image(png_bytes((300, 600)))

    body, content_type = thumbnail(image=image, size=128, fmt="jpeg")

    assert content_type == "image/jpeg"
    thumb = open_thumbnail(body)
    assert thumb.format == "JPEG"
    assert thumb.size == (64, 128)


def test_thumbnail_never_enlarges_a_small_image(db):
    image = stored_image(png_bytes((100, 80)))

    body, _ = thumbnail(image=image, size=1024)

    assert open_thumbnail(body).size == (100, 80)


def test_thumbnail_carries_no_infotext(db):
    image = stored_image(encoded("JPEG", (400, 400), infotext=INFOTEXT))

    body, _ = thumbnail(image=image, size=64, fmt="jpeg")

    assert "exif" not in open_thumbnail(body).info


def test_thumbnail_of_a_transparent_image_as_jpeg_is_on_white(db):
    out = io.BytesIO()
    Image.new("RGBA", (200, 200), (0, 0, 0, 0)).save(out, "PNG")
    image = stored_image(out.getvalue())

    body, _ = thumbnail(image=image, size=64, fmt="jpeg")

    thumb = open_thumbnail(body)
    assert thumb.mode == "RGB"
    pixel = thumb.getpixel((32, 32))
    assert isinstance(pixel, tuple)
    assert min(pixel) > 240


def test_thumbnail_keeps_transparency_in_webp(db):
    image = stored_image(png_bytes((200, 100), mode="RGBA"))

    body, _ = thumbnail(image=image, size=64)

    assert open_thumbnail(body).mode == "RGBA"


def test_thumbnail_is_cached_in_storage_under_its_size_and_format(db):
    image = stored_image(png_bytes((512, 512)))

    body, _ = thumbnail(image=image, size=256, fmt="webp")

    name = f"thumbs/256/webp/{stored_name(image)[:-4]}.webp"
    assert thumbnail_name(stored_name(image), size=256, fmt="webp") == name
    with default_storage.open(name, "rb") as file:
        assert file.read() == body


def test_second_thumbnail_request_reads_the_cache(db, monkeypatch):
    image = stored_image(png_bytes((512, 512)))
    first, _ = thumbnail(image=image, size=200, fmt="jpeg")

    def refuse(*args, **kwargs):
        raise AssertionError("thumbnail made again")

    monkeypatch.setattr(images, "_render_thumbnail", refuse)
    second, content_type = thumbnail(image=image, size=200, fmt="jpeg")

    assert content_type == "image/jpeg"
    assert not isinstance(second, bytes)
    with second:
        assert second.read() == first


def test_jpeg_thumbnail_decodes_at_reduced_scale(db, monkeypatch):
    """The decoder's draft mode: a big JPEG is never decoded at full size."""
    image = stored_image(encoded("JPEG", (2048, 2048), quality=80))
    decoded_sizes = []
    original_load = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)

    body, _ = thumbnail(image=image, size=128)

    assert decoded_sizes
    assert max(decoded_sizes[0]) <= 512
    assert open_thumbnail(body).size == (128, 128)


@pytest.mark.parametrize(("size", "fmt"), [(63, "webp"), (1025, "webp"), (384, "png")])
def test_thumbnail_refuses_sizes_and_formats_out_of_range(db, size, fmt):
    image = stored_image(png_bytes())

    with pytest.raises(ValueError, match="thumbnail"):
        thumbnail(image=image, size=size, fmt=fmt)


def test_thumbnail_of_a_file_gone_from_storage_is_file_not_found(db):
    image = stored_image(png_bytes())
    default_storage.delete(stored_name(image))

    with pytest.raises(FileNotFoundError):
        thumbnail(image=image)


def test_thumbnail_of_a_damaged_file_is_invalid_image(db):
    image = stored_image(png_bytes())
    path = default_storage.path(stored_name(image))
    with open(path, "wb") as file:
        file.write(b"garbage")

    with pytest.raises(InvalidImageError):
        thumbnail(image=image)


# --- storage names and deletion -----------------------------------------------------------


def test_storage_names_are_the_file_then_every_cached_thumbnail(db):
    image = stored_image(png_bytes((300, 300)))
    other = stored_image(png_bytes((300, 300)), index=1)
    thumbnail(image=image, size=64, fmt="webp")
    thumbnail(image=image, size=256, fmt="jpeg")
    thumbnail(image=image, size=256, fmt="webp")
    thumbnail(image=other, size=128)

    names = image_storage_names(image)

    assert names[0] == stored_name(image)
    assert sorted(names[1:]) == sorted(
        [
            thumbnail_name(stored_name(image), size=64, fmt="webp"),
            thumbnail_name(stored_name(image), size=256, fmt="jpeg"),
            thumbnail_name(stored_name(image), size=256, fmt="webp"),
        ]
    )


def test_storage_names_without_thumbnails_is_just_the_file(db):
    image = stored_image(png_bytes())

    assert image_storage_names(image) == [stored_name(image)]


def test_storage_names_of_an_image_without_a_file_is_empty(db):
    job = baker.make(Job, target_server_alias="Laptop", generation_params={})

    assert image_storage_names(JobImage(job=job, index=0)) == []


def test_deleting_the_storage_names_removes_image_and_thumbnails(db, settings):
    image = stored_image(png_bytes((300, 300)))
    thumbnail(image=image, size=64)
    thumbnail(image=image, size=128, fmt="jpeg")

    deleted = delete_image_files(image_storage_names(image))

    assert deleted == 3
    assert media_files(settings) == []


def test_delete_image_files_skips_files_already_gone(db):
    image = stored_image(png_bytes())

    assert delete_image_files([stored_name(image), "jobs/00/missing.png"]) == 2
    assert not default_storage.exists(stored_name(image))
