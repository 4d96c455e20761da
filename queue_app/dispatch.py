"""State changes of the generation engine: claim, heartbeat, complete, release, fail.

The Job row is the truth. Each change here is one transaction whose update is conditional
on the job's status and lease token, so that a second delivery of a message, a worker that
lost its lease, or a cancel racing a completion can never move a job twice:

* claim: pending -> processing, for a free slot of a server, with a fresh lease token.
  The server row is locked (`select_for_update`), which serializes the claims of one
  server across any number of workers and hosts; candidate jobs are locked with
  `skip_locked` so claims for different servers never wait on each other.
* reserve / start reserved: while a job generates, its worker chooses the server's next
  job and reserves it (it stays pending, with the worker's token and an expiry in its
  lease fields); when the running job's images arrive, one statement starts the reserved
  job on the slot the finished one hands over. Nothing else may claim a live reservation.
* heartbeat: renews the lease and writes progress while the job is still ours.
* complete / release / fail: processing -> completed / pending / failed, only with our token.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Field, Q
from django.utils import timezone

from queue_app.models import ANY_SERVER, Job, JobImage, JobStatus
from servers_app.checkpoints import checkpoint_key
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.resolver import resolve

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A job this worker now holds (or has reserved): run it, then complete, release or fail
    it with `token`.

    `job` and `server` are the rows as claimed (the server's read under its lock), so the
    engine need not read them again.
    """

    job: Job
    server: Server
    token: uuid.UUID
    task_id: str

    @property
    def job_id(self) -> uuid.UUID:
        return self.job.pk


def task_id_for(job: Job) -> str:
    """The `force_task_id` sent to the server: the job id, plus the attempt on retries, so
    that an orphan of an earlier attempt is never mistaken for the current one."""
    return str(job.pk) if job.retry_count == 0 else f"{job.pk}.{job.retry_count}"


def _db(name: str, value: Any) -> Any:
    """`value` as the Job field `name` is written to the database."""
    field = Job._meta.get_field(name)
    assert isinstance(field, Field)
    return field.get_db_prep_save(value, connection)


# The engine's statements between two jobs are written in SQL: building them with the ORM
# takes several times longer (in Python, with the GIL shared by every server's loop) than
# the database takes to run them. Only table names are interpolated; values are bound.
_JOB, _SERVER = Job._meta.db_table, Server._meta.db_table

# Pending jobs a server may take now: its own or "any" jobs, not waiting out a backoff,
# not reserved by a worker (or the reservation lapsed).
_ELIGIBLE = (
    "{t}status = %s"
    " AND ({t}server_id = %s OR ({t}server_id IS NULL AND {t}target_server_alias = %s))"
    " AND ({t}next_attempt_at IS NULL OR {t}next_attempt_at <= %s)"
    " AND ({t}lease_token IS NULL OR {t}lease_expires_at < %s)"
)


def _eligible_params(server: Server, now: datetime) -> list[Any]:
    when = _db("next_attempt_at", now)
    return [str(JobStatus.PENDING), server.pk, ANY_SERVER, when, when]


def _window(server: Server, now: datetime, *, lock: bool) -> list[Job]:
    """The head of the server's queue: eligible jobs by priority, then age, as many as the
    scheduler looks ahead. `lock`: lock them, skipping rows another claim has locked (in a
    transaction, on databases with row locks)."""
    locking = (
        " FOR UPDATE SKIP LOCKED" if lock and connection.features.has_select_for_update else ""
    )
    sql = (
        f"SELECT * FROM {_JOB} WHERE {_ELIGIBLE.format(t='')}"  # noqa: S608
        f" ORDER BY priority DESC, created_at ASC LIMIT %s{locking}"
    )
    params = [*_eligible_params(server, now), settings.MOBILESD_SCHEDULER_LOOKAHEAD]
    return list(Job.objects.raw(sql, params))


def _can_run_here(job: Job, server: Server, checkpoints: list[CachedModel]) -> bool:
    """An "any" job runs only where its checkpoint is known to exist."""
    if job.server_id is not None or not job.checkpoint_key:
        return True
    requested = str((job.generation_params or {}).get("checkpoint_name") or "")
    return resolve(requested, checkpoints).model is not None


