"""Generation jobs and their images. A Job row is the truth about a job."""

import math
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.sql.compiler import SQLCompiler
from django.urls import reverse
from django.utils import timezone


class JobStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A job's target_server_alias when MobileSD may choose the server.
ANY_SERVER = "any"

ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.PROCESSING)
FINISHED_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class ImageCheckpoint(models.Func):
    """The checkpoint a job's images were made with, as its server reported it
    (`result_details.generation_info.sd_model_name`, text), or NULL.

    One SQL text per database, with the path written in (not a parameter), so that the
    expression index `job_completed_checkpoint` and the queries that read it (the gallery's
    checkpoint choices, dashboard_app.selectors) spell it the same: SQLite uses an index
    on an expression only when the query's is the same text. `field` is the path to the
    job's result_details from the queried model (e.g. "job__result_details")."""

    output_field = models.TextField()

    def __init__(self, field: str = "result_details") -> None:
        super().__init__(models.F(field))

    def as_sql(
        self,
        compiler: SQLCompiler,
        connection: BaseDatabaseWrapper,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> tuple[str, tuple[Any, ...]]:
        if template is None:
            raise NotImplementedError(f"no checkpoint expression for {connection.vendor}")
        return super().as_sql(compiler, connection, function, template, arg_joiner)

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper
    ) -> tuple[str, tuple[Any, ...]]:
        template = "((%(expressions)s -> 'generation_info') ->> 'sd_model_name')"
        return self.as_sql(compiler, connection, template=template)

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
        template = "json_extract(%(expressions)s, '$.generation_info.sd_model_name')"
        return self.as_sql(compiler, connection, template=template)


