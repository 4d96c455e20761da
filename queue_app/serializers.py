"""API shapes of jobs: the submit request and the documented job object."""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core_app.fields import TimestampField
from queue_app.models import Job, JobStatus

SEED_MAX = 2**32 - 1


class StrictIntegerField(serializers.IntegerField):
    """An integer that arrives as a JSON number: no "20", no true, no 20.5."""

    default_error_messages = {"invalid": "A whole number is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(int(data))


class StrictFloatField(serializers.FloatField):
    """A JSON number: no strings, no booleans."""

    default_error_messages = {"invalid": "A number is required."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false, not "yes" or 1."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": [""], "description": "random"},
            {"type": "integer", "minimum": -1, "maximum": SEED_MAX},
        ]
    }
)
class SeedField(serializers.Field):
    """A seed: "" (or -1) for random, or a whole number 0 … 2^32-1."""

    default_error_messages = {
        "invalid": 'A seed is "" or -1 for random, or a whole number from 0 to 4294967295.'
    }

    def to_internal_value(self, data: Any) -> int | str:
        if data == "" or data is None:
            return ""
        if isinstance(data, str) and data.strip().lstrip("-").isdigit():
            data = int(data.strip())
        if isinstance(data, bool) or not isinstance(data, int) or not -1 <= data <= SEED_MAX:
            self.fail("invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class StrictCharField(serializers.CharField):
    """A JSON string: a number or a list is a type error, not something to stringify."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class LoraSerializer(serializers.Serializer):
    name = StrictCharField(max_length=500)
    weight = StrictFloatField(min_value=-10, max_value=10, required=False)


def text_field(**kwargs: Any) -> StrictCharField:
    return StrictCharField(required=False, allow_blank=True, trim_whitespace=False, **kwargs)


class GenerationParamsSerializer(serializers.Serializer):
    """Validates the documented keys of `generation_params`; unknown keys are kept as sent.

    `positive_prompt` is the prompt; a lone `prompt` is accepted as the same thing.
    """

    positive_prompt = text_field(max_length=settings.MOBILESD_MAX_PROMPT_LENGTH)
    prompt = text_field(max_length=settings.MOBILESD_MAX_PROMPT_LENGTH)
    negative_prompt = text_field(max_length=settings.MOBILESD_MAX_PROMPT_LENGTH)
    checkpoint_name = text_field(max_length=1000)
    width = StrictIntegerField(required=False, min_value=64, max_value=4096)
    height = StrictIntegerField(required=False, min_value=64, max_value=4096)
    steps = StrictIntegerField(required=False, min_value=1, max_value=150)
    cfg_scale = StrictFloatField(required=False, min_value=1, max_value=30)
    distilled_cfg_scale = StrictFloatField(required=False, min_value=0, max_value=30)
    sampler_name = text_field(max_length=200)
    scheduler_or_quality_preset = text_field(max_length=200)
    restore_faces = StrictBooleanField(required=False)
    seed = SeedField(required=False)
    subseed = SeedField(required=False)
    num_images = StrictIntegerField(required=False, min_value=1, max_value=16)
    enable_hires_fix = StrictBooleanField(required=False)
    upscaler_model = text_field(max_length=200)
    refiner_model = text_field(max_length=1000)
    style_preset = text_field(max_length=200)
    sampling_category = text_field(max_length=200)
    clip_skip = StrictIntegerField(required=False, min_value=1, max_value=12)
    denoising_strength = StrictFloatField(required=False, min_value=0, max_value=1)
    loras = LoraSerializer(many=True, required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("generation_params must be a JSON object.")
        if not data:
            raise serializers.ValidationError("generation_params must not be empty.")
        validated = super().to_internal_value(data)
        params = {**data, **validated}
        if "positive_prompt" not in params and "prompt" in params:
            params["positive_prompt"] = params["prompt"]
        return params


class GenerateRequestSerializer(serializers.Serializer):
    target_server_alias = StrictCharField(max_length=100)
    generation_params = GenerationParamsSerializer()


class GenerateResponseSerializer(serializers.Serializer):
    mobilesd_job_id = serializers.UUIDField()


class JobSerializer(serializers.ModelSerializer):
    """A job exactly as SEED_API.md documents it. Fields may be added, never renamed."""

    mobilesd_job_id = serializers.UUIDField(source="id", read_only=True)
    status = serializers.ChoiceField(choices=JobStatus.choices, read_only=True)
    creation_timestamp = TimestampField(source="created_at")
    last_updated_timestamp = TimestampField(source="updated_at")
    completion_timestamp = TimestampField(source="completed_at", allow_null=True)
    target_server_alias = serializers.CharField(source="server_alias", read_only=True)
    generation_params = serializers.JSONField(read_only=True)
    result_details = serializers.JSONField(read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "mobilesd_job_id",
            "status",
            "creation_timestamp",
            "last_updated_timestamp",
            "completion_timestamp",
            "target_server_alias",
            "forge_session_hash",
            "generation_params",
            "result_details",
            "retry_count",
        ]
        read_only_fields = fields


class JobListSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Jobs matching the filter, over all pages.")
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    jobs = JobSerializer(many=True)


class JobCancelResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    job = JobSerializer()
