"""Webhooks with real Celery workers and beat (PostgreSQL + Redis), a Forge simulator and a
real receiver in this process that checks every signature with the specification's
algorithm (tests/notifications_app/receiver.py):

- a real job's end reaches its endpoint and its callback_url within moments of its commit
  (the workers' LISTEN thread runs the fan-out; beat's poll is set far slower here);
- two 500s then a 200: delivered on the third try, after the growing delays of the setting,
  by the workers' scheduled retries;
- a worker killed with `kill -9` while the receiver holds its request: the delivery is
  taken again by another worker once its lease lapses, with the same webhook-id.
"""

import time
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from model_bakery import baker
from rest_framework.test import APIClient

from core_app.scopes import local_user
from notifications_app.models import DeliveryState, WebhookDelivery
from notifications_app.webhook_services import (
    webhook_endpoint_create,
    webhook_signing_secret_rotate,
)
from queue_app.models import Job, JobStatus
from queue_app.services import job_submit
from servers_app.models import Server
from tests.integration.conftest import SHORT_PERIODS, Cluster, running_cluster
from tests.integration.procs import wait_until
from tests.integration.test_engine import wait_finished
from tests.notifications_app.receiver import HOLD, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

POLL_SECONDS = 5.0
LEASE_SECONDS = 3.0
WEBHOOK_SETTINGS = {
    **SHORT_PERIODS,
    "MOBILESD_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "MOBILESD_WEBHOOK_RETRY_SECONDS": "0.5,1.5",
    "MOBILESD_WEBHOOK_CONNECT_TIMEOUT": "0.5",
    "MOBILESD_WEBHOOK_READ_TIMEOUT": "2",
    "MOBILESD_WEBHOOK_LEASE_SECONDS": str(LEASE_SECONDS),
    # Slow on purpose: a delivery within moments comes from the workers' LISTEN thread.
    "MOBILESD_NOTIFY_POLL_SECONDS": str(POLL_SECONDS),
}


@pytest.fixture(scope="module")
def hooks_cluster(django_db_setup, tmp_path_factory) -> Iterator[Cluster]:
    # The workers sign the payloads' image links with the SECRET_KEY this process (standing
    # in for the web server) checks them with, as web and workers share it in production.
    with running_cluster(
        tmp_path_factory.mktemp("webhooks"),
        DJANGO_SECRET_KEY=django_settings.SECRET_KEY,
        **WEBHOOK_SETTINGS,
    ) as cluster:
        yield cluster


@pytest.fixture
def cluster(hooks_cluster: Cluster, settings, request) -> Iterator[Cluster]:
    settings.MEDIA_ROOT = hooks_cluster.media_root
    if not hooks_cluster.alive("w1"):
        hooks_cluster.start_worker("w1")
    yield hooks_cluster
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(hooks_cluster.logs())
    for name in list(hooks_cluster.workers):
        if name != "w1":
            hooks_cluster.stop_worker(name)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.stop()


def submit(alias: str, *, callback_url: str = "") -> Job:
    params = {"positive_prompt": "a lighthouse at dusk", "steps": 4, "width": 64, "height": 64}
    job, _ = job_submit(
        owner=local_user(),
        target_server_alias=alias,
        generation_params=params,
        callback_url=callback_url,
    )
    return job


