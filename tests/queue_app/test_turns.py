"""Fair turns between users (queue_app.turns): at equal priority users take turns."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from model_bakery import baker

from queue_app import dispatch
from queue_app.batches import batch_submit
from queue_app.models import Job, JobStatus
from queue_app.services import job_retry, job_submit
from queue_app.turns import job_next_turn
from servers_app.models import Server


@pytest.fixture
def online(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


def user(name: str):
    return get_user_model().objects.get_or_create(username=name)[0]


def queue(owner, n: int = 1, *, target: str = "Laptop", priority: int = 0) -> list[Job]:
    return [
        job_submit(
            owner=owner,
            target_server_alias=target,
            generation_params={"positive_prompt": f"{owner.username} {i}"},
            priority=priority,
        )[0]
        for i in range(n)
    ]


def run_one(server: Server) -> Job:
    """Claim the server's next job and finish it; the job that ran."""
    claim = dispatch.job_claim_next(server_id=server.pk)
    assert claim is not None
    Job.objects.filter(pk=claim.job_id).update(status=JobStatus.COMPLETED)
    return claim.job


def owners_in_run_order(server: Server, n: int) -> list[str]:
    return [run_one(server).owner.username for _ in range(n)]


def test_a_users_single_job_runs_second_after_another_users_ten(online):
    alice, bob = user("alice"), user("bob")
    queue(alice, 10)
    (bobs,) = queue(bob)

    assert owners_in_run_order(online, 3) == ["alice", "bob", "alice"]
    assert Job.objects.get(pk=bobs.pk).status == JobStatus.COMPLETED


def test_a_batchs_jobs_take_turns_with_another_users_single_job(online):
    """POST /api/v1/batches queues its jobs at once; they still hold one turn each."""
    alice, bob = user("alice"), user("bob")
    batch_submit(
        owner=alice,
        target_server_alias="Laptop",
        generation_params={"positive_prompt": "a lighthouse"},
        axes=[{"field": "seed", "values": [1, 2, 3, 4]}],
    )
    (bobs,) = queue(bob)

    assert owners_in_run_order(online, 5) == ["alice", "bob", "alice", "alice", "alice"]
    assert Job.objects.get(pk=bobs.pk).status == JobStatus.COMPLETED


def test_a_job_queued_while_a_batch_runs_comes_next(online):
    alice, bob = user("alice"), user("bob")
    queue(alice, 10)
    running = dispatch.job_claim_next(server_id=online.pk)
    (bobs,) = queue(bob)
    Job.objects.filter(pk=running.job_id).update(status=JobStatus.COMPLETED)

    assert dispatch.job_claim_next(server_id=online.pk).job_id == bobs.pk


def test_two_users_with_batches_alternate(online):
    alice, bob = user("alice"), user("bob")
    queue(alice, 3)
    queue(bob, 3)

    assert owners_in_run_order(online, 6) == ["alice", "bob"] * 3


def test_a_newcomer_joins_the_current_turn_not_the_first(online):
    """Bob, whose batch has run for a while, is not overtaken by carol's whole batch."""
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    queue(alice, 4)
    queue(bob, 4)
    assert owners_in_run_order(online, 4) == ["alice", "bob"] * 2
    queue(carol, 3)

    assert owners_in_run_order(online, 6) == ["alice", "bob", "carol"] * 2


def test_priority_still_comes_before_turns(online):
    alice, bob = user("alice"), user("bob")
    queue(alice, 3)
    queue(bob, 1)
    (urgent,) = queue(alice, priority=5)

    assert run_one(online).pk == urgent.pk


def test_turns_count_in_each_queue_apart(online):
    """A user's long batch on one server costs them nothing in another queue."""
    baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:2", is_online=True)
    alice, bob = user("alice"), user("bob")
    queue(alice, 5, target="Desktop")
    queue(bob, 2)

    (alices,) = queue(alice)

    assert alices.turn == 0
    assert job_next_turn(owner=alice, server=None) == 0


def test_a_retried_job_takes_a_new_turn(online):
    alice, bob = user("alice"), user("bob")
    (first,) = queue(alice)
    Job.objects.filter(pk=first.pk).update(status=JobStatus.FAILED)
    queue(bob, 3)
    running = dispatch.job_claim_next(server_id=online.pk)  # bob's first, turn 0

    retried = job_retry(job_id=first.pk, owner=None)

    assert retried.turn == running.job.turn  # alice's turn comes now, not before bob's
    Job.objects.filter(pk=running.job_id).update(status=JobStatus.COMPLETED)
    assert run_one(online).pk == first.pk


def test_a_reservation_gives_way_to_a_newcomers_earlier_turn(online):
    alice, bob = user("alice"), user("bob")
    queue(alice, 3)
    running = dispatch.job_claim_next(server_id=online.pk)
    reserved = dispatch.job_reserve_next(running=running)
    assert reserved is not None
    (bobs,) = queue(bob)

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    dispatch.job_unreserve(reserved=reserved)
    Job.objects.filter(pk=running.job_id).update(status=JobStatus.COMPLETED)
    assert dispatch.job_claim_next(server_id=online.pk).job_id == bobs.pk


def test_a_reservation_starts_when_nobody_queued_ahead_of_it(online):
    alice, bob = user("alice"), user("bob")
    queue(alice, 3)
    running = dispatch.job_claim_next(server_id=online.pk)
    reserved = dispatch.job_reserve_next(running=running)
    queue(alice)  # alice's own later job: after the reserved one

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is True
    assert bob.jobs.count() == 0
    assert Job.objects.get(pk=reserved.job_id).started_at <= timezone.now()
