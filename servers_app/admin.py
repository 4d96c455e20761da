"""Admin for generation servers: their state, the connection test, models, enable/disable.

Every write goes through servers_app.services, as the API's do: the form saves with
server_create / server_update (so a new or changed server is health-checked at once), and
the buttons and actions check, refresh, update and delete.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from core_app.admin_actions import ObjectActionsAdmin, object_action, service_error
from core_app.display import age
from core_app.errors import Conflict, InvalidInput
from servers_app.credentials import PASSWORD_DROPPED
from servers_app.models import CachedModel, ModelKind, Server, ServerPerformance
from servers_app.quarantine import server_lift_quarantine
from servers_app.services import (
    server_check_health,
    server_create,
    server_delete,
    server_forget_vae_baseline,
    server_pause,
    server_refresh_models,
    server_resume,
    server_update,
)

# The server page's sections of cached models: checkpoints and LoRAs, then the extension
# lists it has (servers_app.extension_cache).
_MODEL_SECTIONS = (
    (ModelKind.CHECKPOINT, "Checkpoints"),
    (ModelKind.LORA, "LoRAs"),
    (ModelKind.VAE, "VAEs"),
    (ModelKind.MODULE, "Modules (VAEs, text encoders)"),
    (ModelKind.UPSCALER, "Upscalers"),
    (ModelKind.STYLE, "Prompt styles"),
    (ModelKind.SCRIPT, "Scripts"),
    (ModelKind.CONTROLNET_MODEL, "ControlNet models"),
)
# The server page lists this many cached models of each kind; the rest is one click away.
MODELS_SHOWN = 100
# What the operator sets on a server; the rest is written by the workers.
SERVER_FIELDS = ("alias", "api_url", "username", "password", "enabled", "slots", "models_dir")


def _count_jobs(status: str) -> Coalesce:
    # From the queue's job counts (queue_app.models.JobCount, a few rows per server and
    # status), through their reverse relation by name: servers_app sits below queue_app and
    # does not import it. `status` is one of queue_app.models.JobStatus's values.
    return Coalesce(Sum("job_counts__n", filter=Q(job_counts__status=status)), 0)


class ServerForm(forms.ModelForm):
    # The stored password is never shown; leaving the field empty keeps it.
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=(
            "Leave empty to keep the current password (while the URL stays on the same "
            "scheme, host and port)."
        ),
    )

    class Meta:
        model = Server
        fields = SERVER_FIELDS

    def service_data(self) -> dict[str, Any]:
        """The form's values as server_create / server_update take them (the API passes its
        serializer's validated data). A password left empty on an existing server is left
        out, which keeps the stored one, as in the API."""
        data = {name: self.cleaned_data[name] for name in SERVER_FIELDS}
        if self.instance.pk and not data["password"]:
            del data["password"]
        return data


@admin.register(Server)
class ServerAdmin(ObjectActionsAdmin):
    form = ServerForm
    list_display = (
        "alias",
        "state_badge",
        "checkpoint",
        "running",
        "queue_depth",
        "last_seen",
        "error_excerpt",
        "api_url",
    )
    list_filter = ("enabled", "is_online")
    search_fields = ("alias", "api_url")
    ordering = ("alias",)
    readonly_fields = (
        "state_badge",
        "is_online",
        "last_checked_at",
        "last_seen_at",
        "last_error",
        "loaded_checkpoint",
        "flavour",
        "consecutive_failures",
        "quarantined_at",
        "quarantine_reason",
        "vae_baseline",
        "models_refreshed_at",
        "models_stale",
        "models_error",
        "cached_models_list",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": SERVER_FIELDS}),
        (
            "State (written by the workers)",
            {
                "fields": (
                    "state_badge",
                    "loaded_checkpoint",
                    "flavour",
                    "last_checked_at",
                    "last_seen_at",
                    "last_error",
                    "consecutive_failures",
                    "quarantined_at",
                    "quarantine_reason",
                    "vae_baseline",
                )
            },
        ),
        (
            "Models",
            {
                "fields": (
                    "models_refreshed_at",
                    "models_stale",
                    "models_error",
                    "cached_models_list",
                )
            },
        ),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )
    actions = (
        "check_servers",
        "refresh_models",
        "enable_servers",
        "disable_servers",
        "delete_idle_servers",
    )
    object_actions = (
        "check_connection",
        "refresh_model_list",
        "pause",
        "resume",
        "lift_quarantine",
        "forget_vae_baseline",
        "disable",
        "enable",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Server]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                pending_count=_count_jobs("pending"),
                running_count=_count_jobs("processing"),
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: Server | None = None) -> Any:
        if obj is None:  # a new server has no state yet
            return self.fieldsets[:1]
        return self.fieldsets

    # --- saving and deleting through the services -------------------------------------------

    def save_model(self, request: HttpRequest, obj: Server, form: Any, change: bool) -> None:
        data = form.service_data()
        if change:
            updated = server_update(server=obj, data=data, partial=False)
            if updated.password_dropped:
                self.message_user(request, PASSWORD_DROPPED, messages.WARNING)
            saved = updated.server
        else:
            saved = server_create(data=data)
        # The admin goes on with `obj` (its log entry, message and redirect): make it the row
        # the service saved.
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Server) -> None:
        server_delete(server=obj)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except Conflict as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:servers_app_server_change", args=[object_id])
            )

    # --- the server page's buttons (also run by the bulk actions) ---------------------------

    @object_action(path="check", label="Test the connection")
    def check_connection(self, request: HttpRequest, server: Server) -> None:
        result = server_check_health(server=server)
        server.refresh_from_db()
        if not result.online:
            self.message_user(
                request,
                f"{server.alias} did not answer as expected: {result.error}",
                messages.ERROR,
            )
            return
        flavour = {"forge": "Forge", "a1111": "AUTOMATIC1111"}.get(server.flavour, "a server")
        checkpoint = server.loaded_checkpoint or "no checkpoint"
        self.message_user(
            request,
            f"{server.alias} answered: online, {flavour}, {checkpoint} loaded.",
            messages.SUCCESS,
        )

    @object_action(path="refresh-models", label="Refresh models")
    def refresh_model_list(self, request: HttpRequest, server: Server) -> None:
        result = server_refresh_models(server=server)
        if result.error:
            self.message_user(
                request, f"{server.alias}: kept the last list: {result.error}", messages.ERROR
            )
        else:
            self.message_user(
                request,
                f"{server.alias}: {result.checkpoints} checkpoints, {result.loras} LoRAs "
                f"({result.added} new, {result.removed} gone).",
                messages.SUCCESS,
            )

    @object_action(
        path="lift-quarantine",
        label="Lift the quarantine",
        shown=lambda server: server.quarantined_at is not None,
    )
    def lift_quarantine(self, request: HttpRequest, server: Server) -> None:
        if server_lift_quarantine(server_id=server.pk, force=True):
            self.message_user(
                request,
                f"{server.alias} takes jobs again (one more failure quarantines it again).",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, f"{server.alias} is not quarantined.", messages.INFO)

    @object_action(
        path="forget-vae-baseline",
        label="Forget its own VAE settings",
        shown=lambda server: bool(server.vae_baseline),
    )
    def forget_vae_baseline(self, request: HttpRequest, server: Server) -> None:
        server_forget_vae_baseline(server=server)
        self.message_user(
            request,
            f"{server.alias}: jobs naming no VAE now leave its VAE settings as they are, "
            "until a job changes them (its settings are read again then).",
            messages.SUCCESS,
        )

    @object_action(
        path="disable",
        label="Disable",
        style="msd-danger-outline",
        shown=lambda server: server.enabled,
    )
    def disable(self, request: HttpRequest, server: Server) -> None:
        self._set_enabled(request, [server], enabled=False)

    @object_action(path="enable", label="Enable", shown=lambda server: not server.enabled)
    def enable(self, request: HttpRequest, server: Server) -> None:
        self._set_enabled(request, [server], enabled=True)

    def _set_enabled(self, request: HttpRequest, servers: Any, *, enabled: bool) -> None:
        # server_update health-checks the server afterwards, which runs its queue if it is
        # online; a disabled server keeps its jobs pending.
        for server in servers:
            try:
                server_update(server=server, data={"enabled": enabled}, partial=True)
            except InvalidInput as exc:  # a row the current rules refuse: say which
                self.message_user(request, f"{server.alias}: {service_error(exc)}", messages.ERROR)
                continue
            if enabled:
                self.message_user(request, f"{server.alias} enabled.", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"{server.alias} disabled: its jobs wait until it is enabled again.",
                    messages.SUCCESS,
                )

    @object_action(path="pause", label="Pause", shown=lambda server: server.paused_at is None)
    def pause(self, request: HttpRequest, server: Server) -> None:
        server_pause(server=server)
        self.message_user(
            request,
            f"{server.alias} paused: its running job finishes, no new one starts.",
            messages.SUCCESS,
        )

    @object_action(path="resume", label="Resume", shown=lambda server: server.paused_at is not None)
    def resume(self, request: HttpRequest, server: Server) -> None:
        server_resume(server=server)
        self.message_user(request, f"{server.alias} resumed.", messages.SUCCESS)

    # --- columns and read-only fields -------------------------------------------------------

    @admin.display(description="State", ordering="is_online")
    def state_badge(self, obj: Server) -> str:
        return format_html('<span class="msd-badge msd-{}">{}</span>', obj.state, obj.state)

    @admin.display(description="Checkpoint", ordering="loaded_checkpoint")
    def checkpoint(self, obj: Server) -> str:
        return Truncator(obj.loaded_checkpoint).chars(48) or "—"

    @admin.display(description="Running", ordering="running_count")
    def running(self, obj: Server) -> int:
        return int(getattr(obj, "running_count", 0))

    @admin.display(description="Queued", ordering="pending_count")
    def queue_depth(self, obj: Server) -> int:
        return int(getattr(obj, "pending_count", 0))

    @admin.display(description="Last seen", ordering="last_seen_at")
    def last_seen(self, obj: Server) -> str:
        return age(obj.last_seen_at)

    @admin.display(description="Last error")
    def error_excerpt(self, obj: Server) -> str:
        if not obj.last_error:
            return "—"
        return format_html(
            '<span class="msd-error" title="{}">{}</span>',
            obj.last_error,
            Truncator(obj.last_error).chars(80),
        )

    @admin.display(description="Cached models")
    def cached_models_list(self, obj: Server) -> SafeString | str:
        models = list(
            obj.cached_models.order_by("kind", "name").values_list("kind", "name", "short_hash")
        )
        if not models:
            return "None yet: refresh the models."
        link = reverse("admin:servers_app_cachedmodel_changelist") + f"?server__id__exact={obj.pk}"
        sections = []
        for kind, label in _MODEL_SECTIONS:
            names = [(name, short_hash) for k, name, short_hash in models if k == kind]
            if not names and kind not in (ModelKind.CHECKPOINT, ModelKind.LORA):
                continue  # an extension list the server does not have
            shown = format_html_join(
                "",
                '<li>{} <span class="quiet">{}</span></li>',
                names[:MODELS_SHOWN],
            )
            more = (
                format_html('<li><a href="{}">… {} more</a></li>', link, len(names) - MODELS_SHOWN)
                if len(names) > MODELS_SHOWN
                else ""
            )
            sections.append(
                format_html(
                    '<details class="msd-models"{}><summary>{} ({})</summary>'
                    "<ul>{}{}</ul></details>",
                    " open" if kind == ModelKind.CHECKPOINT else "",
                    label,
                    len(names),
                    shown,
                    more,
                )
            )
        return format_html(
            '{}<p><a href="{}">All cached models of this server</a></p>',
            format_html_join("", "{}", ((section,) for section in sections)),
            link,
        )

    # --- bulk actions -----------------------------------------------------------------------

    @admin.action(description="Delete selected servers (refused while they have jobs)")
    def delete_idle_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        deleted = 0
        for server in queryset:
            try:
                server_delete(server=server)
                deleted += 1
            except Conflict as exc:
                self.message_user(request, exc.message, messages.ERROR)
        if deleted:
            self.message_user(request, f"Deleted {deleted} server(s).", messages.SUCCESS)

    @admin.action(description="Test the connection now")
    def check_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            self.check_connection(request, server)

    @admin.action(description="Refresh models (checkpoints and LoRAs)")
    def refresh_models(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        for server in queryset:
            self.refresh_model_list(request, server)

    @admin.action(description="Enable selected servers")
    def enable_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable selected servers (their jobs wait)")
    def disable_servers(self, request: HttpRequest, queryset: QuerySet[Server]) -> None:
        self._set_enabled(request, queryset, enabled=False)


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


@admin.register(ServerPerformance)
class ServerPerformanceAdmin(admin.ModelAdmin):
    """What MobileSD measured of each server (for the ETAs), read-only: completed jobs
    write it. Deleting a row makes the server start measuring afresh."""

    list_display = ("server", "jobs_measured", "updated_at")
    list_select_related = ("server",)
    search_fields = ("server__alias",)
    ordering = ("server__alias",)
    readonly_fields = ("server", "step_seconds", "load_seconds", "jobs_measured", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
