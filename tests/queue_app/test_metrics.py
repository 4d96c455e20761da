"""The queue's metrics at GET /metrics: what the database holds, and what workers saw."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from model_bakery import baker

from queue_app import metrics
from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.metrics_support import scrape

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token"


@pytest.fixture
def scraper(settings) -> Client:
    settings.MOBILESD_METRICS_TOKEN = TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


def test_jobs_by_status_and_server_equal_the_databases_counts(scraper):
    laptop = baker.make(Server, alias="Laptop")
    desktop = baker.make(Server, alias="Desktop")
    for server, counts in ((laptop, [3, 1, 4, 1, 5]), (desktop, [2, 1, 6, 5, 3])):
        for status, count in zip(JobStatus.values, counts, strict=True):
            baker.make(
                Job,
                server=server,
                target_server_alias=server.alias,
                status=status,
                generation_params={},
                _quantity=count,
            )
    baker.make(Job, server=None, target_server_alias="any", generation_params={}, _quantity=2)

    samples = scrape(scraper)

    for server in ("Laptop", "Desktop"):
        for status in JobStatus.values:
            expected = Job.objects.filter(server__alias=server, status=status).count()
            assert samples[("mobilesd_jobs", labels(status=status, server=server))] == expected
    assert samples[("mobilesd_jobs", labels(status="pending", server="any"))] == 2
    assert samples[("mobilesd_jobs", labels(status="failed", server="any"))] == 0
    scraped_total = sum(v for (name, _), v in samples.items() if name == "mobilesd_jobs")
    assert scraped_total == Job.objects.count()


def test_queue_wait_histogram_counts_the_jobs_started_within_the_window(scraper, settings):
    settings.MOBILESD_METRICS_WINDOW_SECONDS = 600
    server = baker.make(Server, alias="Laptop")
    now = timezone.now()
    for wait, started_ago in ((0.3, 10), (4.0, 20), (45.0, 30), (3.0, 3600)):
        job = baker.make(
            Job,
            server=server,
            target_server_alias="Laptop",
            status=JobStatus.PROCESSING,
            generation_params={},
            started_at=now - timedelta(seconds=started_ago),
        )
        # created_at is auto_now_add: set after the insert.
        Job.objects.filter(pk=job.pk).update(created_at=job.started_at - timedelta(seconds=wait))

    samples = scrape(scraper)

    def bucket(le: str) -> float:
        return samples[("mobilesd_job_queue_wait_seconds_bucket", labels(server="Laptop", le=le))]

    # The job started an hour ago is outside the window.
    assert bucket("0.5") == 1
    assert bucket("5.0") == 2
    assert bucket("30.0") == 2
    assert bucket("60.0") == 3
    assert bucket("+Inf") == 3
    assert samples[("mobilesd_job_queue_wait_seconds_gcount", labels(server="Laptop"))] == 3
    gsum = samples[("mobilesd_job_queue_wait_seconds_gsum", labels(server="Laptop"))]
    assert gsum == pytest.approx(49.3)


def test_run_time_histogram_counts_completed_and_failed_jobs_by_status(scraper):
    server = baker.make(Server, alias="Laptop")
    now = timezone.now()
    for status, seconds in (
        (JobStatus.COMPLETED, 1.5),
        (JobStatus.COMPLETED, 8.0),
        (JobStatus.FAILED, 0.2),
        (JobStatus.CANCELLED, 3.0),  # not a run time: the job was stopped
    ):
        baker.make(
            Job,
            server=server,
            target_server_alias="Laptop",
            status=status,
            generation_params={},
            started_at=now - timedelta(seconds=seconds),
            completed_at=now,
        )

    samples = scrape(scraper)

    completed = labels(server="Laptop", status="completed")
    assert samples[("mobilesd_job_run_seconds_bucket", completed | {("le", "2.0")})] == 1
    assert samples[("mobilesd_job_run_seconds_bucket", completed | {("le", "10.0")})] == 2
    assert samples[("mobilesd_job_run_seconds_gsum", completed)] == pytest.approx(9.5)
    failed = labels(server="Laptop", status="failed")
    assert samples[("mobilesd_job_run_seconds_gcount", failed)] == 1
    cancelled = labels(server="Laptop", status="cancelled")
    assert ("mobilesd_job_run_seconds_gcount", cancelled) not in samples


def test_dispatch_gaps_and_checkpoint_switches_a_worker_counts_are_scraped(scraper):
    # The worker's counts live in the multiprocess files: the scrape reads them whichever
    # process wrote them (here this one).
    alias = f"gap-{timezone.now().timestamp()}"
    metrics.dispatch_gap_observe(server=alias, seconds=0.015)
    metrics.dispatch_gap_observe(server=alias, seconds=0.3)
    metrics.checkpoint_switch_observe(server=alias, seconds=7.0)

    samples = scrape(scraper)

    gaps = labels(server=alias)
    assert samples[("mobilesd_dispatch_gap_seconds_count", gaps)] == 2
    assert samples[("mobilesd_dispatch_gap_seconds_bucket", gaps | {("le", "0.02")})] == 1
    assert samples[("mobilesd_dispatch_gap_seconds_sum", gaps)] == pytest.approx(0.315)
    assert samples[("mobilesd_checkpoint_switches_total", gaps)] == 1
    assert samples[("mobilesd_checkpoint_switch_seconds_sum", gaps)] == pytest.approx(7.0)
