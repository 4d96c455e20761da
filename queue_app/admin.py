"""Admin for jobs: the operator's view of the queue."""

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from core_app.errors import Conflict
from queue_app.models import Job, JobImage
from queue_app.services import job_cancel, job_delete


class JobImageInline(admin.TabularInline):
    model = JobImage
    extra = 0
    can_delete = False
    fields = ("index", "file", "seed", "width", "height")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "server_alias",
        "prompt_excerpt",
        "created_at",
        "completed_at",
        "retry_count",
    )
    list_filter = ("status", "server", "created_at")
    list_select_related = ("server",)
    search_fields = ("id",)
    search_help_text = "Search by prompt text or job id."
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "status",
        "server",
        "target_server_alias",
        "generation_params",
        "result_details",
        "forge_session_hash",
        "retry_count",
        "created_at",
        "updated_at",
        "completed_at",
        "api_key",
    )
    inlines = (JobImageInline,)
    actions = ("cancel_jobs", "delete_jobs")

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

    @admin.action(description="Delete selected jobs and their images")
    def delete_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = 0
        for job in queryset:
            job_delete(job_id=job.pk)
            count += 1
        self.message_user(request, f"Deleted {count} job(s).", messages.SUCCESS)
