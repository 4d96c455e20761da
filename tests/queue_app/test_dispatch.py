"""Claiming, leases and the scheduler (queue_app.dispatch), without a server."""

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import FieldDoesNotExist
from django.db import connection, transaction
from django.utils import timezone
from model_bakery import baker

from core_app.leases import LeaseLost
from core_app.scopes import local_user
from queue_app import dispatch
from queue_app.models import Job, JobImage, JobStatus
from servers_app.checkpoints import checkpoint_key
from servers_app.model_cache import lora_rows
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.services import server_update
from tests.integration.procs import wait_until
from tests.support import explained


@pytest.fixture
def online(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


def queue(server: Server | None, *, n: int = 1, checkpoint: str = "", **fields) -> list[Job]:
    jobs = []
    start = timezone.now() - timedelta(minutes=10)
    base = Job.objects.count()
    for i in range(n):
        job = baker.make(
            Job,
            server=server,
            target_server_alias=server.alias if server else "any",
            generation_params={"positive_prompt": "x", "checkpoint_name": checkpoint},
            checkpoint_key=checkpoint_key(checkpoint),
            **fields,
        )
        Job.objects.filter(pk=job.pk).update(created_at=start + timedelta(seconds=base + i))
        jobs.append(job)
    return jobs


def test_claim_takes_the_oldest_pending_job(online):
    first, _ = queue(online, n=2)

    claim = dispatch.job_claim_next(server_id=online.pk)

    assert claim is not None
    assert claim.job_id == first.pk
    first.refresh_from_db()
    assert first.status == JobStatus.PROCESSING
    assert first.lease_token == claim.token
    assert first.forge_session_hash == str(first.pk) == claim.task_id
    assert first.lease_expires_at > timezone.now()


def test_claim_respects_the_slots(online):
    queue(online, n=3)

    claims = [dispatch.job_claim_next(server_id=online.pk) for _ in range(2)]

    assert claims[0] is not None
    assert claims[1] is None
    assert Job.objects.filter(status=JobStatus.PROCESSING).count() == 1


def test_two_slots_run_two_jobs(online):
    Server.objects.filter(pk=online.pk).update(slots=2)
    queue(online, n=3)

    claims = [dispatch.job_claim_next(server_id=online.pk) for _ in range(3)]

    assert [c is not None for c in claims] == [True, True, False]


@pytest.mark.parametrize(("enabled", "is_online"), [(False, True), (True, False)])
def test_disabled_or_offline_server_claims_nothing(online, enabled, is_online):
    Server.objects.filter(pk=online.pk).update(enabled=enabled, is_online=is_online)
    queue(online)

    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert Job.objects.get().status == JobStatus.PENDING


def test_server_of_unknown_health_may_claim(online):
    Server.objects.filter(pk=online.pk).update(is_online=None)
    queue(online)

    assert dispatch.job_claim_next(server_id=online.pk) is not None


def test_claim_skips_other_servers_jobs(online):
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)
    queue(other)

    assert dispatch.job_claim_next(server_id=online.pk) is None


def test_higher_priority_runs_first(online):
    queue(online, n=2)
    (urgent,) = queue(online, priority=5)

    assert dispatch.job_claim_next(server_id=online.pk).job_id == urgent.pk


def test_job_in_backoff_waits(online):
    (later,) = queue(online, next_attempt_at=timezone.now() + timedelta(minutes=1))
    (now,) = queue(online)

    assert dispatch.job_claim_next(server_id=online.pk).job_id == now.pk
    Job.objects.filter(pk=now.pk).update(status=JobStatus.COMPLETED)
    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert Job.objects.get(pk=later.pk).status == JobStatus.PENDING


def test_scheduler_prefers_the_loaded_checkpoint(online):
    Server.objects.filter(pk=online.pk).update(loaded_checkpoint="sdxl\\b.safetensors [0123456789]")
    (a,) = queue(online, checkpoint="a.safetensors")
    (b,) = queue(online, checkpoint="sdxl/b.safetensors")

    claim = dispatch.job_claim_next(server_id=online.pk)

    assert claim.job_id == b.pk
    a.refresh_from_db()
    assert a.passed_over == 1


