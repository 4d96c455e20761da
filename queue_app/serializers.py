"""API shapes of jobs: the submit request and the documented job object."""

import uuid
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core_app.error_codes import JOB_FAILURE_CODES
from core_app.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    TimestampField,
)
from core_app.serializers import FeedListSerializer, FieldsBuiltOnce, OpenObjectSerializer
from integrations.destinations import destination_problem
from queue_app.control import queue_paused_at
from queue_app.eta import QueuePlace, job_queue_place
from queue_app.extension_serializers import ExtensionParamsSerializer
from queue_app.images import (
    THUMBNAIL_DEFAULT_FORMAT,
    THUMBNAIL_DEFAULT_SIZE,
    THUMBNAIL_FORMATS,
    THUMBNAIL_MAX_SIZE,
    THUMBNAIL_MIN_SIZE,
)
from queue_app.links import (
    image_path,
    job_has_image_links,
    job_image_links,
    public_link,
    signed_image_url,
)
from queue_app.models import Job, JobImage, JobStatus

SEED_MAX = 2**32 - 1


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


class LoraSerializer(serializers.Serializer):
    """A LoRA of `generation_params.loras`, added to the prompt as `<lora:name:weight>`."""

    name = StrictCharField(max_length=500, help_text="The LoRA's name, file name or path.")
    weight = StrictFloatField(min_value=-10, max_value=10, required=False)

    class Meta:
        ref_name = "PromptLora"  # servers_app's LoraSerializer is the LoRA list's "Lora"


def text_field(**kwargs: Any) -> StrictCharField:
    return StrictCharField(required=False, allow_blank=True, trim_whitespace=False, **kwargs)


# --- img2img / inpaint inputs (issue #16 point 2) -----------------------------------------

MODE_CHOICES = ["txt2img", "img2img", "inpaint"]


class JobImageRefSerializer(serializers.Serializer):
    """An image of one of the user's own jobs, used as an input."""

    job_id = serializers.UUIDField()
    index = StrictIntegerField(min_value=0, max_value=1000)

    class Meta:
        ref_name = "JobImageRef"


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "uuid", "description": "An upload_id."},
            {
                "type": "object",
                "description": "An image of one of the user's own jobs.",
                "properties": {
                    "job_id": {"type": "string", "format": "uuid"},
                    "index": {"type": "integer", "minimum": 0, "maximum": 1000},
                },
                "required": ["job_id", "index"],
            },
        ]
    }
)
class ImageInputField(serializers.Field):
    """An input image: an `upload_id` (POST /api/v1/uploads), or {"job_id", "index"} for an
    image of one of the user's jobs. Stored as a string / {"job_id": str, "index": int}."""

    default_error_messages = {
        "invalid": 'An input image is an upload_id, or {{"job_id": ..., "index": ...}}.',
        "invalid_id": "Not a valid upload_id (a UUID).",
    }

    def to_internal_value(self, data: Any) -> str | dict[str, Any]:
        if isinstance(data, dict):
            ref = JobImageRefSerializer(data=data)
            if not ref.is_valid():
                raise serializers.ValidationError(ref.errors)
            return {
                "job_id": str(ref.validated_data["job_id"]),
                "index": ref.validated_data["index"],
            }
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return str(uuid.UUID(data.strip()))
        except ValueError:
            self.fail("invalid_id")
        raise AssertionError("unreachable")

    def to_representation(self, value: Any) -> Any:
        return value


