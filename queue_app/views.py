"""Job API: submit, status, list, cancel, delete, and the images of a job."""

import io
import logging
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from django.http import FileResponse, HttpResponseBase, HttpResponseNotModified
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.errors import NotFound
from core_app.pagination import FEED_RESPONSES, UPDATED_SINCE_PARAMETER, paginated_response
from core_app.permissions import HasApiKeyOrStaff
from core_app.scopes import owner_scope, request_api_key, request_user
from core_app.serializers import ErrorSerializer, MessageSerializer
from queue_app.control_views import JobEditSerializer, job_edit_response
from queue_app.counts import job_list_count
from queue_app.filters import JobFilter
from queue_app.images import (
    InvalidImageError,
    image_content_type,
    image_etag,
    job_image_by_name,
    job_image_get,
    stored_name,
    thumbnail,
    thumbnail_name,
)
from queue_app.links import signed_link_check, signed_link_present
from queue_app.models import Job, JobImage, JobStatus
from queue_app.previews import job_preview_get, preview_etag
from queue_app.serializers import (
    GenerateRequestSerializer,
    GenerateResponseSerializer,
    JobImageListSerializer,
    JobListSerializer,
    JobMessageSerializer,
    JobSerializer,
    ThumbnailQuerySerializer,
)
from queue_app.services import job_cancel, job_delete, job_get, job_retry, job_submit

logger = logging.getLogger(__name__)

