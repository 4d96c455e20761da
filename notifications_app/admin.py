"""Admin of notifications: push targets and their outbox."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from core_app.admin_actions import ObjectActionsAdmin, apply_to_each, object_action
from integrations.push.client import push_url_problem
from notifications_app.models import PUSH_EVENT_TYPES, PushMessage, PushTarget
from notifications_app.push_serializers import URL_HELP
from notifications_app.push_services import (
    push_message_retry,
    push_target_create,
    push_target_test,
    push_target_update,
)
from notifications_app.push_tasks import push_send_on_commit

# === Push notifications ===================================================================


class PushTargetForm(forms.ModelForm):
    # The stored URL holds the service's secrets: never shown (its privacy form is, read
    # only); leaving the field empty keeps it.
    new_url = forms.CharField(
        label="New Apprise URL",
        required=False,
        max_length=2000,
        widget=forms.PasswordInput(render_value=False),
        help_text=f"{URL_HELP} Leave empty to keep the current one.",
    )
    events = forms.MultipleChoiceField(
        choices=[(kind, kind) for kind in PUSH_EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        initial=list(PUSH_EVENT_TYPES),
    )

    class Meta:
        model = PushTarget
        fields = ("owner", "name", "events", "enabled")

    def clean_new_url(self) -> str:
        url = str(self.cleaned_data.get("new_url") or "").strip()
        if not url and not self.instance.pk:
            raise forms.ValidationError("An Apprise URL is required.")
        if url:
            problem = push_url_problem(url)
            if problem:
                raise forms.ValidationError(problem)
        return url


@admin.register(PushTarget)
class PushTargetAdmin(ObjectActionsAdmin):
    form = PushTargetForm
    list_display = ("name", "owner", "url_display", "enabled", "last_sent_at", "error_excerpt")
    list_filter = ("enabled",)
    search_fields = ("name", "owner__username", "url_display")
    ordering = ("owner__username", "name")
    readonly_fields = ("url_display", "created_at", "last_sent_at", "last_error", "last_error_at")
    fieldsets = (
        (None, {"fields": ("owner", "name", "url_display", "new_url", "events", "enabled")}),
        ("Sending", {"fields": ("last_sent_at", "last_error", "last_error_at", "created_at")}),
    )
    object_actions = ("send_test",)

    @admin.display(description="Last error")
    def error_excerpt(self, obj: PushTarget) -> str:
        return Truncator(obj.last_error).chars(60)

    def get_fieldsets(self, request: HttpRequest, obj: PushTarget | None = None) -> Any:
        if obj is None:  # a new target has no URL to show nor sends yet
            return ((None, {"fields": ("owner", "name", "new_url", "events", "enabled")}),)
        return self.fieldsets

    def save_model(self, request: HttpRequest, obj: PushTarget, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {"name": data["name"], "events": list(data["events"]), "enabled": data["enabled"]}
        if change:
            stored = PushTarget.objects.get(pk=obj.pk)
            saved = push_target_update(target=stored, url=data["new_url"] or None, **fields)
        else:
            saved = push_target_create(owner=data["owner"], url=data["new_url"], **fields)
        obj.pk = saved.pk
        obj.refresh_from_db()

    @object_action(path="test", label="Send a test notification", refused=messages.ERROR)
    def send_test(self, request: HttpRequest, target: PushTarget) -> None:
        push_target_test(target=target)  # a failure is reported as the refusal it raises
        self.message_user(request, f"A test notification was sent to {target}.", messages.SUCCESS)


@admin.register(PushMessage)
class PushMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "target", "event_type", "state", "attempts", "created_at", "sent_at")
    list_filter = ("state", "event_type")
    search_fields = ("title", "target__name", "target__owner__username")
    ordering = ("-created_at", "-id")
    list_select_related = ("target",)
    readonly_fields = (
        "target",
        "event_type",
        "event_seq",
        "job_id",
        "title",
        "body",
        "link",
        "state",
        "attempts",
        "next_attempt_at",
        "lease_expires_at",
        "last_error",
        "created_at",
        "sent_at",
    )
    fields = readonly_fields
    actions = ("send_again",)

    @admin.action(description="Send the selected failed notifications again")
    def send_again(self, request: HttpRequest, queryset: QuerySet[PushMessage]) -> None:
        def retry(message_id: int) -> None:
            push_message_retry(message_id=message_id)
            push_send_on_commit([message_id])

        apply_to_each(
            self,
            request,
            queryset,
            retry,
            key="message_id",
            done="Queued {count} notification(s) again.",
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PushMessage]:
        return super().get_queryset(request).select_related("target")


# === End of push notifications ============================================================
