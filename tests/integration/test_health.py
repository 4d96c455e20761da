"""/api/v1/health with real workers and beat: it answers 200 while a worker and beat write
their heartbeats, and 503, saying so, within two heartbeat periods of the last worker dying
or of beat dying."""

import signal
import time
from collections.abc import Iterator

import pytest
from rest_framework.test import APIClient

from tests.integration.conftest import Cluster, running_cluster
from tests.integration.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PERIOD = 0.5  # MOBILESD_WORKER_HEARTBEAT_SECONDS of these workers and of this process
# The time one poll of the health check may take beyond the moment it turns (a request on a
# busy machine): the 503 itself is due two periods after the last beat at the latest.
POLL_SLACK = 0.2


@pytest.fixture(scope="module")
def workers(django_db_setup, tmp_path_factory) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path_factory.mktemp("health"), MOBILESD_WORKER_HEARTBEAT_SECONDS=str(PERIOD)
    ) as cluster:
        yield cluster


@pytest.fixture
def health(workers: Cluster, settings):
    settings.MOBILESD_WORKER_HEARTBEAT_SECONDS = PERIOD
    settings.MEDIA_ROOT = workers.media_root
    client = APIClient()

    def get() -> tuple[int, dict]:
        response = client.get("/api/v1/health")
        return response.status_code, response.json()

    return get


def answering(health, status: int):
    """A probe for wait_until: the answer once it has this status, else None."""

    def probe() -> tuple[int, dict] | None:
        answer = health()
        return answer if answer[0] == status else None

    return probe


def the_503_after_a_death(health, who: str) -> tuple[dict, float]:
    """The 503 health answers once `who` was killed just now, and the seconds it took."""
    died = time.monotonic()
    _, body = wait_until(
        answering(health, 503),
        timeout=10 * PERIOD,
        interval=0.05,
        what=f"a 503 after {who} died",
    )
    return body, time.monotonic() - died


def test_health_goes_503_within_two_periods_of_the_last_worker_dying(workers, health):
    # The database is flushed between tests; a running worker writes its row again.
    _, body = wait_until(
        answering(health, 200),
        timeout=30,
        what="a healthy answer with the worker up",
    )
    assert body["worker"]["ok"] is True
    assert "w1@" in body["worker"]["detail"]
    workers.start_worker("w2")
    wait_until(lambda: "w2@" in health()[1]["worker"]["detail"], timeout=10, what="w2 seen")

    workers.kill_worker("w1")  # one of two: the queue still moves
    assert health()[0] == 200
    workers.kill_worker("w2")  # kill -9: no goodbye, only silence
    body, elapsed = the_503_after_a_death(health, "the last worker")

    assert elapsed <= 2 * PERIOD + POLL_SLACK
    assert body["status"] == "degraded"
    assert body["worker"]["ok"] is False
    assert body["worker"]["detail"].startswith("no worker seen within 1 s")
    assert "silent since" in body["worker"]["detail"]
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True
    assert body["storage"]["ok"] is True


def test_health_goes_503_at_once_when_the_last_worker_stops_cleanly(workers, health):
    if not workers.alive("w1"):
        workers.start_worker("w1")
    wait_until(lambda: health()[0] == 200, timeout=30, what="a healthy answer")

    workers.stop_worker("w1")  # SIGTERM: a warm shutdown marks the worker stopped
    status, body = health()

    assert status == 503
    assert "stopped since" in body["worker"]["detail"]


def test_health_goes_503_within_two_periods_of_beat_dying(workers, health):
    if not workers.alive("w1"):
        workers.start_worker("w1")
    _, body = wait_until(answering(health, 200), timeout=30, what="a healthy answer")
    assert body["beat"]["ok"] is True
    assert body["beat"]["detail"].startswith("1 seen within 1 s: beat@")
    assert workers.beat is not None

    workers.beat.signal(signal.SIGKILL)
    try:
        body, elapsed = the_503_after_a_death(health, "beat")
    finally:
        workers.beat.stop()
        workers.start_beat()  # for the module's other tests

    assert elapsed <= 2 * PERIOD + POLL_SLACK
    assert body["worker"]["ok"] is True
    assert body["beat"]["ok"] is False
    assert body["beat"]["detail"].startswith("no beat seen within 1 s")
    assert "silent since" in body["beat"]["detail"]