# Statuses a view answers beyond those core_app.schema.AutoSchema adds to every operation
# that can give them (400 on input, 401, 403 on session writes, 404 on paths naming an
# object, 413/415 on bodies, 429, 500): a 404 for an object named in the input.
NOT_FOUND = {404: ErrorSerializer}
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Repeat a submit with the same key to get the same job back, not a second one.",
)


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header (None: none); more than 255 characters is a 400."""
    key = request.headers.get("Idempotency-Key", "").strip() or None
    if key is not None and len(key) > 255:
        raise ValidationError({"Idempotency-Key": ["Use at most 255 characters."]})
    return key


class GenerateView(APIView):
    @extend_schema(
        request=GenerateRequestSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            202: GenerateResponseSerializer,
            400: ErrorSerializer,
            409: ErrorSerializer,
            **NOT_FOUND,
        },
        summary="Queue a generation job",
    )
    def post(self, request: Request) -> Response:
        serializer = GenerateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = idempotency_key(request)
        job, created = job_submit(
            target_server_alias=serializer.validated_data["target_server_alias"],
            generation_params=serializer.validated_data["generation_params"],
            priority=serializer.validated_data["priority"],
            api_key=request_api_key(request),
            owner=request_user(request),
            idempotency_key=key,
            not_before=serializer.validated_data["not_before"],
            expires_at=serializer.validated_data["expires_at"],
            callback_url=serializer.validated_data["callback_url"],
        )
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return Response(
            {"mobilesd_job_id": str(job.pk)}, status=status.HTTP_202_ACCEPTED, headers=headers
        )


class JobListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=JobStatus.values),
            OpenApiParameter(
                "owner",
                str,
                description="Only this user's jobs (a username). A client key sees its own "
                "user's jobs only, whatever it passes.",
            ),
            OpenApiParameter("order", str, enum=["asc", "desc"], description="Default desc."),
            OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
            OpenApiParameter("offset", int, description="Jobs to skip."),
            UPDATED_SINCE_PARAMETER,
        ],
        responses={200: JobListSerializer, **FEED_RESPONSES},
        summary="List jobs",
        operation_id="queue_jobs_list",
    )
    def get(self, request: Request) -> Response:
        jobs = Job.objects.select_related("server", "owner")
        if (owner := owner_scope(request)) is not None:
            jobs = jobs.filter(owner=owner)
        filterset = JobFilter(request.query_params, queryset=jobs)
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        return paginated_response(
            request,
            filterset.qs,
            key="jobs",
            serialize=lambda jobs: JobSerializer(jobs, many=True).data,
            count=job_list_count,
            feed="job",
        )


class JobStatusView(APIView):
    @extend_schema(
        responses={200: JobSerializer},
        summary="Status of a job",
        operation_id="queue_job_status",
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = job_get(job_id=job_id, owner=owner_scope(request))
        return Response(JobSerializer(job, context={"queue_place": True}).data)


class JobCancelView(APIView):
    @extend_schema(
        request=None,
        responses={200: JobMessageSerializer, 409: ErrorSerializer},
        summary="Cancel a job",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_cancel(job_id=job_id, owner=owner_scope(request))
        return Response({"message": "Job cancelled successfully.", "job": JobSerializer(job).data})


class JobRetryView(APIView):
    @extend_schema(
        request=None,
        responses={200: JobMessageSerializer, 409: ErrorSerializer},
        summary="Retry a failed or cancelled job",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_retry(job_id=job_id, owner=owner_scope(request))
        return Response({"message": "Job queued again.", "job": JobSerializer(job).data})


class JobDetailView(APIView):
    @extend_schema(
        responses={200: JobSerializer},
        summary="A job (same as its status)",
        operation_id="queue_job_retrieve",
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = job_get(job_id=job_id, owner=owner_scope(request))
        return Response(JobSerializer(job, context={"queue_place": True}).data)

    @extend_schema(
        request=JobEditSerializer,
        responses={200: JobSerializer, 409: ErrorSerializer},
        summary="Change a pending job (generation_params, priority)",
        description="409 job_not_pending once it has started. A job a worker has chosen to run "
        "next is still pending: the change gives that choice back.",
    )
    def patch(self, request: Request, job_id: str) -> Response:
        return job_edit_response(request, job_id)

    @extend_schema(responses={200: MessageSerializer}, summary="Delete a job")
    def delete(self, request: Request, job_id: str) -> Response:
        deleted = job_delete(job_id=job_id, owner=owner_scope(request))
        return Response({"message": f"Job {deleted} deleted successfully."})


# --- images ---------------------------------------------------------------------------------

# Images never change under their name, so the phone may keep them for a year without
# asking again; `private` keeps shared caches out, as every request carries an API key.
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
# application/octet-stream is sent to a client that asks for it and for no image type:
# API client generators read a binary answer under that name only.
OCTET_STREAM = "application/octet-stream"
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", OCTET_STREAM)
THUMBNAIL_MEDIA_TYPES = ("image/webp", "image/jpeg", OCTET_STREAM)
IMAGE_ERRORS: dict[int | tuple[int, str], Any] = {
    304: OpenApiResponse(description="Not modified (If-None-Match)."),
}
# The image endpoints a signed link opens answer 403 for one that does not verify.
SIGNED_IMAGE_ERRORS: dict[int | tuple[int, str], Any] = {
    **IMAGE_ERRORS,
    403: OpenApiResponse(
        ErrorSerializer,
        description="A signed link (exp, sig) that is tampered with (`invalid_signature`) or "
        "has expired (`expired_link`).",
    ),
}


class AnyAcceptNegotiation(BaseContentNegotiation):
    """Answers whatever the client accepts: an image loader sends `Accept: image/*`, and
    `?format=` is a thumbnail's format here, not DRF's renderer override. Errors are JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser:
        return next(iter(parsers))  # GET only: nothing is parsed

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


def _not_modified(request: Request, etag: str) -> HttpResponseNotModified | None:
    # Weak comparison (RFC 9110 §13.1.2), as If-None-Match requires.
    sent = parse_etags(request.headers.get("If-None-Match", ""))
    if "*" not in sent and etag not in (tag.removeprefix("W/") for tag in sent):
        return None
    response = HttpResponseNotModified()
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE_CACHE_CONTROL
    return response


