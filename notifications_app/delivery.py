"""Sending a webhook delivery: one try at a time, under a lease, at least once.

A try is claimed by one conditional update (a due `pending` delivery, or a `delivering` one
whose lease lapsed: its worker died mid-try) that writes a fresh lease token; only the
holder of the token records the outcome. Each try is signed afresh (a new
`webhook-timestamp`) with the same `webhook-id`. The outcome:

* 2xx: delivered;
* no answer, 408, 429 or 5xx: tried again after the next delay of
  MOBILESD_WEBHOOK_RETRY_SECONDS (the answer's Retry-After, if longer, up to an hour),
  failed once they are spent;
* any other answer (a 3xx, as redirects are not followed, or a 4xx): failed, not retried;
  a 410 Gone also disables the endpoint, as the Standard Webhooks specification suggests;
* a destination MOBILESD_WEBHOOK_ALLOWED_NETWORKS refuses (now), or a disabled endpoint:
  failed, not retried.

An endpoint whose tries have all failed for MOBILESD_WEBHOOK_DISABLE_AFTER_SECONDS is
disabled, and its owner told (`webhook_endpoint_disabled_tell_owner`).
"""

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from core_app.leases import lease_expiry
from integrations.destinations import destination_problem
from integrations.webhook_client import Outcome, post_json
from notifications_app.models import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSigningSecret,
)
from notifications_app.push import notify_user
from notifications_app.webhooks import new_secret

logger = logging.getLogger(__name__)

# Statuses worth trying again (the Standard Webhooks specification's, and ours for 5xx).
RETRIED_STATUSES = frozenset({408, 429})
# The longest Retry-After honoured.
MAX_RETRY_AFTER = 3600.0
LOST_TRY = "The worker sending it stopped before it recorded an answer."


@dataclass(frozen=True)
class Claim:
    delivery: WebhookDelivery
    token: uuid.UUID


