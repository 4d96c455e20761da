"""The dashboard's reads: the live state of the servers and the queue, and the gallery's
images. Nothing here writes; the pages' actions are the ModelAdmins', which call services."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.text import Truncator

from core_app.display import age
from core_app.health import Check, check_beat, check_storage, check_worker
from core_app.models import CeleryProcess, WorkerHeartbeat
from queue_app.counts import job_totals_by
from queue_app.models import ImageCheckpoint, Job, JobCount, JobImage, JobStatus
from queue_app.tasks import threads_shortfall_warning
from servers_app.models import Server

LATEST_IMAGES = 12
# The dashboard asks for the state this often (milliseconds) while it is visible and the
# event stream is not open (no stream, or it failed: the fallback).
POLL_MILLISECONDS = 2000
# The dashboard follows the event stream (GET /api/v1/events, with the staff session): on
# each event of these types it asks for the state again, once for a burst of events that
# come within STREAM_DEBOUNCE_MILLISECONDS.
STREAM_TYPES = ("job.", "batch.", "server.", "queue.")
STREAM_DEBOUNCE_MILLISECONDS = 250
# The event names it listens for (EventSource dispatches a message by its `event:` name):
# every type of those kinds (events_app.triggers), and the stream's `reset` (events were
# missed: the state is read again).
STREAM_EVENTS = (
    *(
        f"job.{name}"
        for name in (
            "queued",
            "started",
            "progress",
            "preview",
            "completed",
            "failed",
            "cancelled",
            "updated",
            "deleted",
        )
    ),
    "batch.created",
    "batch.updated",
    "batch.deleted",
    *(
        f"server.{name}"
        for name in (
            "added",
            "online",
            "offline",
            "paused",
            "resumed",
            "quarantined",
            "released",
            "updated",
            "deleted",
        )
    ),
    "queue.paused",
    "queue.resumed",
    "reset",
)
# A stream not open after this long is given up for polling; while it is open, the state is
# read this often anyway (the servers' "last seen" ages move without events).
STREAM_OPEN_TIMEOUT_MILLISECONDS = 5000
STREAM_REFRESH_MILLISECONDS = 60_000
# The deepest gallery page served: its offset stays far inside a 64-bit integer.
GALLERY_MAX_PAGE = 100_000


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _running_json(job: Job) -> dict[str, Any]:
    progress = job.progress or {}
    return {
        "id": str(job.pk),
        "url": reverse("admin:queue_app_job_change", args=[job.pk]),
        "server_id": job.server_id,
        "prompt": Truncator(job.prompt).chars(80),
        "percent": job.progress_percent,
        "step": progress.get("step"),
        "total_steps": progress.get("total_steps"),
        "eta_seconds": progress.get("eta_seconds"),
        "queued": bool(progress.get("queued")),
        "started_at": _iso(job.started_at),
        "retry_count": job.retry_count,
    }


def _server_json(server: Server, running: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": server.pk,
        "alias": server.alias,
        "url": reverse("admin:servers_app_server_change", args=[server.pk]),
        "state": server.state,
        "enabled": server.enabled,
        "online": server.is_online,
        "loaded_checkpoint": server.loaded_checkpoint,
        "queue_depth": int(getattr(server, "queue_depth", 0)),
        "slots": server.slots,
        "last_error": server.last_error,
        "last_seen": age(server.last_seen_at) if server.last_seen_at else "never",
        "running": running,
    }


def _image_json(image: JobImage) -> dict[str, Any]:
    return {
        "job_id": str(image.job_id),
        "index": image.index,
        "thumbnail_url": image.api_url(thumbnail=256),
        "url": reverse("admin:gallery_image", args=[image.job_id, image.index]),
        "prompt": Truncator(image.job.prompt).chars(80),
        "server": image.job.server_alias,
    }


def events_stream_url() -> str:
    """The event stream the dashboard follows, narrowed to the types it refreshes on."""
    return f"{reverse('events')}?{urlencode({'types': ','.join(STREAM_TYPES)})}"


def dashboard_stream() -> dict[str, Any]:
    """How the dashboard's script follows the stream (it polls without it)."""
    return {
        "url": events_stream_url(),
        "events": list(STREAM_EVENTS),
        "debounce_ms": STREAM_DEBOUNCE_MILLISECONDS,
        "open_timeout_ms": STREAM_OPEN_TIMEOUT_MILLISECONDS,
        "refresh_ms": STREAM_REFRESH_MILLISECONDS,
    }


