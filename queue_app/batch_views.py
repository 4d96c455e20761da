"""Batch API: submit a batch (items or a matrix), list, show, cancel and delete batches."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.pagination import FEED_RESPONSES, UPDATED_SINCE_PARAMETER, paginated_response
from core_app.scopes import owner_scope, request_api_key, request_user
from core_app.serializers import ErrorSerializer, MessageSerializer
from queue_app.batch_serializers import (
    BatchCancelSerializer,
    BatchCreatedSerializer,
    BatchDetailSerializer,
    BatchListSerializer,
    BatchRequestSerializer,
    BatchSerializer,
)
from queue_app.batches import (
    batch_cancel,
    batch_delete,
    batch_get,
    batch_images,
    batch_jobs,
    batch_list,
    batch_listed,
    batch_submit,
)
from queue_app.views import IDEMPOTENCY_HEADER, NOT_FOUND, idempotency_key


class BatchListView(APIView):
    @extend_schema(
        request=BatchRequestSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            202: BatchCreatedSerializer,
            400: ErrorSerializer,
            409: ErrorSerializer,
            **NOT_FOUND,
        },
        summary="Queue a batch of jobs (a list, or a matrix of axes)",
    )
    def post(self, request: Request) -> Response:
        serializer = BatchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        batch, job_ids, created = batch_submit(
            owner=request_user(request),
            target_server_alias=data["target_server_alias"],
            generation_params=data.get("generation_params"),
            items=data.get("items"),
            axes=data.get("axes"),
            name=data["name"],
            priority=data["priority"],
            not_before=data["not_before"],
            expires_at=data["expires_at"],
            api_key=request_api_key(request),
            idempotency_key=idempotency_key(request),
            callback_url=data["callback_url"],
        )
        headers = {} if created else {"Idempotent-Replayed": "true"}
        body = {"batch_id": str(batch.pk), "mobilesd_job_ids": [str(pk) for pk in job_ids]}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
            OpenApiParameter("offset", int, description="Batches to skip."),
            UPDATED_SINCE_PARAMETER,
        ],
        responses={200: BatchListSerializer, **FEED_RESPONSES},
        summary="List batches",
        operation_id="batches_list",
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            request,
            batch_list(owner=owner_scope(request)),
            key="batches",
            serialize=lambda rows: BatchSerializer(map(batch_listed, rows), many=True).data,
            feed="batch",
        )


class BatchDetailView(APIView):
    @extend_schema(
        responses={200: BatchDetailSerializer},
        summary="A batch: counts by status, its jobs and its images",
        operation_id="batches_retrieve",
    )
    def get(self, request: Request, batch_id: str) -> Response:
        batch = batch_get(batch_id=batch_id, owner=owner_scope(request))
        batch.detail_jobs = batch_jobs(batch=batch)  # type: ignore[attr-defined]
        batch.detail_images = batch_images(batch=batch)  # type: ignore[attr-defined]
        return Response(BatchDetailSerializer(batch).data)

    @extend_schema(
        responses={200: MessageSerializer}, summary="Delete a batch, its jobs and their images"
    )
    def delete(self, request: Request, batch_id: str) -> Response:
        deleted, jobs = batch_delete(batch_id=batch_id, owner=owner_scope(request))
        return Response({"message": f"Batch {deleted} and its {jobs} job(s) deleted successfully."})


class BatchCancelView(APIView):
    @extend_schema(
        request=None,
        responses={200: BatchCancelSerializer},
        summary="Cancel the pending and processing jobs of a batch",
    )
    def post(self, request: Request, batch_id: str) -> Response:
        batch, cancelled = batch_cancel(batch_id=batch_id, owner=owner_scope(request))
        return Response(
            {
                "message": f"Cancelled {cancelled} job(s) of the batch.",
                "cancelled": cancelled,
                "batch": BatchSerializer(batch).data,
            }
        )
