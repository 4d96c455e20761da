"""Quarantine: a server that fails every job is set aside until it works again.

A job failing for a server-side reason (a 5xx such as CUDA out-of-memory, a dropped
connection mid-generation, a timeout: the engine's transient failures of a request that
reached the server) counts against its server; a completed job resets the count. A job
failing for its own reasons (an unknown checkpoint or LoRA, a 4xx) counts for nothing, nor
does a server that cannot be reached at all (that is `offline`, handled by the health
check). After MOBILESD_QUARANTINE_AFTER_FAILURES in a row the server is quarantined: it
claims nothing (its pinned jobs wait; "any" jobs go to other servers), and its status says
why and since when.

After MOBILESD_QUARANTINE_COOLDOWN_SECONDS the reconcile task health-checks it; a check
that succeeds lifts the quarantine (a probe by health check only: a generation would cost
a job, and the next real job is the test). The lifted server is on probation: its count
is left one short of the limit, so a single further failure quarantines it again, and a
success clears it.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from servers_app.models import Server

logger = logging.getLogger(__name__)

__all__ = [
    "server_lift_quarantine",
    "server_note_job_failure",
    "server_note_job_success",
    "servers_due_for_probe",
]


def _limit() -> int:
    return max(int(settings.MOBILESD_QUARANTINE_AFTER_FAILURES), 0)


def server_note_job_failure(*, server_id: int, error: str) -> bool:
    """Count a server-side failure of a job; quarantine the server when it is the limit's
    in a row. True when this failure quarantined it."""
    Server.objects.filter(pk=server_id).update(consecutive_failures=F("consecutive_failures") + 1)
    limit = _limit()
    if not limit:
        return False
    now = timezone.now()
    failures = (
        Server.objects.filter(pk=server_id).values_list("consecutive_failures", flat=True).first()
    )
    reason = (
        f"{failures} jobs in a row failed on this server; the last: {error}"[:2000]
        if failures
        else ""
    )
    quarantined = Server.objects.filter(
        pk=server_id, quarantined_at__isnull=True, consecutive_failures__gte=limit
    ).update(quarantined_at=now, quarantine_reason=reason)
    if quarantined:
        logger.warning("Server %s quarantined: %s", server_id, reason)
    return bool(quarantined)


def server_note_job_success(*, server_id: int) -> None:
    """A job completed on the server: its failures are no longer in a row (one statement
    that writes nothing when there were none)."""
    Server.objects.filter(pk=server_id, consecutive_failures__gt=0).update(consecutive_failures=0)


def servers_due_for_probe() -> "QuerySet[Server]":
    """The quarantined servers whose cooldown has passed."""
    cooldown = timedelta(seconds=settings.MOBILESD_QUARANTINE_COOLDOWN_SECONDS)
    return Server.objects.filter(enabled=True, quarantined_at__lte=timezone.now() - cooldown)


def server_lift_quarantine(*, server_id: int, force: bool = False) -> bool:
    """Take the server out of quarantine once its cooldown has passed (`force`: at once,
    as an operator may), on probation (see the module docstring). True if it was lifted."""
    due = Q(pk=server_id, quarantined_at__isnull=False)
    if not force:
        cooldown = timedelta(seconds=settings.MOBILESD_QUARANTINE_COOLDOWN_SECONDS)
        due &= Q(quarantined_at__lte=timezone.now() - cooldown)
    lifted = Server.objects.filter(due).update(
        quarantined_at=None,
        quarantine_reason="",
        consecutive_failures=max(_limit() - 1, 0),
    )
    if lifted:
        logger.info("Server %s is out of quarantine (on probation)", server_id)
    return bool(lifted)
