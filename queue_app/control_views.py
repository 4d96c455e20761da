"""Queue control API: /api/v1/queue (pause state), /queue/pause, /queue/resume,
/queue/cancel, /queue/jobs/<id>/move, and the PATCH of /queue/jobs/<id> (JobDetailView)."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.fields import TimestampField
from core_app.permissions import ADMIN_ONLY, AdminScope
from core_app.scopes import owner_scope, request_is_admin, request_user
from core_app.serializers import ErrorSerializer
from queue_app.batches import batch_get
from queue_app.control import (
    CLIENT_PRIORITY_RANGE,
    QueuePause,
    job_edit,
    job_move,
    jobs_cancel,
    queue_pause,
    queue_pause_get,
    queue_resume,
)
from queue_app.serializers import (
    GenerationParamsSerializer,
    JobMessageSerializer,
    JobSerializer,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
)


class PausedServerSerializer(serializers.Serializer):
    alias = serializers.CharField()
    paused_at = TimestampField()


class QueuePauseSerializer(serializers.Serializer):
    paused = serializers.BooleanField(help_text="No job starts on any server while true.")
    paused_at = TimestampField(allow_null=True, help_text="Since when; null: not paused.")
    servers = PausedServerSerializer(many=True, help_text="The servers paused one by one.")


def _pause_response(state: QueuePause) -> Response:
    return Response(QueuePauseSerializer(state).data)


class QueueView(APIView):
    @extend_schema(
        responses={200: QueuePauseSerializer},
        summary="Whether the queue (or which servers) is paused",
        operation_id="queue_state",
    )
    def get(self, request: Request) -> Response:
        return _pause_response(queue_pause_get())


class QueuePauseView(APIView):
    permission_classes = ADMIN_ONLY

    @extend_schema(
        request=None,
        responses={200: QueuePauseSerializer},
        summary="Pause the whole queue (running jobs finish, nothing new starts)",
    )
    def post(self, request: Request) -> Response:
        return _pause_response(queue_pause())


class QueueResumeView(APIView):
    permission_classes = ADMIN_ONLY

    @extend_schema(
        request=None,
        responses={200: QueuePauseSerializer},
        summary="Resume the queue",
    )
    def post(self, request: Request) -> Response:
        return _pause_response(queue_resume())


class QueueCancelRequestSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(
        choices=["mine", "all"],
        default="mine",
        help_text='"mine": the caller\'s jobs; "all": everyone\'s (admin only).',
    )
    server = StrictCharField(
        max_length=100,
        required=False,
        help_text='Only the jobs of this server\'s queue ("any": those waiting for any server).',
    )
    batch_id = serializers.UUIDField(
        required=False, help_text="Only the jobs of this batch (see POST /api/v1/batches)."
    )
    include_processing = StrictBooleanField(
        default=False,
        help_text="Cancel running jobs too; false (the default): all but the current ones.",
    )


class QueueCancelResponseSerializer(serializers.Serializer):
    cancelled = serializers.IntegerField()


class QueueCancelView(APIView):
    @extend_schema(
        request=QueueCancelRequestSerializer,
        responses={200: QueueCancelResponseSerializer, 403: ErrorSerializer, 404: ErrorSerializer},
        summary="Cancel many jobs: mine or everyone's, of one server, pending or running too",
    )
    def post(self, request: Request) -> Response:
        query = QueueCancelRequestSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        if data["scope"] == "all" and not request_is_admin(request):
            self.permission_denied(request, AdminScope.message, AdminScope.code)
        batch = None
        if "batch_id" in data:  # another user's batch is a 404 for a client key
            batch = batch_get(batch_id=data["batch_id"], owner=owner_scope(request))
        cancelled = jobs_cancel(
            owner=None if data["scope"] == "all" else request_user(request),
            server_alias=data.get("server"),
            batch=batch,
            include_processing=data["include_processing"],
        )
        return Response({"cancelled": cancelled})


class JobMoveRequestSerializer(serializers.Serializer):
    position = serializers.ChoiceField(choices=["top", "bottom"])


class JobMoveView(APIView):
    @extend_schema(
        request=JobMoveRequestSerializer,
        responses={200: JobMessageSerializer, 409: ErrorSerializer},
        summary="Move a pending job to the top or bottom of its queue",
        description="By priority: one above the highest (below the lowest) of the pending jobs "
        "it is ordered against; a client key's move ranks it among its own jobs only, within "
        "the priorities a submit allows.",
    )
    def post(self, request: Request, job_id: str) -> Response:
        body = JobMoveRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        position = body.validated_data["position"]
        job = job_move(job_id=job_id, owner=owner_scope(request), position=position)
        return Response(
            {"message": f"Job moved to the {position}.", "job": JobSerializer(job).data}
        )


class JobEditSerializer(serializers.Serializer):
    generation_params = GenerationParamsSerializer(
        required=False,
        help_text="The keys to change; each replaces the job's, the others stay.",
    )
    priority = StrictIntegerField(
        required=False, min_value=CLIENT_PRIORITY_RANGE[0], max_value=CLIENT_PRIORITY_RANGE[1]
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Give generation_params and/or priority.")
        return attrs


def job_edit_response(request: Request, job_id: str) -> Response:
    """The PATCH of /queue/jobs/<id> (JobDetailView): change a pending job."""
    body = JobEditSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    job = job_edit(
        job_id=job_id,
        owner=owner_scope(request),
        generation_params=body.validated_data.get("generation_params"),
        priority=body.validated_data.get("priority"),
    )
    return Response(JobSerializer(job).data)