def test_scheduler_looks_ahead_only_so_far(online, settings):
    settings.MOBILESD_SCHEDULER_LOOKAHEAD = 3
    Server.objects.filter(pk=online.pk).update(loaded_checkpoint="b.safetensors")
    (head,) = queue(online, n=1, checkpoint="a.safetensors")
    queue(online, n=2, checkpoint="c.safetensors")
    queue(online, n=1, checkpoint="b.safetensors")  # fourth: outside the window

    assert dispatch.job_claim_next(server_id=online.pk).job_id == head.pk


def test_scheduler_does_not_starve_the_head(online, settings):
    settings.MOBILESD_SCHEDULER_MAX_PASSES = 2
    Server.objects.filter(pk=online.pk).update(loaded_checkpoint="b.safetensors")
    (head,) = queue(online, checkpoint="a.safetensors")
    queue(online, n=5, checkpoint="b.safetensors")

    order = []
    for _ in range(3):
        claim = dispatch.job_claim_next(server_id=online.pk)
        order.append(claim.job_id)
        Job.objects.filter(pk=claim.job_id).update(status=JobStatus.COMPLETED)

    assert order[2] == head.pk  # passed over twice, then run


def test_jobs_without_checkpoint_count_as_matching(online):
    Server.objects.filter(pk=online.pk).update(loaded_checkpoint="b.safetensors")
    queue(online, checkpoint="a.safetensors")
    (free,) = queue(online, checkpoint="")

    assert dispatch.job_claim_next(server_id=online.pk).job_id == free.pk


def test_any_job_runs_where_its_checkpoint_is(online):
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)
    baker.make(
        CachedModel,
        server=other,
        kind=ModelKind.CHECKPOINT,
        title="a.safetensors [0123456789]",
        relative_path="a.safetensors",
        lookup_key="a.safetensors",
        stem_key="a",
    )
    (job,) = queue(None, checkpoint="a.safetensors")

    assert dispatch.job_claim_next(server_id=online.pk) is None
    claim = dispatch.job_claim_next(server_id=other.pk)

    assert claim.job_id == job.pk
    job.refresh_from_db()
    assert job.server == other


def cache_loras(server: Server, *names: str, alias: str = "") -> None:
    listing = [
        {"name": n, "alias": alias or n, "path": f"/sd/models/Lora/x/{n}.safetensors"}
        for n in names
    ]
    for row in lora_rows(listing):
        CachedModel.objects.create(server=server, **row.fields())


def test_any_job_runs_only_where_all_its_loras_are(online):
    desktop = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)
    cache_loras(online, "add_detail")
    cache_loras(desktop, "add_detail")
    cache_loras(desktop, "ink_v2", alias="Ink Style")
    (job,) = queue(None, lora_keys=["add_detail", "ink style"])

    assert dispatch.job_claim_next(server_id=online.pk) is None
    claim = dispatch.job_claim_next(server_id=desktop.pk)

    assert claim is not None
    assert claim.job_id == job.pk


def test_an_any_job_without_loras_runs_anywhere(online):
    cache_loras(online, "add_detail")
    (job,) = queue(None, lora_keys=[])

    assert dispatch.job_claim_next(server_id=online.pk).job_id == job.pk


def test_an_any_job_whose_loras_no_enabled_server_has_is_claimed_to_fail_with_the_reason(online):
    disabled = baker.make(Server, alias="Desktop", api_url="http://x:1", enabled=False)
    cache_loras(disabled, "gone")
    (job,) = queue(None, lora_keys=["gone"])

    assert dispatch.job_claim_next(server_id=online.pk).job_id == job.pk


def test_a_servers_own_job_is_claimed_whatever_its_loras(online):
    (job,) = queue(online, lora_keys=["not_cached"])

    assert dispatch.job_claim_next(server_id=online.pk).job_id == job.pk


def test_start_reserved_is_not_held_up_by_an_any_job_whose_loras_are_elsewhere(online):
    desktop = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)
    cache_loras(desktop, "ink")
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    queue(None, priority=5, lora_keys=["ink"])

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is True
    assert Job.objects.get(pk=following.pk).status == JobStatus.PROCESSING


