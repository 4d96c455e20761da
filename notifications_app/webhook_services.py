"""Managing webhooks: endpoints, the per-user signing secret, deliveries sent again, tests."""

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from core_app.errors import Conflict, InvalidInput, NotFound
from core_app.fields import format_timestamp
from notifications_app.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSigningSecret,
)
from notifications_app.webhook_fanout import deliveries_send_on_commit
from notifications_app.webhooks import (
    TEST_EVENT_TYPE,
    last_event_id,
    new_message_id,
    new_secret,
)

# The largest id a row may have (bigint): a larger one in a path is a 404, not a 500.
MAX_ID = 2**63 - 1
ALL_USERS_ADMIN_ONLY = "Only an admin key (or a staff session) may take every user's events."


def webhook_endpoint_list(*, owner: Any | None) -> QuerySet[WebhookEndpoint]:
    """The endpoints of `owner` (a user), or everyone's for None (an admin)."""
    endpoints = WebhookEndpoint.objects.select_related("owner").order_by("-created_at", "-id")
    return endpoints if owner is None else endpoints.filter(owner=owner)


def webhook_endpoint_get(*, endpoint_id: int, owner: Any | None) -> WebhookEndpoint:
    """The endpoint, if `owner` (None: anyone) owns it; another user's is the same 404."""
    endpoint = None
    if 0 < endpoint_id <= MAX_ID:
        endpoint = webhook_endpoint_list(owner=owner).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound(f"Webhook {endpoint_id} not found.", code="webhook_not_found")
    return endpoint


def webhook_endpoint_create(
    *,
    owner: Any,
    is_admin: bool,
    url: str,
    event_types: list[str],
    description: str = "",
    all_users: bool = False,
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (the caller shows it this once). `url` has been
    checked against the destination policy by the serializer."""
    if all_users and not is_admin:
        raise InvalidInput({"all_users": [ALL_USERS_ADMIN_ONLY]})
    return WebhookEndpoint.objects.create(
        owner=owner,
        url=url,
        event_types=event_types,
        description=description,
        all_users=all_users,
        secret=new_secret(),
        after_event_id=last_event_id(),
    )


def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, is_admin: bool, changes: dict[str, Any]
) -> WebhookEndpoint:
    """Change an endpoint's url, events, description, all_users or enabled. Enabling a
    disabled endpoint forgets its failures; disabling one by hand says so."""
    if changes.get("all_users") and not is_admin:
        raise InvalidInput({"all_users": [ALL_USERS_ADMIN_ONLY]})
    for name in ("url", "description", "all_users"):
        if name in changes:
            setattr(endpoint, name, changes[name])
    if "events" in changes:
        endpoint.event_types = changes["events"]
    enabled = changes.get("enabled")
    if enabled is True and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_at = None
        endpoint.disabled_reason = ""
        endpoint.failing_since = None
    elif enabled is False and endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_at = timezone.now()
        endpoint.disabled_reason = "Disabled by hand."
    endpoint.save()
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> int:
    """Delete an endpoint and its deliveries; its id."""
    pk = endpoint.pk
    endpoint.delete()
    return pk


def webhook_deliveries(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """An endpoint's deliveries, newest first, with their tries."""
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("endpoint")
        .prefetch_related("tries")
        .order_by("-created_at", "-id")
    )


def webhook_delivery_redeliver(
    *, delivery_id: int, endpoint: WebhookEndpoint | None = None
) -> WebhookDelivery:
    """Send a delivery (of `endpoint`, if given) again, now, with the same `webhook-id` and
    a new retry schedule (a delivered one too: "deliver again"). One being sent right now
    is a 409."""
    deliveries = WebhookDelivery.objects.select_for_update()
    if endpoint is not None:
        deliveries = deliveries.filter(endpoint=endpoint)
    with transaction.atomic():
        delivery = deliveries.filter(pk=delivery_id).first() if 0 < delivery_id <= MAX_ID else None
        if delivery is None:
            raise NotFound(f"Delivery {delivery_id} not found.", code="delivery_not_found")
        if delivery.state == DeliveryState.DELIVERING:
            raise Conflict(
                "The delivery is being sent right now: wait for this try's outcome.",
                code="delivery_in_progress",
            )
        delivery.state = DeliveryState.PENDING
        delivery.next_attempt_at = timezone.now()
        delivery.schedule_start = delivery.attempts
        delivery.save(update_fields=["state", "next_attempt_at", "schedule_start", "updated_at"])
        deliveries_send_on_commit([delivery.pk])
    return delivery


def webhook_endpoint_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `webhook.test` delivery to the endpoint (whatever events it takes), sent now."""
    now = timezone.now()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            owner_id=endpoint.owner_id,
            message_id=new_message_id(),
            event_type=TEST_EVENT_TYPE,
            payload={
                "type": TEST_EVENT_TYPE,
                "timestamp": format_timestamp(now),
                "data": {"webhook": endpoint.pk, "message": "A test of this endpoint."},
            },
            next_attempt_at=now,
        )
        deliveries_send_on_commit([delivery.pk])
    return delivery


def webhook_signing_secret_rotate(*, owner: Any) -> WebhookSigningSecret:
    """A new signing secret for `owner`'s callback URLs (the old one stops signing now)."""
    signing, _ = WebhookSigningSecret.objects.update_or_create(
        owner=owner, defaults={"secret": new_secret()}
    )
    return signing
