"""API shapes of batches: the submit request (items, or a base and axes) and the batch."""

import math
from typing import Any

from django.conf import settings
from rest_framework import serializers

from core_app.fields import TimestampField
from core_app.serializers import FeedListSerializer
from queue_app.batches import AXIS_FIELDS, LORA_WEIGHT_AXIS
from queue_app.models import JobStatus
from queue_app.serializers import (
    CallbackUrlField,
    GenerationParamsField,
    GenerationParamsSerializer,
    JobImageSerializer,
    JobTimesSerializer,
    LoraSerializer,
    StrictCharField,
    StrictIntegerField,
)

# What an axis may vary (the schema's BatchAxisFieldEnum).
AXIS_CHOICES = [*AXIS_FIELDS, "prompt", LORA_WEIGHT_AXIS]


class AxisSerializer(serializers.Serializer):
    """One axis of a matrix: a `generation_params` key and its values, or (`lora_weight`)
    the weights of one LoRA."""

    field = serializers.ChoiceField(
        choices=AXIS_CHOICES,
        help_text='The generation_params key the axis varies ("prompt" is positive_prompt), '
        'or "lora_weight": the weight of the LoRA named in `lora`.',
    )
    values = serializers.ListField(
        child=serializers.JSONField(),
        min_length=1,
        help_text="Each value as generation_params takes it (lora_weight: numbers).",
    )
    lora = StrictCharField(
        required=False,
        max_length=500,
        help_text="lora_weight only: the LoRA's name (added to generation_params.loras if it "
        "is not there).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        field = attrs["field"] = "positive_prompt" if attrs["field"] == "prompt" else attrs["field"]
        if field == LORA_WEIGHT_AXIS:
            if not attrs.get("lora"):
                raise serializers.ValidationError({"lora": ["A lora_weight axis names a LoRA."]})
        elif "lora" in attrs:
            raise serializers.ValidationError({"lora": ["Only a lora_weight axis names a LoRA."]})
        values: list[Any] = []
        errors: dict[str, Any] = {}
        for index, value in enumerate(attrs["values"]):
            if field == LORA_WEIGHT_AXIS:
                checked: serializers.Serializer = LoraSerializer(
                    data={"name": attrs["lora"], "weight": value}
                )
                key = "weight"
            else:
                checked, key = GenerationParamsSerializer(data={field: value}), field
            if checked.is_valid():
                values.append(checked.validated_data[key])
            else:
                errors[str(index)] = checked.errors.get(key) or ["Invalid value."]
        if errors:
            raise serializers.ValidationError({"values": errors})
        attrs["values"] = values
        return attrs


class BatchRequestSerializer(JobTimesSerializer):
    """A batch: `items` (each a generation_params, over the optional base
    `generation_params`), or `generation_params` and `axes` (every combination of the axes'
    values: an X/Y/Z plot). Every job gets the batch's server, priority and times."""

    target_server_alias = StrictCharField(
        max_length=100, help_text='A server\'s alias, or "any" to let MobileSD choose.'
    )
    name = StrictCharField(required=False, allow_blank=True, max_length=200, default="")
    priority = StrictIntegerField(
        required=False, default=0, min_value=-100, max_value=100, help_text="Higher runs first."
    )
    callback_url = CallbackUrlField(
        help_text="Where each of its jobs' ends (job.completed, job.failed, job.cancelled) is "
        "POSTed as a signed webhook (README, Webhooks)."
    )
    generation_params = GenerationParamsSerializer(
        required=False,
        help_text="With axes: the parameters every job shares. With items: the defaults each "
        "item's own keys override.",
    )
    items = GenerationParamsSerializer(
        many=True,
        required=False,
        help_text="One job each, in this order (mobilesd_job_ids answers in it too).",
    )
    axes = AxisSerializer(
        many=True,
        required=False,
        help_text="One job per combination of the values, the first axis varying slowest.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        items, axes = attrs.get("items"), attrs.get("axes")
        if (items is None) == (axes is None):
            raise serializers.ValidationError("Give either items or axes (with generation_params).")
        if axes is not None and "generation_params" not in attrs:
            raise serializers.ValidationError(
                {"generation_params": ["Axes vary a base: give generation_params."]}
            )
        if axes is not None:
            seen = set()
            for index, axis in enumerate(axes):
                which = (axis["field"], axis.get("lora"))
                if which in seen:
                    raise serializers.ValidationError(
                        {"axes": {str(index): ["Another axis varies the same thing."]}}
                    )
                seen.add(which)
        count = len(items) if items is not None else math.prod(len(a["values"]) for a in axes or [])
        limit = settings.MOBILESD_BATCH_MAX_JOBS
        if count == 0:
            raise serializers.ValidationError({"items": ["A batch has at least one item."]})
        if count > limit:
            raise serializers.ValidationError(
                {
                    "items" if items is not None else "axes": [
                        f"That is {count} jobs; a batch "
                        f"makes at most {limit} (MOBILESD_BATCH_MAX_JOBS)."
                    ]
                }
            )
        return attrs


class BatchCreatedSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    mobilesd_job_ids = serializers.ListField(
        child=serializers.UUIDField(), help_text="In the order of the items (or combinations)."
    )


class BatchCountsSerializer(serializers.Serializer):
    """How many of the batch's jobs have each status."""

    pending = serializers.IntegerField()
    processing = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class BatchSerializer(serializers.Serializer):
    """A batch as lists show it: what was asked and how far its jobs are."""

    batch_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    target_server_alias = serializers.CharField(source="server_alias")
    priority = serializers.IntegerField()
    creation_timestamp = TimestampField(source="created_at")
    job_count = serializers.IntegerField(help_text="Jobs it made (deleted ones included).")
    counts = BatchCountsSerializer()
    finished = serializers.BooleanField(help_text="No job of it is pending or processing.")
    axes = serializers.JSONField(
        source="request.axes", default=None, help_text="As sent (null: a batch of items)."
    )


class BatchJobSerializer(serializers.Serializer):
    mobilesd_job_id = serializers.UUIDField(source="id")
    status = serializers.ChoiceField(choices=JobStatus.choices)
    item = serializers.IntegerField(source="batch_index", help_text="Its item / combination.")
    generation_params = GenerationParamsField()


class BatchImageSerializer(JobImageSerializer):
    mobilesd_job_id = serializers.UUIDField(source="job_id")

    class Meta(JobImageSerializer.Meta):
        fields = ["mobilesd_job_id", *JobImageSerializer.Meta.fields]
        read_only_fields = fields


class BatchDetailSerializer(BatchSerializer):
    jobs = BatchJobSerializer(many=True, source="detail_jobs", help_text="In item order.")
    images = BatchImageSerializer(
        many=True, source="detail_images", help_text="In item order, then image index."
    )


class BatchListSerializer(FeedListSerializer):
    batches = BatchSerializer(many=True)


class BatchCancelSerializer(serializers.Serializer):
    message = serializers.CharField()
    cancelled = serializers.IntegerField(help_text="How many of its jobs were cancelled.")
    batch = BatchSerializer()
