"""Queue control: pause and resume the whole queue, move a pending job up or down, change a
pending job, cancel many jobs at once.

A pause stops starts, never a running job: the claim and the reserved start
(queue_app.dispatch) read `QueueState.paused_at` and `Server.paused_at` in the statements
they already run. Changes to a pending job are conditional updates on `status = pending`,
so a change racing a claim either lands before it (the claim then reads the new values) or
is refused with 409 `job_not_pending`. A job a worker has reserved as its server's next job
is still pending: a change gives the reservation back (the worker's start, which needs
its token, does nothing, and its next claim reads the changed row).
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.db import transaction
from django.db.models import Max, Min, Q, QuerySet
from django.utils import timezone

from core_app.errors import Conflict
from queue_app.extension_checks import job_requirement_keys
from queue_app.models import ANY_SERVER, Job, JobStatus, QueueState
from queue_app.params import requested_loras
from queue_app.services import (
    CANCELLED_DETAILS,
    job_cancel,
    job_get,
    job_models_check,
    job_nudge_on_commit,
)
from queue_app.uploads import INPUT_KEYS, job_inputs_replace
from servers_app.checkpoints import checkpoint_key
from servers_app.models import Server
from servers_app.resolver import lora_key
from servers_app.selectors import server_get

logger = logging.getLogger(__name__)

# The priorities a client may give its jobs (as at submit); an admin's move may go beyond,
# up to the column's limits.
CLIENT_PRIORITY_RANGE = (-100, 100)
PRIORITY_RANGE = (-32768, 32767)

Position = Literal["top", "bottom"]


@dataclass(frozen=True)
class QueuePause:
    """Whether the queue is paused (and since when), and the servers paused one by one."""

    paused_at: datetime | None
    servers: list[Server]

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


def queue_paused_at() -> datetime | None:
    """Since when the whole queue is paused, or None."""
    return QueueState.objects.filter(pk=1).values_list("paused_at", flat=True).first()


def queue_pause_get() -> QueuePause:
    return QueuePause(
        paused_at=queue_paused_at(),
        servers=list(Server.objects.filter(paused_at__isnull=False).order_by("alias")),
    )


def queue_pause() -> QueuePause:
    """Pause the whole queue: running jobs finish, no job starts anywhere until
    `queue_resume`. Pausing a paused queue keeps its first time."""
    with transaction.atomic():
        state, _ = QueueState.objects.select_for_update().get_or_create(pk=1)
        if state.paused_at is None:
            state.paused_at = timezone.now()
            state.save(update_fields=["paused_at"])
            logger.info("Queue paused")
    return queue_pause_get()


def queue_resume() -> QueuePause:
    """Resume the queue and run every server that has work now."""
    from queue_app.tasks import nudge, servers_with_work

    with transaction.atomic():
        resumed = QueueState.objects.filter(pk=1, paused_at__isnull=False).update(paused_at=None)
        if resumed:
            logger.info("Queue resumed")
            transaction.on_commit(lambda: nudge(servers_with_work()))
    return queue_pause_get()


# --- one pending job ------------------------------------------------------------------------


def _not_pending(job: Job) -> Conflict:
    job.refresh_from_db()
    return Conflict(
        f"Job {job.pk} is {job.status}; only a pending job can be changed or moved.",
        code="job_not_pending",
    )


def _change_pending(job: Job, **values: Any) -> Job:
    """Write `values` to `job` if it is still pending (giving back a worker's reservation
    of it); else 409 job_not_pending."""
    updated = Job.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(
        **values, lease_token=None, lease_expires_at=None, updated_at=timezone.now()
    )
    if not updated:
        raise _not_pending(job)
    job.refresh_from_db()
    return job


def _competitors(job: Job, owner: Any | None) -> QuerySet[Job]:
    """The pending jobs `job` is ordered against: for a job of a server, that server's own
    and the "any" jobs (a claim there chooses among both); for an "any" job, every pending
    job. A client's (`owner`) only among its own."""
    jobs = Job.objects.filter(status=JobStatus.PENDING).exclude(pk=job.pk)
    if job.server_id is not None:
        jobs = jobs.filter(Q(server_id=job.server_id) | Q(server__isnull=True))
    if owner is not None:
        jobs = jobs.filter(owner=owner)
    return jobs