def dashboard_problems() -> list[str]:
    """What stops the queue, as /api/v1/health's checks that read this database and disk
    find it (the broker's, a network round trip, is left to the health check): a worker,
    beat, the media storage. Empty when all is well. The database itself is not probed:
    the page has read it already."""
    database = Check(True, connection.vendor)
    checks = {
        "Workers": check_worker(database=database),
        "Beat": check_beat(database=database),
        "Media storage": check_storage(),
    }
    problems = [f"{name}: {check.detail}" for name, check in checks.items() if not check.ok]
    if checks["Workers"].ok and (short := _threads_short()) is not None:
        problems.append(f"Workers: {short}")
    return problems


def _threads_short() -> str | None:
    """The workers seen lately have fewer threads together than the enabled servers + 2
    (threads_shortfall_warning), as their heartbeats say."""
    threads = (
        WorkerHeartbeat.objects.alive(CeleryProcess.WORKER)
        .filter(threads__isnull=False)
        .aggregate(total=Sum("threads"))["total"]
    )
    if threads is None:
        return None
    servers = Server.objects.filter(enabled=True).count()
    return threads_shortfall_warning(
        threads=threads, servers=servers, whose="The workers running have"
    )


def dashboard_status() -> dict[str, Any]:
    """The dashboard's state: servers (with their running jobs and queue depth), jobs per
    status, and the latest images. Four queries, none of which counts the jobs."""
    # Counted from the job counts (queue_app/counts.py): a few rows per server and status,
    # however long the history.
    pending_here = (
        JobCount.objects.filter(server=OuterRef("pk"), status=JobStatus.PENDING)
        .order_by()
        .values("server")
        .annotate(n=Sum("n"))
        .values("n")
    )
    servers = Server.objects.annotate(
        queue_depth=Coalesce(Subquery(pending_here, output_field=IntegerField()), 0)
    ).order_by("alias")
    running = [
        _running_json(job)
        for job in Job.objects.filter(status=JobStatus.PROCESSING)
        .order_by("started_at", "created_at")
        .only(
            "id",
            "status",
            "server_id",
            "generation_params",
            "progress",
            "started_at",
            "retry_count",
        )
    ]
    counts = dict.fromkeys(JobStatus.values, 0)
    unassigned = 0
    for (status, server_id), n in job_totals_by("status", "server_id").items():
        counts[status] += n
        if status == JobStatus.PENDING and server_id is None:
            unassigned += n
    latest = gallery_images()[:LATEST_IMAGES]
    jobs_url = reverse("admin:queue_app_job_changelist")
    return {
        "generated_at": timezone.now().isoformat(),
        "poll_ms": POLL_MILLISECONDS,
        "stream": dashboard_stream(),
        "servers": [
            _server_json(server, [job for job in running if job["server_id"] == server.pk])
            for server in servers
        ],
        "running": running,
        "counts": counts,
        "unassigned_pending": unassigned,
        "count_urls": {
            status: f"{jobs_url}?{urlencode({'status__exact': status})}"
            for status in JobStatus.values
        },
        "latest_images": [_image_json(image) for image in latest],
    }


