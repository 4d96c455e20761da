"""The webhook API's shapes: endpoints (the secret only in the creation's answer),
deliveries with their tries, the signing secret."""

import re
from typing import Any

from rest_framework import serializers

from core_app.fields import TimestampField
from core_app.serializers import PagedListSerializer
from integrations.destinations import destination_problem
from notifications_app.models import DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint

# An event type ("job.completed") or a prefix of types ending in "." ("job.").
EVENT_TYPE = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)*\.?")
MAX_EVENT_TYPES = 50


def checked_destination(url: str) -> str:
    """The URL, if MobileSD may deliver to it; else a validation error whose message is the
    destination policy's (integrations.destinations), naming its setting."""
    problem = destination_problem(url)
    if problem:
        raise serializers.ValidationError(problem)
    return url


class DestinationUrlField(serializers.CharField):
    """A webhook's URL: http(s), at an address MOBILESD_WEBHOOK_ALLOWED_NETWORKS allows."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 2000)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return checked_destination(super().to_internal_value(data))


class EventTypesField(serializers.ListField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            child=serializers.CharField(max_length=40),
            allow_empty=False,
            max_length=MAX_EVENT_TYPES,
            help_text='Exact event types ("job.completed") or prefixes ending in "." '
            '("job." for every job event, progress included).',
            **kwargs,
        )

    def to_internal_value(self, data: Any) -> list[str]:
        types: list[str] = super().to_internal_value(data)
        bad = [kind for kind in types if not EVENT_TYPE.fullmatch(kind)]
        if bad:
            raise serializers.ValidationError(
                f"Not an event type or a prefix of types ending in '.': {bad[0]!r}."
            )
        return sorted(set(types))


class WebhookEndpointSerializer(serializers.ModelSerializer):
    """An endpoint as the API shows it (never its secret, but on creation)."""

    owner = serializers.CharField(source="owner.username", read_only=True)
    events = serializers.ListField(
        source="event_types", child=serializers.CharField(), read_only=True
    )
    created_at = TimestampField()
    updated_at = TimestampField()
    disabled_at = TimestampField(allow_null=True)
    failing_since = TimestampField(
        allow_null=True, help_text="Every try since then has failed (null: not failing)."
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "events",
            "all_users",
            "owner",
            "enabled",
            "disabled_at",
            "disabled_reason",
            "failing_since",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (Standard Webhooks `whsec_…`): shown this once.",
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointCreateSerializer(serializers.Serializer):
    url = DestinationUrlField()
    events = EventTypesField()
    description = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True
    )
    all_users = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Every user's events, not only its owner's (an admin key only).",
    )


class WebhookEndpointUpdateSerializer(serializers.Serializer):
    url = DestinationUrlField(required=False)
    events = EventTypesField(required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(
        required=False, help_text="true enables a disabled endpoint again (its failures forgotten)."
    )
    all_users = serializers.BooleanField(required=False)


class WebhookEndpointListSerializer(PagedListSerializer):
    webhooks = WebhookEndpointSerializer(many=True)


class WebhookAttemptSerializer(serializers.ModelSerializer):
    started_at = TimestampField()
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The answer's status (null: no answer came)."
    )
    response_body = serializers.CharField(help_text="The answer's first 300 bytes at most.")

    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "status_code", "duration_ms", "error", "response_body"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    webhook_id = serializers.CharField(
        source="message_id", help_text="The `webhook-id` header of every try."
    )
    endpoint_id = serializers.IntegerField(allow_null=True)
    url = serializers.CharField(help_text="Where it is delivered.")
    event_id = serializers.IntegerField(
        source="event_seq", allow_null=True, help_text="The event's id in the event log."
    )
    state = serializers.ChoiceField(choices=DeliveryState.choices)
    attempt_count = serializers.IntegerField(source="attempts")
    next_attempt_at = TimestampField(allow_null=True)
    delivered_at = TimestampField(allow_null=True)
    created_at = TimestampField()
    attempts = WebhookAttemptSerializer(source="tries", many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook_id",
            "endpoint_id",
            "url",
            "event_id",
            "event_type",
            "job_id",
            "state",
            "attempt_count",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "delivered_at",
            "created_at",
            "payload",
            "attempts",
        ]
        read_only_fields = fields


class WebhookDeliveryListSerializer(PagedListSerializer):
    deliveries = WebhookDeliverySerializer(many=True)


class WebhookSigningSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(
        help_text="Signs your jobs' callback_url deliveries (unless one of your endpoints has "
        "that URL: then its secret does). Shown this once."
    )
    created_at = TimestampField()
