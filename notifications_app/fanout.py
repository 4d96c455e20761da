"""From the event log to notifications, at least once and nothing lost.

One cursor row (FanoutCursor) says how far the log has been handed on. `notifications_fanout`
numbers the committed events (events_sequence), then, in ONE transaction holding the
cursor's row lock, reads the events after it, lets every handler of `HANDLERS` make its
deliveries, and moves the cursor past them: the deliveries of an event exist exactly when
the cursor is past it, whoever crashes when. Sending starts once that transaction commits
(`transaction.on_commit`), and the reconcile finds any delivery whose send was lost.

A handler is `(events: Sequence[Event]) -> None`, called inside the transaction: it writes
its rows and schedules its work with `transaction.on_commit`. Who runs the fan-out: each
worker's listener thread on every notification of new events (notifications_app.listener,
PostgreSQL), and beat's poll every MOBILESD_NOTIFY_POLL_SECONDS (everything, and the only
trigger on SQLite); two at once take turns on the row lock, the second finding nothing new.
"""

import logging
from collections.abc import Callable, Sequence

from django.db import OperationalError, connection, transaction
from psycopg.errors import LockNotAvailable

from events_app.models import Event
from events_app.selectors import events_pruned_through
from events_app.sequencer import events_sequence
from notifications_app.models import FanoutCursor
from notifications_app.push import push_for_events
from notifications_app.webhook_fanout import webhook_deliveries_for

logger = logging.getLogger(__name__)

Handler = Callable[[Sequence[Event]], None]

# Every consumer of the event log's notifications: webhooks, push notifications.
HANDLERS: tuple[Handler, ...] = (webhook_deliveries_for, push_for_events)

# Events handed on per transaction.
PAGE = 500
# PostgreSQL: how long a fan-out may wait for a table's lock once it holds the cursor. A
# fan-out reads several tables in one transaction; a TRUNCATE or an ALTER (a migration, a
# test's flush) locks them one after another, and the two would deadlock. Past this the
# fan-out gives up (the next notification or poll hands the events on), before PostgreSQL's
# deadlock check (deadlock_timeout, 1 s by default) could pick the other as its victim.
LOCK_TIMEOUT = "500ms"


def _fanout_page() -> int:
    with transaction.atomic():
        cursor, _ = FanoutCursor.objects.select_for_update().get_or_create(pk=1)
        if connection.vendor == "postgresql":
            with connection.cursor() as sql:
                sql.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        pruned = events_pruned_through()
        if cursor.position < pruned:
            logger.warning(
                "Notifications: events %d to %d were pruned before they were handed on",
                cursor.position + 1,
                pruned,
            )
        events = list(Event.objects.filter(seq__gt=cursor.position).order_by("seq")[:PAGE])
        if not events:
            return 0
        for handler in HANDLERS:
            handler(events)
        FanoutCursor.objects.filter(pk=1).update(position=events[-1].seq)
        return len(events)


def notifications_fanout() -> int:
    """Hand on every event committed so far; the number handed on. Call it outside a
    transaction (the sequencer runs in its own)."""
    events_sequence()
    total = 0
    while True:
        try:
            handed = _fanout_page()
        except OperationalError as exc:
            if not isinstance(exc.__cause__, LockNotAvailable):
                raise
            logger.info("Notifications: a table was locked (%s); handed on later", exc)
            return total
        total += handed
        if handed < PAGE:
            return total
