"""Notifications (issue 15): what MobileSD delivers to people when their work finishes."""

from django.conf import settings
from django.db import models

# === Push notifications (notifications_app.push) ==========================================

# The event types a push target may want; the default is all of them.
PUSH_EVENT_TYPES = ("job.completed", "job.failed", "batch.finished")


def default_push_events() -> list[str]:
    return list(PUSH_EVENT_TYPES)


class PushTarget(models.Model):
    """One of a user's phones (or chats, or mailboxes), as an Apprise URL.

    The URL carries the service's tokens and passwords: after it is stored it is shown only
    in `url_display`, Apprise's privacy form of it (secrets elided). A target whose last send
    failed for good keeps the error in `last_error` until a send succeeds."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_targets"
    )
    name = models.CharField(max_length=100)
    url = models.TextField(editable=False)
    url_display = models.TextField("URL (secrets elided)", editable=False)
    events = models.JSONField(default=default_push_events)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="", editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["owner_id", "name", "id"]
        verbose_name = "push notification target"
        indexes = [models.Index(fields=["owner", "enabled"], name="pushtarget_owner_enabled")]

    def __str__(self) -> str:
        return self.name


class PushState(models.TextChoices):
    PENDING = "pending"  # waiting for its (next) try at next_attempt_at
    SENDING = "sending"  # a worker holds it (its lease); a lapsed lease is taken again
    SENT = "sent"
    FAILED = "failed"  # every try failed, or the destination is refused


class PushMessage(models.Model):
    """One notification to one target: the outbox row its sending works from.

    Written in the transaction of the events it tells of (or of a test), sent after commit
    by a Celery task that takes a lease on it (core_app.leases), so a worker killed mid-send
    leaves a row that the recovery task sends again once the lease lapses: at least once.
    `event_seq` (null for tests and notices) makes a second fan-out of the same event a no-op.
    """

    id = models.BigAutoField(primary_key=True)
    target = models.ForeignKey(PushTarget, on_delete=models.CASCADE, related_name="messages")
    event_seq = models.BigIntegerField(null=True, blank=True, editable=False)
    event_type = models.CharField(max_length=40, editable=False)
    # The job whose first thumbnail is attached (where the service takes images).
    job_id = models.UUIDField(null=True, blank=True, editable=False)
    title = models.CharField(max_length=250, editable=False)
    body = models.TextField(editable=False)
    link = models.TextField(blank=True, default="", editable=False)
    state = models.CharField(
        max_length=10, choices=PushState.choices, default=PushState.PENDING, editable=False
    )
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "push notification"
        indexes = [
            # The recovery task's two questions: which pending rows are due, which sending
            # rows' leases lapsed.
            models.Index(
                fields=["next_attempt_at"],
                name="pushmessage_pending_due",
                condition=models.Q(state="pending"),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="pushmessage_sending_lease",
                condition=models.Q(state="sending"),
            ),
            models.Index(fields=["target", "created_at"], name="pushmessage_target_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["target", "event_seq"],
                condition=models.Q(event_seq__isnull=False),
                name="pushmessage_unique_target_event",
            ),
            models.CheckConstraint(
                condition=~models.Q(state="sending") | models.Q(lease_token__isnull=False),
                name="pushmessage_sending_has_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.target_id} ({self.state})"


# === End of push notifications ============================================================