def test_heartbeat_renews_the_lease_and_writes_progress(online, settings):
    settings.MOBILESD_LEASE_SECONDS = 60
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    Job.objects.filter(pk=claim.job_id).update(lease_expires_at=timezone.now())

    state = dispatch.job_heartbeat(claim=claim, progress={"fraction": 0.5})

    job = Job.objects.get()
    assert state is None  # still ours
    assert job.progress == {"fraction": 0.5}
    assert job.lease_expires_at > timezone.now() + timedelta(seconds=30)


def test_heartbeat_reports_a_cancelled_job(online, client):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    client.post(f"/api/v1/queue/jobs/{claim.job_id}/cancel")

    assert dispatch.job_heartbeat(claim=claim, progress=None) is LeaseLost.CANCELLED


def test_heartbeat_reports_a_deleted_job(online):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    Job.objects.filter(pk=claim.job_id).delete()

    assert dispatch.job_heartbeat(claim=claim, progress=None) is LeaseLost.GONE


def test_heartbeat_reports_a_job_another_worker_took_over(online):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    Job.objects.filter(pk=claim.job_id).update(lease_expires_at=timezone.now())
    dispatch.jobs_recover_expired_leases()
    Job.objects.update(next_attempt_at=None)
    assert dispatch.job_claim_next(server_id=online.pk) is not None  # the new lease

    assert dispatch.job_heartbeat(claim=claim, progress={"fraction": 0.9}) is LeaseLost.LOST
    assert Job.objects.get().progress != {"fraction": 0.9}


def test_complete_records_images_once(online):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    image = dispatch.ImageRecord(0, "jobs/ab/x_1_00000-7.png", 7, 64, 64, "infotext")

    assert dispatch.job_complete(
        claim=claim, images=[image], generation_info={"seed": 7}, checkpoint="x [0123456789]"
    )
    assert not dispatch.job_complete(claim=claim, images=[image], generation_info={"seed": 7})

    job = Job.objects.get()
    assert job.status == JobStatus.COMPLETED
    assert job.result_details == {
        "images": ["x_1_00000-7.png"],
        "info": "Job completed and images downloaded by MobileSD backend.",
        "generation_info": {"seed": 7},
        "checkpoint": "x [0123456789]",
    }
    assert JobImage.objects.count() == 1
    assert job.lease_token is None


def test_cancelled_job_is_not_completed_later(online, client):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    client.post(f"/api/v1/queue/jobs/{claim.job_id}/cancel")

    assert not dispatch.job_complete(claim=claim, images=[], generation_info={})
    assert Job.objects.get().status == JobStatus.CANCELLED


def test_release_counts_attempts_with_backoff(online, settings):
    settings.MOBILESD_RETRY_BACKOFF_SECONDS = 10
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)

    status = dispatch.job_release(claim=claim, error="HTTP 500", count_attempt=True)

    job = Job.objects.get()
    assert status == JobStatus.PENDING
    assert job.retry_count == 1
    assert job.next_attempt_at > timezone.now() + timedelta(seconds=5)
    assert job.result_details == {"last_error": "HTTP 500", "retry_in_seconds": 10.0}


def test_backoff_doubles_with_each_attempt_up_to_its_cap(online, settings):
    settings.MOBILESD_MAX_RETRIES = 5
    settings.MOBILESD_RETRY_BACKOFF_SECONDS = 10
    settings.MOBILESD_RETRY_BACKOFF_MAX_SECONDS = 25
    queue(online)
    delays = []
    for _ in range(3):
        Job.objects.update(next_attempt_at=None)
        claim = dispatch.job_claim_next(server_id=online.pk)
        dispatch.job_release(claim=claim, error="HTTP 500", count_attempt=True)
        delays.append(Job.objects.get().result_details["retry_in_seconds"])

    assert delays == [10.0, 20.0, 25.0]


def test_release_without_counting_when_the_server_was_unreachable(online):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)

    dispatch.job_release(claim=claim, error="refused", count_attempt=False)

    job = Job.objects.get()
    assert (job.status, job.retry_count, job.next_attempt_at) == (JobStatus.PENDING, 0, None)


