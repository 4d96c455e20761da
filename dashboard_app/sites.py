"""The operator's dashboard: MobileSD's one AdminSite, the default `admin.site`.

- `/admin/` — the admin index with the live state of every server and of the queue, and the
  latest images; it refreshes itself from the JSON below (static/mobilesd/dashboard.js).
- `/admin/dashboard/status` — that state as JSON, for staff sessions only.
- `/admin/gallery/` and `/admin/gallery/<job id>/<index>/` — finished images, newest first,
  and one image with its parameters.

Reads only (dashboard_app.selectors): the actions on jobs and servers are the ModelAdmins',
which call services.
"""

from typing import Any
from uuid import UUID

from django.contrib import admin, messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from core_app.display import age
from core_app.errors import MobileSDError, error_body
from core_app.forms import ThrottledAdminAuthenticationForm
from dashboard_app import selectors
from queue_app.control import jobs_cancel, queue_pause, queue_paused_at, queue_resume
from queue_app.models import JobImage

GALLERY_PAGE_SIZE = 24
# The gallery's filters, as query parameters; kept on every link between its pages.
GALLERY_FILTERS = ("server", "checkpoint", "q")

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


def _gallery_filters(request: HttpRequest) -> dict[str, str]:
    return {
        name: request.GET.get(name, "").strip()[:500]
        for name in GALLERY_FILTERS
        if request.GET.get(name, "").strip()
    }


def _page_number(value: str | None) -> int:
    """The gallery's `page` parameter: 1 unless it is a whole number."""
    try:
        return int(value or 1)
    except ValueError:
        return 1


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def _parameter_rows(params: dict[str, Any]) -> list[tuple[str, Any]]:
    """A job's parameters as (label, value): the usual ones first, then the rest by name
    (the seed is each image's own, shown apart)."""
    shown = {key for key, _ in SHOWN_PARAMETERS}
    rows = [
        (label, params[key]) for key, label in SHOWN_PARAMETERS if params.get(key) not in (None, "")
    ]
    rows += [
        (key, value) for key, value in sorted(params.items()) if key not in shown and key != "seed"
    ]
    return rows


