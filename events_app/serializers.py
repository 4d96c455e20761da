"""What the stream's messages and its tokens look like (for the OpenAPI document; the
messages themselves are made by events_app.messages)."""

from rest_framework import serializers

from core_app.fields import TimestampField


class BatchFinishedCountsSerializer(serializers.Serializer):
    """batch.finished: how the batch's jobs ended, when its last one finished."""

    completed = serializers.IntegerField(min_value=0)
    failed = serializers.IntegerField(min_value=0)
    cancelled = serializers.IntegerField(min_value=0)
    total = serializers.IntegerField(min_value=0, help_text="Its jobs, whatever their status.")


class BatchEventSerializer(serializers.Serializer):
    """The batch of a batch.* event (batch.created, batch.updated, batch.deleted, and
    batch.finished, once its last unfinished job has finished)."""

    batch_id = serializers.UUIDField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    target_server_alias = serializers.CharField(allow_null=True)
    priority = serializers.IntegerField(allow_null=True)
    job_count = serializers.IntegerField(allow_null=True)
    creation_timestamp = serializers.CharField(allow_null=True)
    counts = BatchFinishedCountsSerializer(required=False, help_text="batch.finished only.")


class EventMessageSerializer(serializers.Serializer):
    """The `data` of one event message of GET /api/v1/events."""

    id = serializers.IntegerField(help_text="The event's id: it only grows; resume after it.")
    type = serializers.CharField(help_text="job.completed, server.online, ...")
    created_at = serializers.CharField(allow_null=True, help_text="When the change committed.")
    job_id = serializers.UUIDField(allow_null=True)
    batch_id = serializers.UUIDField(allow_null=True)
    download_id = serializers.UUIDField(allow_null=True)
    server_alias = serializers.CharField(allow_null=True)
    job = serializers.DictField(
        required=False,
        help_text="job.* events: the job after the change, in the job object's names "
        "(generation_params left out).",
    )
    batch = BatchEventSerializer(required=False, help_text="batch.* events: the batch.")
    server = serializers.DictField(required=False, help_text="server.* events: the server.")
    queue = serializers.DictField(required=False, help_text="queue.* events: {paused, paused_at}.")
    download = serializers.DictField(required=False, help_text="download.* events.")


class StreamReadySerializer(serializers.Serializer):
    """`event: ready`: the stream is live after `head` (and has replayed up to it)."""

    head = serializers.IntegerField()


class StreamResetSerializer(serializers.Serializer):
    """`event: reset`: the cursor is older than what is kept, or unknown; resynchronise."""

    reason = serializers.ChoiceField(choices=["pruned", "unknown_cursor"])
    cursor = serializers.IntegerField()
    head = serializers.IntegerField()


class StreamClosingSerializer(serializers.Serializer):
    """`event: closing`: the server ends the stream; reconnect with the last id."""

    reason = serializers.ChoiceField(choices=["lagging", "shutdown"])


class EventDataField(serializers.CharField):
    """A message's `data` line: JSON (an EventMessage, or a control message's)."""


class ServerSentEventSerializer(serializers.Serializer):
    """One message of the stream as an EventSource reads it (a comment `: keep-alive`
    carries none of these)."""

    id = serializers.CharField(required=False, help_text="The event's id (Last-Event-ID).")
    event = serializers.CharField(
        required=False, help_text="The event's type, or ready / reset / closing."
    )
    data = EventDataField(required=False)  # type: ignore[assignment]  # the SSE field's name
    retry = serializers.IntegerField(required=False, help_text="Reconnect after, in ms.")


class EventTokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="For GET /api/v1/events?token=")
    expires_at = TimestampField()
