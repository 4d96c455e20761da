"""A waiting job's place in the queue and when it should start and end.

`job_queue_place` answers for a pending job; the estimates come from the servers' own
measurements (servers_app.performance).

The schedules of the online servers are played out together, each server taking its next
job when a slot of it is free (the earliest first), with the scheduler's own choice
(`scheduling.job_choose_next`: priority, then the checkpoint look-ahead and its bound on
passes, an "any" job only where its checkpoint is) among the head of its queue as a claim
reads it: its own jobs and the "any" jobs, in queue order (`QUEUE_ORDER`). A server's clock
starts with the remaining time of its running job(s) (estimated seconds less the seconds
since they started); each job then takes its estimated seconds, plus a checkpoint load
when the server switches to another checkpoint for it. A job a worker reserved runs first
on its server. The place of a pinned job is the jobs its server starts before it, + 1; of
an "any" job, the "any" jobs started (anywhere) before it, + 1.

Bounded work: per online server, its first MOBILESD_ETA_EXACT_JOBS pending jobs and as
many of the "any" pool are read (a few columns and their parameters); a job deeper than
that counts the jobs ahead with one COUNT and is estimated with the mean seconds of the
jobs played out.

Approximations, documented in README.md: jobs waiting out a retry's backoff count as
ready, and an "any" job's LoRAs are not checked (only its checkpoint); a server not
measured yet runs jobs as fast as the first measured one (a pinned job of such a server
has no ETA); an unmeasured shape or checkpoint is estimated as servers_app.performance
says. A pinned job of a disabled or offline server has its place (the jobs ahead of it in
queue order, + 1) and no ETA; with no measurement at all, no ETA.

The order is QUEUE_ORDER (with `_ahead` and `_queue_order`, its filter and sort key) and
the choice `scheduling.job_choose_next`: a scheduler that changes either changes these.
"""

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from queue_app import scheduling
from queue_app.models import ANY_SERVER, Job, JobStatus, QueueState
from queue_app.params import _to_bool, _to_float, _to_int
from servers_app.checkpoints import checkpoint_key
from servers_app.models import Server, ServerPerformance
from servers_app.performance import Estimator, Work
from servers_app.resolver import ModelLike
from servers_app.selectors import server_checkpoints

__all__ = ["QUEUE_ORDER", "QueuePlace", "job_queue_place", "job_work"]

# The order in which a server's queue is taken, as the claim reads it
# (queue_app.dispatch._QUEUE_HEAD); `_ahead` is the same order as a filter.
QUEUE_ORDER = ("-priority", "turn", "created_at")

