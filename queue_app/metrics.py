"""The queue's metrics.

From the database at each scrape (`JobCollector`): jobs by status and server, and the
queue wait (started_at - created_at) and run time (completed_at - started_at) of the jobs
started / finished within MOBILESD_METRICS_WINDOW_SECONDS, as gauge histograms. Counted by
the worker as it happens (multiprocess files, core_app.metrics): the dispatch gap (how
long a server loop's server sat idle between an answer and the next request) and
checkpoint switches.
"""

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core_app.metrics import duration_histogram
from queue_app.counts import job_totals_by
from queue_app.models import Job, JobStatus
from servers_app.models import Server

QUEUE_WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
RUN_TIME_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)

DISPATCH_GAP = Histogram(
    "mobilesd_dispatch_gap_seconds",
    "Time a server sat idle between a job's answer and the next job's request "
    "(one server loop of a worker).",
    ["server"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHECKPOINT_SWITCHES = Counter(
    "mobilesd_checkpoint_switches",
    "Generations that made their server load another checkpoint.",
    ["server"],
)
CHECKPOINT_SWITCH_SECONDS = Histogram(
    "mobilesd_checkpoint_switch_seconds",
    "Duration of the generations that loaded another checkpoint (the load and that "
    "generation: Forge does not report the load alone).",
    ["server"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300),
)


def dispatch_gap_observe(*, server: str, seconds: float) -> None:
    DISPATCH_GAP.labels(server=server).observe(seconds)


def checkpoint_switch_observe(*, server: str, seconds: float) -> None:
    CHECKPOINT_SWITCHES.labels(server=server).inc()
    CHECKPOINT_SWITCH_SECONDS.labels(server=server).observe(seconds)


def _server_label() -> Coalesce:
    # A job keeps its target alias when its server is deleted; "any" until one is chosen.
    return Coalesce(F("server__alias"), F("target_server_alias"), Value(""))


class JobCollector(Collector):
    """Jobs by status and server (from the job counts), queue waits and run times (the
    jobs of the window, through the started_at / completed_at indexes)."""

    def collect(self) -> Iterator[GaugeMetricFamily | GaugeHistogramMetricFamily]:
        jobs = GaugeMetricFamily(
            "mobilesd_jobs", "Jobs by status and server.", labels=["status", "server"]
        )
        # From the job counts (queue_app/counts.py), not a count of every job.
        aliases = dict(Server.objects.values_list("pk", "alias"))
        found: dict[tuple[str, str], int] = {}
        for (status, server_id, target), n in job_totals_by(
            "status", "server_id", "target"
        ).items():
            label = aliases.get(server_id, "") if server_id is not None else target
            found[(label, status)] = found.get((label, status), 0) + n
        for server in sorted({label for label, _ in found}):
            for status in JobStatus.values:
                jobs.add_metric([status, server], found.get((server, status), 0))
        yield jobs

        window = settings.MOBILESD_METRICS_WINDOW_SECONDS
        since = timezone.now() - timedelta(seconds=window)
        waits = GaugeHistogramMetricFamily(
            "mobilesd_job_queue_wait_seconds",
            f"Queue wait (created to started) of the jobs started in the last {window:g} s.",
            labels=["server"],
        )
        started = Job.objects.filter(started_at__gte=since).annotate(label=_server_label())
        for labels, buckets, seconds in duration_histogram(
            started,
            start="created_at",
            end="started_at",
            labels=["label"],
            buckets=QUEUE_WAIT_BUCKETS,
        ):
            waits.add_metric(labels, buckets, gsum_value=seconds)
        yield waits

        runs = GaugeHistogramMetricFamily(
            "mobilesd_job_run_seconds",
            f"Run time (started to finished) of the jobs completed or failed in the last "
            f"{window:g} s.",
            labels=["server", "status"],
        )
        finished = Job.objects.filter(
            completed_at__gte=since, status__in=[JobStatus.COMPLETED, JobStatus.FAILED]
        ).annotate(label=_server_label())
        for labels, buckets, seconds in duration_histogram(
            finished,
            start="started_at",
            end="completed_at",
            labels=["label", "status"],
            buckets=RUN_TIME_BUCKETS,
        ):
            runs.add_metric(labels, buckets, gsum_value=seconds)
        yield runs
