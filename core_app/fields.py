"""Serializer fields shared by the apps: the documented timestamp, and strict JSON types."""

from datetime import UTC, datetime
from typing import Any

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


# Strict JSON types: a value of the wrong JSON type is an error, never coerced.


class StrictIntegerField(serializers.IntegerField):
    """An integer that arrives as a JSON number: no "20", no true, no 20.5."""

    default_error_messages = {"invalid": "A whole number is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(int(data))


class StrictFloatField(serializers.FloatField):
    """A JSON number: no strings, no booleans."""

    default_error_messages = {"invalid": "A number is required."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false, not "yes" or 1."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    """A JSON string: a number or a list is a type error, not something to stringify."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
