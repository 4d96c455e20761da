"""Uploads: the input images of img2img and inpaint jobs, and the inputs of each job.

Invariants:
- An upload is a PNG, JPEG or WebP image that Pillow reads through, of at most
  MOBILESD_UPLOAD_MAX_BYTES bytes and MOBILESD_UPLOAD_MAX_PIXELS pixels; its format is
  read from its bytes, never from a name or a Content-Type.
- Its file is what the server gets, byte for byte. Only an image whose EXIF orientation
  says it must be turned (2 to 8) is re-encoded (as a PNG, turned), since the servers read pixels
  as stored and would generate from a sideways photo.
- Uploads belong to their owner: another user's, a deleted or a removed one is the same 404
  (`upload_not_found`), in the API and at submit.
- A job's inputs (JobInput rows, written with the job) keep their uploads as long as the
  job exists; unreferenced uploads go once unused for MOBILESD_UPLOAD_RETENTION_SECONDS, or
  once their owner deleted them (`uploads_remove_unused`). Files go after the commit.
"""

import base64
import hashlib
import io
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final
from uuid import UUID

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from PIL import Image, ImageOps, UnidentifiedImageError

from core_app.errors import InvalidInput, MobileSDError, NotFound
from queue_app.extension_params import resolve_script_images
from queue_app.models import Job, JobImage, JobInput, JobInputRole, Upload

logger = logging.getLogger(__name__)

MODE_TXT2IMG = "txt2img"
MODE_IMG2IMG = "img2img"
MODE_INPAINT = "inpaint"
MODES = (MODE_TXT2IMG, MODE_IMG2IMG, MODE_INPAINT)
IMAGE_MODES = frozenset({MODE_IMG2IMG, MODE_INPAINT})

# Pillow's format name -> (content type, file extension).
_FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}
_EXIF_ORIENTATION = 0x0112
# The orientations that turn or mirror the image; 1 is "as stored", and 0 (which some
# devices write) or any other value means nothing: such an image is kept byte for byte.
_TURNING: Final = frozenset(range(2, 9))


class UploadTooLarge(MobileSDError):
    status_code = 413
    default_code = "upload_too_large"


def _invalid(message: str) -> InvalidInput:
    error = InvalidInput({"image": [message]}, message=message)
    error.code = "invalid_image"
    return error


@dataclass(frozen=True)
class CheckedImage:
    """An upload's bytes as stored and sent, with what they are."""

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


def image_check(data: bytes) -> CheckedImage:
    """`data` checked as an upload (see the module docstring), turned if its EXIF says so.

    Raises UploadTooLarge (413) or InvalidInput `invalid_image` (400)."""
    max_bytes = settings.MOBILESD_UPLOAD_MAX_BYTES
    if len(data) > max_bytes:
        raise UploadTooLarge(f"The image has {len(data)} bytes; the limit is {max_bytes}.")
    if not data:
        raise _invalid("The upload is empty: send a PNG, JPEG or WebP image.")
    max_pixels = settings.MOBILESD_UPLOAD_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                kind, (width, height) = probe.format, probe.size
                if kind not in _FORMATS:
                    raise _invalid(
                        f"A {kind} image is not accepted: send a PNG, JPEG or WebP image."
                    )
                if width * height > max_pixels:
                    raise UploadTooLarge(
                        f"The image is {width}x{height} ({width * height} pixels); the limit "
                        f"is {max_pixels} pixels."
                    )
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # every pixel decodes: a truncated JPEG is refused here
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
                turned = ImageOps.exif_transpose(image) if orientation in _TURNING else None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadTooLarge(f"The image has too many pixels ({exc}).") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _invalid("The upload is not a PNG, JPEG or WebP image that can be read.") from exc
    content_type, extension = _FORMATS[kind]
    if turned is None:
        return CheckedImage(data, content_type, extension, width, height)
    if turned.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
        turned = turned.convert("RGB")  # a CMYK JPEG: PNG has no such mode
    buffer = io.BytesIO()
    turned.save(buffer, format="PNG")
    return CheckedImage(buffer.getvalue(), "image/png", "png", turned.width, turned.height)