def test_a_real_jobs_end_reaches_its_endpoint_and_callback_url_signed(cluster, sims, receiver):
    sim = sims()
    baker.make(Server, alias="hook-laptop", api_url=sim.url)
    owner = local_user()
    endpoint = webhook_endpoint_create(
        owner=owner,
        is_admin=True,
        url=receiver.url_for("endpoint"),
        event_types=["job.completed"],
    )
    secret = webhook_signing_secret_rotate(owner=owner).secret

    job = submit("hook-laptop", callback_url=receiver.url_for("callback"))
    (done,) = wait_finished([job], timeout=30)
    assert done.status == JobStatus.COMPLETED
    got = wait_until(
        lambda: (r := receiver.requests()) and len(r) >= 2 and r,
        timeout=POLL_SECONDS,
        what="the endpoint's and the callback's deliveries",
    )

    receiver.assert_all_signed(endpoint.secret, path="/endpoint")
    receiver.assert_all_signed(secret, path="/callback")
    assert sorted(r.path for r in got) == ["/callback", "/endpoint"]
    for received in got:
        body = received.json
        assert body["type"] == "job.completed"
        assert body["data"]["mobilesd_job_id"] == str(job.pk)
        assert body["data"]["status"] == "completed"
        (image,) = body["data"]["image_links"]
        assert image["index"] == 0
        # Signed: a receiver opens them without an API key.
        for link in (image["url"], image["thumbnail_url"]):
            opened = APIClient().get(link)
            assert opened.status_code == 200, link
            assert opened["Content-Type"].startswith("image/")
        # The fan-out ran on the commit's notification, not at beat's poll.
        assert received.wall - done.completed_at.timestamp() < POLL_SECONDS / 2
    assert got[0].webhook_id != got[1].webhook_id


def test_two_500s_then_200_are_retried_by_the_workers_with_growing_delays(cluster, sims):
    receiver = Receiver(plan=[500, 500])
    try:
        sim = sims()
        baker.make(Server, alias="hook-retry", api_url=sim.url)
        endpoint = webhook_endpoint_create(
            owner=local_user(), is_admin=True, url=receiver.url, event_types=["job.completed"]
        )
        wait_finished([submit("hook-retry")], timeout=30)

        first, second, third = wait_until(
            lambda: (r := receiver.requests()) and len(r) >= 3 and r,
            timeout=20,
            what="three tries",
        )
        receiver.assert_all_signed(endpoint.secret)
        delivery = wait_until(
            lambda: WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).first(),
            timeout=10,
            what="the delivery to be marked delivered",
        )
    finally:
        receiver.stop()
    assert first.webhook_id == second.webhook_id == third.webhook_id == delivery.message_id
    gaps = (second.at - first.at, third.at - second.at)
    assert gaps[0] >= 0.5, gaps
    assert gaps[1] >= 1.5, gaps
    assert gaps[1] > gaps[0]
    assert [a.status_code for a in delivery.tries.all()] == [500, 500, 200]
    assert len(receiver.requests()) == 3


def test_a_worker_killed_mid_delivery_leaves_it_to_another_with_the_same_webhook_id(cluster, sims):
    receiver = Receiver(plan=[HOLD])
    try:
        sim = sims()
        baker.make(Server, alias="hook-kill", api_url=sim.url)
        endpoint = webhook_endpoint_create(
            owner=local_user(), is_admin=True, url=receiver.url, event_types=["job.completed"]
        )
        wait_finished([submit("hook-kill")], timeout=30)
        (held,) = wait_until(receiver.requests, timeout=10, what="the first try")

        assert cluster.kill_worker("w1") == -9
        killed_at = time.monotonic()
        cluster.start_worker("w2")
        got = wait_until(
            lambda: (r := receiver.requests()) and len(r) >= 2 and r,
            timeout=LEASE_SECONDS + POLL_SECONDS + 20,
            what="the delivery taken again",
        )
        receiver.assert_all_signed(endpoint.secret)
        delivery = wait_until(
            lambda: WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).first(),
            timeout=10,
            what="the delivery to be marked delivered",
        )
    finally:
        receiver.stop()
    again = got[1]
    assert again.webhook_id == held.webhook_id == delivery.message_id
    assert again.at - killed_at >= LEASE_SECONDS - 1  # not before the lease lapsed
    lost, sent = delivery.tries.all()
    assert lost.status_code is None
    assert "stopped" in lost.error
    assert sent.status_code == 200
    assert "Webhook" in cluster.workers["w2"].output()
