"""The heartbeats of Celery's processes: a worker bootstep whose thread notes, every
MOBILESD_WORKER_HEARTBEAT_SECONDS, that this worker is alive (a WorkerHeartbeat row), so
that /api/v1/health can tell a queue that nobody works on; and the same thread in beat,
started when beat starts, so that it can tell a queue whose periodic tasks (server health
checks, lease recovery, the reconcile, the counts' fold) no longer run.

mobilesd/celery.py adds the step by name; nothing here touches Django's models at import
time, because the Celery app is imported before Django is set up.
"""

import atexit
import logging
import socket
import threading
from typing import Any

from celery import bootsteps
from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)


class HeartbeatThread(threading.Thread):
    """Writes the heartbeat until stopped, then marks the worker as stopped. A failed write
    (database down) is logged and retried at the next beat; it never stops the worker."""

    def __init__(
        self, *, hostname: str, period: float, process: str = "worker", threads: int | None = None
    ) -> None:
        super().__init__(name=f"mobilesd-{process}-heartbeat", daemon=True)
        self.hostname = hostname
        self.period = period
        self.process = process
        self.threads = threads
        self._stopping = threading.Event()

    def run(self) -> None:
        from core_app.services import worker_heartbeat_record

        started = True
        try:
            while True:
                try:
                    close_old_connections()
                    worker_heartbeat_record(
                        hostname=self.hostname,
                        started=started,
                        process=self.process,
                        threads=self.threads,
                    )
                    started = False
                except Exception as exc:  # any database error: try again next beat
                    logger.warning("Worker heartbeat of %s not written: %s", self.hostname, exc)
                    connection.close()
                if self._stopping.wait(self.period):
                    break
            try:
                worker_heartbeat_record(hostname=self.hostname, stopped=True, process=self.process)
            except Exception as exc:  # the row then simply ages out
                logger.warning("Worker %s not marked as stopped: %s", self.hostname, exc)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=max(5.0, 2 * self.period))


class WorkerHeartbeatStep(bootsteps.StartStopStep):
    """Runs a HeartbeatThread for as long as the worker runs."""

    label = "MobileSD heartbeat"

    # Celery keeps what create() returns as the step's `obj`, which start() and stop()
    # start and stop; celery-types declares it as returning None.
    def create(self, parent: Any) -> HeartbeatThread:  # type: ignore[override]
        return HeartbeatThread(
            hostname=parent.hostname,
            period=settings.MOBILESD_WORKER_HEARTBEAT_SECONDS,
            threads=parent.concurrency if isinstance(parent.concurrency, int) else None,
        )


def beat_heartbeat_start() -> HeartbeatThread:
    """Beat's heartbeat, as `beat@<host>`, from its start (beat_init, mobilesd/celery.py)
    until the process exits (marked stopped then)."""
    thread = HeartbeatThread(
        hostname=f"beat@{socket.gethostname()}",
        period=settings.MOBILESD_WORKER_HEARTBEAT_SECONDS,
        process="beat",
    )
    thread.start()
    atexit.register(thread.stop)
    return thread
