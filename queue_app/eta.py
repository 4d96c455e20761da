"""A waiting job's place in the queue and when it should start and end.

`job_queue_place` answers for a pending job; the estimates come from the server's own
measurements (servers_app.performance).

A job pinned to a server: the schedule of that server is played out, with the
scheduler's own choice (`scheduling.job_choose_next`: priority, then the checkpoint
look-ahead and its bound on passes), from the server's loaded checkpoint, over the jobs of
its queue in queue order (`QUEUE_ORDER`). The clock starts with the remaining time of the
running job(s) (estimated seconds less the seconds since they started, each slot its
own); each job then takes its estimated seconds, plus a checkpoint load when the schedule
switches to another checkpoint. Its place is the jobs the schedule starts before it, + 1.

Bounded work: only the first MOBILESD_ETA_EXACT_JOBS jobs of the queue are read (a few
columns and their parameters); a job deeper in it counts the jobs ahead with one COUNT
and is estimated with the mean seconds (loads included) of those played out.

Approximations, documented in README.md:
* "any" jobs, which whichever server is free first takes, are shared out evenly: a pinned
  job counts the "any" jobs ahead of it (queue order) divided by the online servers, each
  taking as long as the job itself; jobs waiting out a retry's backoff count as ready.
* An "any" job's place is among the "any" jobs ahead of it, + 1; its start is the work
  ahead of it on all online servers with an estimate (their running jobs, their own jobs
  ahead of it in queue order at the mean seconds of the "any" jobs, the "any" jobs ahead)
  divided by their number, without checkpoint loads.
* No measurement yet on the server(s), or a pinned job's server disabled or offline: the
  place is given, the ETA is None.
"""

import heapq
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from queue_app import scheduling
from queue_app.models import ANY_SERVER, Job, JobStatus
from queue_app.params import _to_bool, _to_float, _to_int
from servers_app.checkpoints import checkpoint_key
from servers_app.models import Server, ServerPerformance
from servers_app.performance import Estimator, Work

__all__ = ["QUEUE_ORDER", "QueuePlace", "job_queue_place", "job_work"]

# The order in which a server's queue is taken, as the claim reads it
# (queue_app.dispatch._QUEUE_HEAD); `_ahead` is the same order as a filter.
QUEUE_ORDER = ("-priority", "created_at")

# What the schedule needs of a waiting job (owner for a scheduler that takes turns).
_FIELDS = (
    "id",
    "priority",
    "created_at",
    "checkpoint_key",
    "passed_over",
    "server_id",
    "owner_id",
    "generation_params",
    "lease_token",
    "lease_expires_at",
)

_DEFAULT_HIRES_SCALE = 2.0  # A1111's hr_scale when none is sent


@dataclass(frozen=True)
class QueuePlace:
    """`position`: 1 = the next job to start; the seconds from now to its start and end
    (None: no measurement to estimate them from)."""

    position: int
    start_seconds: float | None
    end_seconds: float | None


def job_work(params: dict[str, Any] | None) -> Work:
    """What a job's `generation_params` ask the server to compute, with the server's
    defaults where they say nothing (512x512, 20 steps, 1 image; hires x2, as many steps)."""
    params = params or {}

    def positive(key: str, default: int) -> int:
        value = _to_int(params.get(key))
        return value if value is not None and value > 0 else default

    steps = positive("steps", 20)
    hires = bool(_to_bool(params.get("enable_hires_fix")))
    scale = _to_float(params.get("hires_scale")) if hires else None
    return Work(
        width=positive("width", 512),
        height=positive("height", 512),
        steps=steps,
        images=positive("num_images", 1),
        hires_scale=(scale if scale is not None and scale >= 1.0 else _DEFAULT_HIRES_SCALE)
        if hires
        else None,
        hires_steps=positive("hires_steps", steps) if hires else 0,
    )


def job_queue_place(*, job: Job, now: datetime | None = None) -> QueuePlace | None:
    """The place and ETA of a pending job (None for any other status)."""
    if job.status != JobStatus.PENDING:
        return None
    now = now or timezone.now()
    if job.server_id is not None:
        return _pinned_place(job, now)
    if job.target_server_alias == ANY_SERVER:
        return _any_place(job, now)
    return None


def _pending() -> QuerySet[Job]:
    return Job.objects.filter(status=JobStatus.PENDING)


def _any_pool() -> QuerySet[Job]:
    return _pending().filter(server__isnull=True, target_server_alias=ANY_SERVER)


def _ahead(job: Job) -> Q:
    """The jobs before `job` in QUEUE_ORDER."""
    return Q(priority__gt=job.priority) | Q(priority=job.priority, created_at__lt=job.created_at)


def _estimators(servers: list[Server]) -> dict[int, Estimator]:
    rows = ServerPerformance.objects.filter(server__in=servers)
    by_server = {row.server_id: row for row in rows}
    return {server.pk: Estimator.of(by_server.get(server.pk)) for server in servers}