def test_retries_end_in_failure_with_a_clear_error(online, settings):
    settings.MOBILESD_MAX_RETRIES = 2
    settings.MOBILESD_RETRY_BACKOFF_SECONDS = 0.001
    queue(online)
    for _ in range(3):
        Job.objects.update(next_attempt_at=None)
        claim = dispatch.job_claim_next(server_id=online.pk)
        dispatch.job_release(claim=claim, error="HTTP 502: bad gateway", count_attempt=True)

    job = Job.objects.get()
    assert job.status == JobStatus.FAILED
    assert job.retry_count == 2
    assert "HTTP 502: bad gateway" in job.result_details["error"]
    assert job.completed_at is not None


def test_retry_uses_a_new_task_id(online):
    (job,) = queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    dispatch.job_release(claim=claim, error="x", count_attempt=True)
    Job.objects.update(next_attempt_at=None)

    retry = dispatch.job_claim_next(server_id=online.pk)

    assert retry.task_id == f"{job.pk}.1"
    assert retry.token != claim.token


def test_fail_is_permanent(online):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)

    assert dispatch.job_fail(claim=claim, error="Checkpoint 'x' was not found")

    job = Job.objects.get()
    assert job.status == JobStatus.FAILED
    assert job.result_details == {"error": "Checkpoint 'x' was not found"}


def test_expired_lease_is_recovered_and_counted(online):
    queue(online)
    claim = dispatch.job_claim_next(server_id=online.pk)
    Job.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    orphans = dispatch.jobs_recover_expired_leases()

    assert [(o.job_id, o.task_id, o.status) for o in orphans] == [
        (claim.job_id, claim.task_id, JobStatus.PENDING)
    ]
    job = Job.objects.get()
    assert (job.status, job.retry_count, job.lease_token) == (JobStatus.PENDING, 1, None)
    # The dead worker's claim can no longer complete it.
    assert not dispatch.job_complete(claim=claim, images=[], generation_info={})


def test_live_lease_is_left_alone(online):
    queue(online)
    dispatch.job_claim_next(server_id=online.pk)

    assert dispatch.jobs_recover_expired_leases() == []
    assert Job.objects.get().status == JobStatus.PROCESSING


def while_locked[T](hold: Callable[[], Any], contender: Callable[[], T]) -> tuple[Any, T]:
    """Race two workers on PostgreSQL's row locks: `hold` runs in a transaction of its own
    thread and keeps its locks; `contender` runs in another thread once `hold` is done, and
    is let through (the holder commits) only once it waits for one of those locks.
    Returns both results."""
    if connection.vendor != "postgresql":
        pytest.fail("This race needs row locks: run the suite on PostgreSQL (make test).")
    held, commit = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def holder() -> None:
        try:
            with transaction.atomic():
                results["hold"] = hold()
                held.set()
                commit.wait(10)
        finally:
            connection.close()

    def contending() -> None:
        try:
            results["contender"] = contender()
        finally:
            connection.close()

    one = threading.Thread(target=holder)
    one.start()
    assert held.wait(10)
    two = threading.Thread(target=contending)
    two.start()

    def contender_waits_for_a_lock() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            return cursor.fetchone()[0] > 0

    wait_until(contender_waits_for_a_lock, timeout=10, what="the contender to wait for a lock")
    commit.set()
    one.join(10)
    two.join(10)
    return results["hold"], results["contender"]


@pytest.mark.django_db(transaction=True)
def test_a_claim_waiting_for_the_server_lock_sees_the_job_claimed_before_it():
    """Two workers claim for a one-slot server at once: the one that waited for the server
    row's lock must count the job the other just claimed, and claim nothing."""
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)
    queue(server, n=2)

    def claim() -> dispatch.Claim | None:
        return dispatch.job_claim_next(server_id=server.pk)

    first, second = while_locked(claim, claim)

    assert first is not None
    assert second is None
    assert Job.objects.filter(status=JobStatus.PROCESSING).count() == 1


# -- reserving the next job while one runs ---------------------------------------------------


def running_with_next(server: Server, *, n: int = 1, **fields):
    """A claimed, running job of `server` and `n` pending ones queued after it."""
    queue(server, **fields)
    running = dispatch.job_claim_next(server_id=server.pk)
    assert running is not None
    return running, queue(server, n=n)


