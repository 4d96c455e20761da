"""The operator's dashboard in the Django admin.

- `/admin/` — the admin index with the live state of every server and of the queue, and the
  latest images; it refreshes itself from the JSON below (core_app/static/mobilesd/).
- `/admin/dashboard/status` — that state as JSON, for staff sessions only.
- `/admin/gallery/` and `/admin/gallery/<job id>/<index>/` — finished images, newest first,
  and one image with its parameters.

Reads only: the actions on jobs and servers are the ModelAdmins', which call services.
Included in mobilesd/urls.py before `admin.site.urls`, so `/admin/` is this index.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.views.decorators.cache import never_cache

from core_app.display import age
from queue_app.models import Job, JobImage, JobStatus
from servers_app.models import Server

LATEST_IMAGES = 12
GALLERY_PAGE_SIZE = 24
# The dashboard asks for the state this often (milliseconds) while it is visible.
POLL_MILLISECONDS = 2000

# The image's checkpoint, as the server reported it in the job's generation info.
CHECKPOINT_PATH = "result_details__generation_info__sd_model_name"


# --- reads ----------------------------------------------------------------------------------


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
        "url": reverse("mobilesd-gallery-image", args=[image.job_id, image.index]),
        "prompt": Truncator(image.job.prompt).chars(80),
        "server": image.job.server_alias,
    }


def dashboard_status() -> dict[str, Any]:
    """The dashboard's state: servers (with their running jobs and queue depth), jobs per
    status, and the latest images. Four queries, whatever the number of rows."""
    pending_here = (
        Job.objects.filter(server=OuterRef("pk"), status=JobStatus.PENDING)
        .order_by()
        .values("server")
        .annotate(n=Count("pk"))
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
    for row in (
        Job.objects.order_by()
        .values("status")
        .annotate(n=Count("pk"), unassigned=Count("pk", filter=Q(server__isnull=True)))
    ):
        counts[row["status"]] = row["n"]
        if row["status"] == JobStatus.PENDING:
            unassigned = row["unassigned"]
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


# --- views ----------------------------------------------------------------------------------


def dashboard_index(request: HttpRequest) -> HttpResponse:
    """The admin index, with the dashboard above the list of models."""
    return admin.site.index(
        request,
        extra_context={
            "dashboard": dashboard_status(),
            "dashboard_status_url": reverse("mobilesd-dashboard-status"),
        },
    )


@never_cache
def dashboard_status_view(request: HttpRequest) -> JsonResponse:
    # Polled by script: a lapsed session gets a 403 to show, not the login page's HTML.
    if not admin.site.has_permission(request):
        return JsonResponse(
            {"message": "Log in to the admin as staff.", "code": "not_authenticated"},
            status=403,
        )
    return JsonResponse(dashboard_status())


def _filters(request: HttpRequest) -> dict[str, str]:
    return {
        name: request.GET.get(name, "").strip()[:500]
        for name in ("server", "checkpoint", "q")
        if request.GET.get(name, "").strip()
    }


def gallery_view(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    images = gallery_images(
        server=filters.get("server", ""),
        checkpoint=filters.get("checkpoint", ""),
        search=filters.get("q", ""),
    )
    page = Paginator(images, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    query = urlencode(filters)
    context = {
        **admin.site.each_context(request),
        "title": "Gallery",
        "page": page,
        "cards": [
            {
                "image": image,
                "prompt": Truncator(image.job.prompt).chars(90),
                "checkpoint": image.job.image_checkpoint,
                "age": age(image.job.completed_at or image.created_at),
                "thumbnail_url": image.api_url(thumbnail=384),
                "url": reverse("mobilesd-gallery-image", args=[image.job_id, image.index])
                + (f"?{query}" if query else ""),
            }
            for image in page.object_list
        ],
        "filters": filters,
        "query": query,
        "servers": list(Server.objects.order_by("alias").values_list("alias", flat=True)),
        "checkpoints": gallery_checkpoints(),
    }
    return TemplateResponse(request, "admin/mobilesd/gallery.html", context)


# The parameters shown first on an image's page, in this order, with their labels.
SHOWN_PARAMETERS = (
    ("positive_prompt", "Prompt"),
    ("prompt", "Prompt"),
    ("negative_prompt", "Negative prompt"),
    ("checkpoint_name", "Checkpoint requested"),
    ("steps", "Steps"),
    ("sampler_name", "Sampler"),
    ("scheduler_or_quality_preset", "Scheduler"),
    ("cfg_scale", "CFG scale"),
    ("distilled_cfg_scale", "Distilled CFG"),
    ("width", "Width"),
    ("height", "Height"),
    ("loras", "LoRAs"),
)


def gallery_image_view(request: HttpRequest, job_id: UUID, index: int) -> HttpResponse:
    image = get_object_or_404(
        JobImage.objects.select_related("job", "job__server"), job_id=job_id, index=index
    )
    job = image.job
    filters = _filters(request)
    query = urlencode(filters)
    same_filters = gallery_images(
        server=filters.get("server", ""),
        checkpoint=filters.get("checkpoint", ""),
        search=filters.get("q", ""),
    )
    newer = same_filters.filter(pk__gt=image.pk).order_by("pk").first()
    older = same_filters.filter(pk__lt=image.pk).order_by("-pk").first()
    params = job.generation_params or {}
    shown = {key for key, _ in SHOWN_PARAMETERS}
    rows = [
        (label, params[key]) for key, label in SHOWN_PARAMETERS if params.get(key) not in (None, "")
    ]
    rows += [
        (key, value) for key, value in sorted(params.items()) if key not in shown and key != "seed"
    ]

    def link(other: JobImage | None) -> str | None:
        if other is None:
            return None
        url = reverse("mobilesd-gallery-image", args=[other.job_id, other.index])
        return f"{url}?{query}" if query else url

    context = {
        **admin.site.each_context(request),
        "title": f"Image {image.index} of job {job.short_id}",
        "image": image,
        "job": job,
        "image_url": image.api_url(),
        "preview_url": image.api_url(thumbnail=1024),
        "job_url": reverse("admin:queue_app_job_change", args=[job.pk]),
        "run_again_url": reverse("admin:queue_app_job_run_again", args=[job.pk]),
        "gallery_url": reverse("mobilesd-gallery") + (f"?{query}" if query else ""),
        "newer_url": link(newer),
        "older_url": link(older),
        "checkpoint": job.image_checkpoint,
        "server": job.server_alias,
        "parameters": rows,
        "error": job.error_text,
    }
    return TemplateResponse(request, "admin/mobilesd/gallery_image.html", context)


urlpatterns: list[URLPattern] = [
    path("", admin.site.admin_view(dashboard_index), name="mobilesd-dashboard"),
    path("dashboard/status", dashboard_status_view, name="mobilesd-dashboard-status"),
    path("gallery/", admin.site.admin_view(gallery_view), name="mobilesd-gallery"),
    path(
        "gallery/<uuid:job_id>/<int:index>/",
        admin.site.admin_view(gallery_image_view),
        name="mobilesd-gallery-image",
    ),
]
