"""Civitai API: image recipes (by id/URL or from a file) and model downloads."""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from civitai_app.download_requests import (
    download_cancel,
    download_delete,
    download_request,
    download_retry,
)
from civitai_app.filters import DownloadFilter
from civitai_app.image_info import image_info_from_civitai, image_info_from_file
from civitai_app.models import DownloadStatus
from civitai_app.parsers import LimitedMultiPartParser, RawBytesParser, RawImageParser
from civitai_app.selectors import download_get, download_list
from civitai_app.serializers import (
    DownloadAcceptedSerializer,
    DownloadListSerializer,
    DownloadMessageSerializer,
    DownloadRequestSerializer,
    DownloadSerializer,
    ImageInfoQuerySerializer,
    ImageInfoSerializer,
    ImageUploadSerializer,
)
from core_app.errors import PayloadTooLarge
from core_app.pagination import FEED_RESPONSES, UPDATED_SINCE_PARAMETER, paginated_response
from core_app.scopes import owner_scope, request_user
from core_app.serializers import ErrorSerializer, MessageSerializer

# Statuses a view answers beyond those core_app.schema.AutoSchema adds to every operation
# that can give them (400 on input, 401, 403 on session writes, 404 on paths naming an
# object, 413/415 on bodies, 429, 500): a 404 for what the input names
# (a server, a Civitai image or model), and Civitai's own refusals passed on.
NOT_FOUND = {404: ErrorSerializer}
CIVITAI_ERRORS = {
    403: ErrorSerializer,
    410: ErrorSerializer,
    429: ErrorSerializer,
    502: ErrorSerializer,
}


# The raw bodies RawImageParser (`image/*`) and RawBytesParser take, as the document lists
# them (octet-stream last: generators that know no image type send that one).
RAW_IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")


class ImageInfoView(APIView):
    parser_classes = [LimitedMultiPartParser, RawImageParser, RawBytesParser]

    @extend_schema(
        parameters=[ImageInfoQuerySerializer],
        responses={200: ImageInfoSerializer, **NOT_FOUND, **CIVITAI_ERRORS},
        summary="Generation data of a Civitai image",
        description="The image's recipe: generation_params in MobileSD's names (ready for "
        "POST /api/v1/generate), the resources it used with the servers that have them, "
        "and Civitai's raw meta. An image without metadata answers 200 with "
        "has_metadata false.",
        operation_id="civitai_image_info",
    )
    def get(self, request: Request) -> Response:
        query = ImageInfoQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        info = image_info_from_civitai(
            image_id=query.validated_data.get("image_id"), url=query.validated_data.get("url")
        )
        return Response(ImageInfoSerializer(info).data)

    @extend_schema(
        request={
            "multipart/form-data": ImageUploadSerializer,
            **{media: OpenApiTypes.BINARY for media in RAW_IMAGE_MEDIA_TYPES},
        },
        responses={200: ImageInfoSerializer},
        summary="Generation data in an image file",
        description="Reads the A1111/Forge infotext of a PNG (`parameters` text) or a JPEG/WebP "
        "(EXIF UserComment) and answers as GET does. Send multipart field `image`, or the "
        "raw bytes with Content-Type image/png, image/jpeg, image/webp or "
        "application/octet-stream.",
        operation_id="civitai_image_info_upload",
    )
    def post(self, request: Request) -> Response:
        return Response(ImageInfoSerializer(image_info_from_file(data=_uploaded(request))).data)


def _uploaded(request: Request) -> bytes:
    """The uploaded image's bytes: the raw body, or multipart field `image`."""
    data = request.data
    if isinstance(data, dict) and isinstance(data.get("raw"), bytes):
        return data["raw"]
    upload = request.FILES.get("image")
    if upload is None:
        raise ValidationError({"image": ["Send an image file as multipart field 'image'."]})
    limit = settings.MOBILESD_MAX_IMAGE_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(limit)
    return upload.read()


class DownloadModelView(APIView):
    @extend_schema(
        request=DownloadRequestSerializer,
        responses={
            202: DownloadAcceptedSerializer,
            200: DownloadAcceptedSerializer,
            409: ErrorSerializer,
            **NOT_FOUND,
            **CIVITAI_ERRORS,
        },
        summary="Download a model from Civitai to servers' model folders",
        description="202 with the new download's id; 200 with the existing one when the file "
        "is already being downloaded, or is already present and verified. For a client key, "
        "when that existing download is another user's: 409 `download_exists`.",
        operation_id="civitai_download_model",
    )
    def post(self, request: Request) -> Response:
        serializer = DownloadRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        download, created, message = download_request(
            owner=request_user(request),
            mine_only=owner_scope(request) is not None,
            server_aliases=data["server_aliases"],
            model_version_id=data.get("model_version_id"),
            url=data.get("url"),
            file_id=data.get("file_id"),
            file_format=data.get("format"),
            precision=data.get("precision"),
            size=data.get("size"),
            file_name=data.get("file_name"),
        )
        body = {
            "download_id": download.pk,
            "status": download.status,
            "message": message,
            "download": download,
        }
        return Response(
            DownloadAcceptedSerializer(body).data,
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )


class DownloadListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=DownloadStatus.values),
            OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
            OpenApiParameter("offset", int),
            UPDATED_SINCE_PARAMETER,
        ],
        responses={200: DownloadListSerializer, **FEED_RESPONSES},
        summary="List Civitai downloads (a client key's own; every user's for an admin)",
        operation_id="civitai_downloads_list",
    )
    def get(self, request: Request) -> Response:
        filterset = DownloadFilter(
            request.query_params, queryset=download_list(owner=owner_scope(request))
        )
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        return paginated_response(
            request,
            filterset.qs.order_by("-created_at", "-id"),
            key="downloads",
            serialize=lambda downloads: DownloadSerializer(downloads, many=True).data,
            feed="download",
        )


class DownloadDetailView(APIView):
    @extend_schema(
        responses={200: DownloadSerializer},
        summary="A download: status, bytes done and total, speed, ETA, error",
        operation_id="civitai_download_retrieve",
    )
    def get(self, request: Request, download_id: str) -> Response:
        download = download_get(download_id=download_id, owner=owner_scope(request))
        return Response(DownloadSerializer(download).data)

    @extend_schema(
        responses={200: MessageSerializer},
        summary="Delete a download (cancelled first if it runs; placed files stay)",
        operation_id="civitai_download_destroy",
    )
    def delete(self, request: Request, download_id: str) -> Response:
        deleted = download_delete(download_id=download_id, owner=owner_scope(request))
        return Response({"message": f"Download {deleted} deleted."})


class DownloadCancelView(APIView):
    @extend_schema(
        request=None,
        responses={200: DownloadMessageSerializer, 409: ErrorSerializer},
        summary="Cancel a download",
        operation_id="civitai_download_cancel",
    )
    def post(self, request: Request, download_id: str) -> Response:
        download = download_cancel(download_id=download_id, owner=owner_scope(request))
        body = {"message": "Download cancelled.", "download": download}
        return Response(DownloadMessageSerializer(body).data)


class DownloadRetryView(APIView):
    @extend_schema(
        request=None,
        responses={200: DownloadMessageSerializer, 409: ErrorSerializer},
        summary="Retry a failed or cancelled download (resumes its partial file)",
        operation_id="civitai_download_retry",
    )
    def post(self, request: Request, download_id: str) -> Response:
        download = download_retry(download_id=download_id, owner=owner_scope(request))
        body = {"message": "Download queued again.", "download": download}
        return Response(DownloadMessageSerializer(body).data)
