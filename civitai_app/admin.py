"""Admin for Civitai: downloads (progress, status, cancel, retry) and the Civitai settings."""

import json
from functools import partial
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from civitai_app.download_requests import download_cancel, download_delete, download_retry
from civitai_app.models import CivitaiSettings, Download, DownloadStatus, DownloadTarget
from civitai_app.transfer import human_bytes
from core_app.admin_actions import apply_to_each
from core_app.display import duration


class CivitaiSettingsForm(forms.ModelForm):
    # The stored key is never shown; leaving the field empty keeps it.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Overrides CIVITAI_API_KEY. Leave empty to keep the current one.",
    )
    clear_api_key = forms.BooleanField(
        required=False, help_text="Forget the key set here (CIVITAI_API_KEY applies again)."
    )

    class Meta:
        model = CivitaiSettings
        fields = ("api_key", "max_concurrent_downloads")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("clear_api_key"):
            cleaned["api_key"] = ""
        elif not cleaned.get("api_key") and self.instance.pk:
            cleaned["api_key"] = self.instance.api_key
        return cleaned


@admin.register(CivitaiSettings)
class CivitaiSettingsAdmin(admin.ModelAdmin):
    form = CivitaiSettingsForm
    list_display = ("__str__", "key_source", "concurrency", "updated_at")
    list_filter = ()
    search_fields = ()
    ordering = ("id",)
    readonly_fields = ("base_url", "key_source", "concurrency", "updated_at")
    fields = (
        "base_url",
        "key_source",
        "api_key",
        "clear_api_key",
        "max_concurrent_downloads",
        "concurrency",
        "updated_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not CivitaiSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[CivitaiSettings]:
        CivitaiSettings.load()  # the page always has the one row to edit
        return super().get_queryset(request)

    @admin.display(description="Civitai base URL (CIVITAI_BASE_URL)")
    def base_url(self, obj: CivitaiSettings) -> str:
        return settings.CIVITAI_BASE_URL

    @admin.display(description="API key in use")
    def key_source(self, obj: CivitaiSettings) -> str:
        return obj.api_key_source

    @admin.display(description="Downloads at once")
    def concurrency(self, obj: CivitaiSettings) -> int:
        return obj.effective_max_concurrent_downloads


class DownloadTargetInline(admin.TabularInline):
    model = DownloadTarget
    extra = 0
    can_delete = False
    fields = ("server", "path", "state", "error", "refreshed_at", "refresh_error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Download)
class DownloadAdmin(admin.ModelAdmin):
    list_display = (
        "file_name",
        "status_badge",
        "progress_bar",
        "speed",
        "eta",
        "servers",
        "model_type",
        "owner",
        "created_at",
    )
    list_filter = ("status", "model_type", "owner", "created_at")
    list_select_related = ("owner",)
    search_fields = (
        "file_name",
        "model_name",
        "version_name",
        "sha256",
        "=model_version_id",
        "owner__username",
    )
    search_help_text = "Search by file, model or version name, SHA256, version id or user."
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "owner",
        "status_badge",
        "progress_bar",
        "speed",
        "eta",
        "error_text",
        "model_name",
        "version_name",
        "model_version_id",
        "model_id",
        "model_type",
        "file_type",
        "base_model",
        "file_id",
        "source_file_name",
        "file_name",
        "folder",
        "sha256",
        "size_bytes",
        "bytes_done",
        "attempts",
        "next_attempt_at",
        "part_path",
        "requested_json",
        "created_at",
        "started_at",
        "updated_at",
        "finished_at",
    )
    fields = readonly_fields
    inlines = (DownloadTargetInline,)
    actions = ("cancel_downloads", "retry_downloads", "delete_downloads")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # downloads come from the API, which resolves and checks them

    def get_queryset(self, request: HttpRequest) -> QuerySet[Download]:
        return super().get_queryset(request).prefetch_related("targets__server")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Download) -> str:
        return format_html('<span class="msd-badge msd-{}">{}</span>', obj.status, obj.status)

    @admin.display(description="Progress")
    def progress_bar(self, obj: Download) -> str:
        percent = obj.progress_percent
        if obj.status == DownloadStatus.COMPLETED:
            return "100%"
        if percent is None or obj.size_bytes is None:  # the size is not known yet
            return "—"
        return format_html(
            '<progress value="{}" max="100" title="{}%">{}%</progress> {} of {}',
            percent,
            percent,
            percent,
            human_bytes(obj.bytes_done),
            human_bytes(obj.size_bytes),
        )

    @admin.display(description="Speed")
    def speed(self, obj: Download) -> str:
        if obj.status != DownloadStatus.DOWNLOADING or not obj.speed_bytes_per_second:
            return "—"
        return f"{human_bytes(obj.speed_bytes_per_second)}/s"

    @admin.display(description="ETA")
    def eta(self, obj: Download) -> str:
        return duration(obj.eta_seconds)

    @admin.display(description="Servers")
    def servers(self, obj: Download) -> str:
        return ", ".join(t.server.alias for t in obj.targets.all())

    @admin.display(description="Error")
    def error_text(self, obj: Download) -> str:
        if not obj.error:
            return "—"
        return format_html("{} <code>{}</code>", obj.error, obj.error_code)

    @admin.display(description="Requested")
    def requested_json(self, obj: Download) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.requested, indent=2))

    def delete_model(self, request: HttpRequest, obj: Download) -> None:
        download_delete(download_id=obj.pk, owner=None)

    @admin.action(description="Cancel selected downloads")
    def cancel_downloads(self, request: HttpRequest, queryset: QuerySet[Download]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(download_cancel, owner=None),
            key="download_id",
            done="Cancelled {count} download(s).",
        )

    @admin.action(description="Retry selected failed or cancelled downloads")
    def retry_downloads(self, request: HttpRequest, queryset: QuerySet[Download]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(download_retry, owner=None),
            key="download_id",
            done="Queued {count} download(s) again.",
        )

    @admin.action(description="Delete selected downloads (placed model files stay)")
    def delete_downloads(self, request: HttpRequest, queryset: QuerySet[Download]) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            partial(download_delete, owner=None),
            key="download_id",
            done="Deleted {count} download(s).",
        )