class GenerationParamsSerializer(ExtensionParamsSerializer, OpenObjectSerializer):
    """Validates the documented keys of `generation_params`; unknown keys are kept as sent.
    The VAE, styles, hires-fix and script fields are declared in ExtensionParamsSerializer.

    `positive_prompt` is the prompt; a lone `prompt` is accepted as the same thing.
    """

    positive_prompt = text_field(
        max_length=settings.MOBILESD_MAX_PROMPT_LENGTH, help_text="The prompt."
    )
    prompt = text_field(
        max_length=settings.MOBILESD_MAX_PROMPT_LENGTH,
        help_text="The same as positive_prompt, when that is not given.",
    )
    negative_prompt = text_field(max_length=settings.MOBILESD_MAX_PROMPT_LENGTH)
    checkpoint_name = text_field(
        max_length=1000,
        help_text="With / or \\, with or without ' [hash]', a file name, or an absolute path "
        "under the server's models folder; empty: the server's loaded checkpoint.",
    )
    width = StrictIntegerField(required=False, min_value=64, max_value=4096)
    height = StrictIntegerField(required=False, min_value=64, max_value=4096)
    steps = StrictIntegerField(required=False, min_value=1, max_value=150)
    cfg_scale = StrictFloatField(required=False, min_value=1, max_value=30)
    distilled_cfg_scale = StrictFloatField(
        required=False, min_value=0, max_value=30, help_text="Flux's distilled CFG."
    )
    sampler_name = text_field(max_length=200, help_text="A sampler the server lists: Euler, ...")
    scheduler_or_quality_preset = text_field(
        max_length=200, help_text="A scheduler (Karras, ...) or a preset (Balanced, ...)."
    )
    restore_faces = StrictBooleanField(required=False)
    seed = SeedField(required=False, help_text='"" or -1: random.')
    subseed = SeedField(required=False, help_text='"" or -1: random.')
    num_images = StrictIntegerField(required=False, min_value=1, max_value=16)
    enable_hires_fix = StrictBooleanField(required=False)
    upscaler_model = text_field(max_length=200, help_text='The hires upscaler; "None": none.')
    refiner_model = text_field(max_length=1000, help_text='A checkpoint; "None": none.')
    style_preset = text_field(max_length=200)
    sampling_category = text_field(max_length=200)
    clip_skip = StrictIntegerField(required=False, min_value=1, max_value=12)
    denoising_strength = StrictFloatField(required=False, min_value=0, max_value=1)
    loras = LoraSerializer(many=True, required=False)

    # --- img2img / inpaint (issue #16 point 2): sent as POST /sdapi/v1/img2img ---
    mode = serializers.ChoiceField(
        choices=MODE_CHOICES,
        required=False,
        help_text='"txt2img" (the default); "img2img" and "inpaint" need init_images, '
        '"inpaint" a mask too.',
    )
    init_images = serializers.ListField(
        child=ImageInputField(),
        required=False,
        min_length=1,
        max_length=1,
        help_text="The init image: one upload_id or {job_id, index} (a server takes no more "
        "init images than its batch size, and MobileSD sends batches of one).",
    )
    resize_mode = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=3,
        help_text="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale.",
    )
    mask = ImageInputField(
        required=False,
        help_text="Inpaint: white is repainted, black kept; the size of the init image.",
    )
    mask_blur = StrictIntegerField(required=False, min_value=0, max_value=64)
    inpainting_fill = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=3,
        help_text="What the masked area starts from: 0 fill, 1 original, 2 latent noise, "
        "3 latent nothing.",
    )
    inpaint_full_res = StrictBooleanField(
        required=False, help_text="Inpaint the masked area only, at full resolution."
    )
    inpaint_full_res_padding = StrictIntegerField(
        required=False, min_value=0, max_value=256, help_text="Pixels around it (only masked)."
    )
    inpainting_mask_invert = StrictIntegerField(
        required=False, min_value=0, max_value=1, help_text="1: repaint the black area instead."
    )

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


@extend_schema_field(GenerationParamsSerializer)
class GenerationParamsField(serializers.JSONField):
    """`generation_params` as stored (validated at submit), documented by its serializer."""


