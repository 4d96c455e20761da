"""Job images on storage: their file names, saving what a server generated (with the A1111
infotext read by `integrations.forge.image_text`), and cached phone-sized thumbnails.

Invariants:
- A stored image is the generation server's bytes, unchanged: metadata is read, never
  rewritten, so the infotext a user downloads is the one the server wrote.
- Only PNG, JPEG and WebP are accepted: the formats A1111/Forge return (option
  `samples_format`), and the ones a phone can show.
- Reading size and metadata never decodes pixels; making a thumbnail decodes one image,
  already reduced by the decoder where the format allows it (JPEG draft mode).
- A thumbnail is derived from its image's name alone, so it never needs invalidating: the
  image behind a name never changes.
"""

import hashlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, cast
from uuid import UUID

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.db.models import FileField
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from core_app.errors import NotFound
from integrations.forge.image_text import UnreadableImage, read_image_text
from queue_app.models import Job, JobImage, image_upload_to

logger = logging.getLogger(__name__)

_HEX_DIGITS = "0123456789abcdef"

THUMBNAIL_DEFAULT_SIZE = 384
THUMBNAIL_MIN_SIZE = 64
THUMBNAIL_MAX_SIZE = 1024
THUMBNAIL_FORMATS = ("webp", "jpeg")
THUMBNAIL_DEFAULT_FORMAT = "webp"
THUMBNAIL_DIR = "thumbs"

