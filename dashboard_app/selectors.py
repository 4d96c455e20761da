"""The dashboard's reads: the live state of the servers and the queue, and the gallery's
images. Nothing here writes; the pages' actions are the ModelAdmins', which call services."""

from datetime import datetime
from typing import Any

from django.db.models import IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.text import Truncator

from core_app.display import age
from queue_app.counts import job_totals_by
from queue_app.models import Job, JobCount, JobImage, JobStatus
from servers_app.models import Server

LATEST_IMAGES = 12
# The dashboard asks for the state this often (milliseconds) while it is visible.
POLL_MILLISECONDS = 2000

# The image's checkpoint, as the server reported it in the job's generation info.
CHECKPOINT_PATH = "result_details__generation_info__sd_model_name"


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
    latest = (
        JobImage.objects.filter(job__status=JobStatus.COMPLETED)
        .select_related("job", "job__server")
        .order_by("-pk")[:LATEST_IMAGES]
    )
    jobs_url = reverse("admin:queue_app_job_changelist")
    return {
        "generated_at": timezone.now().isoformat(),
        "poll_ms": POLL_MILLISECONDS,
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
    server reported it) and prompt text."""
    images = JobImage.objects.filter(job__status=JobStatus.COMPLETED)
    if server:
        images = images.filter(
            Q(job__server__alias=server)
            | Q(job__server__isnull=True, job__target_server_alias=server)
        )
    if checkpoint:
        images = images.filter(**{f"job__{CHECKPOINT_PATH}": checkpoint})
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


def gallery_neighbours(
    image: JobImage, images: QuerySet[JobImage]
) -> tuple[JobImage | None, JobImage | None]:
    """The images just newer and just older than `image` among `images` (the gallery's
    current filters)."""
    newer = images.filter(pk__gt=image.pk).order_by("pk").first()
    older = images.filter(pk__lt=image.pk).order_by("-pk").first()
    return newer, older


def gallery_checkpoints() -> list[str]:
    """The checkpoints that made the stored images, for the gallery's filter."""
    names = (
        Job.objects.filter(status=JobStatus.COMPLETED)
        .annotate(checkpoint=KT(CHECKPOINT_PATH))
        .exclude(checkpoint__isnull=True)
        .exclude(checkpoint="")
        .order_by("checkpoint")
        .values_list("checkpoint", flat=True)
        .distinct()
    )
    return list(names)


def server_aliases() -> list[str]:
    """Every server's alias, for the gallery's filter."""
    return list(Server.objects.order_by("alias").values_list("alias", flat=True))
