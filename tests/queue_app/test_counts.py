"""The job counts (queue_app/counts.py): kept exact by the database's triggers through
every kind of change, the job list's `total` from them, the first pages read in index
order, and the admin's and dashboard's pages without a count of every job."""

import random
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Case, CharField, Count, F, Value, When
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from model_bakery import baker
from rest_framework.test import APIClient

from core_app.throttling import ApiKeyRateThrottle
from queue_app import dispatch
from queue_app.counts import (
    counted_total,
    job_counts_drop,
    job_counts_fold,
    job_counts_install,
    job_list_count,
    job_total,
)
from queue_app.models import ANY_SERVER, Job, JobCount, JobStatus
from queue_app.services import job_cancel, job_delete, job_retry, job_run_again, job_submit
from queue_app.tasks import fold_job_counts
from servers_app.models import Server
from servers_app.services import server_delete, server_update
from tests.metrics_support import scrape
from tests.support import assert_read_in_index_order, explained, new_key

User = get_user_model()
LIST = "/api/v1/queue/jobs"
Key = tuple[str, int | None, str, int]


def counted() -> dict[Key, int]:
    """The counts table, summed per key (keys with no jobs left out)."""
    sums: dict[Key, int] = {}
    for row in JobCount.objects.values_list("status", "server_id", "target", "owner_id", "n"):
        sums[row[:4]] = sums.get(row[:4], 0) + row[4]
    return {key: n for key, n in sums.items() if n}


def truth() -> dict[Key, int]:
    """The same from the jobs themselves: GROUP BY over every job."""
    target = Case(
        When(server__isnull=True, then=F("target_server_alias")),
        default=Value(""),
        output_field=CharField(),
    )
    rows = (
        Job.objects.annotate(target=target)
        .order_by()
        .values_list("status", "server_id", "target", "owner_id")
        .annotate(n=Count("pk"))
    )
    return {row[:4]: row[4] for row in rows}


def assert_counts_exact() -> None:
    assert counted() == truth()
    job_counts_fold()
    assert counted() == truth()
    # Folded: one row per key, none for a key without jobs.
    assert JobCount.objects.count() == len(truth())