def job_move(*, job_id: str | UUID, owner: Any | None, position: Position) -> Job:
    """Move a pending job to the top or the bottom of its queue, by giving it a priority one
    above the highest (or below the lowest) of the jobs it is ordered against
    (`_competitors`). An admin (`owner` None) moves it among everyone's jobs; a client among
    its own, within the priorities a submit allows (so a move gains it nothing a submit
    could not). Alone in its queue, it keeps its priority."""
    job = job_get(job_id=job_id, owner=owner)
    if job.status != JobStatus.PENDING:
        raise _not_pending(job)
    low, high = CLIENT_PRIORITY_RANGE if owner is not None else PRIORITY_RANGE
    bounds = _competitors(job, owner).aggregate(top=Max("priority"), bottom=Min("priority"))
    if position == "top":
        priority = job.priority if bounds["top"] is None else max(job.priority, bounds["top"] + 1)
    else:
        bottom = bounds["bottom"]
        priority = job.priority if bottom is None else min(job.priority, bottom - 1)
    priority = min(max(priority, low), high)
    job = _change_pending(job, priority=priority)
    logger.info("Moved job %s to the %s (priority %d)", job.pk, position, priority)
    return job


def job_edit(
    *,
    job_id: str | UUID,
    owner: Any | None,
    generation_params: dict[str, Any] | None = None,
    priority: int | None = None,
) -> Job:
    """Change a pending job: `generation_params` (validated keys; each replaces the job's,
    the others stay) and/or `priority`. The models are checked as at submit, and the
    scheduler's keys recomputed. 409 job_not_pending once the job has started."""
    job = job_get(job_id=job_id, owner=owner)
    if job.status != JobStatus.PENDING:
        raise _not_pending(job)
    values: dict[str, Any] = {}
    if generation_params is not None:
        params = {**(job.generation_params or {}), **generation_params}
        job_models_check(job.server if job.target_server_alias != ANY_SERVER else None, params)
        values.update(
            generation_params=params,
            checkpoint_key=checkpoint_key(str(params.get("checkpoint_name") or "")),
            lora_keys=sorted({lora_key(name) for name in requested_loras(params)}),
            requirement_keys=job_requirement_keys(params),
            passed_over=0,
        )
    if priority is not None:
        values["priority"] = priority
    if not values:
        return job
    with transaction.atomic():
        if generation_params is not None and INPUT_KEYS & set(generation_params):
            job_inputs_replace(job=job, params=values["generation_params"])
        job = _change_pending(job, **values)
        job_nudge_on_commit(job=job)  # an "any" job may fit elsewhere now
    logger.info("Changed pending job %s (%s)", job.pk, ", ".join(sorted(values)))
    return job


# --- many jobs ------------------------------------------------------------------------------


def jobs_cancel(
    *,
    owner: Any | None,
    server_alias: str | None = None,
    batch: Any | None = None,
    include_processing: bool = False,
) -> int:
    """Cancel the pending jobs of `owner` (None: everyone's), of one server's queue
    (`server_alias`; "any": the jobs waiting for any server), of one `batch`, and with
    `include_processing` the running ones too (interrupted on their servers); returns how
    many were cancelled. Without it this is "cancel all but the current one"."""
    jobs = Job.objects.all()
    if owner is not None:
        jobs = jobs.filter(owner=owner)
    if server_alias == ANY_SERVER:
        jobs = jobs.filter(server__isnull=True, target_server_alias=ANY_SERVER)
    elif server_alias:
        jobs = jobs.filter(server=server_get(alias=server_alias))
    if batch is not None:
        jobs = jobs.filter(batch=batch)
    now = timezone.now()
    cancelled = jobs.filter(status=JobStatus.PENDING).update(
        status=JobStatus.CANCELLED,
        result_details=CANCELLED_DETAILS,
        completed_at=now,
        updated_at=now,
        # A worker's reservation of one of them as its server's next job goes with it.
        lease_token=None,
        lease_expires_at=None,
    )
    if include_processing:
        # One by one: each is interrupted on its server if it is the one running there.
        for job_id in jobs.filter(status=JobStatus.PROCESSING).values_list("pk", flat=True):
            try:
                job_cancel(job_id=job_id, owner=None)
            except Conflict:
                continue  # it finished meanwhile
            cancelled += 1
    logger.info("Cancelled %d job(s)", cancelled)
    return cancelled