def test_reserve_takes_the_next_job_and_leaves_it_pending(online):
    running, (following, _) = running_with_next(online, n=2)

    reserved = dispatch.job_reserve_next(running=running)

    assert reserved is not None
    assert reserved.job_id == following.pk
    assert reserved.task_id == str(following.pk)
    following.refresh_from_db()
    assert following.status == JobStatus.PENDING  # not started: the phone still sees pending
    assert following.lease_token == reserved.token
    assert following.lease_expires_at > timezone.now()


def test_a_reserved_job_is_not_claimed_by_anyone_else(online, settings):
    Server.objects.filter(pk=online.pk).update(slots=2)
    running, (following, later) = running_with_next(online, n=2)
    dispatch.job_reserve_next(running=running)

    claim = dispatch.job_claim_next(server_id=online.pk)  # the second slot

    assert claim.job_id == later.pk
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


def test_a_lapsed_reservation_is_claimable_again(online):
    Server.objects.filter(pk=online.pk).update(slots=2)
    running, (following,) = running_with_next(online)
    dispatch.job_reserve_next(running=running)
    Job.objects.filter(pk=following.pk).update(lease_expires_at=timezone.now())

    assert dispatch.job_claim_next(server_id=online.pk).job_id == following.pk


def test_reserve_prefers_the_checkpoint_the_running_job_loads(online):
    Server.objects.filter(pk=online.pk).update(loaded_checkpoint="a.safetensors")
    queue(online, checkpoint="b.safetensors")
    running = dispatch.job_claim_next(server_id=online.pk)
    (for_a,) = queue(online, checkpoint="a.safetensors")
    (for_b,) = queue(online, checkpoint="b.safetensors")

    reserved = dispatch.job_reserve_next(running=running)

    # The server will have b loaded when the running job ends: no switch for the b job.
    assert reserved.job_id == for_b.pk
    assert Job.objects.get(pk=for_a.pk).passed_over == 1


def test_reserve_leaves_an_any_job_for_the_first_free_server(online):
    running = running_with_next(online, n=0)[0]
    queue(None)  # an "any" job: whichever server is free first should take it

    assert dispatch.job_reserve_next(running=running) is None
    assert not Job.objects.filter(lease_token__isnull=False, status=JobStatus.PENDING).exists()


def test_reserve_with_nothing_queued_reserves_nothing(online):
    running = running_with_next(online, n=0)[0]

    assert dispatch.job_reserve_next(running=running) is None


def test_start_reserved_starts_it_on_the_finishing_jobs_slot(online):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is True

    following.refresh_from_db()
    assert following.status == JobStatus.PROCESSING
    assert following.lease_token == reserved.token
    assert following.forge_session_hash == reserved.task_id
    assert following.started_at is not None
    assert following.progress == {"fraction": 0.0, "textinfo": "Starting"}
    assert reserved.job.status == JobStatus.PROCESSING  # the claim's row, as started
    # The finishing job is the caller's to complete; the slot's count now includes both.
    assert Job.objects.get(pk=running.job_id).status == JobStatus.PROCESSING


def test_start_reserved_refuses_a_cancelled_job(online, client):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    client.post(f"/api/v1/queue/jobs/{following.pk}/cancel")

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.CANCELLED


def test_start_reserved_refuses_when_the_finishing_job_is_no_longer_ours(online, client):
    """The finishing job was cancelled: its slot is free for any claim, so it cannot be
    handed over; the caller claims as usual (which counts the running jobs)."""
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    client.post(f"/api/v1/queue/jobs/{running.job_id}/cancel")

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


@pytest.mark.parametrize(("enabled", "is_online"), [(False, True), (True, False)])
def test_start_reserved_refuses_on_a_disabled_or_offline_server(online, enabled, is_online):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    Server.objects.filter(pk=online.pk).update(enabled=enabled, is_online=is_online)

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


def test_start_reserved_gives_way_to_a_job_of_higher_priority(online):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    queue(online, priority=5)  # submitted while the running job generated

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