def delivery_claim(*, delivery_id: int) -> Claim | None:
    """Take the delivery for one try, if it is due (or its last try's worker died); None
    when it is not (delivered, failed, not yet due, another worker's)."""
    now = timezone.now()
    row = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if row is None:
        return None
    due = row.state == DeliveryState.PENDING and (
        row.next_attempt_at is None or row.next_attempt_at <= now
    )
    lapsed = (
        row.state == DeliveryState.DELIVERING
        and row.lease_expires_at is not None
        and row.lease_expires_at < now
    )
    if not (due or lapsed):
        return None
    token = uuid.uuid4()
    with transaction.atomic():
        taken = WebhookDelivery.objects.filter(
            pk=row.pk, state=row.state, attempts=row.attempts, lease_token=row.lease_token
        ).update(
            state=DeliveryState.DELIVERING,
            lease_token=token,
            lease_expires_at=lease_expiry(settings.MOBILESD_WEBHOOK_LEASE_SECONDS, now=now),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        if not taken:
            return None
        if lapsed:
            WebhookAttempt.objects.create(
                delivery=row, number=row.attempts, started_at=row.updated_at, error=LOST_TRY
            )
            logger.warning(
                "Webhook %s: try %d was lost with its worker; trying again",
                row.message_id,
                row.attempts,
            )
    return Claim(WebhookDelivery.objects.select_related("endpoint").get(pk=row.pk), token)


def delivery_secret(delivery: WebhookDelivery) -> str:
    """The secret a delivery is signed with: its endpoint's; for a job's callback URL, the
    secret of its owner's endpoint with that very URL, else the owner's signing secret
    (made now if they have none: they may create it, and see it, by the API)."""
    if delivery.endpoint is not None:
        return delivery.endpoint.secret
    endpoint = (
        WebhookEndpoint.objects.filter(owner_id=delivery.owner_id, url=delivery.callback_url)
        .order_by("-enabled", "id")
        .first()
    )
    if endpoint is not None:
        return endpoint.secret
    signing, _ = WebhookSigningSecret.objects.get_or_create(
        owner_id=delivery.owner_id, defaults={"secret": new_secret()}
    )
    return signing.secret


def delivery_body(delivery: WebhookDelivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(*, secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one try, signed now."""
    now = timezone.now()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body.decode()),
    }


def _retried(outcome: Outcome) -> bool:
    code = outcome.status_code
    return code is None or code in RETRIED_STATUSES or code >= 500


def _next_delay(delivery: WebhookDelivery, outcome: Outcome) -> float | None:
    """Seconds until the next try, or None when the tries are spent."""
    delays = settings.MOBILESD_WEBHOOK_RETRY_SECONDS
    done = delivery.attempts - delivery.schedule_start
    if done > len(delays):
        return None
    delay = delays[done - 1]
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
    return delay


def webhook_endpoint_disabled_tell_owner(endpoint: WebhookEndpoint) -> None:
    """Tell an endpoint's owner that it was disabled (and why): a push notification to each
    of their targets, and a warning in the log (with the URL's host only: its path or query
    may hold the receiver's token)."""
    host = urlsplit(endpoint.url).hostname or "?"
    logger.warning(
        "Webhook endpoint %s of user %s (%s) disabled: %s",
        endpoint.pk,
        endpoint.owner_id,
        host,
        endpoint.disabled_reason,
    )
    notify_user(
        endpoint.owner_id,
        title="MobileSD: a webhook endpoint was disabled",
        body=(
            f"Webhook endpoint {endpoint.pk} ({host}) no longer receives events: "
            f"{endpoint.disabled_reason} Enable it again in the admin or with "
            f'PATCH /api/v1/webhooks/{endpoint.pk} {{"enabled": true}}.'
        ),
    )


def webhook_endpoint_disable(*, endpoint_id: int, reason: str) -> bool:
    """Disable an endpoint (if enabled) and tell its owner; whether it was enabled."""
    now = timezone.now()
    changed = WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(
        enabled=False, disabled_at=now, disabled_reason=reason[:300], updated_at=now
    )
    if changed:
        endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
        transaction.on_commit(lambda: webhook_endpoint_disabled_tell_owner(endpoint))
    return bool(changed)


def _endpoint_outcome(delivery: WebhookDelivery, outcome: Outcome, *, refused: bool) -> None:
    """An endpoint's health after a try: a success clears `failing_since`; a failure starts
    it, and disables the endpoint once it is old enough (or at once on a 410)."""
    endpoint_id = delivery.endpoint_id
    if endpoint_id is None:
        return
    now = timezone.now()
    if outcome.ok:
        WebhookEndpoint.objects.filter(pk=endpoint_id, failing_since__isnull=False).update(
            failing_since=None
        )
        return
    if refused:
        return  # not the receiver's failure
    WebhookEndpoint.objects.filter(pk=endpoint_id, failing_since__isnull=True).update(
        failing_since=now
    )
    if outcome.status_code == 410:
        webhook_endpoint_disable(
            endpoint_id=endpoint_id,
            reason="The receiver answered 410 Gone: it no longer takes these webhooks.",
        )
        return
    after = timedelta(seconds=settings.MOBILESD_WEBHOOK_DISABLE_AFTER_SECONDS)
    if WebhookEndpoint.objects.filter(
        pk=endpoint_id, enabled=True, failing_since__lte=now - after
    ).exists():
        webhook_endpoint_disable(
            endpoint_id=endpoint_id,
            reason=f"Every delivery failed for {after} (last: "
            f"{outcome.status_code or outcome.error or 'no answer'}).",
        )


def delivery_record(
    claim: Claim, outcome: Outcome, *, started_at: datetime, refused: bool
) -> float | None:
    """Log the try and move the delivery on (if it is still ours); the delay before the next
    try, or None when there is none."""
    delivery = claim.delivery
    now = timezone.now()
    delay: float | None = None
    if outcome.ok:
        state, changes = DeliveryState.DELIVERED, {"delivered_at": now}
    elif refused or not _retried(outcome):
        state, changes = DeliveryState.FAILED, {}
    else:
        delay = _next_delay(delivery, outcome)
        if delay is None:
            state, changes = DeliveryState.FAILED, {}
        else:
            state = DeliveryState.PENDING
            changes = {"next_attempt_at": now + timedelta(seconds=delay)}
    with transaction.atomic():
        if not WebhookDelivery.objects.select_for_update().filter(pk=delivery.pk).exists():
            return None  # deleted meanwhile (with its endpoint): nothing to record
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            started_at=started_at,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error[:300],
            response_body=outcome.body[:300],
        )
        ours = WebhookDelivery.objects.filter(pk=delivery.pk, lease_token=claim.token).update(
            state=state,
            lease_token=None,
            lease_expires_at=None,
            last_status_code=outcome.status_code,
            last_error=outcome.error[:300],
            updated_at=now,
            **changes,
        )
        if not ours:
            logger.warning(
                "Webhook %s: try %d ended after its lease was taken over",
                delivery.message_id,
                delivery.attempts,
            )
            return None
        _endpoint_outcome(delivery, outcome, refused=refused)
    return delay


def delivery_send(*, delivery_id: int) -> float | None:
    """One try of the delivery, if it is due; the seconds until its next try (None: there
    is none to schedule)."""
    claim = delivery_claim(delivery_id=delivery_id)
    if claim is None:
        return None
    delivery = claim.delivery
    started_at = timezone.now()
    problem = None
    if delivery.endpoint is not None and not delivery.endpoint.enabled:
        problem = "The endpoint is disabled."
    problem = problem or destination_problem(delivery.url)
    if problem:
        outcome = Outcome(None, 0, error=f"Not sent: {problem}"[:300])
        return delivery_record(claim, outcome, started_at=started_at, refused=True)
    body = delivery_body(delivery)
    headers = signed_headers(
        secret=delivery_secret(delivery), message_id=delivery.message_id, body=body
    )
    outcome = post_json(
        delivery.url,
        body=body,
        headers=headers,
        connect_timeout=settings.MOBILESD_WEBHOOK_CONNECT_TIMEOUT,
        read_timeout=settings.MOBILESD_WEBHOOK_READ_TIMEOUT,
    )
    logger.info(
        "Webhook %s (%s) try %d: %s in %d ms",
        delivery.message_id,
        delivery.event_type,
        delivery.attempts,
        outcome.status_code or outcome.error,
        outcome.duration_ms,
    )
    return delivery_record(claim, outcome, started_at=started_at, refused=False)


def deliveries_due(*, grace: float) -> list[int]:
    """The deliveries whose send was lost: due for more than `grace` seconds with no try
    made, or held by a lease that lapsed (their worker died)."""
    now = timezone.now()
    late = Q(state=DeliveryState.PENDING, next_attempt_at__lte=now - timedelta(seconds=grace))
    lapsed = Q(state=DeliveryState.DELIVERING, lease_expires_at__lt=now)
    return list(
        WebhookDelivery.objects.filter(late | lapsed)
        .order_by("id")
        .values_list("pk", flat=True)[:1000]
    )