# Pillow's format name -> (our format name, file extension, content type). A1111 names
# its JPEG files .jpg, and so do we.
_FORMATS: dict[str, tuple[str, str, str]] = {
    "PNG": ("png", "png", "image/png"),
    "JPEG": ("jpeg", "jpg", "image/jpeg"),
    "WEBP": ("webp", "webp", "image/webp"),
}
_CONTENT_TYPES = {ext: content_type for _, ext, content_type in _FORMATS.values()}
_CONTENT_TYPES["jpeg"] = "image/jpeg"
_THUMBNAIL_EXTENSIONS = {"webp": "webp", "jpeg": "jpg"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidImageError(ValueError):
    """The bytes are not a PNG, JPEG or WebP image Pillow can read."""


@dataclass(frozen=True)
class StoredImage:
    """What save_image_file stored: the storage name and what the image says about itself.

    `format` is "png", "jpeg" or "webp"; `infotext` is "" when the image carries none.
    """

    name: str
    width: int
    height: int
    infotext: str
    format: str


def image_filename(
    *, job_id: UUID, index: int, seed: int | None, when: datetime, ext: str = "png"
) -> str:
    """`88615c9d_1747190448393_00028-1806652750.png`, as the original MobileSD named images.

    First 8 hex digits of the job id, `when` in epoch milliseconds, the index on 5 digits,
    `-<seed>` unless the seed is unknown, and the extension. A naive `when` is taken as UTC.
    """
    if index < 0:
        raise ValueError(f"An image index is never negative (got {index}).")
    if timezone.is_naive(when):
        when = when.replace(tzinfo=UTC)
    # Integer arithmetic: float timestamps can be off by one millisecond.
    millis = (when - _EPOCH) // timedelta(milliseconds=1)
    seed_part = "" if seed is None else f"-{seed}"
    return f"{job_id.hex[:8]}_{millis}_{index:05d}{seed_part}.{ext.lstrip('.')}"


def image_content_type(name: str) -> str:
    """The content type of a stored image or thumbnail, from the extension we gave it."""
    suffix = PurePosixPath(name).suffix.lstrip(".").lower()
    return _CONTENT_TYPES.get(suffix, "application/octet-stream")


def image_etag(name: str) -> str:
    """A strong ETag for a stored file. Names are unique and their bytes never change, so
    the name is enough: no need to read or stat the file."""
    return '"' + hashlib.sha256(name.encode()).hexdigest()[:32] + '"'


def _image_storage() -> Storage:
    # The storage JobImage.file writes to (Django's default storage), so that what is saved
    # here is what `image.file` opens later.
    return cast(FileField, JobImage._meta.get_field("file")).storage


def read_image(data: bytes) -> tuple[str, str, int, int, str]:
    """(format, extension, width, height, infotext) of image bytes, without decoding pixels
    (the one image-text reader, `integrations.forge.image_text`).

    Raises InvalidImageError for anything but a well-formed PNG, JPEG or WebP.
    """
    try:
        found = read_image_text(data)
    except UnreadableImage as exc:
        raise InvalidImageError(str(exc)) from exc
    fmt, ext, _ = _FORMATS[found.format]
    return fmt, ext, found.width, found.height, found.infotext


def save_image_file(
    *, job_id: UUID, index: int, data: bytes, seed: int | None, when: datetime | None = None
) -> StoredImage:
    """Check `data` is an image, read its size and infotext, and store the bytes unchanged
    under the name JobImage.file would give it (`jobs/<2 hex>/<image_filename>`).

    Returns the name the storage chose (it differs from the planned one only if that was
    taken). Nothing is written when the data is not an image (InvalidImageError).
    """
    fmt, ext, width, height, infotext = read_image(data)
    filename = image_filename(
        job_id=job_id, index=index, seed=seed, when=when or timezone.now(), ext=ext
    )
    # An unsaved instance carries what upload_to needs, so the path rule lives in one place.
    path = image_upload_to(JobImage(job_id=job_id, index=index), filename)
    name = _image_storage().save(path, ContentFile(data))
    logger.info(
        "Stored image %d of job %s as %s (%dx%d %s)", index, job_id, name, width, height, fmt
    )
    return StoredImage(name=name, width=width, height=height, infotext=infotext, format=fmt)


def job_image_get(*, job: Job, index: int) -> JobImage:
    """The image `index` of `job`; 404 `image_not_found` if it has none."""
    image = job.images.filter(index=index).first()
    if image is None:
        raise NotFound(f"Job {job.pk} has no image {index}.", code="image_not_found")
    return image


def job_image_by_name(*, name: str, owner: Any | None) -> JobImage:
    """The image whose file has the base name `name`, as `result_details.images` lists it,
    of a job of `owner` (a user; None: anyone's); 404 `image_not_found` otherwise (another
    user's image too). The name is looked up among the images, never joined into a storage
    path, so no name can reach a file that is not a job's image."""
    missing = NotFound(f"No image is named '{name}'.", code="image_not_found")
    prefix = name[:8].lower()
    if "/" in name or "\\" in name or len(prefix) < 8 or prefix.strip(_HEX_DIGITS):
        raise missing
    # A name starts with its job id's first 8 hex digits (`image_filename`): only the jobs
    # whose id starts so are searched, through the index of the job column.
    first, last = UUID(prefix + "0" * 24), UUID(prefix + "f" * 24)
    images = JobImage.objects.filter(job_id__gte=first, job_id__lte=last, file__endswith=f"/{name}")
    if owner is not None:
        images = images.filter(job__owner=owner)
    image = images.order_by("pk").first()
    if image is None:
        raise missing
    return image


def stored_name(image: JobImage) -> str:
    """The storage name of an image's file; 404 `image_not_found` if it has none."""
    if not image.file.name:
        raise NotFound(
            f"Image {image.index} of job {image.job_id} has no file.", code="image_not_found"
        )
    return image.file.name


def thumbnail_name(name: str, *, size: int, fmt: str) -> str:
    """Where the thumbnail of the stored image `name` is cached:
    `thumbs/<size>/<fmt>/<name with the thumbnail's extension>`."""
    return str(
        PurePosixPath(THUMBNAIL_DIR, str(size), fmt, name).with_suffix(
            "." + _THUMBNAIL_EXTENSIONS[fmt]
        )
    )


def _check_thumbnail_args(size: int, fmt: str) -> None:
    if not THUMBNAIL_MIN_SIZE <= size <= THUMBNAIL_MAX_SIZE:
        raise ValueError(
            f"A thumbnail size is from {THUMBNAIL_MIN_SIZE} to {THUMBNAIL_MAX_SIZE} (got {size})."
        )
    if fmt not in THUMBNAIL_FORMATS:
        raise ValueError(f"A thumbnail format is one of {THUMBNAIL_FORMATS} (got {fmt!r}).")


def _render_thumbnail(storage: Storage, name: str, size: int, fmt: str) -> bytes:
    with storage.open(name, "rb") as file, Image.open(file, formats=list(_FORMATS)) as image:
        # thumbnail() calls draft() first: a JPEG is decoded at 1/2..1/8 scale, so the
        # full-size pixels are never in memory; other formats decode once, then shrink.
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        small = _thumbnail_mode(image, fmt)
        out = io.BytesIO()
        if fmt == "webp":
            small.save(out, "WEBP", quality=80, method=4)
        else:
            small.save(out, "JPEG", quality=85, optimize=True, progressive=True)
    return out.getvalue()


def _thumbnail_mode(image: Image.Image, fmt: str) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if fmt == "webp":
        return image.convert("RGBA" if has_alpha else "RGB")
    if not has_alpha:
        return image.convert("RGB")
    # JPEG has no alpha: lay the image on white rather than let transparent pixels go black.
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def thumbnail(
    *, image: JobImage, size: int = THUMBNAIL_DEFAULT_SIZE, fmt: str = THUMBNAIL_DEFAULT_FORMAT
) -> tuple[bytes | File, str]:
    """(thumbnail, content type): the image shrunk to fit `size`x`size` (never enlarged),
    as WebP or JPEG without metadata.

    Cached in storage at thumbnail_name(): a cached thumbnail is returned as an open File
    (the caller closes it), a new one as bytes. Raises FileNotFoundError when neither the
    thumbnail nor the image is in storage, InvalidImageError when the image cannot be
    decoded, ValueError for a size or format out of range.
    """
    _check_thumbnail_args(size, fmt)
    storage = image.file.storage
    source = stored_name(image)
    name = thumbnail_name(source, size=size, fmt=fmt)
    content_type = _CONTENT_TYPES[fmt]
    if storage.exists(name):
        try:
            return storage.open(name, "rb"), content_type
        except FileNotFoundError:  # deleted since exists(): make it again
            pass
    try:
        data = _render_thumbnail(storage, source, size, fmt)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"{source} is not a readable image: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"{source} is damaged: {exc}") from exc
    try:
        saved = storage.save(name, ContentFile(data))
        if saved != name:
            # A concurrent request cached it first; ours got a made-up name nobody would
            # find or delete.
            storage.delete(saved)
    except OSError:  # the cache is an optimisation: serve the thumbnail anyway
        logger.warning("Could not cache thumbnail %s", name, exc_info=True)
    else:
        logger.debug("Cached thumbnail %s", name)
    return data, content_type


def image_storage_names(image: JobImage) -> list[str]:
    """Every storage name that belongs to `image`: its file, then its cached thumbnails.

    Thumbnails are found by listing the size folders of `thumbs/`, so a thumbnail of any
    size that was ever requested is included. [] for an image without a file.
    """
    name = image.file.name
    if not name:
        return []
    storage = image.file.storage
    names = [name]
    try:
        sizes, _ = storage.listdir(THUMBNAIL_DIR)
    except (FileNotFoundError, NotImplementedError):
        return names
    for size in sorted(sizes):
        if not size.isdigit():
            continue
        for fmt in THUMBNAIL_FORMATS:
            candidate = thumbnail_name(name, size=int(size), fmt=fmt)
            if storage.exists(candidate):
                names.append(candidate)
    return names


def delete_image_files(names: Iterable[str], *, storage: Storage | None = None) -> int:
    """Delete stored files by name (images and thumbnails); returns how many were deleted.

    A file already gone counts as deleted; one that cannot be deleted is logged and skipped,
    so a cleanup never fails halfway.
    """
    storage = storage or _image_storage()
    deleted = 0
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            logger.warning("Could not delete stored file %s", name, exc_info=True)
        else:
            deleted += 1
    return deleted


def orphan_image_files(job_id: UUID) -> list[str]:
    """Stored files named for this job that no JobImage row references.

    A worker that died between writing a job's images and recording them leaves such
    files; they are found by the name prefix (the job id's first 8 hex) in the job's
    folder, and kept if any row (of any job sharing the prefix) still points at them.
    """
    storage = _image_storage()
    folder = image_upload_to(JobImage(job_id=job_id), "").rstrip("/")
    try:
        _, names = storage.listdir(folder)
    except (FileNotFoundError, NotImplementedError):
        return []
    prefix = f"{job_id.hex[:8]}_"
    candidates = [f"{folder}/{name}" for name in names if name.startswith(prefix)]
    if not candidates:
        return []
    referenced = set(JobImage.objects.filter(file__in=candidates).values_list("file", flat=True))
    return [name for name in candidates if name not in referenced]