@pytest.fixture
def online(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


@pytest.fixture
def users(db) -> list[Any]:
    return [User.objects.create(username="ann"), User.objects.create(username="bob")]


def make(server: Server | None, owner: Any, status: str = JobStatus.PENDING, **fields) -> Job:
    return baker.make(
        Job,
        server=server,
        target_server_alias=server.alias if server else ANY_SERVER,
        generation_params={"positive_prompt": "x"},
        owner=owner,
        status=status,
        **fields,
    )


@pytest.fixture
def history(online, users) -> dict[str, Any]:
    """A few jobs of each status, on the server and for "any", of two users."""
    ann, bob = users
    jobs: dict[str, Any] = {}
    for status in JobStatus.values:
        for owner in users:
            jobs[f"{status}:{owner.username}"] = make(online, owner, status)
        jobs[f"{status}:any"] = make(None, ann, status) if status != "processing" else None
    jobs["desktop"] = baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:2")
    make(jobs["desktop"], bob, JobStatus.COMPLETED)
    return jobs


def claimed(online: Server) -> dispatch.Claim:
    claim = dispatch.job_claim_next(server_id=online.pk)
    assert claim is not None
    return claim


def _submit(online, users, jobs):
    job_submit(owner=users[1], target_server_alias=ANY_SERVER, generation_params={"p": 1})
    job_submit(owner=users[0], target_server_alias=online.alias, generation_params={"p": 1})


def _claim(online, users, jobs):
    Job.objects.filter(status=JobStatus.PROCESSING).delete()  # free the slot
    claimed(online)  # the engine's raw SQL claim: pending -> processing, an "any" gets a server


def _start_reserved(online, users, jobs):
    Job.objects.filter(status=JobStatus.PROCESSING).delete()
    running = claimed(online)
    reserved = dispatch.job_reserve_next(running=running)
    assert reserved is not None
    assert dispatch.job_start_reserved(reserved=reserved, finishing=running)  # raw SQL


def _complete(online, users, jobs):
    Job.objects.filter(status=JobStatus.PROCESSING).delete()
    assert dispatch.job_complete(claim=claimed(online), images=[], generation_info={})


def _fail(online, users, jobs):
    Job.objects.filter(status=JobStatus.PROCESSING).delete()
    assert dispatch.job_fail(claim=claimed(online), error="boom")


def _release(online, users, jobs):
    Job.objects.filter(status=JobStatus.PROCESSING).delete()
    claim = claimed(online)
    assert dispatch.job_release(claim=claim, error="offline", count_attempt=False)


def _recover_lease(online, users, jobs):
    Job.objects.filter(status=JobStatus.PROCESSING).update(
        lease_token=uuid.uuid4(), lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert dispatch.jobs_recover_expired_leases()


def _cancel(online, users, jobs):
    job_cancel(job_id=jobs["pending:ann"].pk, owner=None)
    job_cancel(job_id=jobs["processing:bob"].pk, owner=None)


def _retry(online, users, jobs):
    job_retry(job_id=jobs["failed:bob"].pk, owner=None)
    job_retry(job_id=jobs["cancelled:any"].pk, owner=None)


def _delete(online, users, jobs):
    job_delete(job_id=jobs["completed:ann"].pk, owner=None)


def _run_again(online, users, jobs):
    job_run_again(job_id=jobs["completed:any"].pk, owner=None)


def _server_delete(online, users, jobs):
    server_delete(server=jobs["desktop"])  # its finished jobs: server SET NULL


def _server_rename(online, users, jobs):
    server_update(server=online, data={"alias": "Renamed"}, partial=True)


def _bulk_update(online, users, jobs):
    Job.objects.filter(status=JobStatus.PENDING).update(status=JobStatus.CANCELLED)
    Job.objects.filter(owner=users[0]).update(owner=users[1])
    Job.objects.filter(server=online, status=JobStatus.COMPLETED).update(server=None)


def _bulk_create_and_delete(online, users, jobs):
    Job.objects.bulk_create(
        Job(target_server_alias=ANY_SERVER, generation_params={}, owner=users[0]) for _ in range(5)
    )
    Job.objects.filter(status=JobStatus.FAILED).delete()


def _raw_sql(online, users, jobs):
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Job._meta.db_table} SET status = %s, server_id = NULL WHERE status = %s",
            [JobStatus.FAILED, JobStatus.COMPLETED],
        )


def _progress_only(online, users, jobs):
    # Writes that do not change a key leave the counts table alone.
    before = JobCount.objects.count()
    Job.objects.update(progress={"fraction": 0.5}, priority=3, lease_expires_at=timezone.now())
    assert JobCount.objects.count() == before


