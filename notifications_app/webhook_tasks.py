"""The Celery task that sends a webhook delivery (one try; the next is scheduled)."""

import logging

from celery import shared_task

from notifications_app.delivery import delivery_send

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True, time_limit=300)
def deliver_webhook(delivery_id: int) -> None:
    """Try delivery `delivery_id` if it is due (a repeat of this message, or one for a
    delivery another worker holds, does nothing), and schedule its next try. The database
    row is the truth: a next try whose message is lost is found by notifications_poll."""
    delay = delivery_send(delivery_id=delivery_id)
    if delay is not None:
        deliver_webhook.apply_async(args=(delivery_id,), countdown=delay)
