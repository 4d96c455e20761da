"""The workers' trigger of the fan-out on PostgreSQL: a thread LISTENing for new events runs
it at once, so a delivery exists within moments of its event's commit, with no poll."""

import time

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from model_bakery import baker

from events_app.stream import _listen_conninfo
from notifications_app.fanout import notifications_fanout
from notifications_app.listener import FanoutListener
from notifications_app.models import WebhookDelivery, WebhookEndpoint
from notifications_app.webhook_services import webhook_endpoint_create
from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.integration.procs import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's"),
]


def job_with_an_endpoint() -> Job:
    """A job of a user whose webhook endpoint wants `job.completed`."""
    owner = get_user_model().objects.create(username="ann")
    webhook_endpoint_create(
        owner=owner, is_admin=False, url="http://127.0.0.1:9/hook", event_types=["job.completed"]
    )
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")
    return baker.make(
        Job, owner=owner, server=server, target_server_alias="Laptop", generation_params={}
    )


def test_a_committed_event_is_handed_on_at_once_by_the_listener(loopback_allowed):
    job = job_with_an_endpoint()
    listener = FanoutListener()
    listener.start()
    try:
        wait_until(lambda: listener.fanouts >= 1, timeout=10, what="the listener's first round")
        committed = time.monotonic()
        Job.objects.filter(pk=job.pk).update(
            status=JobStatus.COMPLETED, completed_at=timezone.now()
        )

        delivery = wait_until(
            lambda: WebhookDelivery.objects.filter(event_type="job.completed").first(),
            timeout=5,
            interval=0.01,
            what="the delivery",
        )
        took = time.monotonic() - committed
    finally:
        listener.stop()
    assert delivery.job_id == job.pk
    assert took < 1.0, took
    assert not listener.is_alive()


def test_a_fanout_facing_a_locked_table_gives_up_at_once_and_hands_the_events_on_later(
    loopback_allowed,
):
    """A TRUNCATE or ALTER (a migration, a test's flush) locks tables one after another: a
    fan-out holding some of them while it waits for another would deadlock with it. It waits
    at most LOCK_TIMEOUT, then leaves the events to the next round."""
    job = job_with_an_endpoint()
    Job.objects.filter(pk=job.pk).update(status=JobStatus.COMPLETED, completed_at=timezone.now())
    endpoints = connection.ops.quote_name(WebhookEndpoint._meta.db_table)
    with psycopg.connect(_listen_conninfo()) as other:
        other.execute(f"LOCK TABLE {endpoints} IN ACCESS EXCLUSIVE MODE")  # held until exit
        started = time.monotonic()
        handed = notifications_fanout()
        waited = time.monotonic() - started
        assert handed == 0
        assert not WebhookDelivery.objects.exists()
        assert waited < 1.0, "given up before PostgreSQL's deadlock check (1 s)"
    assert notifications_fanout() >= 1
    assert WebhookDelivery.objects.filter(event_type="job.completed").count() == 1
