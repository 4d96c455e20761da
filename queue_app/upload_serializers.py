"""API shapes of uploads (the input images of img2img and inpaint jobs)."""

from rest_framework import serializers

from core_app.fields import TimestampField
from core_app.serializers import PagedListSerializer
from queue_app.models import Upload


class UploadRequestSerializer(serializers.Serializer):
    """An image as multipart field `image` (or the raw body with its image Content-Type)."""

    image = serializers.FileField(help_text="A PNG, JPEG or WebP image.")


class UploadSerializer(serializers.ModelSerializer):
    """An upload: use `upload_id` in `generation_params.init_images` or `mask`."""

    upload_id = serializers.UUIDField(source="id", read_only=True)
    bytes = serializers.IntegerField(
        source="size_bytes", read_only=True, help_text="The size of the stored file."
    )
    sha256 = serializers.CharField(
        read_only=True,
        help_text="Of the stored file: the bytes as uploaded (unless its EXIF orientation "
        "had to be applied: then of the turned PNG).",
    )
    content_type = serializers.CharField(read_only=True, help_text="image/png, jpeg or webp.")
    created_at = TimestampField()
    last_used_at = TimestampField(help_text="Its last use by a job (or its upload).")

    class Meta:
        model = Upload
        fields = [
            "upload_id",
            "width",
            "height",
            "content_type",
            "bytes",
            "sha256",
            "created_at",
            "last_used_at",
        ]
        read_only_fields = fields


class UploadListSerializer(PagedListSerializer):
    uploads = UploadSerializer(many=True)