def test_start_reserved_is_not_held_up_by_a_job_of_higher_priority_that_must_wait(online, settings):
    """Only a job the server could take now goes first: not one waiting out its backoff,
    reserved by another worker, or of another server."""
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    later = timezone.now() + timedelta(minutes=1)
    queue(online, priority=5, next_attempt_at=later)
    queue(online, priority=5, lease_token=uuid.uuid4(), lease_expires_at=later)
    queue(other, priority=5)

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is True
    assert Job.objects.get(pk=following.pk).status == JobStatus.PROCESSING


def test_start_reserved_gives_way_to_an_any_job_of_higher_priority(online):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    queue(None, priority=5)

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


def test_unreserve_gives_the_job_back(online):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)

    dispatch.job_unreserve(reserved=reserved)

    following.refresh_from_db()
    assert following.status == JobStatus.PENDING
    assert following.lease_token is None
    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False


def test_a_retried_job_carries_no_old_lease(online, client):
    """A job cancelled while reserved, then retried, must not look reserved."""
    running, (following,) = running_with_next(online)
    dispatch.job_reserve_next(running=running)
    client.post(f"/api/v1/queue/jobs/{following.pk}/cancel")

    client.post(f"/api/v1/queue/jobs/{following.pk}/retry")

    following.refresh_from_db()
    assert following.status == JobStatus.PENDING
    assert following.lease_token is None


@pytest.mark.django_db(transaction=True)
def test_start_reserved_waits_for_a_cancel_of_the_finishing_job_in_flight():
    """The finishing job is being cancelled (its row locked, not yet committed) when the
    reserved job is started: the start must wait for that cancel and then start nothing.
    Otherwise it would read the finishing job as still running, while a claim made right
    after the cancel commits counts a free slot: two jobs sent to a one-slot server."""
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)
    running, (following,) = running_with_next(server)
    reserved = dispatch.job_reserve_next(running=running)

    _, started = while_locked(
        lambda: Job.objects.filter(pk=running.job_id).update(status=JobStatus.CANCELLED),
        lambda: dispatch.job_start_reserved(reserved=reserved, finishing=running),
    )

    assert started is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING
    assert dispatch.job_claim_next(server_id=server.pk) is None  # reserved: not claimable
    dispatch.job_unreserve(reserved=reserved)
    assert dispatch.job_claim_next(server_id=server.pk).job_id == following.pk


# -- the statements' text ---------------------------------------------------------------------


def test_statements_take_table_and_column_names_from_the_models():
    start = dispatch._sql(dispatch._START_RESERVED, row_lock="FOR UPDATE")

    assert f'UPDATE "{Job._meta.db_table}"' in start
    assert f'FROM "{Server._meta.db_table}"' in start
    assert '"server_id" = %(server_id)s' in start
    assert "{" not in start


def test_a_statement_naming_what_is_not_a_column_fails_when_built():
    with pytest.raises(AttributeError, match="images is not a column"):
        dispatch._sql("SELECT {job.images} FROM {job}")
    with pytest.raises(FieldDoesNotExist):
        dispatch._sql("SELECT {job.no_such_field} FROM {job}")


def test_a_reserved_job_does_not_start_once_its_server_is_reconfigured(online):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    server_update(server=online, data={"api_url": "http://127.0.0.1:2"}, partial=True)

    assert not dispatch.job_start_reserved(reserved=reserved, finishing=running)

    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


# -- the claim's cost does not grow with the queue --------------------------------------------


def test_the_heads_of_a_servers_own_queue_and_of_any_merge_in_queue_order(online):
    """The claim reads its own head and the "any" head apart and merges them: the order is
    still priority, then age, across both."""
    old_any, young_any = queue(None, n=2)
    (own,) = queue(online)
    (urgent_any,) = queue(None, priority=3)
    (urgent_own,) = queue(online, priority=3)

    claimed = []
    for _ in range(5):
        claim = dispatch.job_claim_next(server_id=online.pk)
        assert claim is not None
        claimed.append(claim.job_id)
        Job.objects.filter(pk=claim.job_id).update(status=JobStatus.COMPLETED)

    assert claimed == [urgent_any.pk, urgent_own.pk, old_any.pk, young_any.pk, own.pk]