def upload_create(*, owner: Any, data: bytes) -> Upload:
    """Check and store an uploaded image of `owner` (nothing is stored if it is refused)."""
    checked = image_check(data)
    return _store(owner=owner, checked=checked)


def _store(*, owner: Any, checked: CheckedImage) -> Upload:
    upload = Upload(
        owner=owner,
        content_type=checked.content_type,
        size_bytes=len(checked.data),
        width=checked.width,
        height=checked.height,
        sha256=hashlib.sha256(checked.data).hexdigest(),
    )
    upload.file.save(f"{upload.pk.hex}.{checked.extension}", ContentFile(checked.data), save=False)
    try:
        upload.save()
    except Exception:
        upload.file.storage.delete(str(upload.file.name))
        raise
    logger.info("Stored upload %s (%d bytes) of user %s", upload.pk, upload.size_bytes, owner.pk)
    return upload


def upload_get(*, upload_id: str | UUID, owner: Any | None) -> Upload:
    """The upload with this id, if `owner` (None: anyone) owns it and did not delete it;
    else, as for an unknown or malformed id, a 404 `upload_not_found`."""
    try:
        pk = upload_id if isinstance(upload_id, UUID) else UUID(str(upload_id))
    except ValueError:
        pk = None
    uploads = Upload.objects.filter(deleted_at__isnull=True)
    if owner is not None:
        uploads = uploads.filter(owner=owner)
    upload = uploads.filter(pk=pk).first() if pk else None
    if upload is None:
        raise NotFound(f"Upload '{upload_id}' not found.", code="upload_not_found")
    return upload


def upload_delete(*, upload_id: str | UUID, owner: Any | None) -> None:
    """Delete an upload: at once when no job uses it, else it is hidden (a 404 from now on)
    and its file kept for those jobs until they are deleted."""
    with transaction.atomic():
        upload = upload_get(upload_id=upload_id, owner=owner)
        if upload.job_inputs.exists():
            Upload.objects.filter(pk=upload.pk).update(deleted_at=timezone.now())
            return
        upload.delete()
        _delete_files_on_commit([str(upload.file.name or "")])


def uploads_remove_unused(*, now: Any = None) -> int:
    """Remove the uploads no job references that were deleted by their owner or not used
    for MOBILESD_UPLOAD_RETENTION_SECONDS; their files go after the commit. Returns how
    many."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.MOBILESD_UPLOAD_RETENTION_SECONDS)
    referenced = JobInput.objects.filter(upload=OuterRef("pk"))
    with transaction.atomic():
        unused = (
            Upload.objects.filter(Q(deleted_at__isnull=False) | Q(last_used_at__lt=cutoff))
            .filter(~Exists(referenced))
            .select_for_update(skip_locked=True)
        )
        rows = list(unused.values_list("pk", "file"))
        Upload.objects.filter(pk__in=[pk for pk, _ in rows]).filter(~Exists(referenced)).delete()
        _delete_files_on_commit([name for _, name in rows])
    if rows:
        logger.info("Removed %d unused upload(s)", len(rows))
    return len(rows)


def _delete_files_on_commit(names: Iterable[str | None]) -> None:
    stored = [name for name in names if name]

    def delete() -> None:
        storage = Upload._meta.get_field("file").storage
        for name in stored:
            try:
                storage.delete(name)
            except OSError:
                logger.warning("Could not delete upload file %s", name, exc_info=True)

    transaction.on_commit(delete)


# --- a job's inputs ---------------------------------------------------------------------


@dataclass
class JobInputs:
    """The uploads a job's `generation_params` names, resolved at submit."""

    init: list[Upload] = field(default_factory=list)
    mask: Upload | None = None
    # The uploads the units of `alwayson_scripts` name (ControlNet images), each once.
    scripts: list[Upload] = field(default_factory=list)

    def rows(self, job: Job) -> list[JobInput]:
        rows = [
            JobInput(job=job, upload=upload, role=JobInputRole.INIT, position=position)
            for position, upload in enumerate(self.init)
        ]
        if self.mask is not None:
            rows.append(JobInput(job=job, upload=self.mask, role=JobInputRole.MASK))
        rows += [
            JobInput(job=job, upload=upload, role=JobInputRole.SCRIPT, position=position)
            for position, upload in enumerate(self.scripts)
        ]
        return rows


