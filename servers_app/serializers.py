"""API shapes of servers."""

from typing import Any

from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from core_app.fields import TimestampField
from servers_app.models import Server
from servers_app.validators import validate_alias, validate_api_url


class ServerSerializer(serializers.ModelSerializer):
    """A server as the API shows it. The password is write-only; `has_password` says if set.

    Input also accepts the names the original MobileSD used: `apiUrl`,
    `auth: {"username", "password"}` (or `null` for none), and `authUser` / `authPass`.
    A password left out of an update keeps the stored one.
    """

    alias = serializers.CharField(
        max_length=100,
        validators=[
            validate_alias,
            UniqueValidator(Server.objects.all(), message="A server with this alias exists."),
        ],
    )
    api_url = serializers.CharField(max_length=500, validators=[validate_api_url])
    apiUrl = serializers.CharField(source="api_url", read_only=True, help_text="Legacy name.")
    username = serializers.CharField(max_length=150, required=False, allow_blank=True)
    password = serializers.CharField(
        max_length=255, required=False, allow_blank=True, write_only=True, trim_whitespace=False
    )
    has_password = serializers.BooleanField(read_only=True)
    slots = serializers.IntegerField(min_value=1, max_value=16, required=False)
    created_at = TimestampField()
    updated_at = TimestampField()
    last_checked_at = TimestampField()
    last_seen_at = TimestampField()

    class Meta:
        model = Server
        fields = [
            "alias",
            "api_url",
            "apiUrl",
            "username",
            "password",
            "has_password",
            "enabled",
            "slots",
            "is_online",
            "last_checked_at",
            "last_seen_at",
            "last_error",
            "loaded_checkpoint",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["is_online", "last_error", "loaded_checkpoint"]

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            data = self._accept_legacy_names(data)
        return super().to_internal_value(data)

    @staticmethod
    def _accept_legacy_names(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        if "api_url" not in data and "apiUrl" in data:
            data["api_url"] = data.pop("apiUrl")
        if "auth" in data:
            auth = data.pop("auth")
            if auth is None:
                data.setdefault("username", "")
                data.setdefault("password", "")
            elif isinstance(auth, dict):
                for key in ("username", "password"):
                    if key in auth:
                        data.setdefault(key, auth[key])
            else:
                raise serializers.ValidationError(
                    {"auth": ["Expected an object with 'username' and 'password', or null."]}
                )
        if "authUser" in data:
            data.setdefault("username", data.pop("authUser"))
        if "authPass" in data:
            data.setdefault("password", data.pop("authPass"))
        for key in ("username", "password"):
            if key in data and data[key] is None:
                data[key] = ""
        return data


class ServerEnvelopeSerializer(serializers.Serializer):
    """`{"message", "server"}`: what create and update answer, as the original did."""

    message = serializers.CharField()
    server = ServerSerializer()