def _wants_octet_stream(request: Request) -> bool:
    """Whether the client accepts application/octet-stream and no image type (nor `*/*`)."""
    accepted = {
        part.split(";", 1)[0].strip().lower()
        for part in request.headers.get("Accept", "").split(",")
    }
    images = any(media == "*/*" or media.startswith("image/") for media in accepted)
    return OCTET_STREAM in accepted and not images


def _file_response(
    request: Request, file: Any, *, content_type: str, filename: str, etag: str
) -> FileResponse:
    if _wants_octet_stream(request):
        content_type = OCTET_STREAM
    response = FileResponse(file, content_type=content_type, filename=filename)
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE_CACHE_CONTROL
    return response


class SignedLinkOrApiKey(HasApiKeyOrStaff):
    """An image's signed link (`?exp=&sig=`, queue_app.links) lets the request in without an
    API key; a link that does not verify is a 403, whoever sends it. Without one, the API
    key rules as everywhere."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if signed_link_present(request):
            signed_link_check(request)
            request.signed_link = True  # type: ignore[attr-defined]
            return True
        return super().has_permission(request, view)


def _image_owner(request: Request) -> Any:
    """Whose images the request may see: anyone's by a verified signed link (it names one
    image of one job), else as the key allows."""
    return None if getattr(request, "signed_link", False) else owner_scope(request)


SIGNED_LINK_PARAMETERS = [
    OpenApiParameter(
        "exp",
        int,
        description="A signed link's expiry (unix seconds), as MobileSD wrote it: with `sig`, "
        "the request needs no API key.",
    ),
    OpenApiParameter("sig", str, description="A signed link's signature of the path and exp."),
]


def _missing(image: JobImage) -> NotFound:
    return NotFound(
        f"Image {image.index} of job {image.job_id} is no longer stored.", code="image_not_found"
    )


class JobImageListView(APIView):
    @extend_schema(
        responses={200: JobImageListSerializer},
        summary="Images of a job",
        operation_id="queue_job_images_list",
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = job_get(job_id=job_id, owner=owner_scope(request))
        serializer = JobImageListSerializer(
            {"images": job.images.order_by("index")}, context={"request": request}
        )
        return Response(serializer.data)


def _image_response(request: Request, image: JobImage) -> HttpResponseBase:
    """The stored file of `image` as generated, or 304 when the client has it."""
    name = stored_name(image)
    etag = image_etag(name)
    if (not_modified := _not_modified(request, etag)) is not None:
        return not_modified
    try:
        file = image.file.storage.open(name, "rb")
    except FileNotFoundError:
        logger.warning("Image file %s of job %s is missing from storage", name, image.job_id)
        raise _missing(image) from None
    return _file_response(
        request,
        file,
        content_type=image_content_type(name),
        filename=PurePosixPath(name).name,
        etag=etag,
    )


IMAGE_RESPONSES: dict[int | tuple[int, str], Any] = {
    **{(200, media): OpenApiTypes.BINARY for media in IMAGE_MEDIA_TYPES},
    **SIGNED_IMAGE_ERRORS,
}


class JobImageFileView(APIView):
    content_negotiation_class = AnyAcceptNegotiation
    permission_classes = [SignedLinkOrApiKey]

    @extend_schema(
        parameters=SIGNED_LINK_PARAMETERS,
        responses=IMAGE_RESPONSES,
        summary="An image of a job, as generated (infotext included)",
        description="Cacheable forever: the bytes behind a URL never change.",
        operation_id="queue_job_image_retrieve",
    )
    def get(self, request: Request, job_id: str, index: int) -> HttpResponseBase:
        return _image_response(
            request,
            job_image_get(job=job_get(job_id=job_id, owner=_image_owner(request)), index=index),
        )


class OutputImageView(APIView):
    """`/outputs/<name>`, where the original MobileSD served its images: the same file as
    `/api/v1/queue/jobs/<id>/images/<n>`, under the same key rules (a client key's image
    loader sends the key header and sees its own user's images only). A signed link to this
    path opens it too (queue_app.links signs any path), though the links MobileSD hands out
    are to the /api/v1 paths."""

    content_negotiation_class = AnyAcceptNegotiation
    permission_classes = [SignedLinkOrApiKey]

    @extend_schema(
        parameters=SIGNED_LINK_PARAMETERS,
        responses=IMAGE_RESPONSES,
        summary="An image by the name listed in result_details.images",
        description="Cacheable forever: the bytes behind a URL never change.",
        operation_id="outputs_image_retrieve",
    )
    def get(self, request: Request, name: str) -> HttpResponseBase:
        return _image_response(request, job_image_by_name(name=name, owner=_image_owner(request)))


class JobImageThumbnailView(APIView):
    content_negotiation_class = AnyAcceptNegotiation
    permission_classes = [SignedLinkOrApiKey]

    @extend_schema(
        parameters=[ThumbnailQuerySerializer, *SIGNED_LINK_PARAMETERS],
        responses={
            **{(200, media): OpenApiTypes.BINARY for media in THUMBNAIL_MEDIA_TYPES},
            **SIGNED_IMAGE_ERRORS,
        },
        summary="A phone-sized thumbnail of an image",
        description="Made on the first request, then served from storage. Cacheable forever.",
        operation_id="queue_job_image_thumbnail",
    )
    def get(self, request: Request, job_id: str, index: int) -> HttpResponseBase:
        query = ThumbnailQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        size, fmt = query.validated_data["size"], query.validated_data["format"]
        image = job_image_get(job=job_get(job_id=job_id, owner=_image_owner(request)), index=index)
        name = thumbnail_name(stored_name(image), size=size, fmt=fmt)
        etag = image_etag(name)
        if (not_modified := _not_modified(request, etag)) is not None:
            return not_modified
        try:
            body, content_type = thumbnail(image=image, size=size, fmt=fmt)
        except FileNotFoundError:
            logger.warning("Image file %s of job %s is missing from storage", name, job_id)
            raise _missing(image) from None
        except InvalidImageError:
            # A file damaged in storage is as lost as a deleted one, but someone should know.
            logger.exception("Cannot make thumbnail %s", name)
            raise _missing(image) from None
        stream = io.BytesIO(body) if isinstance(body, bytes) else body
        return _file_response(
            request, stream, content_type=content_type, filename=PurePosixPath(name).name, etag=etag
        )


# A preview changes every moment while its job runs: never kept, always asked again.
PREVIEW_CACHE_CONTROL = "private, no-store"


class JobPreviewView(APIView):
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "v",
                int,
                description="Ignored: `progress.preview_url` names the version, so each new "
                "preview is a URL of its own.",
            )
        ],
        responses={
            **{(200, media): OpenApiTypes.BINARY for media in ("image/webp", OCTET_STREAM)},
            **IMAGE_ERRORS,
        },
        summary="The live preview of a running job",
        description="The latest image the job's server showed of it forming (WebP, at most "
        "256 px on the long side), while the job runs; 404 `preview_not_found` when it is "
        "not running or has none yet. Not cacheable; the ETag names its version.",
        operation_id="queue_job_preview",
    )
    def get(self, request: Request, job_id: str) -> HttpResponseBase:
        job = job_get(job_id=job_id, owner=owner_scope(request))
        preview = job_preview_get(job=job)
        etag = preview_etag(preview)
        if (not_modified := _not_modified(request, etag)) is not None:
            not_modified["Cache-Control"] = PREVIEW_CACHE_CONTROL
            return not_modified
        response = _file_response(
            request,
            io.BytesIO(bytes(preview.image)),
            content_type="image/webp",
            filename=f"{job.pk.hex[:8]}_preview_{preview.version}.webp",
            etag=etag,
        )
        response["Cache-Control"] = PREVIEW_CACHE_CONTROL
        return response