def _choose(window: list[Job], server: Server, loaded: str) -> Job | None:
    """The job to run next from the head of the queue (priority, then age).

    Prefers, among the jobs of the head's priority, the oldest whose checkpoint is
    `loaded` (the server's, normalized: no switch). The head is passed over at most
    MAX_PASSES times, so nothing starves.
    """
    checkpoints: list[CachedModel] = []
    if any(job.server_id is None for job in window):
        checkpoints = list(server.cached_models.filter(kind=ModelKind.CHECKPOINT))
    runnable = [job for job in window if _can_run_here(job, server, checkpoints)]
    if not runnable:
        return None
    head = runnable[0]
    if not loaded or head.passed_over >= settings.MOBILESD_SCHEDULER_MAX_PASSES:
        return head
    same_priority = [job for job in runnable if job.priority == head.priority]
    for job in same_priority:
        if not job.checkpoint_key or job.checkpoint_key == loaded:
            return job
    return head


def job_claim_next(*, server_id: int, finishing: uuid.UUID | None = None) -> Claim | None:
    """Claim the next job for a free slot of the server, or None (no slot, no job, or the
    server is disabled or offline). Safe to call from any number of workers at once.

    `finishing` is a job of this server that the caller holds and whose generation has
    ended (its images are being stored): its slot counts as free for the caller's claim.
    """
    now = timezone.now()
    with transaction.atomic():
        server = Server.objects.select_for_update().filter(pk=server_id).first()
        if server is None or not server.enabled or server.is_online is False:
            return None
        # Counted in a statement of its own, after the lock is held: a subquery of the
        # locking SELECT would see the snapshot taken before waiting for the lock, and miss
        # the job the previous lock holder just claimed.
        running = (
            Job.objects.filter(server=server, status=JobStatus.PROCESSING)
            .exclude(pk__in=[finishing] if finishing else [])
            .count()
        )
        if running >= server.slots:
            return None
        window = _window(server, now, lock=True)
        job = _choose(window, server, checkpoint_key(server.loaded_checkpoint))
        if job is None:
            return None
        _count_passed_over(window, job)
        token = uuid.uuid4()
        task_id = task_id_for(job)
        claimed = _started(server, token, task_id, now)
        Job.objects.filter(pk=job.pk).update(**claimed)
    for name, value in claimed.items():
        setattr(job, name, value)
    logger.info("Claimed job %s for server %s (task %s)", job.pk, server.alias, task_id)
    return Claim(job=job, server=server, token=token, task_id=task_id)


def _count_passed_over(window: list[Job], chosen: Job) -> None:
    skipped = [other.pk for other in window if other.created_at < chosen.created_at]
    if skipped:
        Job.objects.filter(pk__in=skipped).update(passed_over=F("passed_over") + 1)


def _started(server: Server, token: uuid.UUID, task_id: str, now: datetime) -> dict[str, Any]:
    """The fields of a job that starts now on `server` under the lease `token`."""
    return {
        "status": JobStatus.PROCESSING,
        "server": server,
        "lease_token": token,
        "lease_expires_at": now + timedelta(seconds=settings.MOBILESD_LEASE_SECONDS),
        "started_at": now,
        "updated_at": now,
        "forge_session_hash": task_id,
        "progress": {"fraction": 0.0, "textinfo": "Starting"},
        "next_attempt_at": None,
    }