class Batch(models.Model):
    """Jobs submitted together (a list of parameters, or a matrix: the product of axes).

    Its jobs carry the work; the batch keeps who asked, for which server, and the request
    as sent (so that a repeated submit with its Idempotency-Key can be told apart)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, blank=True, default="")
    # As for jobs: the server follows a rename, the alias stays when it is deleted.
    server = models.ForeignKey(
        "servers_app.Server",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batches",
    )
    target_server_alias = models.CharField(max_length=100)
    priority = models.SmallIntegerField(default=0)
    # The request as validated: items or generation_params + axes, and the times.
    request = models.JSONField(default=dict, editable=False)
    job_count = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # "<api key id or anon>:<Idempotency-Key header>", as Job.idempotency_key.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=300, null=True, blank=True, editable=False
    )
    api_key = models.ForeignKey(
        "core_app.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="batches"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "batches"
        indexes = [models.Index(fields=["owner", "created_at"], name="batch_owner_created")]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="batch_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return self.name or str(self.id)

    @property
    def server_alias(self) -> str:
        return self.server.alias if self.server is not None else self.target_server_alias


class Job(models.Model):
    """One generation request. Statuses change only through queue_app.services."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, editable=False
    )
    # The server the job runs on. Jobs follow a server through a rename; deleting a server
    # is refused while it has active jobs, and finished jobs keep its alias below.
    server = models.ForeignKey(
        "servers_app.Server", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    target_server_alias = models.CharField(max_length=100)
    generation_params = models.JSONField()
    result_details = models.JSONField(null=True, blank=True, editable=False)
    # null, not "", until a task is sent: the documented status shows `null`.
    forge_session_hash = models.CharField(  # noqa: DJ001
        max_length=100, null=True, blank=True, editable=False
    )
    retry_count = models.PositiveIntegerField(default=0, editable=False)
    # Higher runs first; then oldest first.
    priority = models.SmallIntegerField(default=0)
    # The requested checkpoint, normalized (see servers_app.checkpoints), for the scheduler.
    checkpoint_key = models.CharField(max_length=1000, blank=True, default="", editable=False)
    # The LoRAs the job names, as server-independent keys (servers_app.resolver.lora_key),
    # so that a claim takes an "any" job only on a server that has them all.
    lora_keys = models.JSONField(default=list, blank=True, editable=False)
    # What else the job needs of its server, as CachedModel.requirement_key spells it
    # ("file:<vae or module stem>", "script:<mode>:<name>", "style:<name>", "upscaler:<name>",
    # "controlnet:<model>"; queue_app.extension_checks.job_requirement_keys): an "any" job
    # is claimed only by a server whose cache has them all, as with its LoRAs.
    requirement_keys = models.JSONField(default=list, blank=True, editable=False)
    # The job's turn among its owner's in its queue (queue_app.turns): claims order a
    # priority's jobs by turn, then age, so that users take turns. Set at submit.
    turn = models.BigIntegerField(default=0, editable=False)
    # How often the scheduler ran a younger job first to avoid a checkpoint switch; bounded.
    passed_over = models.PositiveSmallIntegerField(default=0, editable=False)
    # Written while processing: {"fraction", "eta_seconds", "step", "total_steps", ...}.
    progress = models.JSONField(null=True, blank=True, editable=False)
    # The lease of the worker running the job: its token and when it lapses unless renewed.
    # On a pending job, a worker's reservation of it as its server's next job (same token).
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The job may not be claimed before this time: a retry's backoff, or `not_before`. Set,
    # the job is outside the claim's indexes; once due, a claim (or the reconcile task)
    # clears it (queue_app.dispatch.jobs_release_due), which puts the job back in them.
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    # As submitted: never claimed earlier / failed `expired` if still pending at expires_at.
    not_before = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    # Its place in the batch: the index of its item, or of its combination of the axes.
    batch_index = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # A default rather than auto_now_add, so that a batch can give its jobs their queue
    # order (each a microsecond after the one before it). Indexed with the id
    # (job_created_id below): the list's order is (created_at, id).
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Where the job's end (completed, failed, cancelled) is POSTed as a signed webhook
    # (notifications_app reads it; empty: nowhere). Checked against
    # MOBILESD_WEBHOOK_ALLOWED_NETWORKS at submit.
    callback_url = models.CharField(max_length=2000, blank=True, default="", editable=False)
    # "<api key id or anon>:<Idempotency-Key header>": a retried submit finds its job.
    # null, not "", so that the partial unique constraint skips jobs without a key.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=300, null=True, blank=True, editable=False
    )
    api_key = models.ForeignKey(
        "core_app.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    # Whose job it is: the user of the key (or staff session) that submitted it, the local
    # user in anonymous mode. A client key sees only its own user's jobs. A user with jobs
    # cannot be deleted (their images would be left behind): delete the jobs first.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The job list's first pages in its order (-created_at, -id), read backward for
            # desc and forward for asc, without a sort: unfiltered, by owner (a client
            # key's scope), by status, by owner and status (queue_app/counts.py).
            models.Index(fields=["created_at", "id"], name="job_created_id"),
            models.Index(fields=["owner", "created_at", "id"], name="job_owner_created_id"),
            # By status, one partial index per status rather than one led by the status.
            # PostgreSQL estimates a heap read from an index's leading column's correlation:
            # a status's is low, created_at's is 1, so for the status most jobs have
            # (completed) it preferred job_created_id and filtered it, reading every newer
            # job of another status first (a queued batch of 20,000: 7 ms, not 0.2).
            *(
                models.Index(
                    fields=["created_at", "id"],
                    name=f"job_{status}_created_id",
                    condition=models.Q(status=status),
                )
                for status in JobStatus.values
            ),
            *(
                models.Index(
                    fields=["owner", "created_at", "id"],
                    name=f"job_{status}_owner_created",
                    condition=models.Q(status=status),
                )
                for status in JobStatus.values
            ),
            # The metrics scrape's windows (queue_app/metrics.py).
            models.Index(fields=["started_at"], name="job_started"),
            models.Index(fields=["completed_at"], name="job_completed"),
            # The checkpoints of completed jobs, for the gallery's choices: read by a loose
            # index scan, one probe per checkpoint (dashboard_app.selectors). Status first,
            # so that SQLite's planner, without statistics, prefers it to job_status_created.
            models.Index(
                "status",
                ImageCheckpoint(),
                name="job_completed_checkpoint",
                condition=models.Q(status="completed"),
            ),
            models.Index(
                fields=["server", "status", "created_at"], name="job_server_status_created"
            ),
            # The heads of the queues a claim reads (queue_app.dispatch._QUEUE_HEAD), each
            # in its order, so that a claim reads a few rows however many jobs wait: a
            # server's own pending jobs, and the pending jobs for "any" server.
            # A job waiting for its time (next_attempt_at set) is in neither until it is due.
            models.Index(
                fields=["server", "-priority", "turn", "created_at"],
                name="job_pending_head",
                condition=models.Q(status="pending", next_attempt_at__isnull=True),
            ),
            models.Index(
                fields=["-priority", "turn", "created_at"],
                name="job_pending_any_head",
                condition=models.Q(
                    status="pending",
                    next_attempt_at__isnull=True,
                    server__isnull=True,
                    target_server_alias=ANY_SERVER,
                ),
            ),
            # The jobs waiting for their time, and those that may expire, by when (status
            # first, so that SQLite's planner, without statistics, prefers them to
            # job_status_created).
            models.Index(
                fields=["status", "next_attempt_at"],
                name="job_pending_waiting",
                condition=models.Q(status="pending", next_attempt_at__isnull=False),
            ),
            models.Index(
                fields=["status", "expires_at"],
                name="job_pending_expiry",
                condition=models.Q(status="pending", expires_at__isnull=False),
            ),
            # A user's active jobs by queue and turn: the next turn of theirs at submit
            # (queue_app.turns) and their pending count for the quota (queue_app.quotas).
            models.Index(
                fields=["owner", "target_server_alias", "turn"],
                name="job_active_owner_turn",
                condition=models.Q(status__in=["pending", "processing"]),
            ),
            # The reconcile task looks for processing jobs whose lease lapsed.
            models.Index(
                fields=["lease_expires_at"],
                name="job_processing_lease",
                condition=models.Q(status="processing"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="job_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def server_alias(self) -> str:
        """The alias of the job's server as it is now, or as it was when it was deleted."""
        return self.server.alias if self.server is not None else self.target_server_alias

    @property
    def prompt(self) -> str:
        params = self.generation_params or {}
        return str(params.get("positive_prompt") or params.get("prompt") or "")

    @property
    def short_id(self) -> str:
        """The first 8 characters of the id: enough to tell jobs apart on a page."""
        return str(self.pk)[:8]

    @property
    def progress_percent(self) -> int:
        """How far the job is, 0-100 rounded down (a completed job is 100), so a running job
        shows 100 only once its server reports the whole of it done."""
        if self.status == JobStatus.COMPLETED:
            return 100
        fraction = float((self.progress or {}).get("fraction") or 0)
        if not math.isfinite(fraction):
            return 0
        # Rounded to 6 places first so that 0.29 * 100 (28.999...) counts as 29.
        return math.floor(round(min(max(fraction, 0.0), 1.0) * 100, 6))

    @property
    def error_text(self) -> str:
        """Why the job failed (or why its last attempt did), or ""."""
        details = self.result_details or {}
        return str(details.get("error") or details.get("last_error") or "")

    @property
    def generation_info(self) -> dict[str, Any] | None:
        """What the server said it generated (its seeds, model, sampler), once finished."""
        return (self.result_details or {}).get("generation_info") or None

    @property
    def image_checkpoint(self) -> str:
        """The checkpoint the images were made with, as the server reported it, else the one
        requested; "" if neither is known."""
        info = self.generation_info or {}
        params = self.generation_params or {}
        return str(info.get("sd_model_name") or params.get("checkpoint_name") or "")


class JobCount(models.Model):
    """How many jobs have this status, server, target (a job without a server: its
    target_server_alias, "any" until one is chosen) and owner: the sum of `n` over the rows
    of that key. Written only by database triggers on the job table (queue_app/counts.py),
    in the transaction of each insert, delete and change of those columns, as +1 / -1 rows;
    folded into one row per key by a beat task. Not foreign keys to servers and users: a
    count row must not lock them, nor be deleted with them."""

    id = models.BigAutoField(primary_key=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices)
    server = models.ForeignKey(
        "servers_app.Server",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="job_counts",
    )
    target = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    n = models.BigIntegerField()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status", "server"], name="jobcount_status_server"),
            models.Index(fields=["owner", "status"], name="jobcount_owner_status"),
            models.Index(fields=["server", "status"], name="jobcount_server_status"),
        ]

    def __str__(self) -> str:
        return f"{self.status} server={self.server_id} owner={self.owner_id}: {self.n:+d}"


def image_upload_to(instance: "JobImage", filename: str) -> str:
    return f"jobs/{instance.job_id.hex[:2]}/{filename}"


class JobImage(models.Model):
    """One image a job produced, stored through Django's storage."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveSmallIntegerField()
    file = models.FileField(upload_to=image_upload_to, max_length=300)
    seed = models.BigIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    infotext = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="jobimage_unique_job_index"),
        ]

    def __str__(self) -> str:
        return self.file.name or f"{self.job_id} #{self.index}"

    def api_url(self, *, thumbnail: int | None = None) -> str:
        """The API's URL of the image (or of its WebP thumbnail `thumbnail` px wide); a staff
        session may read it, so the admin's pages use it too."""
        if thumbnail:
            url = reverse("job-image-thumbnail", args=[self.job_id, self.index])
            return f"{url}?size={thumbnail}"
        return reverse("job-image", args=[self.job_id, self.index])


class JobPreview(models.Model):
    """The latest live preview of a running job: one row per job, only while it runs.

    Written by the engine's heartbeat, in the transaction that writes the job's progress
    (`progress.preview_id` is this row's `version`), downscaled for a phone (WebP, at most
    `queue_app.previews.PREVIEW_MAX_SIDE` px on the long side). A database trigger on the job
    table deletes it as the job stops running by whatever path (queue_app/previews.py);
    deleting the job deletes it too."""

    job = models.OneToOneField(
        Job, on_delete=models.CASCADE, primary_key=True, related_name="preview"
    )
    image = models.BinaryField(editable=False, help_text="WebP.")
    version = models.PositiveIntegerField(
        editable=False, help_text="Grows with each new preview of the job's run."
    )
    width = models.PositiveSmallIntegerField(editable=False)
    height = models.PositiveSmallIntegerField(editable=False)
    updated_at = models.DateTimeField(editable=False)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(version__gte=1), name="jobpreview_version")
        ]

    def __str__(self) -> str:
        return f"Preview {self.version} of job {self.job_id}"