class JobProgressSerializer(OpenObjectSerializer):
    """A running job's progress, as its server reports it."""

    fraction = serializers.FloatField(
        required=False, help_text="0-1 as the server reports it (progress_percentage is clamped)."
    )
    eta_seconds = serializers.FloatField(allow_null=True, required=False)
    step = serializers.IntegerField(allow_null=True, required=False)
    total_steps = serializers.IntegerField(allow_null=True, required=False)
    queue_position = serializers.IntegerField(
        allow_null=True, required=False, help_text="In the server's own queue."
    )
    textinfo = serializers.CharField(allow_null=True, required=False)
    active = serializers.BooleanField(allow_null=True, required=False)
    queued = serializers.BooleanField(allow_null=True, required=False)
    preview_id = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="Once the server has shown a live preview: its number, growing with each "
        "new one of this run (each change is a `job.preview` event).",
    )
    preview_url = serializers.CharField(
        required=False,
        help_text="Where the latest live preview is served (WebP, at most 256 px on the "
        "long side), with it: absolute on MOBILESD_PUBLIC_URL when that is set, else a path.",
    )


class ImageLinkSerializer(serializers.Serializer):
    """A completed job's image by signed links (queue_app.links.job_image_links)."""

    index = serializers.IntegerField(min_value=0)
    name = serializers.CharField(help_text="The file name, as in `images`.")
    url = serializers.CharField(
        help_text="The image file: opens without an API key until it expires "
        "(MOBILESD_SIGNED_LINK_SECONDS), then 403 `expired_link`. Absolute on "
        "MOBILESD_PUBLIC_URL when that is set, else a path."
    )
    thumbnail_url = serializers.CharField(
        help_text="Its thumbnail, signed alike; &size= and &format= may be added to it."
    )


class ResultDetailsSerializer(OpenObjectSerializer):
    """`result_details`: what a job produced, why it failed or waits to retry, or that it was
    cancelled. Which keys appear depends on the status; others may be added."""

    images = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Completed: the images' file names (served at /outputs/<name>).",
    )
    info = serializers.CharField(required=False, help_text="Completed: a note for people.")
    generation_info = serializers.DictField(
        required=False, help_text="Completed: the server's own `info` (seeds, model, sampler)."
    )
    checkpoint = serializers.CharField(
        allow_null=True,
        required=False,
        help_text="The title of the checkpoint the job ran on (null: not known); on a "
        "checkpoint_mismatch, the one the server used instead.",
    )
    requested_checkpoint = serializers.CharField(
        required=False, help_text="checkpoint_mismatch: the checkpoint that was resolved."
    )
    error = serializers.CharField(required=False, help_text="Failed: why.")
    code = serializers.ChoiceField(
        choices=list(JOB_FAILURE_CODES.items()),
        required=False,
        help_text="Failed: a stable name of the reason, where there is one.",
    )
    attempts = serializers.IntegerField(required=False, help_text="Failed after retrying.")
    last_error = serializers.CharField(
        required=False, help_text="Pending again after a failed attempt: its error."
    )
    retry_in_seconds = serializers.FloatField(
        required=False, help_text="Pending again: the backoff before the next attempt."
    )
    cancelled = serializers.BooleanField(required=False)
    message = serializers.CharField(required=False, help_text="Cancelled: a note for people.")
    progress_percentage = serializers.IntegerField(
        min_value=0,
        max_value=100,
        required=False,
        help_text="Processing: how far, as the original MobileSD's UI reads it.",
    )


# The longest expires_after: a year.
EXPIRES_AFTER_MAX = 366 * 24 * 3600


