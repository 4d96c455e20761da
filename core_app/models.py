"""API keys: the credential a phone sends with every request."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

KEY_PREFIX = "msd"


class KeyScope(models.TextChoices):
    """What a key may do. `client`: its user's own work, servers and models read-only.
    `admin`: everything (servers, every user's work, downloads, settings)."""

    CLIENT = "client"
    ADMIN = "admin"


def hash_key(raw_key: str) -> str:
    """SHA-256 of the key. Keys are 256-bit random tokens, so a fast hash is enough."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def generate_raw_key() -> tuple[str, str]:
    """A new key and its public prefix: `msd_<prefix>_<secret>`."""
    prefix = secrets.token_hex(4)
    return f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}", prefix


class ApiKey(models.Model):
    """A named API key. Only its hash is stored; the key itself is shown once at creation."""

    name = models.CharField(max_length=100)
    # Whose work the key sees and makes: every job it submits belongs to this user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    scope = models.CharField(max_length=16, choices=KeyScope.choices, default=KeyScope.CLIENT)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def is_admin(self) -> bool:
        return self.scope == KeyScope.ADMIN

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class CeleryProcess(models.TextChoices):
    WORKER = "worker", "worker"
    BEAT = "beat", "beat"


def heartbeat_window() -> timedelta:
    """How recent a heartbeat must be for its worker (or beat) to count as alive: two
    periods, so that one missed beat is forgiven."""
    return timedelta(seconds=2 * settings.MOBILESD_WORKER_HEARTBEAT_SECONDS)


class HeartbeatQuerySet(models.QuerySet["WorkerHeartbeat"]):
    def alive(self, process: str) -> "HeartbeatQuerySet":
        """The `process`es (workers, beats) running that noted their heartbeat within the
        `heartbeat_window`, on the database's clock."""
        return self.filter(
            process=process, stopped_at__isnull=True, last_seen_at__gte=Now() - heartbeat_window()
        )


class WorkerHeartbeat(models.Model):
    """The last sign of life of one Celery worker (by its node name) or beat, written by the
    process itself every MOBILESD_WORKER_HEARTBEAT_SECONDS (core_app.worker) on the
    database's clock; /api/v1/health counts one as alive while its row is younger than two
    periods."""

    hostname = models.CharField(max_length=255, unique=True, editable=False)
    process = models.CharField(
        max_length=10, choices=CeleryProcess.choices, default=CeleryProcess.WORKER, editable=False
    )
    threads = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="A worker's threads (its concurrency)."
    )
    started_at = models.DateTimeField(editable=False)
    last_seen_at = models.DateTimeField(editable=False)
    stopped_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Set when the worker shut down cleanly."
    )

    objects = HeartbeatQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen_at"]
        indexes = [models.Index(fields=["last_seen_at"], name="core_worker_last_seen_idx")]

    def __str__(self) -> str:
        return self.hostname


class UserQuota(models.Model):
    """A user's own limits on the queue, where they differ from the defaults in settings
    (MOBILESD_MAX_PENDING_PER_USER, MOBILESD_MAX_IMAGES_PER_JOB). A blank field follows the
    default; 0 means unlimited. Enforced at submit (queue_app.quotas)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota"
    )
    max_pending_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The most jobs this user may have waiting at once. Blank: the default "
        "(MOBILESD_MAX_PENDING_PER_USER); 0: unlimited.",
    )
    max_images_per_job = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The most images one job of this user may ask for. Blank: the default "
        "(MOBILESD_MAX_IMAGES_PER_JOB); 0: unlimited.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user__username"]
        verbose_name = "user quota"

    def __str__(self) -> str:
        return f"Quota of {self.user}"
