"""Admin of notifications: webhook endpoints and deliveries, push targets and their outbox."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from core_app.admin_actions import ObjectActionsAdmin, apply_to_each, object_action
from integrations.destinations import destination_problem
from integrations.push.client import push_url_problem
from notifications_app.models import (
    PUSH_EVENT_TYPES,
    DeliveryState,
    FanoutCursor,
    PushMessage,
    PushTarget,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSigningSecret,
)
from notifications_app.push_serializers import URL_HELP
from notifications_app.push_services import (
    push_message_retry,
    push_target_create,
    push_target_test,
    push_target_update,
)
from notifications_app.push_tasks import push_send_on_commit
from notifications_app.webhook_serializers import EVENT_TYPE, MAX_EVENT_TYPES
from notifications_app.webhook_services import (
    webhook_delivery_redeliver,
    webhook_endpoint_test,
)
from notifications_app.webhooks import last_event_id, new_secret

# === Webhooks ==============================================================================


class WebhookEndpointForm(forms.ModelForm):
    """An endpoint's form: the URL checked against the destination policy, the event types
    as a comma-separated list."""

    events = forms.CharField(
        help_text='Comma-separated: exact types ("job.completed") or prefixes ending in "." '
        '("job.").',
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["owner", "url", "description", "all_users", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["events"].initial = ", ".join(self.instance.event_types)

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"]
        problem = destination_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url

    def clean_events(self) -> list[str]:
        types = sorted({kind.strip() for kind in self.cleaned_data["events"].split(",")} - {""})
        if not types:
            raise forms.ValidationError("Name at least one event type.")
        if len(types) > MAX_EVENT_TYPES:
            raise forms.ValidationError(f"At most {MAX_EVENT_TYPES} event types.")
        bad = [kind for kind in types if not EVENT_TYPE.fullmatch(kind)]
        if bad:
            raise forms.ValidationError(f"Not an event type or a prefix: {bad[0]!r}.")
        return types

    def save(self, commit: bool = True) -> WebhookEndpoint:
        self.instance.event_types = self.cleaned_data["events"]
        return super().save(commit)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ObjectActionsAdmin):
    form = WebhookEndpointForm
    list_display = (
        "url",
        "owner",
        "events_shown",
        "enabled",
        "failing_since",
        "deliveries_link",
        "created_at",
    )
    list_filter = ("enabled", "all_users")
    search_fields = ("url", "description", "owner__username")
    ordering = ("-created_at", "-id")
    list_select_related = ("owner",)
    readonly_fields = (
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "deliveries_link",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("owner", "url", "description", "events", "all_users", "enabled")}),
        (
            "State",
            {
                "fields": (
                    "disabled_at",
                    "disabled_reason",
                    "failing_since",
                    "deliveries_link",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )
    object_actions = ("send_test",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEndpoint]:
        return super().get_queryset(request).annotate(delivery_count=Count("deliveries"))

    @admin.display(description="events")
    def events_shown(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.event_types)

    @admin.display(description="deliveries")
    def deliveries_link(self, endpoint: WebhookEndpoint) -> str:
        if not endpoint.pk:
            return "-"
        url = reverse("admin:notifications_app_webhookdelivery_changelist")
        count = getattr(endpoint, "delivery_count", None)
        if count is None:
            count = endpoint.deliveries.count()
        return format_html('<a href="{}?endpoint__id__exact={}">{}</a>', url, endpoint.pk, count)

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        created = not change
        if created:
            obj.secret = new_secret()
            obj.after_event_id = last_event_id()
        super().save_model(request, obj, form, change)
        if created:
            # The one time the secret is shown (as the API's POST answer shows it).
            self.message_user(
                request,
                f"The endpoint's signing secret (shown this once): {obj.secret}",
                messages.WARNING,
            )

    @object_action(path="test", label="Send a test event")
    def send_test(self, request: HttpRequest, endpoint: WebhookEndpoint) -> None:
        delivery = webhook_endpoint_test(endpoint=endpoint)
        self.message_user(request, f"Test event {delivery.message_id} queued.", messages.SUCCESS)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "status_code", "duration_ms", "error", "response_body")
    readonly_fields = fields
    ordering = ("number", "id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _redeliverable(delivery: WebhookDelivery) -> bool:
    return delivery.state != DeliveryState.DELIVERING


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ObjectActionsAdmin):
    list_display = (
        "message_id",
        "event_type",
        "receiver",
        "owner",
        "state",
        "attempts",
        "last_status_code",
        "created_at",
    )
    list_filter = ("state", "event_type", "endpoint")
    search_fields = ("message_id", "callback_url", "endpoint__url", "owner__username")
    ordering = ("-created_at", "-id")
    list_select_related = ("endpoint", "owner")
    readonly_fields = (
        "message_id",
        "endpoint",
        "owner",
        "callback_url",
        "event_seq",
        "event_type",
        "job_id",
        "state",
        "attempts",
        "next_attempt_at",
        "lease_expires_at",
        "last_status_code",
        "last_error",
        "delivered_at",
        "created_at",
        "updated_at",
        "payload",
    )
    fields = readonly_fields
    inlines = (WebhookAttemptInline,)
    actions = ("deliver_again_selected",)
    object_actions = ("deliver_again",)
    object_delete_link = True

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="to")
    def receiver(self, delivery: WebhookDelivery) -> str:
        return delivery.url

    @object_action(path="redeliver", label="Deliver again", shown=_redeliverable)
    def deliver_again(self, request: HttpRequest, delivery: WebhookDelivery) -> None:
        webhook_delivery_redeliver(delivery_id=delivery.pk)
        self.message_user(
            request, f"{delivery.message_id} will be delivered again.", messages.SUCCESS
        )

    @admin.action(description="Deliver again")
    def deliver_again_selected(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]
    ) -> None:
        apply_to_each(
            self,
            request,
            queryset,
            webhook_delivery_redeliver,
            key="delivery_id",
            done="{count} deliveries will be delivered again.",
        )


@admin.register(WebhookSigningSecret)
class WebhookSigningSecretAdmin(admin.ModelAdmin):
    """Who has a signing secret for callback URLs (the secret itself is never shown)."""

    list_display = ("owner", "created_at")
    search_fields = ("owner__username",)
    ordering = ("owner_id",)
    fields = ("owner", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(FanoutCursor)
class FanoutCursorAdmin(admin.ModelAdmin):
    """How far the event log has been handed on to notifications (read only)."""

    list_display = ("id", "position")
    fields = ("position",)
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# === End of webhooks =======================================================================


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