def commit_without_flush(enabled: bool) -> None:
    """Make this thread's database connection commit without waiting for the disk
    (PostgreSQL's `synchronous_commit = off`), or flush again (`enabled` False).

    For the connections of an engine loop and its reserving thread: their transitions are
    the ones a server waits for between two jobs (claims, reservations, starts, releases
    and fails), and each can be lost in a PostgreSQL crash without harm, as the leases
    recover it: a lost claim or start leaves the job pending, to run again (the images of
    the lost run are discarded, as a job is completed only under its current lease); a
    lost reservation is none; a lost release or fail leaves the job processing until its
    lease lapses and it is requeued. Completions, which record the stored images, are made
    by the storing thread on a connection that flushes as usual.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET synchronous_commit = {'off' if enabled else 'DEFAULT'}")


def job_reserve_next(*, running: Claim) -> Claim | None:
    """Choose, while `running` generates, the job its server runs next, and reserve it.

    The choice is the one a claim would make now, with the running job's checkpoint as the
    loaded one. Only a job of this server is reserved: an "any" job chosen here is left
    for whichever server is free first (the next claim decides). The job stays pending;
    `job_start_reserved` starts it when `running` has finished, or `job_unreserve` gives
    it back. A reservation that is never started lapses after MOBILESD_LEASE_SECONDS.
    """
    server = running.server
    now = timezone.now()
    window = _window(server, now, lock=False)
    loaded = running.job.checkpoint_key or checkpoint_key(server.loaded_checkpoint)
    job = _choose(window, server, loaded)
    if job is None or job.server_id != server.pk:
        return None
    token = uuid.uuid4()
    expires = now + timedelta(seconds=settings.MOBILESD_LEASE_SECONDS)
    sql = (
        f"UPDATE {_JOB} SET lease_token = %s, lease_expires_at = %s"  # noqa: S608
        " WHERE id = %s AND status = %s AND server_id = %s"
        " AND (lease_token IS NULL OR lease_expires_at < %s)"
    )
    params = [
        _db("lease_token", token),
        _db("lease_expires_at", expires),
        _db("id", job.pk),
        str(JobStatus.PENDING),
        server.pk,
        _db("lease_expires_at", now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        reserved = cursor.rowcount == 1
    if not reserved:
        return None  # taken, cancelled or reserved meanwhile: the next claim decides
    _count_passed_over(window, job)
    job.lease_token, job.lease_expires_at = token, expires
    return Claim(job=job, server=server, token=token, task_id=task_id_for(job))


@cache
def _start_reserved_sql(*, row_locks: bool) -> str:
    """The statement that starts a reserved job; see job_start_reserved."""
    # PostgreSQL locks the running job's row; SQLite runs one writer at a time anyway.
    lock = " FOR UPDATE" if row_locks else ""
    return (
        f"UPDATE {_JOB} SET status = %s, server_id = %s, lease_token = %s,"  # noqa: S608
        " lease_expires_at = %s, started_at = %s, updated_at = %s, forge_session_hash = %s,"
        " progress = %s, next_attempt_at = NULL"
        " WHERE id = %s AND status = %s AND lease_token = %s"
        f" AND EXISTS (SELECT 1 FROM {_JOB} WHERE id = %s AND status = %s"
        f" AND lease_token = %s{lock})"
        f" AND EXISTS (SELECT 1 FROM {_SERVER} WHERE id = %s AND enabled"
        " AND (is_online IS NULL OR is_online))"
        f" AND NOT EXISTS (SELECT 1 FROM {_JOB} other WHERE {_ELIGIBLE.format(t='other.')}"
        " AND other.priority > %s)"
    )


def job_start_reserved(*, reserved: Claim, finishing: Claim) -> bool:
    """Start the reserved job on the slot `finishing` hands over (its generation ended,
    its images are being stored). One statement, so the server waits for no more than it.

    Conditions, all in that statement: the job is still pending and reserved by us; the
    finishing job is still processing under our lease, and its row is locked (PostgreSQL)
    so that a cancel, completion or lease recovery of it (each an update of that row) comes
    before or after this statement, never in between, and its slot cannot go to another
    claim at the same time; the server is enabled and not offline; and no job of higher
    priority than the reserved one became eligible for the server meanwhile.

    False, and nothing changed, when any of these does not hold: the caller then gives the
    reservation back and claims as usual.
    """
    job, server = reserved.job, reserved.server
    now = timezone.now()
    started = _started(server, reserved.token, reserved.task_id, now)
    pending, processing = str(JobStatus.PENDING), str(JobStatus.PROCESSING)
    params = [
        processing,
        server.pk,
        _db("lease_token", reserved.token),
        _db("lease_expires_at", started["lease_expires_at"]),
        _db("started_at", now),
        _db("updated_at", now),
        reserved.task_id,
        _db("progress", started["progress"]),
        # the reserved job
        _db("id", reserved.job_id),
        pending,
        _db("lease_token", reserved.token),
        # the finishing job
        _db("id", finishing.job_id),
        processing,
        _db("lease_token", finishing.token),
        # the server
        server.pk,
        # no job of higher priority
        *_eligible_params(server, now),
        job.priority,
    ]
    with connection.cursor() as cursor:
        sql = _start_reserved_sql(row_locks=connection.features.has_select_for_update)
        cursor.execute(sql, params)
        updated = cursor.rowcount
    if updated != 1:
        return False
    for name, value in started.items():
        setattr(job, name, value)
    logger.info("Started reserved job %s on server %s", job.pk, server.alias)
    return True


def job_unreserve(*, reserved: Claim) -> None:
    """Give back a reservation that was not started (the job stays pending)."""
    Job.objects.filter(
        pk=reserved.job_id, status=JobStatus.PENDING, lease_token=reserved.token
    ).update(lease_token=None, lease_expires_at=None)


def server_may_claim(*, server_id: int) -> bool:
    """A cheap, lock-free look (one query): is the server enabled, not offline, with a free
    slot? Lets a redundant nudge end without taking the server's lock."""
    return (
        Server.objects.filter(pk=server_id, enabled=True)
        .exclude(is_online=False)
        .annotate(running=Count("jobs", filter=Q(jobs__status=JobStatus.PROCESSING)))
        .filter(running__lt=F("slots"))
        .exists()
    )


