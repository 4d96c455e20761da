"""Job API: submit, status, list, cancel, delete."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.models import ApiKey
from core_app.pagination import paginate
from core_app.serializers import ErrorSerializer, MessageSerializer
from queue_app.filters import JobFilter
from queue_app.models import Job, JobStatus
from queue_app.serializers import (
    GenerateRequestSerializer,
    GenerateResponseSerializer,
    JobCancelResponseSerializer,
    JobListSerializer,
    JobSerializer,
)
from queue_app.services import job_cancel, job_delete, job_get, job_submit

ERRORS = {401: ErrorSerializer, 404: ErrorSerializer}
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Repeat a submit with the same key to get the same job back, not a second one.",
)


class GenerateView(APIView):
    @extend_schema(
        request=GenerateRequestSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            202: GenerateResponseSerializer,
            400: ErrorSerializer,
            409: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            **ERRORS,
        },
        summary="Queue a generation job",
    )
    def post(self, request: Request) -> Response:
        serializer = GenerateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "").strip() or None
        if key is not None and len(key) > 255:
            raise ValidationError({"Idempotency-Key": ["Use at most 255 characters."]})
        job, created = job_submit(
            target_server_alias=serializer.validated_data["target_server_alias"],
            generation_params=serializer.validated_data["generation_params"],
            api_key=request.auth if isinstance(request.auth, ApiKey) else None,
            idempotency_key=key,
        )
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return Response(
            {"mobilesd_job_id": str(job.pk)}, status=status.HTTP_202_ACCEPTED, headers=headers
        )


class JobListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=JobStatus.values),
            OpenApiParameter("order", str, enum=["asc", "desc"], description="Default desc."),
            OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
            OpenApiParameter("offset", int, description="Jobs to skip."),
        ],
        responses={200: JobListSerializer, 400: ErrorSerializer, 401: ErrorSerializer},
        summary="List jobs",
        operation_id="queue_jobs_list",
    )
    def get(self, request: Request) -> Response:
        filterset = JobFilter(request.query_params, queryset=Job.objects.select_related("server"))
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        jobs, total, limit, offset = paginate(request, filterset.qs)
        return Response(
            {
                "total": total,
                "limit": limit,
                "offset": offset,
                "jobs": JobSerializer(jobs, many=True).data,
            }
        )


class JobStatusView(APIView):
    @extend_schema(
        responses={200: JobSerializer, **ERRORS},
        summary="Status of a job",
        operation_id="queue_job_status",
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response(JobSerializer(job_get(job_id=job_id)).data)


class JobCancelView(APIView):
    @extend_schema(
        request=None,
        responses={200: JobCancelResponseSerializer, 409: ErrorSerializer, **ERRORS},
        summary="Cancel a job",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_cancel(job_id=job_id)
        return Response({"message": "Job cancelled successfully.", "job": JobSerializer(job).data})


class JobDetailView(APIView):
    @extend_schema(
        responses={200: JobSerializer, **ERRORS},
        summary="A job (same as its status)",
        operation_id="queue_job_retrieve",
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response(JobSerializer(job_get(job_id=job_id)).data)

    @extend_schema(responses={200: MessageSerializer, **ERRORS}, summary="Delete a job")
    def delete(self, request: Request, job_id: str) -> Response:
        deleted = job_delete(job_id=job_id)
        return Response({"message": f"Job {deleted} deleted successfully."})
