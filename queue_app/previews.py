"""Live previews of running jobs: the latest image a job's server showed of it forming,
downscaled for a phone, kept while the job runs and gone when it stops.

The engine's progress probe reads a new preview from the server (integrations.forge
client), `preview_webp` downscales it in the probe's thread (never the heartbeat's), and the
heartbeat writes it (`JobPreview`) with the job's progress, in one transaction, only while
the job is still the heartbeat's. `progress.preview_id` is then its version and
`progress.preview_url` where the API serves it.

A preview goes when its job stops running, by any path (completed, failed, cancelled by
the API, the admin or a bulk cancel, its lease lost and the job requeued, ...): a database
trigger on the job table (PostgreSQL and SQLite) deletes it in the transaction of the
change that takes the job out of `processing` (or gives it another lease). Deleting a job
deletes its preview (CASCADE). SQLite drops a table's triggers when Django rebuilds the
table, so `job_previews_install` runs after every `migrate` (post_migrate), as
queue_app.counts does.
"""

import io
import uuid
import warnings
from dataclasses import dataclass

from django.db import connection
from django.urls import reverse
from PIL import Image, UnidentifiedImageError

from core_app.errors import NotFound
from queue_app.links import public_link
from queue_app.models import Job, JobPreview, JobStatus

PREVIEW_MAX_SIDE = 256
PREVIEW_QUALITY = 75
# A server's preview is the image being generated, at most a few megapixels; far more is
# not a preview (and is not decoded).
PREVIEW_MAX_PIXELS = 64 * 1024 * 1024
TRIGGER = "queue_app_job_preview_drop"


class InvalidPreviewError(ValueError):
    """The server's preview is not an image we can read."""


@dataclass(frozen=True)
class PreviewImage:
    """A preview ready to store: WebP bytes and their size."""

    webp: bytes
    width: int
    height: int


def preview_webp(data: bytes) -> PreviewImage:
    """`data` (a PNG, JPEG or WebP from the server) as a WebP of at most PREVIEW_MAX_SIDE px
    on its long side (never enlarged). Raises InvalidPreviewError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.width * image.height > PREVIEW_MAX_PIXELS:
                raise InvalidPreviewError(f"a preview of {image.width}x{image.height} px")
            # JPEG decodes at a fraction of its size when that is enough (a cheap preview).
            image.draft("RGB", (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
            image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.LANCZOS)
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=PREVIEW_QUALITY, method=4)
    except InvalidPreviewError:
        raise
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidPreviewError(str(exc)) from exc
    except Image.DecompressionBombWarning as exc:
        raise InvalidPreviewError(str(exc)) from exc
    return PreviewImage(webp=buffer.getvalue(), width=image.width, height=image.height)


def preview_url(job_id: uuid.UUID | str, version: int) -> str:
    """Where the API serves the job's preview `version`: absolute on MOBILESD_PUBLIC_URL
    when it is set (as the image links), else a path; `?v=` makes each version a URL of
    its own."""
    return public_link(f"{reverse('job-preview', kwargs={'job_id': str(job_id)})}?v={version}")


def job_preview_get(*, job: Job) -> JobPreview:
    """The latest preview of `job`; NotFound `preview_not_found` when it has none (not
    running, or no preview yet)."""
    running = job.status == JobStatus.PROCESSING
    preview = JobPreview.objects.filter(job=job).first() if running else None
    if preview is None:
        raise NotFound(f"Job {job.pk} has no live preview.", code="preview_not_found")
    return preview


def preview_etag(preview: JobPreview) -> str:
    return f'"preview-{preview.job_id.hex}-{preview.version}"'


# --- the trigger ----------------------------------------------------------------------------

# Our own constants and the tables' quoted names go in, never a value from outside.
# Out of processing, or another lease (a preview belongs to one run of the job):
_LEFT_RUN = (
    "OLD.status = '{processing}' AND (NEW.status {ne} '{processing}' "
    "OR NEW.lease_token {ne} OLD.lease_token)"
)
_DELETE = "DELETE FROM {preview} WHERE {job_id} = OLD.id;"
_PG_SQL = (
    "CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN {delete} RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS {trigger} ON {job}",
    "CREATE TRIGGER {trigger} AFTER UPDATE OF status, lease_token ON {job} "
    "FOR EACH ROW WHEN ({left}) EXECUTE FUNCTION {trigger}()",
)
_SQLITE_SQL = (
    "DROP TRIGGER IF EXISTS {trigger}",
    "CREATE TRIGGER {trigger} AFTER UPDATE OF status, lease_token ON {job} "
    "WHEN {left} BEGIN {delete} END",
)
_DROP_NOT_RUNNING = (
    "DELETE FROM {preview} WHERE {job_id} NOT IN (SELECT id FROM {job} WHERE status = %s)"
)


def _names() -> dict[str, str]:
    quote = connection.ops.quote_name
    names = {
        "job": quote(Job._meta.db_table),
        "preview": quote(JobPreview._meta.db_table),
        "job_id": quote(JobPreview._meta.get_field("job").column),
        "processing": JobStatus.PROCESSING.value,
        "trigger": TRIGGER,
    }
    names["delete"] = _DELETE.format(**names)
    return names


def _trigger_sql() -> list[str]:
    names = _names()
    postgresql = connection.vendor == "postgresql"
    left = _LEFT_RUN.format(ne="IS DISTINCT FROM" if postgresql else "IS NOT", **names)
    return [
        template.format(left=left, **names) for template in (_PG_SQL if postgresql else _SQLITE_SQL)
    ]


def _installed() -> bool:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
                [Job._meta.db_table, TRIGGER],
            )
        else:
            cursor.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = %s", [TRIGGER]
            )
        return cursor.fetchone() is not None


def job_previews_install(*, force: bool = False) -> bool:
    """Create the trigger if it is missing (or `force`), and drop the previews of jobs not
    running (those a missing trigger let stay); True if it did."""
    if connection.vendor not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"job previews need triggers of {connection.vendor}")
    if not force and _installed():
        return False
    with connection.cursor() as cursor:
        for statement in _trigger_sql():
            cursor.execute(statement)
        # Raw SQL: this also runs in the migration, whatever the models have become since.
        cursor.execute(_DROP_NOT_RUNNING.format(**_names()), [JobStatus.PROCESSING.value])
    return True


def job_previews_drop() -> None:
    """Drop the trigger (the migration's reverse)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_SQL[1].format(**_names()))
            cursor.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
        else:
            cursor.execute(_SQLITE_SQL[0].format(**_names()))
