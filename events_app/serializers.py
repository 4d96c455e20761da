"""What the stream's messages and its tokens look like (for the OpenAPI document; the
messages themselves are made by events_app.messages)."""

from rest_framework import serializers

from civitai_app.models import DownloadStatus
from core_app.fields import TimestampField
from queue_app.models import JobStatus
from queue_app.serializers import JobProgressSerializer, ResultDetailsSerializer


class JobEventSerializer(serializers.Serializer):
    """The job of a job.* event, as it was after the change (before it, for job.deleted), in
    the job object's names; without generation_params and what the job endpoints work out
    when asked (owner, server_online, queue, queue_position, eta_seconds, image_links,
    callback_url)."""

    mobilesd_job_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    creation_timestamp = TimestampField()
    last_updated_timestamp = TimestampField()
    completion_timestamp = TimestampField(allow_null=True)
    target_server_alias = serializers.CharField()
    forge_session_hash = serializers.CharField(allow_null=True)
    result_details = ResultDetailsSerializer(
        allow_null=True,
        help_text="As the job object's: while processing, also progress_percentage (0-100).",
    )
    retry_count = serializers.IntegerField(min_value=0)
    priority = serializers.IntegerField()
    progress = JobProgressSerializer(allow_null=True, help_text="While processing; else null.")
    not_before = TimestampField(allow_null=True)
    expires_at = TimestampField(allow_null=True)
    batch_id = serializers.UUIDField(allow_null=True)


class ServerEventSerializer(serializers.Serializer):
    """The server of a server.* event, after the change (before it, for server.deleted)."""

    alias = serializers.CharField()
    enabled = serializers.BooleanField()
    is_online = serializers.BooleanField(allow_null=True, help_text="null: not checked yet.")
    slots = serializers.IntegerField(min_value=1)
    paused_at = TimestampField(allow_null=True)
    quarantined_at = TimestampField(allow_null=True)
    quarantine_reason = serializers.CharField(allow_blank=True)
    last_error = serializers.CharField(allow_blank=True)


class QueueEventSerializer(serializers.Serializer):
    """queue.paused / queue.resumed: the queue's switch."""

    paused = serializers.BooleanField()
    paused_at = TimestampField(allow_null=True)


class DownloadEventSerializer(serializers.Serializer):
    """The download of a download.* event, after the change (before it, for
    download.deleted), in the download object's names."""

    download_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=DownloadStatus.choices)
    file_name = serializers.CharField()
    model_name = serializers.CharField(allow_blank=True)
    version_name = serializers.CharField(allow_blank=True)
    model_type = serializers.CharField()
    model_version_id = serializers.IntegerField(min_value=0)
    size_bytes = serializers.IntegerField(allow_null=True, help_text="null: not known yet.")
    bytes_done = serializers.IntegerField(min_value=0)
    progress_percentage = serializers.IntegerField(
        min_value=0, max_value=100, allow_null=True, help_text="null: the size is not known."
    )
    speed_bytes_per_second = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    error_code = serializers.CharField(allow_blank=True)
    attempts = serializers.IntegerField(min_value=0)
    creation_timestamp = TimestampField()
    last_updated_timestamp = TimestampField()
    finished_timestamp = TimestampField(allow_null=True)


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
    job = JobEventSerializer(required=False, help_text="job.* events: the job.")
    batch = BatchEventSerializer(required=False, help_text="batch.* events: the batch.")
    server = ServerEventSerializer(required=False, help_text="server.* events: the server.")
    queue = QueueEventSerializer(required=False, help_text="queue.* events: the queue.")
    download = DownloadEventSerializer(required=False, help_text="download.* events.")


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
