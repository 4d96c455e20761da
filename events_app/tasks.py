"""Upkeep of the event log."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from events_app.services import events_prune


@shared_task(ignore_result=True, time_limit=600)
def prune_events() -> int:
    """Delete the events older than MOBILESD_EVENTS_RETENTION_SECONDS."""
    return events_prune(older_than=timedelta(seconds=settings.MOBILESD_EVENTS_RETENTION_SECONDS))