def gallery_images(
    *, server: str = "", checkpoint: str = "", search: str = ""
) -> QuerySet[JobImage]:
    """Images of completed jobs, newest first, filtered by server alias, checkpoint (as the
    server reported it) and prompt text.

    Newest first is the image's primary key backward: a page is read from that index's end
    (each image's job by its own key), so the first pages cost the same at any history.
    A filter is checked on the rows so read: a page of a rare server, checkpoint or prompt
    reads the newer images that do not match until it has its page."""
    # The status as a probe of each image's job, not a condition of the join: so that
    # SQLite's planner, without statistics, does not read every completed job through the
    # status index and sort their images, but reads the images in the order of the page.
    completed = Job.objects.filter(pk=OuterRef("job_id"), status=JobStatus.COMPLETED)
    images = JobImage.objects.filter(Exists(completed))
    if server:
        images = images.filter(
            Q(job__server__alias=server)
            | Q(job__server__isnull=True, job__target_server_alias=server)
        )
    if checkpoint:
        images = images.alias(checkpoint=ImageCheckpoint("job__result_details")).filter(
            checkpoint=checkpoint
        )
    if search:
        images = images.filter(
            Q(job__generation_params__positive_prompt__icontains=search)
            | Q(job__generation_params__prompt__icontains=search)
        )
    return images.select_related("job", "job__server").order_by("-pk")


def gallery_image(*, job_id: Any, index: int) -> JobImage | None:
    """One image of a job, with its job and server, or None."""
    return (
        JobImage.objects.select_related("job", "job__server")
        .filter(job_id=job_id, index=index)
        .first()
    )


@dataclass(frozen=True)
class GalleryPage:
    """One page of the gallery, found without counting the images: one more than a page is
    read to know whether an older page follows."""

    number: int
    images: list[JobImage]
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1


def gallery_page(images: QuerySet[JobImage], *, number: int, size: int) -> GalleryPage:
    """Page `number` (1 the newest, at most GALLERY_MAX_PAGE) of `images`, `size` a page.

    One query of `size + 1` rows at an offset: the first pages cost a page whatever the
    history; a deep page reads and skips the images before it."""
    number = min(max(number, 1), GALLERY_MAX_PAGE)
    start = (number - 1) * size
    rows = list(images[start : start + size + 1])
    return GalleryPage(number=number, images=rows[:size], has_next=len(rows) > size)


def gallery_neighbours(
    image: JobImage, images: QuerySet[JobImage]
) -> tuple[JobImage | None, JobImage | None]:
    """The images just newer and just older than `image` among `images` (the gallery's
    current filters): one row each, read from `image`'s place in the primary key's
    index."""
    newer = images.filter(pk__gt=image.pk).order_by("pk").first()
    older = images.filter(pk__lt=image.pk).order_by("-pk").first()
    return newer, older


# A loose index scan over job_completed_checkpoint: each step is one probe of the index for
# the first name after the one before (the path of the index's own expression, the status
# of its condition, both written in so that SQLite matches them too).
_CHECKPOINTS = """
WITH RECURSIVE seen(name) AS (
    SELECT ({first})
    UNION ALL
    SELECT ({after}) FROM seen WHERE seen.name IS NOT NULL
)
SELECT name FROM seen WHERE name IS NOT NULL
"""
_NEXT_CHECKPOINT = (
    "SELECT {name} FROM {job} WHERE status = '{completed}' AND {name} > {previous} "
    "ORDER BY {name} LIMIT 1"
)


def gallery_checkpoints() -> list[str]:
    """The checkpoints that made the stored images (of completed jobs, as their servers
    reported them), sorted, for the gallery's filter.

    Exact and as cheap as the number of checkpoints, not of jobs: a recursive query walks
    the expression index job_completed_checkpoint (queue_app.models) from one name to the
    next, one index probe per checkpoint, on PostgreSQL and SQLite alike. Not a table of
    checkpoints seen: it would need keeping through every completion, deletion and
    rewrite of a job's result, where the index is kept by the database."""
    query = Job.objects.all().query
    # No parameters: the expression has its path written in.
    name, _ = query.get_compiler(connection=connection).compile(
        ImageCheckpoint().resolve_expression(query)
    )
    job = connection.ops.quote_name(Job._meta.db_table)

    def step(previous: str) -> str:
        return _NEXT_CHECKPOINT.format(
            name=name, job=job, completed=JobStatus.COMPLETED.value, previous=previous
        )

    sql = _CHECKPOINTS.format(first=step("''"), after=step("seen.name"))
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


def server_aliases() -> list[str]:
    """Every server's alias, for the gallery's filter."""
    return list(Server.objects.order_by("alias").values_list("alias", flat=True))
