"""The Celery tasks as functions (called with primary keys), and what they enqueue."""

import contextlib
import types
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from model_bakery import baker

from core_app.scopes import local_user
from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from queue_app import dispatch, tasks
from queue_app.models import Job, JobStatus
from queue_app.services import job_submit
from servers_app.models import Server
from tests.support import explained


@pytest.fixture
def online(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:9", is_online=True)


def names(published) -> list[tuple[str, tuple]]:
    return [(name, args) for name, args, _ in published]


def test_submit_nudges_the_server_after_commit(
    online, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=local_user(), target_server_alias="Laptop", generation_params={"steps": 5})

    assert names(published) == [("queue_app.tasks.run_server", (online.pk,))]


def test_submit_for_a_busy_server_still_nudges_it_for_its_running_loop_to_reserve(
    online, published, django_capture_on_commit_callbacks
):
    baker.make(
        Job,
        owner=local_user(),
        server=online,
        target_server_alias="Laptop",
        status=JobStatus.PROCESSING,
        generation_params={},
    )
    assert not dispatch.server_may_claim(server_id=online.pk)  # its one slot is taken

    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=local_user(), target_server_alias="Laptop", generation_params={"steps": 5})

    assert names(published) == [("queue_app.tasks.run_server", (online.pk,))]


def test_submit_for_any_nudges_every_free_server(
    online, published, django_capture_on_commit_callbacks
):
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True, slots=2)
    baker.make(Server, alias="Off", api_url="http://y:1", is_online=False)

    with django_capture_on_commit_callbacks(execute=True):
        job_submit(owner=local_user(), target_server_alias="any", generation_params={"steps": 5})

    assert sorted(args[0] for _, args in names(published)) == sorted(
        [online.pk, other.pk, other.pk]
    )


def test_a_transaction_queuing_many_jobs_nudges_each_server_once(
    online, published, django_capture_on_commit_callbacks
):
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for i in range(10):
            job_submit(
                owner=local_user(),
                target_server_alias=("Laptop", "Desktop")[i % 2],
                generation_params={"steps": 5, "seed": i},
            )

    assert sorted(names(published)) == sorted(
        [("queue_app.tasks.run_server", (online.pk,)), ("queue_app.tasks.run_server", (other.pk,))]
    )


def test_a_transaction_queuing_many_any_jobs_looks_for_free_servers_once(
    online, published, django_capture_on_commit_callbacks
):
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True, slots=2)

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for i in range(10):
            job_submit(owner=local_user(), target_server_alias="any", generation_params={"i": i})

    # One message per free slot, as for a single job; not one per slot and job.
    assert sorted(args[0] for _, args in names(published)) == sorted(
        [online.pk, other.pk, other.pk]
    )


def test_each_transaction_sends_its_own_nudges(
    online, published, django_capture_on_commit_callbacks
):
    for i in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            job_submit(owner=local_user(), target_server_alias="Laptop", generation_params={"i": i})

    assert names(published) == [("queue_app.tasks.run_server", (online.pk,))] * 2


def test_a_job_after_a_rolled_back_submit_is_still_nudged(
    online, published, django_capture_on_commit_callbacks
):
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        # The savepoint rolls back, and with it the nudge registered in it.
        with contextlib.suppress(RuntimeError), transaction.atomic():
            job_submit(owner=local_user(), target_server_alias="Laptop", generation_params={})
            raise RuntimeError
        job_submit(owner=local_user(), target_server_alias="Desktop", generation_params={})

    assert names(published) == [("queue_app.tasks.run_server", (other.pk,))]


def test_jobs_due_later_schedule_one_release_per_time_and_no_run(
    online, published, django_capture_on_commit_callbacks
):
    at = timezone.now() + timedelta(minutes=5)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for i in range(3):
            job_submit(
                owner=local_user(),
                target_server_alias="Laptop",
                generation_params={"i": i},
                not_before=at,
            )

    assert [name for name, _ in names(published)] == ["queue_app.tasks.release_due_jobs"]


def test_servers_with_work_counts_free_slots(online):
    Server.objects.filter(pk=online.pk).update(slots=3)
    baker.make(Job, server=online, status=JobStatus.PROCESSING, generation_params={"a": 1})
    baker.make(Job, server=online, status=JobStatus.PENDING, generation_params={"a": 1})

    assert tasks.servers_with_work() == [online.pk, online.pk]


def test_servers_with_work_skips_offline_disabled_idle_and_backing_off(online):
    off = baker.make(Server, alias="Off", api_url="http://x:1", is_online=False)
    disabled = baker.make(Server, alias="Dis", api_url="http://y:1", enabled=False)
    backing_off = baker.make(Server, alias="Wait", api_url="http://z:1", is_online=True)
    for server in (off, disabled):
        baker.make(Job, server=server, status=JobStatus.PENDING, generation_params={"a": 1})
    baker.make(
        Job,
        server=backing_off,
        status=JobStatus.PENDING,
        generation_params={"a": 1},
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )

    # Nor does a job whose server was deleted (no claim takes it: it is not an "any" job).
    baker.make(Job, server=None, target_server_alias="Gone", generation_params={"a": 1})

    assert tasks.servers_with_work() == []


