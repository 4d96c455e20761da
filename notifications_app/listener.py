"""The fan-out's trigger in each worker: a thread that LISTENs for new events (PostgreSQL)
and runs notifications_fanout at once, so that a webhook leaves within moments of its
event's commit rather than at beat's next poll.

It listens to the triggers' RAW_CHANNEL, notified at the commit of every change that wrote
events (the fan-out numbers them); not to the sequencer's CHANNEL, which each fan-out's own
numbering would notify, waking it again for nothing. A job's changes come in bursts (its
start, progress, end; many servers' at once), so the notifications of GATHER_SECONDS after
the first are taken together by one fan-out: each costs a few milliseconds of the worker's
CPU, which before this was spent once per event (bench/engine.py --scenario utilization:
21.1 ms of worker CPU per job against 10.1 ms with no listener). A lost notification
(a reconnect, a database restart) delays nothing for long: beat's notifications_poll runs
the same fan-out every MOBILESD_NOTIFY_POLL_SECONDS, and is the only trigger on SQLite or
with MOBILESD_EVENTS_NOTIFY off.

mobilesd/celery.py adds the step by name; nothing here touches Django's models at import
time, because the Celery app is imported before Django is set up.
"""

import logging
import threading
from typing import Any

from celery import bootsteps
from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

# Seconds between looks at the stop flag while no notification comes.
WAKE_SECONDS = 1.0
# After a notification, how long to gather the others before one fan-out takes them all.
GATHER_SECONDS = 0.1
MAX_BACKOFF = 10.0


class FanoutListener(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="mobilesd-notifications-listener", daemon=True)
        self._stopping = threading.Event()
        self.fanouts = 0

    def _fanout(self) -> None:
        from notifications_app.fanout import notifications_fanout

        try:
            close_old_connections()
            notifications_fanout()
            self.fanouts += 1
        except Exception:  # any database error: the next notification (or the poll) retries
            logger.exception("Notifications: the fan-out failed")
            connection.close()

    def run(self) -> None:
        import psycopg

        from events_app.stream import _listen_conninfo
        from events_app.triggers import RAW_CHANNEL
        from queue_app.engine import YIELD_SECONDS, servers_waiting

        backoff = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    with psycopg.connect(_listen_conninfo(), autocommit=True) as listen:
                        listen.execute(f"LISTEN {RAW_CHANNEL}")
                        logger.info("Notifications: listening for new events")
                        backoff = 0.5
                        self._fanout()  # what came while nobody listened
                        while not self._stopping.is_set():
                            notified = False
                            for _ in listen.notifies(timeout=WAKE_SECONDS, stop_after=1):
                                notified = True
                            if notified:
                                for _ in listen.notifies(timeout=GATHER_SECONDS):
                                    pass
                                # Not while this worker's servers wait for their next
                                # request (moments at most): they need the interpreter.
                                servers_waiting.wait_until_none(YIELD_SECONDS)
                                self._fanout()
                except psycopg.Error as exc:
                    logger.warning(
                        "Notifications: listening failed (%s); again in %.1f s", exc, backoff
                    )
                    if self._stopping.wait(backoff):
                        break
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=2 * WAKE_SECONDS + 5)


class FanoutListenerStep(bootsteps.StartStopStep):
    """Runs a FanoutListener for as long as the worker runs (PostgreSQL with
    MOBILESD_EVENTS_NOTIFY only)."""

    label = "MobileSD notifications listener"

    def create(self, parent: Any) -> FanoutListener | None:  # type: ignore[override]
        if connection.vendor != "postgresql" or not settings.MOBILESD_EVENTS_NOTIFY:
            return None
        return FanoutListener()
