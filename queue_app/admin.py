"""Admin for jobs: the operator's view of the queue."""

import json
import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from core_app.errors import Conflict
from queue_app.models import Job, JobImage, JobStatus
from queue_app.services import job_cancel, job_delete, job_retry


def image_url(job_id: Any, index: int, *, thumbnail: int | None = None) -> str:
    url = reverse("job-image", args=[job_id, index])
    return f"{url}/thumbnail?size={thumbnail}" if thumbnail else url


class JobImageInline(admin.TabularInline):
    model = JobImage
    extra = 0
    can_delete = False
    fields = ("preview", "index", "seed", "width", "height", "file")
    readonly_fields = fields

    @admin.display(description="Image")
    def preview(self, obj: JobImage) -> str:
        return format_html(
            '<a href="{}" target="_blank"><img src="{}" alt="image {}" '
            'style="max-width:min(100%,512px);height:auto;border-radius:4px"></a>',
            image_url(obj.job_id, obj.index),
            image_url(obj.job_id, obj.index, thumbnail=512),
            obj.index,
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail",
        "id",
        "status_badge",
        "progress_bar",
        "server_alias",
        "prompt_excerpt",
        "created_at",
        "retry_count",
    )
    list_display_links = ("thumbnail", "id")
    list_filter = ("status", "server", "created_at")
    list_select_related = ("server",)
    search_fields = ("id",)
    search_help_text = "Search by prompt text or job id."
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "status_badge",
        "progress_bar",
        "server",
        "target_server_alias",
        "error",
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
    fields = readonly_fields
    inlines = (JobImageInline,)
    actions = ("cancel_jobs", "retry_jobs", "delete_jobs")

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
        return matches, False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).prefetch_related("images")

    @admin.display(description="")
    def thumbnail(self, obj: Job) -> str:
        first = next(iter(obj.images.all()), None)
        if first is None:
            return "—"
        return format_html(
            '<img src="{}" alt="" loading="lazy" width="64" '
            'style="height:auto;max-height:64px;border-radius:3px">',
            image_url(obj.pk, first.index, thumbnail=128),
        )

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Job) -> str:
        return format_html('<span class="msd-badge msd-{}">{}</span>', obj.status, obj.status)

    @admin.display(description="Progress")
    def progress_bar(self, obj: Job) -> str:
        if obj.status != JobStatus.PROCESSING:
            return "100%" if obj.status == JobStatus.COMPLETED else "—"
        fraction = float((obj.progress or {}).get("fraction") or 0)
        percent = round(fraction * 100)
        return format_html(
            '<progress value="{}" max="100" title="{}%">{}%</progress> {}%',
            percent,
            percent,
            percent,
            percent,
        )

    @admin.display(description="Error")
    def error(self, obj: Job) -> str:
        details = obj.result_details or {}
        return str(details.get("error") or details.get("last_error") or "—")

    @admin.display(description="Parameters")
    def parameters(self, obj: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.generation_params, indent=2))

    @admin.display(description="Generation info")
    def generation_info(self, obj: Job) -> str:
        info = (obj.result_details or {}).get("generation_info")
        return format_html("<pre>{}</pre>", json.dumps(info, indent=2)) if info else "—"

    @admin.display(description="Prompt")
    def prompt_excerpt(self, obj: Job) -> str:
        return Truncator(obj.prompt).chars(60)

    @admin.display(description="Server", ordering="server__alias")
    def server_alias(self, obj: Job) -> str:
        return obj.server_alias

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        job_delete(job_id=obj.pk)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        cancelled = 0
        for job in queryset:
            try:
                job_cancel(job_id=job.pk)
                cancelled += 1
            except Conflict as exc:
                self.message_user(request, str(exc.detail), messages.WARNING)
        self.message_user(request, f"Cancelled {cancelled} job(s).", messages.SUCCESS)

    @admin.action(description="Retry selected failed or cancelled jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        retried = 0
        for job in queryset:
            try:
                job_retry(job_id=job.pk)
                retried += 1
            except Conflict as exc:
                self.message_user(request, str(exc.detail), messages.WARNING)
        self.message_user(request, f"Requeued {retried} job(s).", messages.SUCCESS)

    @admin.action(description="Delete selected jobs and their images")
    def delete_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = 0
        for job in queryset:
            job_delete(job_id=job.pk)
            count += 1
        self.message_user(request, f"Deleted {count} job(s).", messages.SUCCESS)