def _ours(claim: Claim) -> Any:
    return Job.objects.filter(pk=claim.job_id, status=JobStatus.PROCESSING, lease_token=claim.token)


def job_heartbeat(*, claim: Claim, progress: dict[str, Any] | None) -> str:
    """Renew the lease (and write progress). Returns "ok", or why the job is no longer
    ours: "cancelled", "lost" (another worker holds it) or "gone" (deleted)."""
    now = timezone.now()
    values: dict[str, Any] = {
        "lease_expires_at": now + timedelta(seconds=settings.MOBILESD_LEASE_SECONDS),
    }
    if progress is not None:
        values["progress"] = progress
        values["updated_at"] = now
    if _ours(claim).update(**values):
        return "ok"
    status = Job.objects.filter(pk=claim.job_id).values_list("status", flat=True).first()
    if status is None:
        return "gone"
    return "cancelled" if status == JobStatus.CANCELLED else "lost"


@dataclass(frozen=True)
class ImageRecord:
    """An image already written to storage, to be recorded with the job's completion."""

    index: int
    name: str
    seed: int | None
    width: int | None
    height: int | None
    infotext: str


def job_complete(
    *, claim: Claim, images: list[ImageRecord], generation_info: dict[str, Any]
) -> bool:
    """Record the images and mark the job completed, if it is still ours.

    False when the job was cancelled, deleted or taken over meanwhile: the caller then
    deletes the files it wrote, so a job's images are stored exactly once.
    """
    now = timezone.now()
    details = {
        "images": [image.name.rsplit("/", 1)[-1] for image in images],
        "info": "Job completed and images downloaded by MobileSD backend.",
        "generation_info": generation_info,
    }
    with transaction.atomic():
        updated = _ours(claim).update(
            status=JobStatus.COMPLETED,
            result_details=details,
            completed_at=now,
            updated_at=now,
            lease_token=None,
            lease_expires_at=None,
            progress={"fraction": 1.0, "textinfo": "Done"},
        )
        if not updated:
            return False
        JobImage.objects.bulk_create(
            JobImage(
                job_id=claim.job_id,
                index=image.index,
                file=image.name,
                seed=image.seed,
                width=image.width,
                height=image.height,
                infotext=image.infotext,
            )
            for image in images
        )
    logger.info("Job %s completed with %d image(s)", claim.job_id, len(images))
    return True