class JobTimesSerializer(serializers.Serializer):
    """When the jobs of a submit may start, and until when: `not_before`, and `expires_after`
    or `expires_at`. Validated into `not_before` and `expires_at` (datetimes or None)."""

    not_before = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="ISO 8601: the job is never started earlier (it waits as pending).",
    )
    expires_after = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=EXPIRES_AFTER_MAX,
        help_text="Seconds from now (or from not_before, when given): a job still pending "
        "then fails with result_details.code `expired`.",
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="ISO 8601: as expires_after, at a fixed time. Not with expires_after.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        not_before = attrs.get("not_before")
        after = attrs.pop("expires_after", None)
        if after is not None and attrs.get("expires_at") is not None:
            raise serializers.ValidationError(
                {"expires_at": ["Give expires_after or expires_at, not both."]}
            )
        if after is not None:
            attrs["expires_at"] = (not_before or timezone.now()) + timedelta(seconds=after)
        expires_at = attrs.get("expires_at")
        now = timezone.now()
        if expires_at is not None and expires_at <= (max(not_before, now) if not_before else now):
            raise serializers.ValidationError(
                {"expires_at": ["Must be later than now and than not_before."]}
            )
        attrs.setdefault("not_before", None)
        attrs.setdefault("expires_at", None)
        return attrs


