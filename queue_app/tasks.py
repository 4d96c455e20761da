"""Celery tasks of the engine. Messages are only nudges ("look at the queue now"): every
task re-reads the rows, so a lost, repeated or late message is harmless."""

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from integrations.forge.client import ForgeError
from queue_app import dispatch
from queue_app.connections import worker_connections_warm
from queue_app.counts import job_counts_fold
from queue_app.engine import (
    interrupt_if_current,
    make_client,
    server_reserve_again,
    server_run,
    shutting_down,
)
from queue_app.images import delete_image_files, orphan_image_files
from queue_app.models import ANY_SERVER, Job, JobStatus, QueueState
from queue_app.uploads import uploads_remove_unused
from servers_app.models import Server
from servers_app.quarantine import servers_due_for_probe
from servers_app.tasks import check_server

logger = logging.getLogger(__name__)


def nudge(server_ids: Iterable[int], *, countdown: float = 0) -> None:
    """Ask workers to run these servers' queues. Never raises: if the broker is down the
    jobs are safe in the database, and the reconcile task will find them."""
    for server_id in server_ids:
        try:
            run_server.apply_async((server_id,), countdown=countdown)
        except Exception as exc:  # any broker error
            logger.warning("Could not nudge server %s (broker: %s)", server_id, exc)


# A `not_before` further ahead than this is left to the reconcile task, which finds the job
# within MOBILESD_RECONCILE_SECONDS of its time: a message held that long by a worker is
# easily lost (a restart), and would be only a nudge anyway.
RELEASE_NUDGE_MAX_SECONDS = 3600.0


def release_when_due(times: Iterable[datetime]) -> None:
    """Have the queue looked at when each of these times comes (jobs' `not_before`), once per
    distinct time. Never raises, as `nudge`."""
    now = timezone.now()
    for at in sorted(set(times)):
        delay = (at - now).total_seconds()
        if delay > RELEASE_NUDGE_MAX_SECONDS:
            continue
        try:
            release_due_jobs.apply_async(countdown=max(delay, 0.0))
        except Exception as exc:  # any broker error
            logger.warning("Could not schedule the release of jobs due at %s: %s", at, exc)


# Acknowledged on receipt (CELERY_TASK_ACKS_LATE in settings says why): a worker that dies
# mid-job is covered by the job's lease, and the reconcile task nudges its server again.
@shared_task(ignore_result=True)
def run_server(server_id: int) -> None:
    """Run this server's queue until it is empty (or its slots are taken by others)."""
    # A burst of submits sends a nudge each; all but one end here, after one query. A
    # server busy with a loop of this process gets its next job reserved now.
    if not dispatch.server_may_claim(server_id=server_id):
        server_reserve_again(server_id)
        return
    server_run(server_id)


@shared_task(ignore_result=True, time_limit=120)
def interrupt_task(server_id: int, task_id: str, attempts_left: int = 60) -> None:
    """Stop `task_id` on the server if it runs there (a cancelled job or an orphan of a dead
    worker). A task still queued behind others is waited for: it cannot be removed."""
    server = Server.objects.filter(pk=server_id).first()
    if server is None:
        return
    client = make_client(server)
    try:
        if interrupt_if_current(client, task_id):
            return
        try:
            queued = client.progress_for_task(task_id).queued
        except ForgeError:
            return
    finally:
        client.close()
    if queued and attempts_left > 0:
        interrupt_task.apply_async((server_id, task_id, attempts_left - 1), countdown=2)


def servers_with_work(servers: Iterable[Server] | None = None) -> list[int]:
    """Enabled, online, unpaused, unquarantined servers with a free slot and a job they may
    take now, once per free slot (none while the queue is paused).

    Its cost does not grow with the queue: whether a server has a job of its own is an
    EXISTS per server (a probe of its head in the pending jobs' index, which stops at the
    first ready row), likewise whether an "any" job waits; the jobs counted are the running
    ones, at most the servers' slots.
    """
    now = timezone.now()
    if QueueState.objects.filter(paused_at__isnull=False).exists():
        return []
    if servers is None:
        servers = Server.objects.filter(enabled=True, quarantined_at__isnull=True).exclude(
            is_online=False
        )
    servers = [
        s
        for s in servers
        if s.enabled and s.is_online is not False and not s.paused_at and s.quarantined_at is None
    ]
    if not servers:
        return []
    ready = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    # In the select list, so that each server's EXISTS is its own probe (in a WHERE, the
    # planner may join it to every pending job instead).
    own_job = Job.objects.filter(server=OuterRef("pk"), status=JobStatus.PENDING).filter(ready)
    with_own_job = {
        pk
        for pk, has_job in Server.objects.filter(pk__in=[s.pk for s in servers])
        .annotate(has_job=Exists(own_job))
        .values_list("pk", "has_job")
        if has_job
    }
    any_jobs = (
        Job.objects.filter(
            status=JobStatus.PENDING, server__isnull=True, target_server_alias=ANY_SERVER
        )
        .filter(ready)
        .exists()
    )
    running = dict(
        Job.objects.filter(status=JobStatus.PROCESSING, server__in=servers)
        .values_list("server")
        .annotate(n=Count("pk"))
    )
    ids = []
    for server in servers:
        free = server.slots - running.get(server.pk, 0)
        if free > 0 and (server.pk in with_own_job or any_jobs):
            ids.extend([server.pk] * free)
    return ids


