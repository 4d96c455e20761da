"""Admin for API keys (create, the key shown once; list; revoke) and for the users they
belong to, each with their keys and quota."""

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from core_app.models import ApiKey, UserQuota, WorkerHeartbeat
from core_app.services import api_key_issue, api_key_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "user",
        "scope",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
        "active",
    )
    list_filter = ("scope", "revoked_at")
    search_fields = ("name", "prefix", "user__username")
    ordering = ("-created_at",)
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "user", "scope", "prefix", "created_at", "last_used_at", "revoked_at")
    autocomplete_fields = ("user",)
    list_select_related = ("user",)
    actions = ("revoke_keys",)

    @admin.display(boolean=True)
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            raw_key = api_key_issue(api_key=obj)
            self.message_user(
                request,
                f"New API key for '{obj.name}' (copy it now, it is not shown again): {raw_key}",
                messages.WARNING,
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = api_key_revoke(keys=queryset)
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


class ApiKeyInline(admin.TabularInline):
    """A user's keys on their page, read-only: a key is made from the API keys page (which
    shows it once) and revoked there."""

    model = ApiKey
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "scope", "prefix", "created_at", "last_used_at", "active")
    readonly_fields = fields
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(boolean=True)
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active


User = get_user_model()
# Importing django.contrib.auth.admin has registered its UserAdmin; this one replaces it.
admin.site.unregister(User)


class UserQuotaInline(admin.StackedInline):
    """A user's quotas on their page."""

    model = UserQuota
    can_delete = True
    extra = 0
    max_num = 1
    fields = ("max_pending_jobs", "max_images_per_job")


@admin.register(User)
class UserWithKeysAdmin(UserAdmin):
    """Django's user admin, with the user's API keys on their page and their count in the
    list (the autocomplete of ApiKeyAdmin.user searches `search_fields`)."""

    inlines = (UserQuotaInline, ApiKeyInline)
    list_display = (
        "username",
        "email",
        "first_name",
        "last_name",
        "is_staff",
        "is_active",
        "key_count",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        active = Q(api_keys__revoked_at__isnull=True)
        return super().get_queryset(request).annotate(_keys=Count("api_keys", filter=active))

    @admin.display(description="Active API keys", ordering="_keys")
    def key_count(self, obj: Any) -> int:
        return int(obj._keys)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    """The workers (and beat) seen lately; written by those processes only."""

    list_display = ("hostname", "process", "threads", "started_at", "last_seen_at", "stopped_at")
    list_filter = ("process", "stopped_at")
    search_fields = ("hostname",)
    ordering = ("-last_seen_at",)
    readonly_fields = (
        "hostname",
        "process",
        "threads",
        "started_at",
        "last_seen_at",
        "stopped_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    """Quotas of users whose limits differ from the defaults (queue_app.quotas)."""

    list_display = ("user", "max_pending_jobs", "max_images_per_job", "updated_at")
    search_fields = ("user__username",)
    ordering = ("user__username",)
    readonly_fields = ("updated_at",)
    fields = ("user", "max_pending_jobs", "max_images_per_job", "updated_at")
    autocomplete_fields = ("user",)
    list_select_related = ("user",)