OPERATIONS: dict[str, Callable[..., None]] = {
    "submit": _submit,
    "claim": _claim,
    "start reserved": _start_reserved,
    "complete": _complete,
    "fail": _fail,
    "release": _release,
    "recover lease": _recover_lease,
    "cancel": _cancel,
    "retry": _retry,
    "delete": _delete,
    "run again": _run_again,
    "server delete": _server_delete,
    "server rename": _server_rename,
    "bulk update": _bulk_update,
    "bulk create and delete": _bulk_create_and_delete,
    "raw sql": _raw_sql,
    "progress only": _progress_only,
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_the_counts_equal_the_jobs_after_every_kind_of_change(operation, online, users, history):
    assert_counts_exact()

    OPERATIONS[operation](online, users, history)

    assert_counts_exact()


def test_a_rolled_back_change_leaves_the_counts_as_they_were(online, users):
    make(online, users[0])

    def change_and_fail() -> None:
        with transaction.atomic():
            Job.objects.update(status=JobStatus.COMPLETED)
            make(None, users[1])
            raise RuntimeError

    with pytest.raises(RuntimeError):
        change_and_fail()

    assert counted() == truth() == {("pending", online.pk, "", users[0].pk): 1}


def test_a_recount_repairs_counts_that_lost_their_triggers(online, users):
    make(online, users[0], JobStatus.COMPLETED)
    JobCount.objects.all().delete()
    assert counted() != truth()

    assert job_counts_install(force=True)

    assert counted() == truth()
    assert not job_counts_install()  # installed: nothing to do


def test_a_migrate_reinstalls_lost_triggers_and_recounts(online, users):
    """As after SQLite rebuilt the job table in a migration (the triggers go with it)."""
    job_counts_drop()
    make(online, users[0], JobStatus.FAILED)
    assert counted() != truth()

    assert job_counts_install()  # what post_migrate runs

    assert counted() == truth()
    make(online, users[1])
    assert counted() == truth()


def test_the_fold_task_folds(online, users):
    for _ in range(3):
        make(online, users[0], JobStatus.COMPLETED)
    Job.objects.update(status=JobStatus.FAILED)
    assert JobCount.objects.count() == 9

    fold_job_counts()

    assert list(JobCount.objects.values_list("status", "n")) == [("failed", 3)]


def test_the_counts_answer_only_filters_of_their_columns(online, users):
    make(online, users[0], JobStatus.COMPLETED)
    make(None, users[1])
    jobs = Job.objects.select_related("server").order_by("-created_at", "-id")

    assert counted_total(jobs) == 2
    assert counted_total(jobs.filter(status="completed", owner=users[0])) == 1
    assert counted_total(jobs.filter(owner=users[1].pk)) == 1
    assert counted_total(jobs.filter(server__isnull=True)) == 1
    assert counted_total(jobs.filter(server__id=online.pk)) == 1
    assert counted_total(jobs.filter(status__in=["completed", "pending"])) == 2
    for uncounted in (
        jobs.filter(server__alias="Laptop"),
        jobs.filter(created_at__gte=timezone.now() - timedelta(days=1)),
        jobs.exclude(status="completed"),
        jobs.filter(status="completed") | jobs.filter(status="pending"),
        jobs.filter(status="completed").filter(status="pending"),
        jobs.distinct(),
    ):
        assert counted_total(uncounted) is None
        assert job_list_count(uncounted) == uncounted.count()
    assert job_total(status="completed") == 1


# --- the job list ----------------------------------------------------------------------------


def api(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def job_selects(queries: list[dict[str, str]]) -> list[str]:
    table = Job._meta.db_table
    return [q["sql"] for q in queries if re.search(rf'FROM "{table}"', q["sql"])]


def counts_of_jobs(queries: list[dict[str, str]]) -> list[str]:
    return [sql for sql in job_selects(queries) if "COUNT(" in sql.upper()]


@pytest.mark.parametrize(
    "query", [{}, {"status": "completed"}, {"status": "pending", "order": "asc"}]
)
def test_the_list_total_comes_from_the_counts(query, client, online, users, history):
    with CaptureQueriesContext(connection) as queries:
        body = client.get(LIST, {**query, "limit": 2}).json()

    assert (
        body["total"]
        == Job.objects.filter(**{k: v for k, v in query.items() if k == "status"}).count()
    )
    assert len(body["jobs"]) == 2
    assert counts_of_jobs(queries.captured_queries) == []


def test_a_client_key_total_counts_its_own_jobs_from_the_counts(online, users, history):
    _, raw = new_key("ann's phone", username="ann", scope="client")
    with CaptureQueriesContext(connection) as queries:
        everything = api(raw).get(LIST).json()
        completed = api(raw).get(LIST, {"status": "completed"}).json()

    ann = users[0]
    assert everything["total"] == Job.objects.filter(owner=ann).count() == 9
    assert completed["total"] == Job.objects.filter(owner=ann, status="completed").count() == 2
    assert {job["mobilesd_job_id"] for job in completed["jobs"]} == {
        str(pk)
        for pk in Job.objects.filter(owner=ann, status="completed").values_list("pk", flat=True)
    }
    assert counts_of_jobs(queries.captured_queries) == []


def test_a_deep_offset_stays_correct(client, online, users):
    for _ in range(7):
        make(online, users[0], JobStatus.COMPLETED)
    expected = list(
        Job.objects.filter(status="completed")
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )[5:]

    body = client.get(LIST, {"status": "completed", "offset": 5}).json()

    assert body["total"] == 7
    assert [job["mobilesd_job_id"] for job in body["jobs"]] == [str(pk) for pk in expected]


# --- the exact total under concurrent status changes (PostgreSQL) ----------------------------


def _in_thread(errors: list[BaseException], body: Callable[[], None]) -> threading.Thread:
    def target() -> None:
        try:
            body()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_every_total_is_exact_while_jobs_change_status(monkeypatch):
    """Writers move jobs between statuses (several per transaction), insert and delete
    jobs, and fold the counts, while readers page through the list with a page big enough
    for every match: each read's `total` must equal the number of jobs its page found, i.e.
    the count of one committed state, and at the end the counts equal the jobs."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions need PostgreSQL")
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "100000/min"})
    _, admin_raw = new_key("admin", username="ann")
    _, client_raw = new_key("bob's phone", username="bob", scope="client")
    ann, bob = User.objects.get(username="ann"), User.objects.get(username="bob")
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1")
    for i in range(60):
        make(server if i % 2 else None, ann if i % 3 else bob, JobStatus.values[i % 5])
    ids = list(Job.objects.values_list("pk", flat=True))
    statuses = JobStatus.values
    stop = threading.Event()
    errors: list[BaseException] = []
    reads: list[tuple[str, dict[str, str], int, int]] = []
    moves: list[int] = []

    def move() -> None:
        rng = random.Random()
        while not stop.is_set():
            with transaction.atomic():
                # In a fixed order: two movers must not deadlock on the job rows.
                for pk in sorted(rng.sample(ids, rng.randint(1, 4))):
                    Job.objects.filter(pk=pk).update(status=rng.choice(statuses))
            moves.append(1)

    def churn() -> None:
        rng = random.Random()
        while not stop.is_set():
            job = make(None, rng.choice([ann, bob]), rng.choice(statuses))
            job.delete()

    def fold() -> None:
        while not stop.is_set():
            job_counts_fold()

    def read(raw: str, name: str) -> Callable[[], None]:
        def body() -> None:
            rng = random.Random()
            reader = api(raw)
            for _ in range(60):
                query = rng.choice([{}, {"status": rng.choice(statuses)}])
                page = reader.get(LIST, {**query, "limit": 200}).json()
                reads.append((name, query, page["total"], len(moves)))
                assert page["total"] == len(page["jobs"]), (name, query, page["total"])

        return body

    writers = [_in_thread(errors, body) for body in (move, move, churn, fold)]
    readers = [
        _in_thread(errors, read(admin_raw, "admin")),
        _in_thread(errors, read(client_raw, "client")),
    ]
    for thread in readers:
        thread.join(timeout=120)
    stop.set()
    for thread in writers:
        thread.join(timeout=30)

    assert not errors, errors[:3]
    assert len(reads) == 120
    # The statuses kept changing while the reads went on.
    assert max(read[3] for read in reads) > min(read[3] for read in reads)
    assert counted() == truth()


# --- first pages in index order (PostgreSQL) ------------------------------------------------


@pytest.fixture(scope="class")
def big_history(django_db_setup, django_db_blocker) -> Iterator[list[Any]]:
    """12,000 jobs of 20 users on 3 servers and "any", committed once for the tests of a
    class (filling them took 3 s a test) and flushed after its last test, as a
    transactional test's data is; each test's own changes still roll back."""
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.skip("reads PostgreSQL's plans (EXPLAIN (FORMAT JSON))")
        servers = [
            baker.make(Server, alias=f"S{i}", api_url=f"http://127.0.0.1:{i + 1}") for i in range(3)
        ]
        many = [User.objects.create(username=f"u{i}") for i in range(20)]
        jobs = []
        for i in range(12000):
            server = servers[i % 3] if i % 4 else None
            job = Job(
                server=server,
                target_server_alias=server.alias if server else ANY_SERVER,
                generation_params={"positive_prompt": "x"},
                owner=many[3] if i % 2 else many[i % 20],  # u3: the client key's, a heavy user
            )
            # Mostly completed, as a history is; every status enough for more than a page.
            job.status = JobStatus.COMPLETED if i % 3 else JobStatus.values[(i // 3) % 5]
            jobs.append(job)
        # Then a batch queued on top, as a queue is: the newest 3,000 jobs pending. A page
        # of another status read in creation order would skip all of them first.
        for i in range(3000):
            server = servers[i % 3]
            jobs.append(
                Job(
                    server=server,
                    target_server_alias=server.alias,
                    generation_params={"positive_prompt": "x"},
                    owner=many[3] if i % 2 else many[i % 20],
                )
            )
        Job.objects.bulk_create(jobs, batch_size=5000)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Job._meta.db_table}")
        try:
            yield many
        finally:
            call_command("flush", interactive=False, verbosity=0)


@pytest.mark.django_db
class TestBigHistory:
    """On the committed history of `big_history`."""

    @pytest.mark.parametrize(
        ("scope", "query"),
        [
            ("admin", {}),
            ("admin", {"order": "asc"}),
            ("admin", {"status": "completed"}),
            ("admin", {"status": "completed", "order": "asc"}),
            ("admin", {"status": "pending"}),
            ("admin", {"owner": "u3"}),
            ("admin", {"owner": "u3", "status": "completed"}),
            ("client", {}),
            ("client", {"order": "asc"}),
            ("client", {"status": "failed"}),
            ("client", {"status": "completed", "order": "asc"}),
        ],
    )
    def test_the_first_page_is_read_in_index_order(self, scope, query, big_history):
        _, raw = new_key("key", username="u3", scope=scope)
        with CaptureQueriesContext(connection) as queries:
            body = api(raw).get(LIST, query).json()
        assert body["jobs"]

        (page,) = [sql for sql in job_selects(queries.captured_queries) if "LIMIT" in sql]
        assert_read_in_index_order(explained(page), Job._meta.db_table)

    @pytest.mark.parametrize("scope", ["admin", "client"])
    @pytest.mark.parametrize("order", ["desc", "asc"])
    @pytest.mark.parametrize("status", JobStatus.values)
    def test_a_status_page_reads_only_the_rows_it_shows(self, scope, order, status, big_history):
        """Whatever the planner estimates, a status's first page reads that status's jobs
        only, not the 3,000 newer pending ones (or the history) first, filtered away. A
        client key's page may read the status's jobs of other users too: as many more as
        its user's share of them says (u3 has about half), never more."""
        user = big_history[3]
        share = 1.0
        if scope == "client":
            share = Job.objects.filter(status=status, owner=user).count() / (
                Job.objects.filter(status=status).count()
            )
        _, raw = new_key("key", username="u3", scope=scope)
        with CaptureQueriesContext(connection) as queries:
            body = api(raw).get(LIST, {"status": status, "order": order, "limit": 20}).json()
        assert len(body["jobs"]) == 20
        assert {job["status"] for job in body["jobs"]} == {status}

        (page,) = [sql for sql in job_selects(queries.captured_queries) if "LIMIT" in sql]
        scans = [
            node
            for node in explained(page, analyze=True)
            if node.get("Relation Name") == Job._meta.db_table
        ]
        read = sum(
            (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
            for node in scans
        )
        # 21 rows: the page's and the one after it that ends the scan.
        bound = 21 / share * 1.25
        assert read <= bound, [(node["Node Type"], node.get("Index Name")) for node in scans]

    def test_the_metrics_windows_are_read_through_indexes(self, settings, big_history):
        now = timezone.now()
        recent = Job.objects.filter(status=JobStatus.COMPLETED).values_list("pk", flat=True)[:50]
        Job.objects.filter(pk__in=list(recent)).update(
            started_at=now - timedelta(seconds=30), completed_at=now
        )
        Job.objects.exclude(pk__in=list(recent)).filter(status=JobStatus.COMPLETED).update(
            started_at=now - timedelta(days=9), completed_at=now - timedelta(days=9)
        )
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Job._meta.db_table}")
        settings.MOBILESD_METRICS_TOKEN = "metrics-token"

        with CaptureQueriesContext(connection) as queries:
            scrape(Client(HTTP_AUTHORIZATION="Bearer metrics-token"))

        reads = job_selects(queries.captured_queries)
        assert len(reads) == 2  # the queue waits' window and the run times'
        for sql in reads:
            scans = [
                node["Node Type"]
                for node in explained(sql)
                if node.get("Relation Name") == Job._meta.db_table
            ]
            assert scans
            assert "Seq Scan" not in scans, scans


def test_an_admins_owner_filter_totals_from_the_counts(users, history):
    _, raw = new_key("admin key", username="root", scope="admin")
    with CaptureQueriesContext(connection) as queries:
        body = api(raw).get(LIST, {"owner": "bob", "status": "completed"}).json()
        unknown = api(raw).get(LIST, {"owner": "nobody"}).json()

    bobs = Job.objects.filter(owner=users[1], status="completed")
    assert body["total"] == bobs.count() > 0
    assert {job["mobilesd_job_id"] for job in body["jobs"]} == {
        str(pk) for pk in bobs.values_list("pk", flat=True)
    }
    assert {job["owner"] for job in body["jobs"]} == {"bob"}
    assert unknown["total"] == 0
    assert unknown["jobs"] == []
    assert counts_of_jobs(queries.captured_queries) == []


# --- the admin and the dashboard --------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "matching"),
    [
        ({}, {}),
        ({"status__exact": "completed"}, {"status": "completed"}),
        ({"status__exact": "pending", "p": "1"}, {"status": "pending"}),
        ({"server__id__exact": "ONLINE"}, {"server": "ONLINE"}),
    ],
)
def test_the_admin_job_list_counts_no_jobs(query, matching, admin_client, online, history):
    def online_pk(filters: dict[str, str]) -> dict[str, Any]:
        return {k: online.pk if v == "ONLINE" else v for k, v in filters.items()}

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:queue_app_job_changelist"), online_pk(query))

    changelist = response.context["cl"]
    assert changelist.result_count == Job.objects.filter(**online_pk(matching)).count()
    assert len(changelist.result_list) == changelist.result_count
    assert counts_of_jobs(queries.captured_queries) == []


def test_the_admin_job_list_counts_what_the_counts_cannot_answer(admin_client, online, history):
    response = admin_client.get(reverse("admin:queue_app_job_changelist"), {"q": "x"})

    assert response.context["cl"].result_count == Job.objects.count()


def test_the_dashboard_and_the_server_list_count_no_jobs(admin_client, online, users, history):
    with CaptureQueriesContext(connection) as queries:
        status = admin_client.get(reverse("admin:dashboard_status")).json()
        servers = admin_client.get(reverse("admin:servers_app_server_changelist"))

    assert status["counts"] == {s: Job.objects.filter(status=s).count() for s in JobStatus.values}
    assert status["unassigned_pending"] == Job.objects.filter(status="pending", server=None).count()
    laptop = next(server for server in status["servers"] if server["id"] == online.pk)
    assert laptop["queue_depth"] == Job.objects.filter(server=online, status="pending").count()
    (row,) = [s for s in servers.context["cl"].result_list if s.pk == online.pk]
    assert row.pending_count == 2
    assert row.running_count == 2
    assert counts_of_jobs(queries.captured_queries) == []


def test_the_metrics_scrape_reads_jobs_only_within_its_windows(settings, online, history):
    settings.MOBILESD_METRICS_TOKEN = "metrics-token"
    server_delete(server=history["desktop"])  # its job keeps the alias as its label

    with CaptureQueriesContext(connection) as queries:
        samples = scrape(Client(HTTP_AUTHORIZATION="Bearer metrics-token"))

    jobs = {labels: n for (name, labels), n in samples.items() if name == "mobilesd_jobs"}
    assert jobs[frozenset({"status": "completed", "server": "Desktop"}.items())] == 1
    assert jobs[frozenset({"status": "pending", "server": "Laptop"}.items())] == 2
    assert jobs[frozenset({"status": "failed", "server": "any"}.items())] == 1
    assert sum(jobs.values()) == Job.objects.count()
    reads = job_selects(queries.captured_queries)
    assert reads
    assert all(re.search(r'"(started_at|completed_at)" >=', sql) for sql in reads), reads
