"""Shapes shared by the API's documentation."""

from rest_framework import serializers

from core_app.error_codes import ERROR_CODE_CHOICES


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
