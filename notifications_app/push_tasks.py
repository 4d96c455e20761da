"""Celery tasks of push notifications. Messages are nudges ("send this outbox row now"):
the PushMessage rows are the truth, so a lost, repeated or late message is harmless (a row
is sent only by whoever takes its lease; the recovery task finds the rows a lost message or
a killed worker left behind)."""

import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import partial

from celery import shared_task
from django.conf import settings
from django.db import transaction

from notifications_app.push_services import (
    push_message_send,
    push_messages_due,
    push_messages_prune,
)

logger = logging.getLogger(__name__)


def _enqueue(message_ids: list[int], countdown: float | None = None) -> None:
    """Never raises: with the broker down the rows wait, and recover_push finds them."""
    for message_id in message_ids:
        try:
            send_push.apply_async(args=(message_id,), countdown=countdown or 0)
        except Exception as exc:  # any broker error
            logger.warning("Could not queue push notification %s (broker: %s)", message_id, exc)
            return


def push_send_on_commit(message_ids: Iterable[int]) -> None:
    """Queue the sending of these outbox rows once the current transaction commits."""
    ids = list(message_ids)
    if ids:
        transaction.on_commit(partial(_enqueue, ids))


# Far above a send's own bound (MOBILESD_PUSH_TIMEOUT_SECONDS, 10 s by default): a stuck
# plugin ends here, and its row is sent again once its lease lapses.
@shared_task(ignore_result=True, time_limit=300)
def send_push(message_id: int) -> None:
    """Send one outbox row (if it is still due and nobody holds it); a failure that will be
    tried again queues that try."""
    retry_in = push_message_send(message_id=message_id)
    if retry_in is not None:
        _enqueue([message_id], countdown=retry_in)


@shared_task(ignore_result=True, time_limit=120)
def recover_push() -> int:
    """Queue the rows that are due and that nobody is sending: retries whose message was
    lost, and sends whose worker died (their lease lapsed). And forget the finished rows
    older than the event log keeps its events (MOBILESD_EVENTS_RETENTION_SECONDS)."""
    push_messages_prune(older_than=timedelta(seconds=settings.MOBILESD_EVENTS_RETENTION_SECONDS))
    due = push_messages_due()
    _enqueue(due)
    if due:
        logger.info("Queued %d push notification(s) again", len(due))
    return len(due)