def test_servers_with_work_reads_a_few_jobs_however_many_wait(online):
    """Whether a server has work is a probe of its queue's head, not a count of its queue:
    with thousands waiting, each statement reads a few job rows."""
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's plans (EXPLAIN ANALYZE)")
    other = baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True, slots=2)
    later = timezone.now() + timedelta(minutes=5)
    owner = local_user()
    jobs = [
        Job(
            server=server,
            target_server_alias=server.alias if server else "any",
            generation_params={"a": 1},
            priority=i % 3,
            next_attempt_at=later if i % 11 == 0 else None,
            owner=owner,
        )
        for i in range(2000)
        for server in (online, other, None)
    ]
    Job.objects.bulk_create(jobs, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Job._meta.db_table)}")

    with CaptureQueriesContext(connection) as queries:
        assert sorted(tasks.servers_with_work()) == sorted([online.pk, other.pk, other.pk])

    job_table = Job._meta.db_table
    for query in queries.captured_queries:
        for node in explained(query["sql"], analyze=True):
            if node.get("Relation Name") == job_table:
                read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                assert read * node["Actual Loops"] <= 10, (query["sql"], node["Node Type"])


def test_reconcile_recovers_dead_workers_jobs_and_interrupts_their_task(online, published):
    baker.make(Job, server=online, generation_params={"a": 1})
    claim = dispatch.job_claim_next(server_id=online.pk)
    Job.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    Server.objects.update(last_checked_at=timezone.now())

    tasks.reconcile()

    job = Job.objects.get()
    assert (job.status, job.retry_count) == (JobStatus.PENDING, 1)
    assert ("queue_app.tasks.interrupt_task", (online.pk, claim.task_id)) in names(published)
    assert ("queue_app.tasks.run_server", (online.pk,)) in names(published)


def test_the_lease_recovery_requeues_a_dead_workers_job_and_runs_its_server_at_once(
    online, published
):
    baker.make(Job, server=online, generation_params={"a": 1})
    claim = dispatch.job_claim_next(server_id=online.pk)
    Job.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    tasks.recover_expired_leases()

    job = Job.objects.get()
    assert (job.status, job.retry_count, job.next_attempt_at) == (JobStatus.PENDING, 1, None)
    assert names(published) == [
        ("queue_app.tasks.interrupt_task", (online.pk, claim.task_id)),
        ("queue_app.tasks.run_server", (online.pk,)),
    ]


def test_the_lease_recovery_leaves_live_leases_alone_and_sends_nothing(online, published):
    baker.make(Job, server=online, generation_params={"a": 1})
    dispatch.job_claim_next(server_id=online.pk)

    tasks.recover_expired_leases()

    assert Job.objects.get().status == JobStatus.PROCESSING
    assert published == []


def test_a_dead_workers_job_is_noticed_within_about_15_seconds_by_default():
    """Heartbeat, then a lease without one, then at most one recovery period."""
    entry = settings.CELERY_BEAT_SCHEDULE["recover-leases"]
    assert entry["task"] == "queue_app.tasks.recover_expired_leases"
    worst = (
        settings.MOBILESD_HEARTBEAT_SECONDS + settings.MOBILESD_LEASE_SECONDS + entry["schedule"]
    )
    assert worst <= 15


def test_reconcile_health_checks_offline_and_stale_servers(online, published):
    Server.objects.filter(pk=online.pk).update(last_checked_at=timezone.now())
    off = baker.make(Server, alias="Off", api_url="http://x:1", is_online=False)
    stale = baker.make(
        Server,
        alias="Stale",
        api_url="http://y:1",
        is_online=True,
        last_checked_at=timezone.now() - timedelta(hours=1),
    )

    tasks.reconcile()

    checked = {
        args[0] for name, args in names(published) if name == "servers_app.tasks.check_server"
    }
    assert checked == {off.pk, stale.pk}


def test_run_server_of_a_deleted_server_does_nothing(db):
    tasks.run_server(12345)  # must not raise


@pytest.mark.django_db(transaction=True)
def test_interrupt_task_stops_only_that_task(published):
    sim = ForgeSimulator(SimulatorConfig(seconds_per_step=0.05)).start()
    try:
        server = baker.make(Server, alias="Sim", api_url=sim.url)
        import threading

        import requests

        body = {"prompt": "x", "steps": 100, "force_task_id": "theirs", "width": 64, "height": 64}
        thread = threading.Thread(
            target=requests.post, args=(f"{sim.url}/sdapi/v1/txt2img",), kwargs={"json": body}
        )
        thread.start()
        sim.wait_for_event("txt2img_started", timeout=10)

        tasks.interrupt_task(server.pk, "ours")
        assert not any(event["type"] == "interrupt" for event in sim.events)

        tasks.interrupt_task(server.pk, "theirs")
        assert sim.wait_for_event("interrupt", timeout=5)["task_id"] == "theirs"
        thread.join(10)
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("threads", "servers", "warned"), [(8, 6, False), (8, 7, True), (2, 1, True)]
)
def test_a_worker_needs_a_thread_per_server_and_two_spare(threads, servers, warned):
    warning = tasks.threads_shortfall_warning(threads=threads, servers=servers)

    assert (warning is not None) is warned
    if warned:
        assert f"at least {servers + 2}" in warning


def test_the_worker_warns_at_start_when_its_threads_are_short(db, caplog):
    baker.make(Server, enabled=True, _quantity=3)
    consumer = types.SimpleNamespace(controller=types.SimpleNamespace(concurrency=4))

    with caplog.at_level("WARNING", logger="queue_app.tasks"):
        tasks._ready_for_the_servers(sender=consumer)

    assert "This worker has 4 threads for 3 enabled servers" in caplog.text


def test_a_worker_with_threads_enough_says_nothing(db, caplog):
    baker.make(Server, enabled=True, _quantity=2)
    consumer = types.SimpleNamespace(controller=types.SimpleNamespace(concurrency=4))

    with caplog.at_level("WARNING", logger="queue_app.tasks"):
        tasks._ready_for_the_servers(sender=consumer)

    assert "threads for" not in caplog.text
