"""Admin for jobs: the operator's view of the queue. Every action goes through a service."""

import json
import uuid
from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from core_app.admin_actions import ObjectActionsAdmin, apply_to_each, object_action
from core_app.display import age
from queue_app.batches import batch_cancel, batch_delete
from queue_app.control import job_move, queue_pause, queue_resume
from queue_app.counts import JobCountPaginator
from queue_app.models import (
    ACTIVE_STATUSES,
    Batch,
    Job,
    JobInput,
    JobInputRole,
    JobPreview,
    JobStatus,
    QueueState,
    Upload,
)
from queue_app.services import job_cancel, job_delete, job_retry, job_run_again
from queue_app.uploads import upload_delete

RETRYABLE_STATUSES = (JobStatus.FAILED, JobStatus.CANCELLED)


def _input_caption(row: JobInput) -> str:
    """What an input is to the job: an init image (by its place in `init_images`), the
    mask, or an image an extension's unit names (by its place among those)."""
    if row.role == JobInputRole.MASK:
        return "mask"
    if row.role == JobInputRole.SCRIPT:
        return f"script image #{row.position}"
    return f"init #{row.position}"


@admin.register(Job)
class JobAdmin(ObjectActionsAdmin):
    list_display = (
        "thumbnail",
        "short_id",
        "status_badge",
        "progress_bar",
        "server_alias",
        "owner",
        "prompt_excerpt",
        "age",
        "retry_count",
    )
    list_display_links = ("thumbnail", "short_id")
    list_filter = ("status", "server", "owner", "created_at")
    list_select_related = ("server", "owner")
    list_per_page = 50
    # The page's count from the job counts where they answer (queue_app/counts.py), and no
    # second count of every job: both would read the whole history on each page.
    paginator = JobCountPaginator
    show_full_result_count = False
    # Facets would count every job once per filter choice.
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("id",)
    search_help_text = "Search by prompt text, job id or the owner's username."
    ordering = ("-created_at", "-id")
    # No date_hierarchy: it reads the dates of every matching job on each page; the
    # "created_at" filter above gives the same periods without a scan.
    readonly_fields = (
        "id",
        "owner",
        "status_badge",
        "progress_bar",
        "server",
        "target_server_alias",
        "error",
        "live_preview",
        "images_large",
        "inputs",
        "parameters",
        "generation_info",
        "forge_session_hash",
        "retry_count",
        "priority",
        "created_at",
        "started_at",
        "updated_at",
        "completed_at",
        "api_key",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status_badge",
                    "progress_bar",
                    "error",
                    "owner",
                    "server",
                    "target_server_alias",
                    "priority",
                    "retry_count",
                )
            },
        ),
        ("Images", {"fields": ("live_preview", "images_large")}),
        ("Inputs", {"fields": ("inputs",)}),
        ("Parameters", {"fields": ("parameters",)}),
        ("Generation info", {"fields": ("generation_info",)}),
        (
            "Timing",
            {"fields": ("created_at", "started_at", "updated_at", "completed_at")},
        ),
        ("Technical", {"fields": ("id", "forge_session_hash", "api_key")}),
    )
    actions = ("cancel_jobs", "retry_jobs", "run_again", "delete_jobs")
    object_actions = (
        "move_top_button",
        "move_bottom_button",
        "cancel_button",
        "retry_button",
        "run_again_button",
    )
    # Nothing on a job is saved by hand, so its Delete stands with the buttons.
    object_delete_link = True

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs come from the API, which validates them

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            pass
        matches = queryset.filter(generation_params__positive_prompt__icontains=term)
        matches |= queryset.filter(generation_params__prompt__icontains=term)
        matches |= queryset.filter(owner__username__iexact=term)
        return matches, False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).prefetch_related("images")

    # --- the job page: read-only, with buttons for the services -----------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "title": "Job",
            # Nothing on a job is edited by hand: the buttons replace "Save".
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, context)

    @object_action(
        path="move-top", label="Move to the top", shown=lambda job: job.status == JobStatus.PENDING
    )
    def move_top_button(self, request: HttpRequest, job: Job) -> None:
        moved = job_move(job_id=job.pk, owner=None, position="top")
        self.message_user(
            request, f"Job moved to the top (priority {moved.priority}).", messages.SUCCESS
        )

    @object_action(
        path="move-bottom",
        label="Move to the bottom",
        shown=lambda job: job.status == JobStatus.PENDING,
    )
    def move_bottom_button(self, request: HttpRequest, job: Job) -> None:
        moved = job_move(job_id=job.pk, owner=None, position="bottom")
        self.message_user(
            request, f"Job moved to the bottom (priority {moved.priority}).", messages.SUCCESS
        )

    @object_action(
        path="cancel",
        label="Cancel job",
        style="msd-danger",
        shown=lambda job: job.status in ACTIVE_STATUSES,
    )
    def cancel_button(self, request: HttpRequest, job: Job) -> None:
        job_cancel(job_id=job.pk, owner=None)
        self.message_user(request, "Job cancelled.", messages.SUCCESS)

    @object_action(path="retry", label="Retry", shown=lambda job: job.status in RETRYABLE_STATUSES)
    def retry_button(self, request: HttpRequest, job: Job) -> None:
        job_retry(job_id=job.pk, owner=None)
        self.message_user(request, "Job queued again.", messages.SUCCESS)

    @object_action(path="run-again", label="Run again with a new seed", refused=messages.ERROR)
    def run_again_button(self, request: HttpRequest, job: Job) -> Job:
        """Queue a copy with a new seed and show the copy's page."""
        new_job = job_run_again(job_id=job.pk, owner=None)
        self.message_user(
            request, f"Queued a new job with a new seed (from {job.pk}).", messages.SUCCESS
        )
        return new_job

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        job_delete(job_id=obj.pk, owner=None)

    # --- columns and read-only fields -------------------------------------------------------

    @admin.display(description="")
    def thumbnail(self, obj: Job) -> str:
        first = next(iter(obj.images.all()), None)
        if first is None:
            return mark_safe('<span class="msd-nothumb" aria-hidden="true"></span>')
        return format_html(
            '<img class="msd-thumb" src="{}" alt="" loading="lazy" width="64" height="64">',
            first.api_url(thumbnail=128),
        )

    @admin.display(description="Job", ordering="id")
    def short_id(self, obj: Job) -> str:
        return format_html('<span title="{}">{}</span>', obj.pk, obj.short_id)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Job) -> str:
        return format_html(
            '<span class="msd-badge msd-{}" data-msd-job-status="{}">{}</span>',
            obj.status,
            obj.pk,
            obj.status,
        )

    @admin.display(description="Progress")
    def progress_bar(self, obj: Job) -> str:
        if obj.status not in (JobStatus.PROCESSING, JobStatus.COMPLETED):
            return "—"
        percent = obj.progress_percent
        return format_html(
            '<span class="msd-progress" data-msd-job-progress="{}">'
            '<progress value="{}" max="100"></progress> <span class="msd-pct">{}%</span></span>',
            obj.pk,
            percent,
            percent,
        )

    @admin.display(description="Error")
    def error(self, obj: Job) -> str:
        text = obj.error_text
        return format_html('<span class="msd-error">{}</span>', text) if text else "—"

    @admin.display(description="Live preview")
    def live_preview(self, obj: Job) -> SafeString | str:
        """The latest preview while the job runs (as the phone sees it, at page load)."""
        preview = JobPreview.objects.filter(job=obj).only("version", "width", "height").first()
        if obj.status != JobStatus.PROCESSING or preview is None:
            return "—"
        return format_html(
            '<img class="msd-preview" src="{}" alt="live preview {}" width="{}" height="{}">',
            f"{reverse('job-preview', args=[obj.pk])}?v={preview.version}",
            preview.version,
            preview.width,
            preview.height,
        )

    @admin.display(description="Images")
    def images_large(self, obj: Job) -> SafeString | str:
        images = list(obj.images.all())
        if not images:
            return "—"
        return format_html(
            '<div class="msd-images">{}</div>',
            format_html_join(
                "",
                '<figure><a href="{}" target="_blank" rel="noopener"><img src="{}" alt="image {}" '
                'loading="lazy"></a><figcaption>#{} · seed {} · {}&times;{} · '
                '<a href="{}">parameters</a></figcaption></figure>',
                (
                    (
                        image.api_url(),
                        image.api_url(thumbnail=1024),
                        image.index,
                        image.index,
                        image.seed if image.seed is not None else "?",
                        image.width or "?",
                        image.height or "?",
                        reverse("admin:gallery_image", args=[obj.pk, image.index]),
                    )
                    for image in images
                ),
            ),
        )

    @admin.display(description="Input images")
    def inputs(self, obj: Job) -> SafeString | str:
        """The init images and mask of an img2img / inpaint job and the images its
        extensions' units name (ControlNet's, ...), as sent to the server."""
        rows = list(obj.inputs.select_related("upload"))
        if not rows:
            return "—"
        return format_html(
            '<div class="msd-images">{}</div>',
            format_html_join(
                "",
                '<figure><a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" '
                'loading="lazy"></a><figcaption>{} · {}&times;{} · {}</figcaption></figure>',
                (
                    (
                        url,
                        url,
                        row.role,
                        _input_caption(row),
                        row.upload.width,
                        row.upload.height,
                        row.upload.content_type,
                    )
                    for row in rows
                    for url in [reverse("upload-file", args=[row.upload_id])]
                ),
            ),
        )

    @admin.display(description="Parameters")
    def parameters(self, obj: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.generation_params, indent=2))

    @admin.display(description="Generation info")
    def generation_info(self, obj: Job) -> str:
        info = obj.generation_info
        return format_html("<pre>{}</pre>", json.dumps(info, indent=2)) if info else "—"

    @admin.display(description="Prompt")
    def prompt_excerpt(self, obj: Job) -> str:
        return Truncator(obj.prompt).chars(80)

    @admin.display(description="Server", ordering="server__alias")
    def server_alias(self, obj: Job) -> str:
        return obj.server_alias

    @admin.display(description="Age", ordering="created_at")
    def age(self, obj: Job) -> str:
        return format_html(
            '<time datetime="{}">{}</time>', obj.created_at.isoformat(), age(obj.created_at)
        )

    # --- bulk actions -----------------------------------------------------------------------

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(job_cancel, owner=None),
            key="job_id",
            done="Cancelled {count} job(s).",
        )

    @admin.action(description="Retry selected failed or cancelled jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(job_retry, owner=None),
            key="job_id",
            done="Requeued {count} job(s).",
        )

    @admin.action(description="Run selected jobs again with a new seed")
    def run_again(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(job_run_again, owner=None),
            key="job_id",
            done="Queued {count} new job(s).",
        )

    @admin.action(description="Delete selected jobs and their images")
    def delete_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(job_delete, owner=None),
            key="job_id",
            done="Deleted {count} job(s).",
        )