class DashboardSite(admin.AdminSite):
    """The Django admin as the operator's dashboard, with the gallery beside the models."""

    site_header = "MobileSD"
    site_title = "MobileSD"
    index_title = "Operator dashboard"
    # The pages have their own navigation bar (templates/admin/base_site.html here): the
    # sidebar would take a third of a laptop's screen. MobileSD serves no site at "/".
    enable_nav_sidebar = False
    site_url = None
    login_form = ThrottledAdminAuthenticationForm

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)
        # Every model's deletion goes through a service (image files, active-job checks), so
        # the generic bulk delete, which bypasses them, is off; each admin offers its own.
        self.disable_action("delete_selected")

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """The admin's login, limited per client address (core_app.forms): a refused
        address gets the form with the reason, as a 429."""
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        refused = getattr(form, "refused", None)
        if refused is not None:
            response.status_code = 429
            response["Retry-After"] = str(refused.retry_after)
        return response

    def get_urls(self) -> list[URLResolver | URLPattern]:
        # Before the admin's own: its last pattern catches every other path.
        return [
            path("dashboard/status", never_cache(self.status_view), name="dashboard_status"),
            path(
                "dashboard/queue/cancel-waiting",
                self.admin_view(require_POST(self.queue_cancel_waiting_view)),
                name="dashboard_queue_cancel_waiting",
            ),
            path(
                "dashboard/queue/<str:switch>",
                self.admin_view(require_POST(self.queue_switch_view)),
                name="dashboard_queue_switch",
            ),
            path("gallery/", self.admin_view(self.gallery_view), name="gallery"),
            path(
                "gallery/<uuid:job_id>/<int:index>/",
                self.admin_view(self.gallery_image_view),
                name="gallery_image",
            ),
            *super().get_urls(),
        ]

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        """The admin index, with the dashboard above the list of models."""
        context = {
            "dashboard": selectors.dashboard_status(),
            "dashboard_problems": selectors.dashboard_problems(),
            "queue_paused_at": queue_paused_at(),
            "server_aliases": selectors.server_aliases(),
            "dashboard_status_url": reverse("admin:dashboard_status", current_app=self.name),
            **(extra_context or {}),
        }
        return super().index(request, extra_context=context)

    def queue_switch_view(self, request: HttpRequest, switch: str) -> HttpResponse:
        """The dashboard's Pause / Resume button for the whole queue."""
        if switch == "pause":
            queue_pause()
            messages.success(request, "Queue paused: running jobs finish, no new job starts.")
        elif switch == "resume":
            queue_resume()
            messages.success(request, "Queue resumed.")
        else:
            raise Http404("No such switch.")
        return HttpResponseRedirect(reverse("admin:index", current_app=self.name))

    def queue_cancel_waiting_view(self, request: HttpRequest) -> HttpResponse:
        """The dashboard's "Cancel waiting jobs" button: every user's pending jobs, of one
        server's queue if a server is chosen ("any": those waiting for any server); the
        running ones go on ("all but the current one")."""
        alias = request.POST.get("server", "").strip()
        try:
            cancelled = jobs_cancel(owner=None, server_alias=alias or None)
        except MobileSDError as exc:
            messages.error(request, str(exc))
        else:
            where = f" of {alias}" if alias else ""
            messages.success(request, f"Cancelled {cancelled} waiting job(s){where}.")
        return HttpResponseRedirect(reverse("admin:index", current_app=self.name))

    def status_view(self, request: HttpRequest) -> JsonResponse:
        """The dashboard's state as JSON."""
        # Polled by script: a lapsed session gets a 403 to show, not the login page's HTML.
        if not self.has_permission(request):
            return JsonResponse(
                error_body("Log in to the admin as staff.", "not_authenticated"),
                status=403,
            )
        return JsonResponse(selectors.dashboard_status())

    def gallery_view(self, request: HttpRequest) -> HttpResponse:
        """Finished images, newest first, a page at a time, with the gallery's filters; the
        images are not counted (a page costs the same at any history): "page N" and Newer /
        Older links."""
        filters = _gallery_filters(request)
        images = selectors.gallery_images(
            server=filters.get("server", ""),
            checkpoint=filters.get("checkpoint", ""),
            search=filters.get("q", ""),
        )
        page = selectors.gallery_page(
            images, number=_page_number(request.GET.get("page")), size=GALLERY_PAGE_SIZE
        )
        query = urlencode(filters)
        context = {
            **self.each_context(request),
            "title": "Gallery",
            "page": page,
            "cards": [
                {
                    "image": image,
                    "prompt": Truncator(image.job.prompt).chars(90),
                    "checkpoint": image.job.image_checkpoint,
                    "age": age(image.job.completed_at or image.created_at),
                    "thumbnail_url": image.api_url(thumbnail=384),
                    "url": _with_query(
                        reverse("admin:gallery_image", args=[image.job_id, image.index]), query
                    ),
                }
                for image in page.images
            ],
            "filters": filters,
            "query": query,
            "servers": selectors.server_aliases(),
            "checkpoints": selectors.gallery_checkpoints(),
        }
        return TemplateResponse(request, "admin/mobilesd/gallery.html", context)

    def gallery_image_view(self, request: HttpRequest, job_id: UUID, index: int) -> HttpResponse:
        """One image, large, with its parameters and links to its neighbours under the same
        filters."""
        image = selectors.gallery_image(job_id=job_id, index=index)
        if image is None:
            raise Http404("No such image.")
        job = image.job
        filters = _gallery_filters(request)
        query = urlencode(filters)
        newer, older = selectors.gallery_neighbours(
            image,
            selectors.gallery_images(
                server=filters.get("server", ""),
                checkpoint=filters.get("checkpoint", ""),
                search=filters.get("q", ""),
            ),
        )

        def link(other: JobImage | None) -> str | None:
            if other is None:
                return None
            return _with_query(
                reverse("admin:gallery_image", args=[other.job_id, other.index]), query
            )

        context = {
            **self.each_context(request),
            "title": f"Image {image.index} of job {job.short_id}",
            "image": image,
            "job": job,
            "image_url": image.api_url(),
            "preview_url": image.api_url(thumbnail=1024),
            "job_url": reverse("admin:queue_app_job_change", args=[job.pk]),
            "run_again_url": reverse("admin:queue_app_job_run_again", args=[job.pk]),
            "gallery_url": _with_query(reverse("admin:gallery"), query),
            "newer_url": link(newer),
            "older_url": link(older),
            "checkpoint": job.image_checkpoint,
            "server": job.server_alias,
            "parameters": _parameter_rows(job.generation_params or {}),
            "error": job.error_text,
        }
        return TemplateResponse(request, "admin/mobilesd/gallery_image.html", context)
