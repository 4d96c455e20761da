"""Writes to the event log other than the triggers': pruning."""

import logging
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from events_app.models import Event, EventLog

logger = logging.getLogger(__name__)

# Events deleted per statement: a week of a busy queue goes in short transactions.
PRUNE_CHUNK = 10000


def events_prune(*, older_than: timedelta) -> int:
    """Delete the numbered events older than `older_than`; the number deleted. The log's
    `pruned_through` is raised in the same transaction as each deletion, so a reader that
    finds an event missing below it also finds the mark that says so."""
    cutoff = timezone.now() - older_than
    through = Event.objects.filter(seq__isnull=False, created_at__lt=cutoff).aggregate(
        s=Max("seq")
    )["s"]
    if through is None:
        return 0
    deleted = 0
    table = connection.ops.quote_name(Event._meta.db_table)
    while True:
        with transaction.atomic():
            low = (
                Event.objects.filter(seq__isnull=False)
                .order_by("seq")
                .values_list("seq", flat=True)
                .first()
            )
            if low is None or low > through:
                break
            upto = min(low + PRUNE_CHUNK - 1, through)
            log, _ = EventLog.objects.select_for_update().get_or_create(pk=1)
            if log.pruned_through < upto:
                EventLog.objects.filter(pk=1).update(pruned_through=upto)
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table} WHERE seq <= %s", [upto])  # noqa: S608
                deleted += cursor.rowcount
    if deleted:
        logger.info("Pruned %d events (through %d)", deleted, through)
    return deleted
