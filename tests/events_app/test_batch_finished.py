"""`batch.finished`: written by the jobs' trigger once the last unfinished job of a batch
reaches a finished status, in that change's transaction; again after a retry reopened it."""

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from model_bakery import baker

from events_app.messages import event_message
from events_app.models import Event
from events_app.selectors import events_after
from events_app.sequencer import events_sequence
from queue_app.batches import batch_cancel
from queue_app.models import Batch, Job, JobStatus
from queue_app.services import job_cancel, job_retry
from servers_app.models import Server
from tests.integration.procs import wait_until

User = get_user_model()


def recorded(prefix: str = "") -> list[Event]:
    events_sequence()
    return list(Event.objects.filter(type__startswith=prefix).order_by("seq"))


def finished(batch: Batch) -> list[Event]:
    return [event for event in recorded("batch.finished") if event.batch_id == batch.pk]


@pytest.fixture
def owner(db) -> Any:
    return User.objects.create_user("ada")


@pytest.fixture
def laptop(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")


def new_batch(owner: Any, server: Server, n: int, **fields: Any) -> tuple[Batch, list[Job]]:
    batch = baker.make(
        Batch, owner=owner, server=server, target_server_alias=server.alias, job_count=n
    )
    jobs = [
        baker.make(
            Job,
            owner=owner,
            server=server,
            target_server_alias=server.alias,
            batch=batch,
            generation_params={"positive_prompt": "a lighthouse"},
            **fields,
        )
        for _ in range(n)
    ]
    return batch, jobs


def finish(job: Job, status: str) -> None:
    Job.objects.filter(pk=job.pk).update(status=status)


def test_the_last_job_to_finish_finishes_its_batch_with_the_counts(owner, laptop):
    batch, (a, b, c, d) = new_batch(owner, laptop, 4)

    finish(a, JobStatus.PROCESSING)
    finish(a, JobStatus.COMPLETED)
    finish(b, JobStatus.FAILED)
    finish(c, JobStatus.CANCELLED)
    assert finished(batch) == []
    finish(d, JobStatus.COMPLETED)

    (event,) = finished(batch)
    assert event.owner_id == owner.pk
    assert event.job_id is None
    assert recorded()[-1] == event  # after the last job's own event
    message = event_message(event)
    assert message["type"] == "batch.finished"
    assert message["batch_id"] == str(batch.pk)
    assert message["server_alias"] == "Laptop"
    assert message["batch"]["counts"] == {"completed": 2, "failed": 1, "cancelled": 1, "total": 4}
    assert message["batch"]["job_count"] == 4
    assert message["batch"]["batch_id"] == str(batch.pk)


def test_a_change_between_finished_statuses_does_not_finish_it_again(owner, laptop):
    batch, (a,) = new_batch(owner, laptop, 1)
    finish(a, JobStatus.FAILED)
    finish(a, JobStatus.CANCELLED)
    Job.objects.filter(pk=a.pk).update(priority=5)

    assert len(finished(batch)) == 1


def test_a_retried_job_reopens_its_batch_and_finishing_again_is_another_event(owner, laptop):
    batch, (a, b) = new_batch(owner, laptop, 2)
    finish(a, JobStatus.COMPLETED)
    finish(b, JobStatus.FAILED)
    assert len(finished(batch)) == 1

    job_retry(job_id=b.pk, owner=None)
    assert len(finished(batch)) == 1
    finish(b, JobStatus.COMPLETED)

    first, second = finished(batch)
    assert event_message(first)["batch"]["counts"]["failed"] == 1
    assert event_message(second)["batch"]["counts"] == {
        "completed": 2,
        "failed": 0,
        "cancelled": 0,
        "total": 2,
    }


def test_jobs_outside_batches_finish_no_batch(owner, laptop):
    job = baker.make(Job, owner=owner, server=laptop, target_server_alias="Laptop")
    finish(job, JobStatus.COMPLETED)
    assert recorded("batch.finished") == []


def test_a_bulk_cancel_of_a_batch_is_one_batch_finished_after_its_job_events(owner, laptop):
    batch, jobs = new_batch(owner, laptop, 5)
    finish(jobs[0], JobStatus.COMPLETED)
    other, _ = new_batch(owner, laptop, 2)

    _, cancelled = batch_cancel(batch_id=batch.pk, owner=None)

    assert cancelled == 4
    (event,) = finished(batch)
    assert event_message(event)["batch"]["counts"] == {
        "completed": 1,
        "failed": 0,
        "cancelled": 4,
        "total": 5,
    }
    of_batch = [e.type for e in recorded() if e.batch_id == batch.pk]
    assert of_batch[-5:] == ["job.cancelled"] * 4 + ["batch.finished"]
    assert finished(other) == []


def test_a_bulk_cancel_with_a_running_job_finishes_the_batch_once(owner, laptop, published):
    batch, (running, *_) = new_batch(owner, laptop, 3)
    finish(running, JobStatus.PROCESSING)

    batch_cancel(batch_id=batch.pk, owner=None)

    assert Job.objects.filter(batch=batch).exclude(status=JobStatus.CANCELLED).count() == 0
    (event,) = finished(batch)
    assert event_message(event)["batch"]["counts"]["cancelled"] == 3


def test_the_stream_filters_find_batch_finished_by_batch_and_type(owner, laptop):
    batch, (a,) = new_batch(owner, laptop, 1)
    other, (b,) = new_batch(owner, laptop, 1)
    job_cancel(job_id=a.pk, owner=None)
    job_cancel(job_id=b.pk, owner=None)
    events_sequence()

    by_batch = events_after(0, owner_id=None, batch_ids=[batch.pk], types=["batch.finished"])
    of_owner = events_after(0, owner_id=owner.pk, types=["batch.finished"])
    of_another = events_after(0, owner_id=owner.pk + 1000, types=["batch.finished"])

    assert [(e.type, e.batch_id) for e in by_batch] == [("batch.finished", batch.pk)]
    assert {e.batch_id for e in of_owner} == {batch.pk, other.pk}
    assert of_another == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_two_last_jobs_finishing_in_concurrent_transactions_finish_the_batch_once():
    """READ COMMITTED: each transaction's trigger would see the other's job unfinished (no
    event at all) if it did not lock the batch first. Here A finishes its job and holds its
    transaction open; B finishes the other and must wait for A's commit, then count."""
    owner = User.objects.create_user("ada")
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")
    batch, (a, b) = new_batch(owner, server, 2)
    a_wrote, a_may_commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer(job: Job, wrote: threading.Event | None, hold: threading.Event | None) -> None:
        try:
            with transaction.atomic():
                finish(job, JobStatus.COMPLETED)
                if wrote is not None:
                    wrote.set()
                if hold is not None:
                    assert hold.wait(20)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    first = threading.Thread(target=writer, args=(a, a_wrote, a_may_commit))
    first.start()
    assert a_wrote.wait(20)
    second = threading.Thread(target=writer, args=(b, None, None))
    second.start()

    def b_done_or_waiting_for_a() -> bool:
        """B has committed (as it would without the lock), or waits for A's lock."""
        if not second.is_alive():
            return True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] >= 1

    try:
        wait_until(b_done_or_waiting_for_a, timeout=20, what="B committed or waiting for A")
    finally:
        a_may_commit.set()
        first.join(20)
        second.join(20)
    assert errors == []
    assert Job.objects.filter(batch=batch, status=JobStatus.COMPLETED).count() == 2
    (event,) = finished(batch)
    assert event_message(event)["batch"]["counts"]["completed"] == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_two_batches_last_jobs_in_one_statement_finish_each_once():
    owner = User.objects.create_user("ada")
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")
    one, _ = new_batch(owner, server, 2)
    two, _ = new_batch(owner, server, 3)

    Job.objects.filter(batch__in=[one, two]).update(status=JobStatus.CANCELLED)

    assert len(finished(one)) == 1
    assert len(finished(two)) == 1
