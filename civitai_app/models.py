"""Civitai: model downloads (a row is the truth about a download) and the operator's
Civitai settings."""

import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction


class CivitaiSettings(models.Model):
    """The Civitai settings an operator may change in the admin (one row).

    Blank/empty fields fall back to the environment (`CIVITAI_API_KEY`,
    `MOBILESD_MAX_CONCURRENT_DOWNLOADS`). The row is also the lock that serialises download
    claims, which is how the concurrency limit holds across workers and hosts.
    """

    SINGLETON_ID = 1

    # Sent to Civitai only, never shown back (the admin shows whether one is set).
    api_key = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Overrides CIVITAI_API_KEY. A key from civitai.com/user/account lets "
        "MobileSD download models that require a login.",
    )
    max_concurrent_downloads = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Overrides MOBILESD_MAX_CONCURRENT_DOWNLOADS (downloads running at once).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Civitai settings"
        verbose_name_plural = "Civitai settings"
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="civitaisettings_singleton"),
        ]

    def __str__(self) -> str:
        return "Civitai settings"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = self.SINGLETON_ID  # there is only ever the one row
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> "CivitaiSettings":
        """The one row, created on first use."""
        row = cls.objects.filter(pk=cls.SINGLETON_ID).first()
        if row is not None:
            return row
        try:
            with transaction.atomic():
                return cls.objects.create(pk=cls.SINGLETON_ID)
        except IntegrityError:  # created meanwhile by another process
            return cls.objects.get(pk=cls.SINGLETON_ID)

    @classmethod
    def current(cls) -> "CivitaiSettings":
        """The row if it exists, else the defaults (unsaved): reading never writes."""
        return cls.objects.filter(pk=cls.SINGLETON_ID).first() or cls(pk=cls.SINGLETON_ID)

    @property
    def effective_api_key(self) -> str:
        return self.api_key.strip() or settings.CIVITAI_API_KEY

    @property
    def effective_max_concurrent_downloads(self) -> int:
        configured = self.max_concurrent_downloads
        return max(1, configured if configured else settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS)

    @property
    def api_key_source(self) -> str:
        """Where the key in use comes from, for the operator (never the key itself)."""
        if self.api_key.strip():
            return "set here"
        if settings.CIVITAI_API_KEY:
            return "from CIVITAI_API_KEY"
        return "none (anonymous: some downloads need a login)"


class DownloadStatus(models.TextChoices):
    PENDING = "pending"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_DOWNLOAD_STATUSES = (
    DownloadStatus.PENDING,
    DownloadStatus.DOWNLOADING,
    DownloadStatus.VERIFYING,
)
# Statuses that hold a download slot (a worker is on it).
RUNNING_DOWNLOAD_STATUSES = (DownloadStatus.DOWNLOADING, DownloadStatus.VERIFYING)
FINISHED_DOWNLOAD_STATUSES = (
    DownloadStatus.COMPLETED,
    DownloadStatus.FAILED,
    DownloadStatus.CANCELLED,
)


class Download(models.Model):
    """One Civitai file fetched for one or more servers. Statuses change only in
    civitai_app.download_requests and civitai_app.download_states, by conditional updates.

    The file is resolved when the download is requested (version, file, expected SHA256,
    final name, the folder on each target); the worker streams it to `part_path` (a
    hidden folder under the first target's models folder), verifies it and moves it into
    place. `part_path` survives a failed or interrupted attempt so the next one resumes.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(
        max_length=16,
        choices=DownloadStatus.choices,
        default=DownloadStatus.PENDING,
        editable=False,
    )
    model_version_id = models.PositiveIntegerField(db_index=True)
    model_id = models.PositiveIntegerField(null=True, blank=True)
    model_name = models.CharField(max_length=300, blank=True, default="")
    version_name = models.CharField(max_length=300, blank=True, default="")
    # Civitai's ModelType (Checkpoint, LORA, TextualInversion, ...) and the file's type.
    model_type = models.CharField(max_length=50)
    file_type = models.CharField(max_length=50, blank=True, default="")
    base_model = models.CharField(max_length=100, blank=True, default="")
    file_id = models.PositiveIntegerField()
    # Civitai's name for the file, and the sanitized name it gets in the type folder.
    source_file_name = models.CharField(max_length=500, blank=True, default="")
    file_name = models.CharField(max_length=255)
    # The folder below a server's models folder (see civitai_app.folders).
    folder = models.CharField(max_length=100)
    download_url = models.CharField(max_length=2000)
    sha256 = models.CharField(max_length=64)
    # Requested choice, as sent (for display and retries).
    requested = models.JSONField(default=dict, blank=True)
    # Civitai's version object, written beside the file as <name>.civitai.info.
    version_info = models.JSONField(default=dict, blank=True)
    # Who asked for it: a client key sees and cancels its own user's downloads only. A user
    # with downloads cannot be deleted (as with jobs): delete the downloads first.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="civitai_downloads"
    )

    # Progress, written by the worker.
    size_bytes = models.BigIntegerField(null=True, blank=True, editable=False)
    bytes_done = models.BigIntegerField(default=0, editable=False)
    speed_bytes_per_second = models.FloatField(null=True, blank=True, editable=False)
    part_path = models.CharField(max_length=2000, blank=True, default="", editable=False)
    error = models.TextField(blank=True, default="", editable=False)
    error_code = models.CharField(max_length=64, blank=True, default="", editable=False)
    attempts = models.PositiveIntegerField(default=0, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="download_status_created"),
            models.Index(fields=["file_id", "status"], name="download_file_status"),
            models.Index(
                fields=["lease_expires_at"],
                name="download_running_lease",
                condition=models.Q(status__in=["downloading", "verifying"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(bytes_done__gte=0), name="download_bytes_done_gte_0"
            ),
            models.CheckConstraint(
                condition=~models.Q(status__in=["downloading", "verifying"])
                | models.Q(lease_token__isnull=False),
                name="download_running_has_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status})"

    @property
    def progress_percent(self) -> int | None:
        """How much of the file is here, 0-100 (a completed download is 100); None while its
        size is unknown."""
        if self.status == DownloadStatus.COMPLETED:
            return 100
        if not self.size_bytes:
            return None
        return min(round(self.bytes_done * 100 / self.size_bytes), 100)

    @property
    def eta_seconds(self) -> float | None:
        if (
            self.status != DownloadStatus.DOWNLOADING
            or not self.size_bytes
            or not self.speed_bytes_per_second
        ):
            return None
        return max(self.size_bytes - self.bytes_done, 0) / self.speed_bytes_per_second


class TargetState(models.TextChoices):
    WAITING = "waiting"
    PLACED = "placed"
    ALREADY_PRESENT = "already_present"
    FAILED = "failed"


class DownloadTarget(models.Model):
    """A server a download is for, and where the file goes on it (its absolute path as
    MobileSD sees it, below the server's models folder)."""

    download = models.ForeignKey(Download, on_delete=models.CASCADE, related_name="targets")
    server = models.ForeignKey(
        "servers_app.Server", on_delete=models.CASCADE, related_name="civitai_downloads"
    )
    path = models.CharField(max_length=2000)
    state = models.CharField(
        max_length=16, choices=TargetState.choices, default=TargetState.WAITING, editable=False
    )
    error = models.TextField(blank=True, default="", editable=False)
    refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)
    refresh_error = models.TextField(blank=True, default="", editable=False)

    class Meta:
        ordering = ["download", "server__alias"]
        constraints = [
            models.UniqueConstraint(fields=["download", "server"], name="downloadtarget_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.path} on {self.server_id}"
