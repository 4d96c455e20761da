"""What the stream's messages and its tokens look like (for the OpenAPI document; the
messages themselves are made by events_app.messages)."""

from rest_framework import serializers

from core_app.fields import TimestampField


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
    batch = serializers.DictField(required=False, help_text="batch.* events: the batch.")
    server = serializers.DictField(required=False, help_text="server.* events: the server.")
    queue = serializers.DictField(required=False, help_text="queue.* events: {paused, paused_at}.")
    download = serializers.DictField(required=False, help_text="download.* events.")


class EventTokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="For GET /api/v1/events?token=")
    expires_at = TimestampField()
