"""Upload API: upload an input image, list, show and delete uploads."""

from pathlib import PurePosixPath

from django.conf import settings
from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.errors import NotFound
from core_app.pagination import paginated_response
from core_app.parsers import (
    LimitedImageMultiPartParser,
    LimitedOctetStreamImageParser,
    LimitedRawImageParser,
)
from core_app.scopes import owner_scope, request_user
from core_app.serializers import ErrorSerializer, MessageSerializer
from queue_app.models import Upload
from queue_app.upload_serializers import (
    UploadListSerializer,
    UploadRequestSerializer,
    UploadSerializer,
)
from queue_app.uploads import UploadTooLarge, upload_create, upload_delete, upload_get
from queue_app.views import (
    IMAGE_RESPONSES,
    AnyAcceptNegotiation,
    _file_response,
    _not_modified,
)

RAW_IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")


class _UploadLimit:
    """MOBILESD_UPLOAD_MAX_BYTES; over it, the upload's own 413 (`upload_too_large`)."""

    limit_setting = "MOBILESD_UPLOAD_MAX_BYTES"

    def too_large(self, limit: int) -> Exception:
        return UploadTooLarge(f"The upload is larger than the limit of {limit} bytes.")


class UploadMultiPartParser(_UploadLimit, LimitedImageMultiPartParser):
    pass


class UploadRawParser(_UploadLimit, LimitedRawImageParser):
    pass


class UploadOctetStreamParser(_UploadLimit, LimitedOctetStreamImageParser):
    pass


def _uploaded(request: Request) -> bytes:
    data = request.data
    if isinstance(data, dict) and isinstance(data.get("raw"), bytes):
        return data["raw"]
    if request.content_type.split(";")[0].strip().lower() in RAW_IMAGE_MEDIA_TYPES:
        return b""  # an empty body: no parser ran
    upload = request.FILES.get("image")
    if upload is None:
        raise ValidationError({"image": ["Send an image file as multipart field 'image'."]})
    limit = settings.MOBILESD_UPLOAD_MAX_BYTES
    if upload.size is not None and upload.size > limit:
        raise _UploadLimit().too_large(limit)
    return upload.read()


class UploadListView(APIView):
    parser_classes = [UploadMultiPartParser, UploadRawParser, UploadOctetStreamParser]

    @extend_schema(
        request={
            "multipart/form-data": UploadRequestSerializer,
            **{media: OpenApiTypes.BINARY for media in RAW_IMAGE_MEDIA_TYPES},
        },
        responses={201: UploadSerializer, 400: ErrorSerializer, 413: ErrorSerializer},
        summary="Upload an input image (img2img's init image, inpaint's mask)",
        description="Multipart field `image`, or the raw bytes with Content-Type image/png, "
        "image/jpeg, image/webp or application/octet-stream. The format is read from the "
        "bytes. Larger than MOBILESD_UPLOAD_MAX_BYTES or MOBILESD_UPLOAD_MAX_PIXELS: 413 "
        "`upload_too_large`; not a readable PNG, JPEG or WebP: 400 `invalid_image`.",
        operation_id="uploads_create",
    )
    def post(self, request: Request) -> Response:
        upload = upload_create(owner=request_user(request), data=_uploaded(request))
        return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
            OpenApiParameter("offset", int),
        ],
        responses={200: UploadListSerializer},
        summary="List uploads (a client key's own; every user's for an admin), newest first",
        operation_id="uploads_list",
    )
    def get(self, request: Request) -> Response:
        uploads = Upload.objects.filter(deleted_at__isnull=True)
        if (owner := owner_scope(request)) is not None:
            uploads = uploads.filter(owner=owner)
        return paginated_response(
            request,
            uploads.order_by("-created_at", "-pk"),
            key="uploads",
            serialize=lambda items: UploadSerializer(items, many=True).data,
        )


class UploadDetailView(APIView):
    @extend_schema(
        responses={200: UploadSerializer}, summary="An upload", operation_id="uploads_retrieve"
    )
    def get(self, request: Request, upload_id: str) -> Response:
        upload = upload_get(upload_id=upload_id, owner=owner_scope(request))
        return Response(UploadSerializer(upload).data)

    @extend_schema(
        responses={200: MessageSerializer},
        summary="Delete an upload",
        description="Gone at once for the API (404 from now on, at submit too); its file is "
        "kept while jobs that used it exist.",
        operation_id="uploads_destroy",
    )
    def delete(self, request: Request, upload_id: str) -> Response:
        upload_delete(upload_id=upload_id, owner=owner_scope(request))
        return Response({"message": f"Upload {upload_id} deleted."})


class UploadFileView(APIView):
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        responses=IMAGE_RESPONSES,
        summary="An upload's file, as stored and sent to the server",
        description="Cacheable forever: an upload's bytes never change.",
        operation_id="uploads_file_retrieve",
    )
    def get(self, request: Request, upload_id: str) -> HttpResponseBase:
        upload = upload_get(upload_id=upload_id, owner=owner_scope(request))
        etag = f'"{upload.sha256}"'
        if (not_modified := _not_modified(request, etag)) is not None:
            return not_modified
        try:
            file = upload.file.storage.open(str(upload.file.name), "rb")
        except FileNotFoundError:
            raise NotFound(
                f"Upload '{upload_id}' is no longer stored.", code="upload_not_found"
            ) from None
        name = PurePosixPath(str(upload.file.name)).name
        return _file_response(
            request, file, content_type=upload.content_type, filename=name, etag=etag
        )