def waiting_jobs(online: Server, other: Server, n: int) -> None:
    """`n` pending jobs of each kind a claim of `online` meets (its own, "any", another
    server's, at three priorities), some in backoff or reserved, and as many finished."""
    later = timezone.now() + timedelta(minutes=5)
    owner = local_user()
    jobs = []
    for i in range(n):
        for server in (online, None, other):
            jobs.append(
                Job(
                    server=server,
                    target_server_alias=server.alias if server else "any",
                    generation_params={"positive_prompt": "x"},
                    priority=i % 3,
                    turn=i % 50,
                    lora_keys=["ink"] if i % 7 == 0 else [],
                    next_attempt_at=later if i % 11 == 0 else None,
                    lease_token=uuid.uuid4() if i % 13 == 0 else None,
                    lease_expires_at=later if i % 13 == 0 else None,
                    owner=owner,
                )
            )
        jobs.append(
            Job(server=online, target_server_alias=online.alias, generation_params={}, owner=owner)
        )
        jobs[-1].status = JobStatus.COMPLETED
    Job.objects.bulk_create(jobs, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Job._meta.db_table)}")


def assert_read_in_index_order(nodes: list[dict[str, Any]], indexes: set[str]) -> None:
    table = Job._meta.db_table
    scans = [
        node
        for node in nodes
        if node.get("Relation Name") == table and node["Node Type"] != "ModifyTable"
    ]
    # Every read of the jobs is a range of an index, in its order (a bitmap or sequential
    # scan has no order, and would need the sort), the heads read through theirs...
    assert {node["Node Type"] for node in scans} == {"Index Scan"}
    assert indexes <= {node.get("Index Name") for node in scans}
    # ...and nothing sorts rows read from the table (only the merged heads, a few rows).
    for sort in (node for node in nodes if node["Node Type"] in ("Sort", "Incremental Sort")):
        assert not [below for below in sort["below"] if below.get("Relation Name") == table]


@pytest.fixture
def deep_queue(online) -> tuple[Server, Server]:
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's plans (EXPLAIN (FORMAT JSON))")
    other = baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:2", is_online=True)
    baker.make(CachedModel, server=online, kind=ModelKind.LORA, name="ink", stem_key="ink")
    waiting_jobs(online, other, 2000)
    return online, other


HEADS = {"job_pending_head", "job_pending_any_head"}


def test_the_claim_reads_each_head_in_its_index_order_however_deep_the_queue(deep_queue):
    online, _ = deep_queue
    sql = dispatch._sql(dispatch._QUEUE_HEAD, row_lock=dispatch._FOR_UPDATE_SKIP_LOCKED)
    params = {**dispatch._queue_head_params(online, timezone.now()), "lookahead": 8}

    assert_read_in_index_order(explained(sql, params), HEADS)


def test_starting_a_reservation_looks_for_jobs_ahead_of_it_in_index_order(deep_queue):
    online, _ = deep_queue
    params = {
        **dispatch._queue_head_params(online, timezone.now()),
        "processing": "processing",
        "job_id": uuid.uuid4().hex,
        "token": uuid.uuid4().hex,
        "expires": timezone.now(),
        "task_id": "t",
        "progress": "{}",
        "finishing_id": uuid.uuid4().hex,
        "finishing_token": uuid.uuid4().hex,
        "priority": 2,  # the highest waiting, as a reserved job's is
        "turn": 3,
        "reserved_at": timezone.now(),  # jobs queued since: few
        "server_updated_at": online.updated_at,
    }
    sql = dispatch._sql(dispatch._START_RESERVED, row_lock=dispatch._FOR_UPDATE)

    assert_read_in_index_order(explained(sql, params), HEADS)


def test_server_may_claim_counts_only_its_running_jobs_against_its_slots(online):
    """The cheap look of a nudge: waiting and finished jobs take no slot; running ones do."""
    Server.objects.filter(pk=online.pk).update(slots=2)
    queue(online, n=3)
    queue(online, status=JobStatus.COMPLETED)
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)
    queue(other, n=2, status=JobStatus.PROCESSING)
    assert dispatch.server_may_claim(server_id=online.pk)

    queue(online, status=JobStatus.PROCESSING)
    assert dispatch.server_may_claim(server_id=online.pk)

    queue(online, status=JobStatus.PROCESSING)
    assert not dispatch.server_may_claim(server_id=online.pk)
    Server.objects.filter(pk=online.pk).update(is_online=False, slots=5)
    assert not dispatch.server_may_claim(server_id=online.pk)


