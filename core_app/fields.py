"""Serializer fields shared by the apps."""

from datetime import UTC, datetime

from rest_framework import serializers


def format_timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and `Z`, as SEED_API.md shows: 2025-05-14T02:34:48.985Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TimestampField(serializers.DateTimeField):
    """A read-only timestamp in the documented format."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def to_representation(self, value: datetime) -> str | None:  # type: ignore[override]
        return format_timestamp(value)
