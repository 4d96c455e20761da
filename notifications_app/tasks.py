"""Celery tasks of notifications: the fan-out from the event log and its safety poll."""

import logging

from celery import shared_task
from django.conf import settings

from notifications_app.delivery import deliveries_due
from notifications_app.fanout import notifications_fanout
from notifications_app.webhook_tasks import deliver_webhook

__all__ = ["deliver_webhook", "notifications_fanout_run", "notifications_poll"]

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True, time_limit=300)
def notifications_fanout_run() -> int:
    """Hand the new events on to their notifications (notifications_app.fanout)."""
    return notifications_fanout()


@shared_task(ignore_result=True, time_limit=300)
def notifications_poll() -> None:
    """Beat's safety poll: the fan-out (the only one on SQLite, where no LISTEN wakes the
    workers), then every delivery whose message was lost (a due try nobody made, a lease
    whose worker died) is sent again."""
    notifications_fanout()
    for pk in deliveries_due(grace=settings.MOBILESD_NOTIFY_POLL_SECONDS):
        deliver_webhook.delay(pk)