# -- the claim's round trips -------------------------------------------------------------


def claim_head_plan(server: Server) -> list[dict[str, Any]]:
    """The claim's read of the server's queue head, as run (EXPLAIN ANALYZE)."""
    sql = dispatch._sql(dispatch._CLAIM_HEAD, row_lock=dispatch._FOR_UPDATE_SKIP_LOCKED)
    params = {
        **dispatch._queue_head_params(server, timezone.now()),
        "lookahead": 8,
        "processing": str(JobStatus.PROCESSING),
        "finishing_id": None,
    }
    return explained(sql, params, analyze=True)


@pytest.mark.parametrize("slot_free", [True, False])
def test_the_claim_reads_the_head_only_when_the_server_may_claim(deep_queue, slot_free):
    """Without a free slot, the head's rows are neither read nor locked (SKIP LOCKED would
    hide them from other servers' claims until this one commits)."""
    online, _ = deep_queue
    if not slot_free:
        queue(online, status=JobStatus.PROCESSING)

    head_scans = [node for node in claim_head_plan(online) if node.get("Index Name") in HEADS]

    assert head_scans
    executed = [node for node in head_scans if node["Actual Loops"] > 0]
    assert bool(executed) is slot_free


def statements_sent(call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """`call()`'s result and the text of every query it sent, one per round trip."""
    sent: list[str] = []

    def record(execute, sql, params, many, context):
        sent.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        return call(), sent


def pg_transaction_status() -> int:
    return connection.connection.info.transaction_status


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("queued", [1, 0])
def test_a_claim_outside_a_transaction_takes_three_round_trips_and_ends_its_own(queued):
    """On PostgreSQL, outside the caller's transaction: the release check, then the lock
    and head in one query (BEGIN sent with them), the claim with its COMMIT in another;
    with nothing to run, the second only ends the transaction."""
    if connection.vendor != "postgresql":
        pytest.skip("the batched round trips are PostgreSQL's")
    from psycopg.pq import TransactionStatus

    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)
    jobs = queue(server, n=queued)

    claim, sent = statements_sent(lambda: dispatch.job_claim_next(server_id=server.pk))

    assert len(sent) == 3
    assert sent[1].startswith("BEGIN;")
    assert sent[2].rstrip().endswith("COMMIT")
    assert pg_transaction_status() == TransactionStatus.IDLE
    if queued:
        assert claim is not None
        assert claim.job_id == jobs[0].pk
        assert Job.objects.get(pk=jobs[0].pk).status == JobStatus.PROCESSING
    else:
        assert claim is None


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_fails_midway_rolls_back_and_frees_the_server(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("the batched round trips are PostgreSQL's")
    from psycopg.pq import TransactionStatus

    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)
    (job,) = queue(server)

    def broken(**_kw):
        raise RuntimeError("the scheduler failed")

    monkeypatch.setattr(dispatch.scheduling, "job_choose_next", broken)
    with pytest.raises(RuntimeError):
        dispatch.job_claim_next(server_id=server.pk)

    assert pg_transaction_status() == TransactionStatus.IDLE
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING
    monkeypatch.undo()
    # Nothing stays locked: the server's next claim takes the job.
    claim = dispatch.job_claim_next(server_id=server.pk)
    assert claim is not None
    assert claim.job_id == job.pk


def test_a_claim_inside_the_callers_transaction_stays_in_it(online):
    """Inside an atomic block (here the test's), the claim's statements run one by one in
    a savepoint: nothing commits the caller's transaction."""
    (job,) = queue(online)

    with transaction.atomic():
        claim, sent = statements_sent(lambda: dispatch.job_claim_next(server_id=online.pk))
        transaction.set_rollback(True)

    assert claim is not None
    assert not [sql for sql in sent if "BEGIN" in sql or "COMMIT" in sql]
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING
