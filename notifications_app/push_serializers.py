"""API shapes of push notification targets."""

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from core_app.fields import TimestampField
from core_app.serializers import PagedListSerializer
from core_app.text import has_unsafe_characters
from notifications_app.models import PUSH_EVENT_TYPES, PushTarget
from servers_app.validators import UNSAFE_CHARACTERS

URL_HELP = (
    "An Apprise URL: ntfy://host/topic, gotify://host/token, pover://user@token, "
    "tgram://bottoken/chat_id, discord://webhook_id/webhook_token, "
    "mailtos://user:password@example.org (see the README). It holds the service's secrets: "
    "answers show it only in Apprise's privacy form."
)


def _validate_name(value: str) -> None:
    if not value.strip():
        raise ValidationError("A name may not be blank.")
    if has_unsafe_characters(value):
        raise ValidationError(f"A name is shown to people. {UNSAFE_CHARACTERS}", "invalid_name")


def _events_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ChoiceField(choices=PUSH_EVENT_TYPES),
        allow_empty=False,
        help_text="The event types to be told of.",
        **kwargs,
    )


class PushTargetRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, validators=[_validate_name])
    url = serializers.CharField(max_length=2000, help_text=URL_HELP)
    events = _events_field(required=False, default=list(PUSH_EVENT_TYPES))
    enabled = serializers.BooleanField(required=False, default=True)

    def validate_events(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class PushTargetUpdateSerializer(PushTargetRequestSerializer):
    """What PATCH may change; each field optional."""

    name = serializers.CharField(max_length=100, validators=[_validate_name], required=False)
    url = serializers.CharField(max_length=2000, help_text=URL_HELP, required=False)
    events = _events_field(required=False)
    enabled = serializers.BooleanField(required=False)


class PushTargetSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)
    url = serializers.CharField(
        source="url_display",
        read_only=True,
        help_text="The Apprise URL in its privacy form (secrets elided).",
    )
    events = serializers.ListField(child=serializers.ChoiceField(choices=PUSH_EVENT_TYPES))
    created_at = TimestampField()
    last_sent_at = TimestampField(
        allow_null=True, help_text="When a notification last got through."
    )
    last_error = serializers.CharField(
        read_only=True, help_text="Why the last notification failed for good; '' since a success."
    )
    last_error_at = TimestampField(allow_null=True)

    class Meta:
        model = PushTarget
        fields = [
            "id",
            "owner",
            "name",
            "url",
            "events",
            "enabled",
            "created_at",
            "last_sent_at",
            "last_error",
            "last_error_at",
        ]
        read_only_fields = fields


class PushTargetListSerializer(PagedListSerializer):
    notification_targets = PushTargetSerializer(many=True)


class PushTestSerializer(serializers.Serializer):
    sent = serializers.BooleanField()
    message = serializers.CharField()