@admin.register(QueueState)
class QueueStateAdmin(ObjectActionsAdmin):
    """The whole queue's pause (the dashboard has the same buttons)."""

    list_display = ("__str__", "paused_at")
    list_filter = ()
    search_fields = ()
    ordering = ("id",)
    readonly_fields = ("paused_at",)
    fields = ("paused_at",)
    object_actions = ("pause_button", "resume_button")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the row appears with the first pause

    def has_delete_permission(self, request: HttpRequest, obj: QueueState | None = None) -> bool:
        return False

    @object_action(path="pause", label="Pause the queue", shown=lambda s: s.paused_at is None)
    def pause_button(self, request: HttpRequest, state: QueueState) -> None:
        queue_pause()
        self.message_user(request, "Queue paused.", messages.SUCCESS)

    @object_action(path="resume", label="Resume the queue", shown=lambda s: s.paused_at is not None)
    def resume_button(self, request: HttpRequest, state: QueueState) -> None:
        queue_resume()
        self.message_user(request, "Queue resumed.", messages.SUCCESS)


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Batches: who asked for which jobs. Cancel and delete go through queue_app.batches."""

    list_display = ("__str__", "server_alias", "owner", "job_count", "priority", "created_at")
    list_filter = ("created_at", "server")
    search_fields = ("id", "name", "owner__username")
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "server",
        "target_server_alias",
        "priority",
        "request",
        "job_count",
        "created_at",
        "idempotency_key",
        "api_key",
        "owner",
    )
    actions = ("cancel_batches",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # batches come from the API, which validates them

    @admin.action(description="Cancel the pending and processing jobs of selected batches")
    def cancel_batches(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(batch_cancel, owner=None),
            key="batch_id",
            done="Cancelled the jobs of {count} batch(es).",
        )

    def delete_model(self, request: HttpRequest, obj: Batch) -> None:
        batch_delete(batch_id=obj.pk, owner=None)  # its jobs and their images too

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        for batch_id in queryset.values_list("pk", flat=True):
            batch_delete(batch_id=batch_id, owner=None)


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    """Uploaded input images. Written by the API only; removed by the cleanup task once no
    job uses them. Deleting one goes through the service: one a job still uses is hidden
    from its owner and kept for the job."""

    list_display = ("preview", "id", "owner", "size", "content_type", "created_at", "last_used_at")
    list_filter = ("content_type", "created_at", "owner")
    search_fields = ("id", "sha256", "owner__username")
    ordering = ("-created_at",)
    list_select_related = ("owner",)
    readonly_fields = (
        "preview",
        "id",
        "owner",
        "file",
        "content_type",
        "size_bytes",
        "width",
        "height",
        "sha256",
        "created_at",
        "last_used_at",
        "deleted_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads come from the API, which checks them

    def has_change_permission(self, request: HttpRequest, obj: Upload | None = None) -> bool:
        return False

    @admin.display(description="Image")
    def preview(self, obj: Upload) -> str:
        url = reverse("upload-file", args=[obj.pk])
        return format_html('<img src="{}" alt="upload" style="max-height:64px">', url)

    @admin.display(description="Size")
    def size(self, obj: Upload) -> str:
        return f"{obj.width}x{obj.height}"

    def delete_model(self, request: HttpRequest, obj: Upload) -> None:
        upload_delete(upload_id=obj.pk, owner=None)  # its file too, or hidden while used

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Upload]) -> None:
        for upload_id in queryset.values_list("pk", flat=True):
            upload_delete(upload_id=upload_id, owner=None)