class QueueState(models.Model):
    """The whole queue's switches: one row (id 1) at most; no row means not paused.

    While `paused_at` is set no job starts on any server (the claim and the reserved start
    read it, queue_app.dispatch); running jobs finish.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="queuestate_singleton"),
        ]

    def __str__(self) -> str:
        return f"Queue paused since {self.paused_at}" if self.paused_at else "Queue running"


def upload_to(instance: "Upload", filename: str) -> str:
    return f"uploads/{instance.pk.hex[:2]}/{filename}"


class Upload(models.Model):
    """An image a user uploaded as a job's input (img2img's init image, inpaint's mask).

    The file is what is sent to the server, byte for byte (re-encoded as PNG only when its
    EXIF orientation had to be applied). It belongs to its owner: another user's is a 404.
    Kept while a job references it (JobInput); otherwise removed by the cleanup task once
    unused for MOBILESD_UPLOAD_RETENTION_SECONDS, or once its owner deleted it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )
    file = models.FileField(upload_to=upload_to, max_length=300)
    content_type = models.CharField(max_length=50)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # The last submit that used it: the retention counts from here.
    last_used_at = models.DateTimeField(default=timezone.now, editable=False)
    # Deleted by its owner while jobs still referenced it: gone for the API, its file kept
    # for those jobs until the cleanup task finds it unreferenced.
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "created_at"], name="upload_owner_created"),
            models.Index(fields=["owner", "sha256"], name="upload_owner_sha256"),
            models.Index(fields=["last_used_at"], name="upload_last_used"),
        ]

    def __str__(self) -> str:
        return f"{self.pk} ({self.width}x{self.height} {self.content_type})"


class JobInputRole(models.TextChoices):
    INIT = "init"
    MASK = "mask"
    # An image of an extension's unit (a ControlNet unit's `image`, ...) named by upload id.
    SCRIPT = "script"


class JobInput(models.Model):
    """An input image of a job: init image `position` of `init_images`, the mask, or an
    image an extension's unit names by its upload id. The upload is kept as long as the job
    exists (PROTECT)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="inputs")
    upload = models.ForeignKey(Upload, on_delete=models.PROTECT, related_name="job_inputs")
    role = models.CharField(max_length=8, choices=JobInputRole.choices)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["job", "role", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "role", "position"], name="jobinput_unique_job_role_position"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id} {self.role} #{self.position}: {self.upload_id}"
