"""Admin for generation servers."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from core_app.errors import Conflict
from queue_app.models import ACTIVE_STATUSES
from servers_app.models import CachedModel, Server
from servers_app.services import server_check_health, server_delete, server_refresh_models


class ServerForm(forms.ModelForm):
    # The stored password is never shown; leaving the field empty keeps it.
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current password.",
    )

    class Meta:
        model = Server
        fields = ("alias", "api_url", "username", "password", "enabled", "slots")

    def clean_password(self) -> str:
        password = self.cleaned_data.get("password") or ""
        if not password and self.instance.pk:
            return self.instance.password
        return password


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    form = ServerForm
    list_display = (
        "alias",
        "api_url",
        "enabled",
        "is_online",
        "flavour",
        "loaded_checkpoint",
        "active_jobs",
        "slots",
        "last_seen_at",
        "last_error",
    )
    list_filter = ("enabled", "is_online")
    search_fields = ("alias", "api_url")
    ordering = ("alias",)
    readonly_fields = (
        "is_online",
        "last_checked_at",
        "last_seen_at",
        "last_error",
        "loaded_checkpoint",
        "flavour",
        "models_refreshed_at",
        "models_stale",
        "models_error",
        "created_at",
        "updated_at",
    )
    actions = (
        "check_servers",
        "refresh_models",
        "delete_idle_servers",
        "enable_servers",
        "disable_servers",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Server]:
        return (
            super()
            .get_queryset(request)
            .annotate(active_job_count=Count("jobs", filter=Q(jobs__status__in=ACTIVE_STATUSES)))
        )

    @admin.display(description="Queued / running jobs", ordering="active_job_count")
    def active_jobs(self, obj: Server) -> int:
        return getattr(obj, "active_job_count", 0)

    def delete_model(self, request: HttpRequest, obj: Server) -> None:
        server_delete(server=obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None):  # type: ignore[no-untyped-def]
        try:
            return super().delete_view(request, object_id, extra_context)
        except Conflict as exc:
            self.message_user(request, str(exc.detail), messages.ERROR)
            from django.shortcuts import redirect

            return redirect("admin:servers_app_server_change", object_id)

    @admin.action(description="Delete selected servers (refused while they have jobs)")
    def delete_idle_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        deleted = 0
        for server in queryset:
            try:
                server_delete(server=server)
                deleted += 1
            except Conflict as exc:
                self.message_user(request, str(exc.detail), messages.ERROR)
        if deleted:
            self.message_user(request, f"Deleted {deleted} server(s).", messages.SUCCESS)

    @admin.action(description="Check the connection now")
    def check_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            result = server_check_health(server=server)
            if result.online:
                self.message_user(request, f"{server.alias}: online.", messages.SUCCESS)
            else:
                self.message_user(request, f"{server.alias}: {result.error}", messages.ERROR)

    @admin.action(description="Refresh models (checkpoints and LoRAs)")
    def refresh_models(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            result = server_refresh_models(server=server)
            if result.error:
                self.message_user(
                    request, f"{server.alias}: kept the last list: {result.error}", messages.ERROR
                )
            else:
                self.message_user(
                    request,
                    f"{server.alias}: {result.checkpoints} checkpoints, {result.loras} LoRAs.",
                    messages.SUCCESS,
                )

    @admin.action(description="Enable selected servers")
    def enable_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        from queue_app.tasks import nudge, servers_with_work

        count = queryset.update(enabled=True)
        nudge(servers_with_work(Server.objects.filter(pk__in=queryset.values("pk"))))
        self.message_user(request, f"Enabled {count} server(s).", messages.SUCCESS)

    @admin.action(description="Disable selected servers (their jobs wait)")
    def disable_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        count = queryset.update(enabled=False)
        self.message_user(request, f"Disabled {count} server(s).", messages.SUCCESS)


@admin.register(CachedModel)
class CachedModelAdmin(admin.ModelAdmin):
    """The model cache, read-only: it is rewritten by every refresh."""

    list_display = ("name", "kind", "server", "relative_path", "short_hash", "base_model")
    list_filter = ("kind", "server", "base_model")
    list_select_related = ("server",)
    search_fields = ("name", "title", "relative_path", "alias", "sha256", "short_hash")
    ordering = ("kind", "name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
