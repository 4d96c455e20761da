"""API shapes of Civitai: image recipes and downloads."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from civitai_app.models import Download, DownloadStatus, DownloadTarget
from core_app.fields import StrictCharField, TimestampField
from core_app.serializers import FeedListSerializer
from queue_app.serializers import GenerationParamsField

CIVITAI_ID_MAX = 2**31 - 1
# Civitai's file formats (REFERENCE.md C.5), matched without regard to case.
FILE_FORMATS = ("SafeTensor", "PickleTensor", "GGUF", "Diffusers", "Core ML", "ONNX", "Other")


class ImageInfoQuerySerializer(serializers.Serializer):
    image_id = serializers.IntegerField(
        required=False, help_text="A Civitai image id.", min_value=1, max_value=CIVITAI_ID_MAX
    )
    url = serializers.CharField(
        required=False, max_length=2000, help_text="Or its page: https://civitai.com/images/<id>."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("image_id" in attrs) == ("url" in attrs):
            raise serializers.ValidationError("Give either image_id or url.")
        return attrs


class ImageUploadSerializer(serializers.Serializer):
    """An image as multipart field `image` (or the raw body with its image Content-Type)."""

    image = serializers.FileField(help_text="A PNG, JPEG or WebP made by A1111/Forge.")


class ImageSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False, allow_null=True)
    url = serializers.CharField(required=False, allow_null=True)
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    format = serializers.CharField(allow_null=True, help_text="Uploaded files: PNG, JPEG or WEBP.")
    nsfw_level = serializers.CharField(required=False, allow_null=True)
    username = serializers.CharField(required=False, allow_null=True)
    base_model = serializers.CharField(required=False, allow_null=True)
    post_id = serializers.IntegerField(required=False, allow_null=True)
    model_version_ids = serializers.ListField(child=serializers.IntegerField(), required=False)


class ResourceSerializer(serializers.Serializer):
    type = serializers.CharField(
        help_text="Civitai model type: Checkpoint, LORA, TextualInversion, VAE, ..."
    )
    name = serializers.CharField(allow_blank=True, help_text="As the image names it.")
    weight = serializers.FloatField(allow_null=True)
    hash = serializers.CharField(
        allow_null=True, help_text="The hash the image gives (AutoV2, AutoV3, ...)."
    )
    model_id = serializers.IntegerField(allow_null=True)
    model_version_id = serializers.IntegerField(allow_null=True)
    model_name = serializers.CharField(allow_null=True)
    version_name = serializers.CharField(allow_null=True)
    file_name = serializers.CharField(allow_null=True)
    hashes = serializers.DictField(
        child=serializers.CharField(), help_text="Civitai's hashes of the file."
    )
    servers = serializers.ListField(
        child=serializers.CharField(),
        help_text="Aliases of our servers that have it (by hash, then by name); checkpoints "
        "and LoRAs only.",
    )


@extend_schema_field({"type": "object", "additionalProperties": True})
class MetadataField(serializers.JSONField):
    """An object of whatever keys the source gave, or null."""


class ImageInfoSerializer(serializers.Serializer):
    # DRF's metaclass takes declared fields out of the class body, so this does not shadow
    # Field.source at runtime; the name is the API's.
    source = serializers.ChoiceField(choices=["civitai", "file"])  # type: ignore[assignment]
    image = ImageSerializer()
    has_metadata = serializers.BooleanField()
    message = serializers.CharField()
    generation_params = GenerationParamsField(
        allow_null=True,
        help_text="MobileSD's names, ready for POST /api/v1/generate (null without metadata).",
    )
    resources = ResourceSerializer(many=True)
    raw_metadata = MetadataField(
        allow_null=True, help_text="Civitai's meta, or the file's infotext and its parsed keys."
    )
    warnings = serializers.ListField(child=serializers.CharField())


class DownloadRequestSerializer(serializers.Serializer):
    model_version_id = serializers.IntegerField(
        required=False, min_value=1, max_value=CIVITAI_ID_MAX
    )
    url = serializers.CharField(
        required=False,
        max_length=2000,
        help_text="Instead of model_version_id: a model page (its newest version, or "
        "?modelVersionId=), or a download URL.",
    )
    file_id = serializers.IntegerField(
        required=False,
        help_text="One file of the version exactly.",
        min_value=1,
        max_value=CIVITAI_ID_MAX,
    )
    format = serializers.CharField(required=False, max_length=20, help_text=", ".join(FILE_FORMATS))
    precision = serializers.CharField(
        required=False, max_length=64, help_text="fp16, fp32, bf16, fp8, nf4, ..."
    )
    size = serializers.ChoiceField(required=False, choices=["full", "pruned"])
    target_server_alias = StrictCharField(required=False, max_length=100)
    target_server_aliases = serializers.ListField(
        child=StrictCharField(max_length=100), required=False, max_length=20, allow_empty=False
    )
    file_name = StrictCharField(
        required=False,
        max_length=255,
        trim_whitespace=False,
        help_text="The name in the model folder; the file's extension is kept. No folders.",
    )

    def validate_format(self, value: str) -> str:
        for known in FILE_FORMATS:
            if value.strip().lower() == known.lower():
                return known
        raise serializers.ValidationError(f"Use one of {', '.join(FILE_FORMATS)}.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("model_version_id" in attrs) == ("url" in attrs):
            raise serializers.ValidationError("Give either model_version_id or url.")
        aliases = list(attrs.pop("target_server_aliases", []))
        if "target_server_alias" in attrs:
            aliases.insert(0, attrs.pop("target_server_alias"))
        if not aliases:
            raise serializers.ValidationError(
                {"target_server_alias": ["Name the server(s) to download to."]}
            )
        attrs["server_aliases"] = aliases
        return attrs


class DownloadTargetSerializer(serializers.ModelSerializer):
    server_alias = serializers.CharField(source="server.alias")
    refreshed_at = TimestampField(allow_null=True)

    class Meta:
        model = DownloadTarget
        fields = ["server_alias", "path", "state", "error", "refreshed_at", "refresh_error"]
        read_only_fields = fields


class DownloadErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    code = serializers.CharField()


class DownloadSerializer(serializers.ModelSerializer):
    download_id = serializers.UUIDField(source="id", read_only=True)
    status = serializers.ChoiceField(choices=DownloadStatus.choices, read_only=True)
    progress = serializers.SerializerMethodField(
        help_text="Fraction done, 0-1 (null while the size is unknown)."
    )
    eta_seconds = serializers.FloatField(read_only=True, allow_null=True)
    error = serializers.SerializerMethodField(
        help_text="Why it failed (or why it waits to retry): {message, code}; null otherwise."
    )
    targets = DownloadTargetSerializer(many=True, read_only=True)
    owner = serializers.CharField(
        source="owner.username", read_only=True, help_text="The user who asked for it."
    )
    next_attempt_at = TimestampField(allow_null=True)
    created_at = TimestampField()
    updated_at = TimestampField()
    started_at = TimestampField(allow_null=True)
    finished_at = TimestampField(allow_null=True)

    class Meta:
        model = Download
        fields = [
            "download_id",
            "status",
            "model_version_id",
            "model_id",
            "model_name",
            "version_name",
            "model_type",
            "base_model",
            "file_id",
            "file_name",
            "folder",
            "sha256",
            "size_bytes",
            "bytes_done",
            "progress",
            "speed_bytes_per_second",
            "eta_seconds",
            "error",
            "attempts",
            "next_attempt_at",
            "targets",
            "owner",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField(allow_null=True, min_value=0, max_value=1))
    def get_progress(self, download: Download) -> float | None:
        if download.status == DownloadStatus.COMPLETED:
            return 1.0
        if not download.size_bytes:
            return None
        return min(download.bytes_done / download.size_bytes, 1.0)

    @extend_schema_field(DownloadErrorSerializer(allow_null=True))
    def get_error(self, download: Download) -> dict[str, str] | None:
        if not download.error:
            return None
        return {"message": download.error, "code": download.error_code}


class DownloadAcceptedSerializer(serializers.Serializer):
    download_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=DownloadStatus.choices)
    message = serializers.CharField()
    download = DownloadSerializer()


class DownloadMessageSerializer(serializers.Serializer):
    message = serializers.CharField()
    download = DownloadSerializer()


class DownloadListSerializer(FeedListSerializer):
    downloads = DownloadSerializer(many=True)
