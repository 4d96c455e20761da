"""Shapes shared by the API's documentation, and how a hot serializer builds its fields."""

import copy
from collections.abc import Callable
from typing import ClassVar

from rest_framework import serializers
from rest_framework.fields import Field

from core_app.error_codes import ERROR_CODE_CHOICES


class FieldsBuiltOnce:
    """A serializer mixin that builds its class's fields once, not at every instance.

    DRF builds a serializer's fields anew for each instance: a deep copy of every declared
    field (each one constructed again), and for a ModelSerializer each model field's build
    from the model's metadata. For a serializer made once per answer (a status read) that
    was half of its cost. Here the first instance's `get_fields()` is kept, unbound, as the
    class's template, and each instance gets shallow copies of its fields, bound to it as
    usual. A field that holds fields of its own (a nested serializer, a list or dict field's
    `child`, a many-related field's `child_relation`) is deep-copied as DRF does, since
    those inner fields are bound to it. For serializers whose fields do not depend on the
    instance, its data or its context (none of this project overrides `get_fields`)."""

    # Each field's name, the field, and how an instance's copy of it is made.
    _fields_template: ClassVar[list[tuple[str, Field, Callable[[Field], Field]]] | None] = None

    def get_fields(self) -> dict[str, Field]:
        cls = type(self)
        # Per class, never a base's: a subclass has fields of its own.
        template = cls.__dict__.get("_fields_template")
        if template is None:
            built: dict[str, Field] = super().get_fields()  # type: ignore[misc]
            template = [(name, field, _copier(field)) for name, field in built.items()]
            cls._fields_template = template  # two threads may both build it: the same fields
        return {name: copier(field) for name, field, copier in template}


def _copier(field: Field) -> Callable[[Field], Field]:
    """A deep copy for a field that holds fields, a shallow one for any other."""
    if isinstance(field, serializers.BaseSerializer) or any(
        hasattr(field, inner) for inner in ("child", "child_relation")
    ):
        return copy.deepcopy
    return copy.copy


class ErrorSerializer(serializers.Serializer):
    """The one error body of the API."""

    message = serializers.CharField(help_text="What went wrong, for people.")
    error = serializers.CharField(
        help_text="The same text as `message`, under the key the original MobileSD's clients read."
    )
    code = serializers.ChoiceField(
        choices=ERROR_CODE_CHOICES, help_text="A stable machine-readable code."
    )
    # DRF's metaclass takes declared fields out of the class body, so this does not shadow
    # Serializer.fields at runtime; the name is the API's.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors by dotted field path.",
    )


class OpenObjectSerializer(serializers.Serializer):
    """An object that may carry keys beyond the declared fields (they are kept as sent): the
    OpenAPI document says so with `additionalProperties: true` (core_app.schema)."""


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField()


class HealthCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    database = HealthCheckSerializer()
    broker = HealthCheckSerializer()
    cache = HealthCheckSerializer(
        help_text="The rate limits' cache; when it is down the API serves without limits."
    )
    worker = HealthCheckSerializer(
        help_text=(
            "Whether a Celery worker has noted its heartbeat within two periods "
            "(MOBILESD_WORKER_HEARTBEAT_SECONDS); without one no job runs."
        )
    )
    beat = HealthCheckSerializer(
        help_text=(
            "Whether Celery beat has noted its heartbeat within two periods; without it "
            "offline servers are not checked again and dead workers' jobs not recovered."
        )
    )
    storage = HealthCheckSerializer(
        help_text=(
            "Whether images can be saved: MEDIA_ROOT writable, with at least "
            "MOBILESD_MEDIA_MIN_FREE_BYTES free."
        )
    )


class PagedListSerializer(serializers.Serializer):
    """The envelope of a paged list (core_app.pagination): the total over all pages and the
    page's place; a subclass adds the list itself under its name."""

    total = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


class FeedListSerializer(PagedListSerializer):
    """The fields a list that is a changes-since feed adds to its envelope
    (core_app.pagination.paginated_response)."""

    next_cursor = serializers.IntegerField(
        help_text="Pass it as `updated_since` next: the rows changed after what this answer saw."
    )
    deleted = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        help_text="With `updated_since`: the ids of rows deleted since the cursor.",
    )
    has_more = serializers.BooleanField(
        required=False,
        help_text="With `updated_since`: more changes (or, with 0, more pages) wait; ask "
        "again at once, from `next_cursor` (with 0, at the next `offset`).",
    )
