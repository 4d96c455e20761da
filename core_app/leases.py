"""The lease vocabulary shared by the two kinds of work a worker holds: jobs and downloads.

A worker that takes a row (a job to generate, a file to download) writes a fresh
`lease_token` and a `lease_expires_at`, renews the expiry while it works, and changes the
row only while the token is still its own. When an update finds the row no longer ours,
`LeaseLost` says why. A transient failure waits out `backoff_seconds` before the row is
taken again.

A holder keeps its lease through a database outage shorter than the lease: a write that
fails with `DATABASE_DOWN` is tried again (after `drop_broken_connection`), and only an
update that reaches the database and finds the row no longer ours ends the work.
"""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

__all__ = [
    "DATABASE_DOWN",
    "LeaseLost",
    "backoff_seconds",
    "drop_broken_connection",
    "lease_expiry",
    "lease_lost_reason",
    "retry_while_database_down",
]

logger = logging.getLogger(__name__)

# What a query raises when the database cannot be reached or its connection broke (a
# restart, a network blip); anything else is an answer, or a bug.
DATABASE_DOWN = (OperationalError, InterfaceError)


def drop_broken_connection() -> None:
    """Close this thread's database connection after it failed, so that the next query
    opens a fresh one. Outside a request nothing else does: Django would go on using the
    broken connection (every query then raising InterfaceError) until the thread ends."""
    try:
        connection.close()
    except Exception as exc:  # closing a broken connection may fail too; it is dropped anyway
        logger.debug("Closing a broken database connection: %s", exc)


class LeaseLost(StrEnum):
    """Why a row a worker held is no longer its own."""

    CANCELLED = "cancelled"  # someone cancelled it: stop, record nothing more
    GONE = "gone"  # the row was deleted
    LOST = "lost"  # the lease lapsed and another worker (or the reconcile) took it over


def lease_lost_reason(*, exists: bool, cancelled: bool) -> LeaseLost:
    """The reason to report for a row our conditional update no longer matched."""
    if not exists:
        return LeaseLost.GONE
    return LeaseLost.CANCELLED if cancelled else LeaseLost.LOST


def lease_expiry(seconds: float, *, now: datetime | None = None) -> datetime:
    """When a lease taken (or renewed) now for `seconds` lapses."""
    return (now or timezone.now()) + timedelta(seconds=seconds)


def backoff_seconds(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Exponential backoff before retry number `attempt` (1, 2, ...): `base`, 2x, 4x, ...,
    never more than `cap`, and never less than a `retry_after` the other side asked for."""
    delay = base * 2 ** max(attempt - 1, 0)
    return float(min(cap, max(delay, retry_after or 0.0)))


def retry_while_database_down[T](
    work: Callable[[], T],
    *,
    within: float,
    what: str,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """`work()`; while it fails with `DATABASE_DOWN`, tried again on a fresh connection
    (backing off from 0.1 s to 1 s) until `within` seconds have passed since the first
    failure, when the last error is raised. `before_retry` runs first in each retry (e.g.
    a lease renewal: the outage may have outlasted a heartbeat); what it raises ends the
    retries. `what` names the work in the logs."""
    deadline: float | None = None
    delay = 0.1
    while True:
        try:
            if deadline is not None and before_retry is not None:
                before_retry()
            result = work()
        except DATABASE_DOWN as exc:
            drop_broken_connection()
            now = time.monotonic()
            if deadline is None:
                deadline = now + within
                logger.warning("%s: the database is unavailable (%s); trying again", what, exc)
            if now + delay > deadline:
                logger.error("%s: the database is still unavailable after %.0f s", what, within)
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        if deadline is not None:
            logger.info("%s: done once the database was back", what)
        return result