class CallbackUrlField(serializers.CharField):
    """A job's `callback_url`: http(s), at an address MOBILESD_WEBHOOK_ALLOWED_NETWORKS
    allows (the policy's own message otherwise, naming the setting)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 2000)
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("default", "")
        kwargs.setdefault(
            "help_text",
            "Where the job's end (job.completed, job.failed, job.cancelled) is POSTed as a "
            "signed webhook (README, Webhooks).",
        )
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        url: str = super().to_internal_value(data)
        if url:
            problem = destination_problem(url)
            if problem:
                raise serializers.ValidationError(problem)
        return url


class GenerateRequestSerializer(JobTimesSerializer):
    target_server_alias = StrictCharField(
        max_length=100, help_text='A server\'s alias, or "any" to let MobileSD choose.'
    )
    generation_params = GenerationParamsSerializer()
    priority = StrictIntegerField(
        required=False, default=0, min_value=-100, max_value=100, help_text="Higher runs first."
    )
    callback_url = CallbackUrlField()


class GenerateResponseSerializer(serializers.Serializer):
    mobilesd_job_id = serializers.UUIDField()


class JobQueueSerializer(FieldsBuiltOnce, serializers.Serializer):
    """A pending job's view of the queue's pauses (queue_app.control)."""

    paused = serializers.BooleanField(help_text="The whole queue is paused: nothing starts.")
    paused_at = TimestampField(allow_null=True, help_text="Since when; null: not paused.")
    server_paused = serializers.BooleanField(
        help_text="The job's server is paused (false for a job waiting for any server)."
    )
    server_paused_at = TimestampField(allow_null=True)


# Where a serialization keeps the queue's pause, read once for all the jobs it shows.
_QUEUE_PAUSED_AT = "_mobilesd_queue_paused_at"


class JobEtaSerializer(serializers.Serializer):
    """When a waiting job should start and end, in seconds from now (queue_app.eta)."""

    start = serializers.FloatField(help_text="Seconds from now until the job starts.")
    end = serializers.FloatField(help_text="Seconds from now until the job ends.")


class JobSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    """A job exactly as SEED_API.md documents it. Fields may be added, never renamed.

    With `queue_place` True in the context (the status and detail endpoints), a pending
    job's `queue_position` and `eta_seconds` are computed (queue_app.eta); elsewhere (the
    list, cancel, retry) and for any other status they are null.
    """

    mobilesd_job_id = serializers.UUIDField(source="id", read_only=True)
    status = serializers.ChoiceField(choices=JobStatus.choices, read_only=True)
    creation_timestamp = TimestampField(source="created_at")
    last_updated_timestamp = TimestampField(source="updated_at")
    completion_timestamp = TimestampField(source="completed_at", allow_null=True)
    target_server_alias = serializers.CharField(source="server_alias", read_only=True)
    generation_params = GenerationParamsField(read_only=True)
    result_details = serializers.SerializerMethodField(
        help_text="What the job produced or why it failed; while processing, also "
        "progress_percentage (0-100), as the original MobileSD's UI reads it."
    )
    progress = serializers.SerializerMethodField(
        help_text="While processing: fraction (0-1), eta_seconds, step, total_steps, "
        "queue_position (in the server's own queue), textinfo."
    )
    server_online = serializers.SerializerMethodField(
        help_text="Whether the job's server answered its last check (null: not yet known). "
        "Jobs of an offline server wait as pending."
    )
    owner = serializers.CharField(
        source="owner.username",
        read_only=True,
        help_text="The username of the user whose job it is (who submitted it).",
    )
    queue = serializers.SerializerMethodField(
        help_text="While pending: whether the queue, or the job's server, is paused and since "
        "when (null otherwise)."
    )
    not_before = TimestampField(
        allow_null=True, help_text="Never started before this time (null: as soon as may be)."
    )
    expires_at = TimestampField(
        allow_null=True, help_text="Fails `expired` if still pending then (null: never)."
    )
    batch_id = serializers.UUIDField(
        allow_null=True, read_only=True, help_text="The batch it was submitted in (null: none)."
    )
    callback_url = serializers.CharField(
        read_only=True, help_text="Where its end is POSTed as a webhook (empty: nowhere)."
    )
    queue_position = serializers.SerializerMethodField(
        help_text="Pending, on the status and detail endpoints: 1 = the next job to start "
        'among those its server (or the "any" pool) runs; null otherwise.'
    )
    eta_seconds = serializers.SerializerMethodField(
        help_text="Pending, on the status and detail endpoints: seconds from now until it "
        "starts and ends, from the server's measured speed and the checkpoint loads the "
        "schedule ahead implies; null otherwise or while the server has no measurement."
    )
    image_links = serializers.SerializerMethodField(
        help_text="Completed: each image and its thumbnail by signed links, which open "
        "without an API key until they expire (MOBILESD_SIGNED_LINK_SECONDS), in index "
        "order; null for a job not completed. Not in events' job messages."
    )

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
            "priority",
            "progress",
            "server_online",
            "owner",
            "queue",
            "not_before",
            "expires_at",
            "batch_id",
            "callback_url",
            "queue_position",
            "eta_seconds",
            "image_links",
        ]
        read_only_fields = fields

    @extend_schema_field(ResultDetailsSerializer(allow_null=True))
    def get_result_details(self, job: Job) -> dict[str, Any] | None:
        if job.status != JobStatus.PROCESSING:
            return job.result_details
        return {**(job.result_details or {}), "progress_percentage": job.progress_percent}

    @extend_schema_field(ImageLinkSerializer(many=True, allow_null=True))
    def get_image_links(self, job: Job) -> list[dict[str, Any]] | None:
        return job_image_links(job) if job_has_image_links(job) else None

    @extend_schema_field(JobProgressSerializer(allow_null=True))
    def get_progress(self, job: Job) -> dict[str, Any] | None:
        return job.progress if job.status == JobStatus.PROCESSING else None

    def get_server_online(self, job: Job) -> bool | None:
        return job.server.is_online if job.server is not None else None

    @extend_schema_field(JobQueueSerializer(allow_null=True))
    def get_queue(self, job: Job) -> dict[str, Any] | None:
        if job.status != JobStatus.PENDING:
            return None
        root = self.root
        if not hasattr(root, _QUEUE_PAUSED_AT):
            setattr(root, _QUEUE_PAUSED_AT, queue_paused_at())
        paused_at = getattr(root, _QUEUE_PAUSED_AT)
        server_paused_at = job.server.paused_at if job.server is not None else None
        return JobQueueSerializer(
            {
                "paused": paused_at is not None,
                "paused_at": paused_at,
                "server_paused": server_paused_at is not None,
                "server_paused_at": server_paused_at,
            }
        ).data

    def _queue_place(self, job: Job) -> QueuePlace | None:
        if not self.context.get("queue_place") or job.status != JobStatus.PENDING:
            return None
        places: dict[Any, QueuePlace | None] = self.__dict__.setdefault("_queue_places", {})
        if job.pk not in places:
            places[job.pk] = job_queue_place(job=job)
        return places[job.pk]

    @extend_schema_field(serializers.IntegerField(allow_null=True, min_value=1))
    def get_queue_position(self, job: Job) -> int | None:
        place = self._queue_place(job)
        return place.position if place is not None else None

    @extend_schema_field(JobEtaSerializer(allow_null=True))
    def get_eta_seconds(self, job: Job) -> dict[str, float] | None:
        place = self._queue_place(job)
        if place is None or place.start_seconds is None or place.end_seconds is None:
            return None
        return {"start": place.start_seconds, "end": place.end_seconds}


class JobListSerializer(FeedListSerializer):
    total = serializers.IntegerField(help_text="Jobs matching the filter, over all pages.")
    jobs = JobSerializer(many=True)


class JobMessageSerializer(serializers.Serializer):
    """`{"message", "job"}`: the answer of cancel (as documented) and retry."""

    message = serializers.CharField()
    job = JobSerializer()


# --- images ---------------------------------------------------------------------------------


class JobImageSerializer(serializers.ModelSerializer):
    """One stored image of a job, with links to its file and to a thumbnail."""

    # The links are absolute on MOBILESD_PUBLIC_URL when it is set, else paths: the
    # document says `uri-reference`, which both are.

    name = serializers.SerializerMethodField(help_text="The file name, as in result_details.")
    url = serializers.SerializerMethodField(help_text="The image file, as generated.")
    thumbnail_url = serializers.SerializerMethodField(
        help_text="A phone-sized WebP thumbnail; add ?size=64..1024&format=webp|jpeg."
    )
    signed_url = serializers.SerializerMethodField(
        help_text="The image file by a signed link: opens without an API key until it "
        "expires (MOBILESD_SIGNED_LINK_SECONDS), then 403 `expired_link`."
    )
    signed_thumbnail_url = serializers.SerializerMethodField(
        help_text="The thumbnail by a signed link; &size= and &format= may be added to it."
    )

    class Meta:
        model = JobImage
        fields = [
            "index",
            "name",
            "seed",
            "width",
            "height",
            "url",
            "thumbnail_url",
            "signed_url",
            "signed_thumbnail_url",
        ]
        read_only_fields = fields

    def get_name(self, image: JobImage) -> str:
        return PurePosixPath(image.file.name or "").name

    @extend_schema_field(OpenApiTypes.URI_REF)
    def get_url(self, image: JobImage) -> str:
        return public_link(image_path(image))

    @extend_schema_field(OpenApiTypes.URI_REF)
    def get_thumbnail_url(self, image: JobImage) -> str:
        return public_link(image_path(image, thumbnail=True))

    @extend_schema_field(OpenApiTypes.URI_REF)
    def get_signed_url(self, image: JobImage) -> str:
        return signed_image_url(image)

    @extend_schema_field(OpenApiTypes.URI_REF)
    def get_signed_thumbnail_url(self, image: JobImage) -> str:
        return signed_image_url(image, thumbnail=True)


class JobImageListSerializer(serializers.Serializer):
    images = JobImageSerializer(many=True, help_text="In index order.")


class ThumbnailQuerySerializer(serializers.Serializer):
    """The query of a thumbnail request."""

    size = serializers.IntegerField(
        min_value=THUMBNAIL_MIN_SIZE,
        max_value=THUMBNAIL_MAX_SIZE,
        default=THUMBNAIL_DEFAULT_SIZE,
        help_text="The longest side in pixels; an image is never enlarged.",
    )
    format = serializers.ChoiceField(
        choices=list(THUMBNAIL_FORMATS), default=THUMBNAIL_DEFAULT_FORMAT
    )
