"""Notifications (issue 15): who wants to be told of which events, and what was delivered
to them: webhooks and push notifications."""

from urllib.parse import urlsplit

from django.conf import settings
from django.db import models

# === Webhooks (issue 15 point 1) ===========================================================


class WebhookEndpoint(models.Model):
    """A URL that receives the events of `event_types`, signed with its `secret` (Standard
    Webhooks). A client's endpoint receives only the events its owner's key may see
    (events_app.selectors.events_visible); an admin's may take every user's (`all_users`)."""

    id = models.BigAutoField(primary_key=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    # Exact types ("job.completed") or prefixes ending in "." ("job.").
    event_types = models.JSONField(default=list)
    all_users = models.BooleanField(
        default=False, help_text="Every user's events (only an admin may set it)."
    )
    # `whsec_` + base64 of random bytes: the signing key, shown once (in the POST answer).
    secret = models.CharField(max_length=100, editable=False)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=300, blank=True, default="", editable=False)
    # Since when every try has failed (null: the last one succeeded, or none yet).
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    # The last event written before it was made (events_app Event.id): it receives the
    # events after it only, not those the fan-out had not handed on yet.
    after_event_id = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="webhook_owner_created")]

    def __str__(self) -> str:
        # The host only: a URL may carry a token, and is too long for a title on a phone.
        return f"Webhook {self.pk} to {urlsplit(self.url).netloc or '?'}"


class WebhookSigningSecret(models.Model):
    """A user's secret for their jobs' `callback_url`s that are not also one of their
    endpoints' URLs (those are signed with the endpoint's)."""

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="webhook_signing_secret",
    )
    secret = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["owner_id"]

    def __str__(self) -> str:
        return f"Signing secret of user {self.owner_id}"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERING = "delivering", "delivering"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed"


class WebhookDelivery(models.Model):
    """One event for one receiver (an endpoint, or a job's callback URL), tried until
    delivered or out of tries. `message_id` is the `webhook-id` of every try, so a
    receiver recognises a repeat. While a worker sends it, it holds a lease (as jobs do,
    core_app.leases): one whose worker died is taken again once the lease lapses."""

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="deliveries",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    # A job's callback URL (empty for an endpoint's delivery).
    callback_url = models.CharField(max_length=2000, blank=True, default="")
    message_id = models.CharField(max_length=40, unique=True, editable=False)
    event_seq = models.BigIntegerField(null=True, blank=True, editable=False)
    event_type = models.CharField(max_length=40, editable=False)
    job_id = models.UUIDField(null=True, blank=True, editable=False)
    payload = models.JSONField(editable=False)
    state = models.CharField(
        max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0, editable=False)
    # `attempts` when the retry schedule began (a "deliver again" starts a new one).
    schedule_start = models.PositiveIntegerField(default=0, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=300, blank=True, default="", editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_created"),
            # The reconcile's work: due tries and lapsed leases.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=models.Q(state="pending"),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="delivery_leased",
                condition=models.Q(state="delivering"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(endpoint__isnull=True, callback_url=""),
                name="delivery_has_receiver",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} {self.event_type} ({self.state})"

    @property
    def url(self) -> str:
        return self.endpoint.url if self.endpoint is not None else self.callback_url


class WebhookAttempt(models.Model):
    """One try of a delivery: its answer's status (null: none came), how long it took, a
    short error, and the first few hundred bytes of the answer's body."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True, default="")
    response_body = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["delivery_id", "number", "id"]

    def __str__(self) -> str:
        return f"Try {self.number} of {self.delivery_id}: {self.status_code or self.error}"


class FanoutCursor(models.Model):
    """The one row (id 1): the public id of the last event the fan-out handed on. Locked
    while it reads on, so the deliveries of an event are made exactly once, in the same
    transaction as the cursor's move past it."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    position = models.BigIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="fanoutcursor_singleton"),
        ]

    def __str__(self) -> str:
        return f"Notifications handed on through event {self.position}"


# === End of webhooks =======================================================================


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