def _recover_orphans() -> set[int]:
    """Requeue the jobs of dead workers, stop their orphan tasks and delete the images
    they wrote but never recorded; returns the servers they ran on."""
    servers = set()
    for orphan in dispatch.jobs_recover_expired_leases():
        if orphan.server_id is not None:
            servers.add(orphan.server_id)
            if orphan.task_id:
                interrupt_task.delay(orphan.server_id, orphan.task_id)
        delete_image_files(orphan_image_files(orphan.job_id))
    return servers


@shared_task(ignore_result=True, time_limit=60)
def recover_expired_leases() -> None:
    """Periodic and frequent (one indexed query when no lease lapsed): requeue the jobs of
    dead workers moments after their leases lapse, and run their servers' queues at once,
    so a killed worker costs its server a lease, not a lease and a reconcile period."""
    servers = _recover_orphans()
    if servers:
        nudge(servers_with_work(Server.objects.filter(pk__in=servers)))


@shared_task(ignore_result=True, time_limit=60)
def release_due_jobs() -> None:
    """Sent to arrive at a job's `not_before`: make the jobs whose time has come claimable
    (and fail those past their expiry), and nudge the servers that now have work."""
    dispatch.jobs_release_due()
    nudge(servers_with_work())


@shared_task(ignore_result=True, time_limit=300)
def reconcile() -> None:
    """Re-examine the queue: requeue jobs of dead workers (and stop their orphan tasks),
    fail the pending jobs past their expiry, health-check servers that are due (and
    quarantined ones whose cooldown passed: the probe that brings them back), and nudge
    every server that has work."""
    _recover_orphans()
    dispatch.jobs_release_due()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.MOBILESD_HEALTH_CHECK_SECONDS)
    due = Server.objects.filter(enabled=True).filter(
        Q(is_online__isnull=True)
        | Q(is_online=False)
        | Q(last_checked_at__isnull=True)
        | Q(last_checked_at__lt=stale)
    )
    probe = servers_due_for_probe().values_list("pk", flat=True)
    for server_id in {*due.values_list("pk", flat=True), *probe}:
        check_server.delay(server_id)
    nudge(servers_with_work())


@worker_ready.connect
def _reconcile_on_start(**kwargs: object) -> None:
    """A worker starting up picks up whatever lost messages or a dead worker left."""
    shutting_down.clear()
    reconcile.delay()


# Threads a worker keeps beside its server loops: health checks, notifications, downloads.
SPARE_THREADS = 2


def threads_shortfall_warning(
    *, threads: int, servers: int, whose: str = "This worker has"
) -> str | None:
    """What to tell the operator when workers with `threads` threads (together) serve
    `servers` enabled servers: each server whose queue runs holds a thread for as long as it
    has jobs. None when there are enough."""
    needed = servers + SPARE_THREADS
    if threads >= needed:
        return None
    return (
        f"{whose} {threads} threads for {servers} enabled servers: each server "
        "whose queue runs holds a thread while it has jobs, so with all of them busy the "
        "other servers' jobs, health checks, notifications and downloads wait for a free "
        f"thread. Set WORKER_CONCURRENCY to at least {needed} (the servers + "
        f"{SPARE_THREADS}), or run more workers."
    )


@worker_ready.connect
def _ready_for_the_servers(sender: Any = None, **kwargs: object) -> None:
    """With the enabled servers counted once: a warning when the threads fall short of
    them, and their loops' database connections opened and warmed, on a thread of its own
    (the worker takes jobs meanwhile; queue_app.connections)."""
    threads = getattr(getattr(sender, "controller", None), "concurrency", None)
    if not isinstance(threads, int):
        return
    try:
        servers = Server.objects.filter(enabled=True).count()
    except DatabaseError as exc:  # the worker still starts; the engine retries
        logger.warning("Could not count the servers at start-up: %s", exc)
        return
    warning = threads_shortfall_warning(threads=threads, servers=servers)
    if warning is not None:
        logger.warning(warning)

    def warm() -> None:
        try:
            worker_connections_warm(servers=servers, concurrency=threads)
        except Exception as exc:  # the connections then open as they are needed
            logger.warning("Could not warm the database connections: %s", exc)

    threading.Thread(target=warm, name="mobilesd-warm-connections", daemon=True).start()


@worker_shutting_down.connect
def _stop_claiming(**kwargs: object) -> None:
    """On a warm shutdown, running jobs finish but no queue loop claims another: a long
    queue must not hold the worker (and a deploy) for its whole length."""
    shutting_down.set()


@shared_task(ignore_result=True, time_limit=300)
def fold_job_counts() -> None:
    """Fold the job counts' +1 / -1 rows into one row per key (queue_app/counts.py), so
    that a total sums a few rows. Any number of runs give the same sums."""
    folded = job_counts_fold()
    if folded:
        logger.debug("Folded %d job count rows", folded)


@shared_task(ignore_result=True, time_limit=300)
def remove_unused_uploads() -> None:
    """Remove the uploads no job references, once deleted or unused for the retention
    (queue_app.uploads). Any number of runs remove each once."""
    uploads_remove_unused()
