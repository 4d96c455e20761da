"""Push notifications for real (#15 point 3): a Celery worker runs a job on a Forge
simulator; once it completes, the notification of its owner's Apprise target
`ntfy://127.0.0.1:<port>/<topic>` reaches the local ntfy-compatible receiver, with the
server, the time, a link and the thumbnail attached; so does a finished batch, with its
counts; a failing receiver is tried again; a send whose worker is killed (`kill -9`) is
sent again once its lease lapses.

Nothing here calls the push code: the job's events reach it as in production, through the
worker's fan-out from the event log (its LISTEN thread on PostgreSQL), which makes the
outbox rows that the worker then sends.
"""

import ipaddress
from collections.abc import Iterator

import pytest
from django.db import transaction
from model_bakery import baker

from integrations.ntfy.simulator import NtfySimulator
from notifications_app.models import PushMessage
from notifications_app.push import notify_user
from notifications_app.push_services import push_target_create
from queue_app.batches import batch_submit
from queue_app.models import FINISHED_STATUSES, Job, JobStatus
from queue_app.services import job_submit
from servers_app.models import Server
from tests.integration.conftest import SHORT_PERIODS, Cluster, running_cluster
from tests.integration.procs import wait_until
from tests.notifications_app.push_support import user

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PUBLIC_URL = "http://mobilesd.test:8000"


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory) -> Iterator[Cluster]:
    """The engine's cluster, allowed to deliver to this machine, with quick push retries."""
    with running_cluster(
        tmp_path_factory.mktemp("push"),
        **SHORT_PERIODS,
        MOBILESD_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
        MOBILESD_PUBLIC_URL=PUBLIC_URL,
        MOBILESD_PUSH_RETRY_SECONDS="0.5,0.5",
        MOBILESD_PUSH_RECOVERY_SECONDS="1",
        MOBILESD_PUSH_LEASE_SECONDS="3",
    ) as engine_cluster:
        yield engine_cluster


@pytest.fixture
def ntfy(settings) -> Iterator[NtfySimulator]:
    settings.MOBILESD_WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.MOBILESD_PUBLIC_URL = PUBLIC_URL
    sim = NtfySimulator().start()
    yield sim
    sim.stop()


def test_a_completed_job_is_pushed_to_the_ntfy_receiver_with_its_thumbnail(engine, sims, ntfy):
    ada, bob = user("ada"), user("bob")
    push_target_create(
        owner=ada, name="Ada's phone", url=ntfy.apprise_url("ada"), events=["job.completed"]
    )
    push_target_create(
        owner=bob, name="Bob's phone", url=ntfy.apprise_url("bob"), events=["job.completed"]
    )
    sim = sims(seconds_per_step=0.02)
    server = baker.make(Server, alias="push-laptop", api_url=sim.url)
    params = {"positive_prompt": "a lighthouse at dusk", "steps": 5, "width": 256, "height": 256}
    job, _ = job_submit(owner=ada, target_server_alias=server.alias, generation_params=params)
    finished = wait_until(
        lambda: Job.objects.filter(pk=job.pk, status__in=FINISHED_STATUSES).first(),
        timeout=30,
        what="the job to finish",
    )
    assert finished.status == JobStatus.COMPLETED

    (received,) = ntfy.wait_for(lambda messages: bool(messages), timeout=20)
    assert received.topic == "ada"
    assert received.title == "Done: a lighthouse at dusk"
    facts, link = received.message.splitlines()
    assert facts.startswith("push-laptop · ")
    assert facts.endswith(" · 1 image")
    # The first image, by a signed link that opens without an API key.
    assert link.startswith(f"{PUBLIC_URL}/api/v1/queue/jobs/{job.pk}/images/0?exp=")
    assert "&sig=" in link
    assert received.attachment_name == f"{job.pk.hex[:8]}.jpg"
    assert received.attachment[:3] == b"\xff\xd8\xff"
    wait_until(
        lambda: PushMessage.objects.filter(state="sent").exists(),
        timeout=10,
        what="the outbox row recorded as sent",
    )
    assert not ntfy.messages("bob")


def test_a_finished_batch_is_pushed_with_its_counts(engine, sims, ntfy):
    ada = user("ada")
    push_target_create(
        owner=ada, name="Ada's phone", url=ntfy.apprise_url("ada"), events=["batch.finished"]
    )
    sim = sims(seconds_per_step=0.02)
    server = baker.make(Server, alias="push-laptop", api_url=sim.url)
    batch, job_ids, _ = batch_submit(
        owner=ada,
        target_server_alias=server.alias,
        generation_params={"positive_prompt": "a lighthouse", "steps": 3, "width": 64},
        items=[{"seed": 1}, {"seed": 2}],
        name="Lighthouses",
    )
    wait_until(
        lambda: Job.objects.filter(pk__in=job_ids, status=JobStatus.COMPLETED).count() == 2,
        timeout=30,
        what="the batch's jobs to complete",
    )

    (received,) = ntfy.wait_for(lambda messages: bool(messages), timeout=20)
    assert received.title == "Batch done: Lighthouses"
    tally, facts, link = received.message.splitlines()
    assert tally == "2 completed"
    assert facts.startswith("push-laptop · ")
    assert link == f"{PUBLIC_URL}/admin/queue_app/batch/{batch.pk}/change/"
    assert not received.attachment_name


def test_a_failing_receiver_is_tried_again_by_the_worker(engine, ntfy):
    ada = user("ada")
    push_target_create(
        owner=ada, name="Ada's phone", url=ntfy.apprise_url("ada"), events=["job.failed"]
    )
    ntfy.fail_next(2)

    with transaction.atomic():
        notify_user(ada.pk, title="Hello", body="A notice.")

    (received,) = ntfy.wait_for(lambda messages: bool(messages), timeout=20)
    assert (received.title, received.message) == ("Hello", "A notice.")
    row = wait_until(
        lambda: PushMessage.objects.filter(state="sent").first(),
        timeout=10,
        what="the outbox row recorded as sent",
    )
    assert row.attempts == 3
    assert ntfy.requests == 3


def test_a_send_whose_worker_is_killed_is_sent_again_after_its_lease(engine, ntfy):
    ada = user("ada")
    push_target_create(
        owner=ada, name="Ada's phone", url=ntfy.apprise_url("ada"), events=["job.failed"]
    )
    ntfy.hold_next()

    with transaction.atomic():
        notify_user(ada.pk, title="Hello", body="A notice.")
    assert ntfy.held.wait(20), "the worker never sent the notification"
    engine.kill_worker("w1")  # mid-send: the receiver is holding its request
    ntfy.release()
    assert PushMessage.objects.get().state == "sending"
    engine.start_worker("w1")

    (received,) = ntfy.wait_for(lambda messages: bool(messages), timeout=30)
    assert (received.title, received.message) == ("Hello", "A notice.")
    row = wait_until(
        lambda: PushMessage.objects.filter(state="sent").first(),
        timeout=10,
        what="the outbox row recorded as sent",
    )
    assert row.attempts == 2