def job_fail(*, claim: Claim, error: str) -> bool:
    """processing -> failed with `result_details.error`, if the job is still ours."""
    now = timezone.now()
    updated = _ours(claim).update(
        status=JobStatus.FAILED,
        result_details={"error": error},
        completed_at=now,
        updated_at=now,
        lease_token=None,
        lease_expires_at=None,
        progress=None,
    )
    if updated:
        logger.warning("Job %s failed: %s", claim.job_id, error)
    return bool(updated)


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff before retry number `attempt` (1, 2, ...)."""
    base = settings.MOBILESD_RETRY_BACKOFF_SECONDS
    return float(min(base * 2 ** max(attempt - 1, 0), settings.MOBILESD_RETRY_BACKOFF_MAX_SECONDS))


def _requeue(
    jobs: Any, *, job: Job, error: str, count_attempt: bool, backoff: bool = True
) -> str | None:
    """Shared by release and lease expiry: back to pending, or failed past the retry limit.

    A counted attempt waits out the backoff unless `backoff` is off (a dead worker is no
    reason to wait). Returns the new status, or None when the job had changed meanwhile.
    """
    now = timezone.now()
    attempt = job.retry_count + (1 if count_attempt else 0)
    cleared: dict[str, Any] = {
        "lease_token": None,
        "lease_expires_at": None,
        "progress": None,
        "updated_at": now,
    }
    if count_attempt and attempt > settings.MOBILESD_MAX_RETRIES:
        updated = jobs.update(
            status=JobStatus.FAILED,
            retry_count=attempt - 1,
            completed_at=now,
            result_details={
                "error": f"Gave up after {attempt} attempts. Last error: {error}",
                "attempts": attempt,
            },
            **cleared,
        )
        return JobStatus.FAILED if updated else None
    delay = backoff_seconds(attempt) if count_attempt and backoff else 0.0
    values = {
        **cleared,
        "status": JobStatus.PENDING,
        "retry_count": attempt,
        "next_attempt_at": now + timedelta(seconds=delay) if delay else None,
        "result_details": {"last_error": error, "retry_in_seconds": delay}
        if count_attempt
        else None,
    }
    if job.target_server_alias == ANY_SERVER:
        values["server"] = None  # free to run elsewhere next time
    updated = jobs.update(**values)
    return JobStatus.PENDING if updated else None


def job_release(*, claim: Claim, error: str, count_attempt: bool) -> str | None:
    """Give a job back to the queue after a failure that may pass.

    `count_attempt`: the job reached the server (counted in retry_count, with backoff); a job
    that never reached it (server offline) goes back without counting.
    """
    job = Job.objects.filter(pk=claim.job_id).first()
    if job is None:
        return None
    status = _requeue(_ours(claim), job=job, error=error, count_attempt=count_attempt)
    if status:
        logger.info("Job %s back to %s: %s", claim.job_id, status, error)
    return status


@dataclass(frozen=True)
class Orphan:
    """A processing job whose worker stopped renewing its lease."""

    job_id: uuid.UUID
    server_id: int | None
    task_id: str | None
    status: str


def jobs_recover_expired_leases() -> list[Orphan]:
    """Requeue (or fail, past the retry limit) every processing job whose lease lapsed.

    The attempt counts in retry_count. Its task may still be running on the server; the
    caller interrupts it there (its images would have gone to the dead worker).
    """
    now = timezone.now()
    recovered = []
    expired = Job.objects.filter(status=JobStatus.PROCESSING, lease_expires_at__lt=now)
    for job in expired:
        with transaction.atomic():
            same = Job.objects.filter(
                pk=job.pk, status=JobStatus.PROCESSING, lease_token=job.lease_token
            )
            status = _requeue(
                same,
                job=job,
                error="The worker running this job stopped.",
                count_attempt=True,
                backoff=False,
            )
        if status:
            logger.warning("Job %s lost its worker; now %s", job.pk, status)
            recovered.append(Orphan(job.pk, job.server_id, job.forge_session_hash, status))
    return recovered