class _Clock:
    """The slots of one server: when each is free, in seconds from now."""

    def __init__(self, server: Server, estimator: Estimator, now: datetime) -> None:
        self.estimator = estimator
        self.known = estimator.known
        self.loaded = checkpoint_key(server.loaded_checkpoint)
        running = Job.objects.filter(server=server, status=JobStatus.PROCESSING).only(
            "generation_params", "checkpoint_key", "started_at"
        )
        self.free = [0.0] * max(server.slots, 1)
        for job in running:
            seconds = self.seconds(job) or 0.0
            if job.started_at is not None:
                seconds -= (now - job.started_at).total_seconds()
            slot = heapq.heappop(self.free)
            heapq.heappush(self.free, slot + max(seconds, 0.0))
            self.loaded = job.checkpoint_key or self.loaded
        heapq.heapify(self.free)

    def seconds(self, job: Job) -> float | None:
        """The job's seconds here, its checkpoint load included if it needs one."""
        run = self.estimator.run_seconds(job_work(job.generation_params))
        if run is None:
            return None
        key = job.checkpoint_key
        return run + (self.estimator.load_seconds(key) if key and key != self.loaded else 0.0)

    def run(self, job: Job) -> tuple[float, float]:
        """Start `job` on the first free slot: (start, end)."""
        start = heapq.heappop(self.free)
        seconds = self.seconds(job) or 0.0
        self.loaded = job.checkpoint_key or self.loaded
        heapq.heappush(self.free, start + seconds)
        return start, start + seconds

    @property
    def busy_seconds(self) -> float:
        """The work of the slots, summed (the server's remaining time times its slots)."""
        return sum(self.free)


def _pinned_place(job: Job, now: datetime) -> QueuePlace | None:
    server = Server.objects.filter(pk=int(job.server_id or 0)).first()
    if server is None:
        return None
    exact = max(int(settings.MOBILESD_ETA_EXACT_JOBS), 1)
    queue = list(_pending().filter(server=server).order_by(*QUEUE_ORDER).only(*_FIELDS)[:exact])
    # A job a worker reserved runs next, whatever the order says.
    reserved = [
        j for j in queue if j.lease_token and j.lease_expires_at and j.lease_expires_at > now
    ]
    forced = forced_job = reserved[0] if reserved else None
    online = Server.objects.filter(enabled=True).exclude(is_online=False).count()
    any_ahead = _any_pool().filter(_ahead(job)).count() / max(online, 1)

    clock = _Clock(server, _estimators([server])[server.pk], now)
    if not server.enabled or server.is_online is False:
        clock.known = False  # nothing starts there until it is back: no ETA
    lookahead = scheduling.lookahead()
    started = 0
    played = 0.0
    while queue:
        window = queue[:lookahead]
        chosen = forced or scheduling.job_choose_next(
            candidates=window, loaded=clock.loaded, checkpoints=lambda: ()
        )
        chosen, forced = chosen or window[0], None
        passed = set(scheduling.jobs_passed_over(candidates=window, chosen=chosen))
        for candidate in window:
            if candidate.pk in passed:
                candidate.passed_over += 1
        # By identity, and within the window (a model's == is slow, and a list's remove
        # would compare the whole queue).
        if chosen is forced_job:
            queue = [j for j in queue if j is not chosen]
        else:
            del queue[next(i for i, j in enumerate(window) if j is chosen)]
        start, end = clock.run(chosen)
        if chosen.pk == job.pk:
            return _place(clock, started + 1 + round(any_ahead), start, end, any_ahead)
        started += 1
        played += end - start
    # Deeper than the jobs played out: the rest ahead of it at their mean seconds.
    ahead = _pending().filter(server=server).filter(_ahead(job)).count()
    mean = played / started if started else 0.0
    slots = len(clock.free)
    start = (clock.busy_seconds + mean * max(ahead - started, 0)) / slots
    own = clock.seconds(job) or mean
    return _place(clock, ahead + 1 + round(any_ahead), start, start + own, any_ahead)


def _place(clock: _Clock, position: int, start: float, end: float, any_ahead: float) -> QueuePlace:
    if not clock.known:
        return QueuePlace(position=position, start_seconds=None, end_seconds=None)
    # The "any" jobs ahead, this server's share of them, at its mean job's seconds.
    share = any_ahead * (end - start if end > start else 0.0)
    return QueuePlace(
        position=position, start_seconds=round(start + share, 1), end_seconds=round(end + share, 1)
    )


def _any_place(job: Job, now: datetime) -> QueuePlace:
    exact = max(int(settings.MOBILESD_ETA_EXACT_JOBS), 1)
    ahead_query = _any_pool().filter(_ahead(job))
    ahead = ahead_query.count()
    sample = list(ahead_query.order_by(*QUEUE_ORDER).only(*_FIELDS)[:exact])
    servers = list(Server.objects.filter(enabled=True).exclude(is_online=False))
    estimators = _estimators(servers)
    known = [server for server in servers if estimators[server.pk].known]
    if not known:
        return QueuePlace(position=ahead + 1, start_seconds=None, end_seconds=None)
    work = 0.0
    own_seconds = []
    for server in known:
        clock = _Clock(server, estimators[server.pk], now)
        work += clock.busy_seconds / len(clock.free)
        estimates = [clock.estimator.run_seconds(job_work(j.generation_params)) for j in sample]
        per_job = _mean([e for e in estimates if e is not None]) or (
            clock.estimator.run_seconds(job_work(job.generation_params)) or 0.0
        )
        work += per_job * ahead / len(known)  # its share of the "any" jobs ahead
        own_ahead = _pending().filter(server=server).filter(_ahead(job)).count()
        work += per_job * own_ahead
        own_seconds.append(clock.estimator.run_seconds(job_work(job.generation_params)) or 0.0)
    start = work / len(known)
    end = start + (_mean(own_seconds) or 0.0)
    return QueuePlace(position=ahead + 1, start_seconds=round(start, 1), end_seconds=round(end, 1))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