# What the schedule needs of a waiting job (owner for a scheduler that takes turns).
_FIELDS = (
    "id",
    "priority",
    "turn",
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
    if job.server_id is None and job.target_server_alias != ANY_SERVER:
        return None
    return _Schedule(job, now or timezone.now()).place()


def _pending() -> QuerySet[Job]:
    return Job.objects.filter(status=JobStatus.PENDING)


def _any_pool() -> QuerySet[Job]:
    return _pending().filter(server__isnull=True, target_server_alias=ANY_SERVER)


def _ahead(job: Job) -> Q:
    """The jobs before `job` in QUEUE_ORDER."""
    return (
        Q(priority__gt=job.priority)
        | Q(priority=job.priority, turn__lt=job.turn)
        | Q(priority=job.priority, turn=job.turn, created_at__lt=job.created_at)
    )


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


class _Schedule:
    """The online servers' schedules played out together until `job` starts."""

    def __init__(self, job: Job, now: datetime) -> None:
        self.job, self.now = job, now
        self.exact = max(int(settings.MOBILESD_ETA_EXACT_JOBS), 1)
        # The servers that may start jobs: a paused or quarantined one starts none (its
        # pinned jobs get a place but no ETA, as an offline one's).
        self.servers = list(
            Server.objects.filter(
                enabled=True, paused_at__isnull=True, quarantined_at__isnull=True
            ).exclude(is_online=False)
        )
        estimators = _estimators(self.servers)
        measured = [e for e in estimators.values() if e.known]
        # A server not measured yet runs "any" jobs as fast as the first one measured.
        fallback = measured[0] if measured else Estimator()
        self.clocks = {
            s.pk: _Clock(s, estimators[s.pk] if estimators[s.pk].known else fallback, now)
            for s in self.servers
        }
        # While the whole queue is paused nothing starts: places, but no ETA.
        queue_paused = QueueState.objects.filter(paused_at__isnull=False).exists()
        self.known = not queue_paused and (
            (estimators[job.server_id].known if job.server_id in estimators else False)
            if job.server_id is not None
            else bool(measured)
        )
        self.own = {
            s.pk: list(
                _pending().filter(server=s).order_by(*QUEUE_ORDER).only(*_FIELDS)[: self.exact]
            )
            for s in self.servers
        }
        self.pool = list(_any_pool().order_by(*QUEUE_ORDER).only(*_FIELDS)[: self.exact])
        self.models: dict[int, Sequence[ModelLike]] = {}

    def place(self) -> QueuePlace:
        job = self.job
        if job.server_id is not None and job.server_id not in self.clocks:
            # Its server is disabled, offline, paused or quarantined: nothing starts there
            # until it is back.
            ahead = _pending().filter(server_id=job.server_id).filter(_ahead(job)).count()
            return QueuePlace(position=ahead + 1, start_seconds=None, end_seconds=None)
        found = self._play()
        if found is None:
            found = self._beyond()
        position, start, end = found
        if not self.known:
            return QueuePlace(position=position, start_seconds=None, end_seconds=None)
        return QueuePlace(
            position=position, start_seconds=round(start, 1), end_seconds=round(end, 1)
        )

    def _counts(self, chosen: Job) -> bool:
        """Whether `chosen` is one of the jobs `job`'s place counts, wherever it started:
        for a pinned job any (the caller counts its server's only), for an "any" job the
        "any" pool's."""
        return self.job.server_id is not None or chosen.server_id is None

    def _play(self) -> tuple[int, float, float] | None:
        """(place, start, end) of `job`, or None when it is not among the jobs read."""
        job, lookahead = self.job, scheduling.lookahead()
        forced = {
            pk: next((j for j in queue if _reserved(j, self.now)), None)
            for pk, queue in self.own.items()
        }
        heap = [(clock.free[0], pk) for pk, clock in self.clocks.items()]
        heapq.heapify(heap)
        started = 0
        # The jobs played out of the queue `job` is counted in (for _beyond).
        self.started_in_queue = 0
        self.played: dict[int, list[float]] = {pk: [] for pk in self.clocks}
        while heap:
            _, pk = heapq.heappop(heap)
            own, clock = self.own[pk], self.clocks[pk]
            window = sorted(own[:lookahead] + self.pool[:lookahead], key=_queue_order)
            window = window[:lookahead]
            chosen = forced.pop(pk, None) or scheduling.job_choose_next(
                candidates=window, loaded=clock.loaded, checkpoints=partial(self._models, pk)
            )
            if chosen is None:
                continue  # nothing it may run: it takes no more of these jobs
            passed = set(scheduling.jobs_passed_over(candidates=window, chosen=chosen))
            for candidate in window:
                if candidate.pk in passed:
                    candidate.passed_over += 1
            queue = own if chosen.server_id is not None else self.pool
            queue.pop(next(i for i, j in enumerate(queue) if j is chosen))
            begin, end = clock.run(chosen)
            if chosen is job or chosen.pk == job.pk:
                return started + 1, begin, end
            if self._counts(chosen) and (job.server_id is None or pk == job.server_id):
                started += 1
            if chosen.server_id == job.server_id:
                self.started_in_queue += 1
            self.played[pk].append(end - begin)
            heapq.heappush(heap, (clock.free[0], pk))
        return None

    def _beyond(self) -> tuple[int, float, float]:
        """Deeper than the jobs read: the jobs ahead counted, at the mean seconds of those
        played out."""
        job = self.job
        if job.server_id is not None:
            clocks = [self.clocks[job.server_id]]
            ahead = _pending().filter(server_id=job.server_id).filter(_ahead(job)).count()
            played = self.played[job.server_id]
        else:
            clocks = list(self.clocks.values())
            ahead = _any_pool().filter(_ahead(job)).count()
            played = [seconds for values in self.played.values() for seconds in values]
        mean = sum(played) / len(played) if played else 0.0
        slots = sum(len(clock.free) for clock in clocks) or 1
        busy = sum(clock.busy_seconds for clock in clocks)
        start = (busy + mean * max(ahead - self.started_in_queue, 0)) / slots
        own = clocks[0].seconds(job) if clocks else None
        return ahead + 1, start, start + (mean if own is None else own)

    def _models(self, pk: int) -> Sequence[ModelLike]:
        if pk not in self.models:
            server = next(s for s in self.servers if s.pk == pk)
            self.models[pk] = server_checkpoints(server=server)
        return self.models[pk]


def _queue_order(job: Job) -> tuple[int, int, datetime]:
    """QUEUE_ORDER as a sort key."""
    return (-job.priority, job.turn, job.created_at)


def _reserved(job: Job, now: datetime) -> bool:
    """A job a worker reserved: it runs next on its server, whatever the order says."""
    return bool(job.lease_token and job.lease_expires_at and job.lease_expires_at > now)