def image_modes_check(params: Mapping[str, Any]) -> None:
    """The rules between `mode`, `init_images` and `mask` of validated (and, for a batch,
    merged) generation params; their values were checked by their fields."""
    mode = params.get("mode") or MODE_TXT2IMG
    problems: dict[str, list[str]] = {}
    if mode not in IMAGE_MODES:
        for key in ("init_images", "mask"):
            if params.get(key) is not None:
                problems[f"generation_params.{key}"] = [f'{key} needs mode "img2img" or "inpaint".']
    else:
        if not params.get("init_images"):
            problems["generation_params.init_images"] = [f'Mode "{mode}" needs an init image.']
        if mode == MODE_INPAINT and params.get("mask") is None:
            problems["generation_params.mask"] = ['Mode "inpaint" needs a mask (an upload_id).']
        if mode == MODE_IMG2IMG and params.get("mask") is not None:
            problems["generation_params.mask"] = ['A mask is for mode "inpaint".']
    if problems:
        raise InvalidInput(problems)


def job_inputs_resolve(*, owner: Any, params: Mapping[str, Any]) -> JobInputs:
    """The uploads of `params` (`init_images`, `mask`: upload ids or {"job_id", "index"}
    of one of `owner`'s jobs, whose image becomes an upload of theirs), checked: each
    `owner`'s (else 404 `upload_not_found` / `job_not_found` / `image_not_found`), the mask
    the size of the first init image (else 400). Marks them used now. Call it in the
    submit's transaction; nothing for a txt2img job."""
    image_modes_check(params)
    scripts = [upload_get(upload_id=ref, owner=owner) for ref in script_upload_refs(params)]
    if params.get("mode") not in IMAGE_MODES:
        _mark_used(scripts)
        return JobInputs(scripts=scripts)
    copied: list[Upload] = []  # job images stored as uploads by this call
    try:
        inputs = JobInputs(
            init=[_input_upload(owner, ref, copied) for ref in params.get("init_images") or []],
            scripts=scripts,
        )
        if params.get("mask") is not None:
            inputs.mask = _input_upload(owner, params["mask"], copied)
        _check_mask_size(inputs)
        _mark_used([u for u in (*inputs.init, inputs.mask, *scripts) if u is not None])
    except Exception:
        # The transaction is rolled back, but storage is not: nothing is left behind.
        for upload in copied:
            upload.file.storage.delete(str(upload.file.name))
        raise
    return inputs


def _mark_used(uploads: Sequence[Upload]) -> None:
    """Mark the uploads used now, or raise the 404 `upload_not_found` of one gone since it
    was read: uploads_remove_unused may have deleted it meanwhile (the job's JobInput would
    then fail its foreign key at commit). The update locks the rows, which the removal
    skips (SKIP LOCKED) until the job, which references them, is committed."""
    wanted = {upload.pk for upload in uploads}
    if not wanted:
        return
    live = Upload.objects.filter(pk__in=wanted, deleted_at__isnull=True)
    if live.update(last_used_at=timezone.now()) == len(wanted):
        return
    kept = set(live.values_list("pk", flat=True))
    gone = next(upload for upload in uploads if upload.pk not in kept)
    raise NotFound(f"Upload '{gone.pk}' not found.", code="upload_not_found")


# The generation_params keys that decide a job's inputs.
INPUT_KEYS = frozenset({"mode", "init_images", "mask", "alwayson_scripts"})


def _upload_ref(value: str) -> str | None:
    """`value` as an upload id (a UUID, as POST /api/v1/uploads answers it), else None: a
    unit's image is otherwise base64 (or a data: URI), which is never a UUID."""
    text = value.strip()
    if len(text) != 36:
        return None
    try:
        return str(UUID(text))
    except ValueError:
        return None


def script_upload_refs(params: Mapping[str, Any]) -> list[str]:
    """The upload ids the image values of `alwayson_scripts`' units name, in order, once
    each (queue_app.extension_params decides which values are images)."""
    found: dict[str, None] = {}

    def note(value: str) -> str:
        ref = _upload_ref(value)
        if ref is not None:
            found.setdefault(ref)
        return value

    resolve_script_images(params.get("alwayson_scripts"), note)
    return list(found)


