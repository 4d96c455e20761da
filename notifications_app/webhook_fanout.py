"""The fan-out's webhook handler: which events go to which endpoints and callback URLs."""

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from events_app.models import Event
from notifications_app.models import WebhookDelivery, WebhookEndpoint
from notifications_app.webhook_tasks import deliver_webhook
from notifications_app.webhooks import (
    CALLBACK_EVENT_TYPES,
    new_message_id,
    payload,
    type_matches,
    visible_to,
)
from queue_app.models import Job

logger = logging.getLogger(__name__)


def deliveries_send_on_commit(delivery_ids: list[int]) -> None:
    """Start sending these deliveries once the transaction that made them commits."""
    if not delivery_ids:
        return

    def send() -> None:
        for pk in delivery_ids:
            deliver_webhook.delay(pk)

    transaction.on_commit(send)


def _payload(event: Event, *, job: Job | None) -> dict[str, Any]:
    """The event's payload; one that cannot be rendered (a snapshot it cannot read) still
    goes out, as the event stream's message, rather than stop every delivery at this
    event (the fan-out would retry it for ever)."""
    try:
        return payload(event, job=job)
    except Exception:
        logger.exception("Webhooks: cannot render event %s (%s)", event.seq, event.type)
        return {"type": event.type, "timestamp": None, "data": {"id": event.seq}}


def webhook_deliveries_for(events: Sequence[Event]) -> None:
    """The deliveries of `events`: one per enabled endpoint made before the event that wants
    its type and may see it, and one to a job's `callback_url` for the job's end (completed, failed,
    cancelled) unless an endpoint of the job's owner with that very URL receives it already."""
    endpoints = list(WebhookEndpoint.objects.filter(enabled=True).order_by("id"))
    ends = {event.job_id for event in events if event.type in CALLBACK_EVENT_TYPES}
    callbacks: dict[UUID, tuple[str, int]] = {
        pk: (url, owner_id)
        for pk, url, owner_id in Job.objects.filter(pk__in=[pk for pk in ends if pk])
        .exclude(callback_url="")
        .values_list("pk", "callback_url", "owner_id")
    }
    planned: list[tuple[Event, list[WebhookEndpoint], tuple[str, int] | None]] = []
    for event in events:
        receivers = [
            endpoint
            for endpoint in endpoints
            if event.id > endpoint.after_event_id
            and type_matches(event.type, endpoint.event_types)
            and visible_to(event, owner_id=endpoint.owner_id, all_users=endpoint.all_users)
        ]
        callback = (
            callbacks.get(event.job_id)
            if event.job_id is not None and event.type in CALLBACK_EVENT_TYPES
            else None
        )
        if callback is not None and any(
            endpoint.owner_id == callback[1] and endpoint.url == callback[0]
            for endpoint in receivers
        ):
            callback = None
        if receivers or callback is not None:
            planned.append((event, receivers, callback))
    if not planned:
        return
    job_ids = {event.job_id for event, _, _ in planned if event.type.startswith("job.")}
    jobs = {
        job.pk: job
        for job in Job.objects.filter(pk__in=[pk for pk in job_ids if pk]).select_related(
            "server", "owner"
        )
    }
    deliveries: list[WebhookDelivery] = []
    now = timezone.now()
    for event, receivers, callback in planned:
        body = _payload(event, job=jobs.get(event.job_id) if event.job_id else None)
        common = {
            "event_seq": event.seq,
            "event_type": event.type,
            "job_id": event.job_id,
            "payload": body,
            "next_attempt_at": now,
        }
        for endpoint in receivers:
            deliveries.append(
                WebhookDelivery(
                    endpoint=endpoint,
                    owner_id=endpoint.owner_id,
                    message_id=new_message_id(),
                    **common,
                )
            )
        if callback is not None:
            deliveries.append(
                WebhookDelivery(
                    callback_url=callback[0],
                    owner_id=callback[1],
                    message_id=new_message_id(),
                    **common,
                )
            )
    WebhookDelivery.objects.bulk_create(deliveries)
    deliveries_send_on_commit([delivery.pk for delivery in deliveries])