def job_inputs_replace(*, job: Job, params: Mapping[str, Any]) -> None:
    """Resolve the inputs of a pending job's changed `params` (as at submit, as its owner's)
    and put them in place of its old ones. Call it in the change's transaction."""
    inputs = job_inputs_resolve(owner=job.owner, params=params)
    JobInput.objects.filter(job=job).delete()
    job_inputs_attach(jobs_and_inputs=[(job, inputs)])


def _check_mask_size(inputs: JobInputs) -> None:
    first = inputs.init[0] if inputs.init else None
    if inputs.mask is not None and first is not None:
        mask = inputs.mask
        if (mask.width, mask.height) != (first.width, first.height):
            raise InvalidInput(
                {
                    "generation_params.mask": [
                        f"The mask is {mask.width}x{mask.height}; it must be the size of the "
                        f"first init image, {first.width}x{first.height}."
                    ]
                }
            )


def job_inputs_attach(*, jobs_and_inputs: Iterable[tuple[Job, JobInputs]]) -> None:
    """Write the JobInput rows of jobs just created (in the same transaction)."""
    rows = [row for job, inputs in jobs_and_inputs for row in inputs.rows(job)]
    if rows:
        JobInput.objects.bulk_create(rows)


def _input_upload(owner: Any, ref: Any, copied: list[Upload]) -> Upload:
    if isinstance(ref, Mapping):
        return _job_image_upload(owner, ref, copied)
    return upload_get(upload_id=str(ref), owner=owner)


def _job_image_upload(owner: Any, ref: Mapping[str, Any], copied: list[Upload]) -> Upload:
    """An image of one of `owner`'s jobs as an upload of theirs (the same bytes, stored
    once: an upload of theirs with the same content is reused), so that the new job keeps
    it whatever becomes of the old one."""
    job_id, index = str(ref.get("job_id")), int(ref.get("index") or 0)
    try:
        pk: UUID | None = UUID(job_id)
    except ValueError:
        pk = None
    job = Job.objects.filter(pk=pk, owner=owner).first() if pk else None
    if job is None:
        raise NotFound(f"Job '{job_id}' not found.", code="job_not_found")
    image = JobImage.objects.filter(job=job, index=index).first()
    missing = NotFound(f"Job {job.pk} has no image {index}.", code="image_not_found")
    if image is None:
        raise missing
    try:
        with image.file.open("rb") as handle:
            data = handle.read()
    except OSError:
        raise missing from None
    digest = hashlib.sha256(data).hexdigest()
    existing = Upload.objects.filter(owner=owner, sha256=digest, deleted_at__isnull=True).first()
    if existing is not None:
        return existing
    upload = _store(owner=owner, checked=image_check(data))
    copied.append(upload)
    return upload


@dataclass(frozen=True)
class InputImages:
    """A job's input images as the server takes them: base64 of the stored bytes."""

    init: list[str]
    mask: str | None
    # Upload id -> base64, for the images the extensions' units name by upload id.
    scripts: dict[str, str] = field(default_factory=dict)

    def script_image(self, value: str) -> str:
        """A unit's image value as the server takes it: an upload id becomes its base64."""
        ref = _upload_ref(value)
        return self.scripts.get(ref, value) if ref is not None else value


class InputMissing(Exception):
    """An input's file is no longer in storage."""


def job_input_images(*, job: Job) -> InputImages:
    """The base64 of the files of `job`'s inputs, init images in order. Raises InputMissing."""
    init: list[str] = []
    mask: str | None = None
    scripts: dict[str, str] = {}
    for row in job.inputs.select_related("upload").order_by("role", "position"):
        try:
            with row.upload.file.open("rb") as handle:
                encoded = base64.b64encode(handle.read()).decode("ascii")
        except OSError as exc:
            raise InputMissing(f"The input image {row.upload_id} is no longer stored.") from exc
        if row.role == JobInputRole.MASK:
            mask = encoded
        elif row.role == JobInputRole.SCRIPT:
            scripts[str(row.upload_id)] = encoded
        else:
            init.append(encoded)
    return InputImages(init=init, mask=mask, scripts=scripts)
