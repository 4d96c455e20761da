"""The changes-since feed (issue #14 point 3): the lists of jobs, batches and downloads carry
`next_cursor`; `?updated_since=<cursor>` answers exactly the rows changed after it, with the
ids deleted since, paged by the cursor; a key sees its own user's changes only; a cursor
whose events are pruned is a 410, a bad one a 400; and a reader following the feed while
writers change jobs ends with exactly the database's jobs."""

import random
import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from model_bakery import baker
from rest_framework.test import APIClient

from civitai_app.models import Download, DownloadStatus
from events_app import feeds
from events_app.models import EventLog
from events_app.selectors import events_head
from events_app.sequencer import events_sequence
from queue_app import views as job_views
from queue_app.models import Batch, Job, JobStatus
from servers_app.models import Server
from tests.support import new_key

User = get_user_model()

LISTS = {
    "jobs": ("/api/v1/queue/jobs", "mobilesd_job_id"),
    "batches": ("/api/v1/batches", "batch_id"),
    "downloads": ("/api/v1/civitai/downloads", "download_id"),
}


def key_client(username: str, scope: str) -> APIClient:
    _, raw = new_key(f"{username}'s phone", username=username, scope=scope)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


@pytest.fixture
def admin(db) -> APIClient:
    return key_client("root", "admin")


@pytest.fixture
def ann(db) -> APIClient:
    return key_client("ann", "client")


@pytest.fixture
def laptop(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")


def user(username: str) -> Any:
    return User.objects.get_or_create(username=username)[0]


def new_job(laptop: Server, *, owner: str = "ann", **fields: Any) -> Job:
    fields = {"generation_params": {"positive_prompt": "a lighthouse", "steps": 5}, **fields}
    return baker.make(
        Job, owner=user(owner), server=laptop, target_server_alias=laptop.alias, **fields
    )


def new_batch(laptop: Server, *, jobs: int = 2, owner: str = "ann") -> Batch:
    batch = baker.make(
        Batch, owner=user(owner), server=laptop, target_server_alias=laptop.alias, job_count=jobs
    )
    for index in range(jobs):
        new_job(laptop, owner=owner, batch=batch, batch_index=index)
    return batch


def new_download(*, owner: str = "ann") -> Download:
    return baker.make(Download, owner=user(owner), status=DownloadStatus.PENDING)


def change(job: Job, **fields: Any) -> None:
    Job.objects.filter(pk=job.pk).update(**fields)


def feed(api: APIClient, cursor: int, path: str = LISTS["jobs"][0], **params: Any) -> dict:
    response = api.get(path, {"updated_since": cursor, **params})
    assert response.status_code == 200, response.content
    return response.json()


def ids(answer: dict, key: str = "jobs") -> list[str]:
    return [row[LISTS[key][1]] for row in answer[key]]


def head() -> int:
    events_sequence()
    return events_head()


# --- next_cursor on every list answer ----------------------------------------------------


@pytest.mark.parametrize("key", LISTS)
def test_every_list_answers_the_head_as_next_cursor(admin, laptop, key):
    new_batch(laptop)
    new_download()
    response = admin.get(LISTS[key][0])
    assert response.json()["next_cursor"] == head() > 0


def test_the_list_keeps_its_envelope_without_feed_fields(admin, laptop):
    new_job(laptop)
    body = admin.get("/api/v1/queue/jobs").json()
    assert set(body) == {"total", "limit", "offset", "jobs", "next_cursor"}


def test_a_list_next_cursor_covers_what_the_list_saw(admin, laptop):
    new_job(laptop)
    cursor = admin.get("/api/v1/queue/jobs").json()["next_cursor"]
    assert feed(admin, cursor)["jobs"] == []


def test_a_change_after_a_list_is_answered_from_its_next_cursor(admin, laptop):
    job, _ = new_job(laptop), new_job(laptop)
    cursor = admin.get("/api/v1/queue/jobs").json()["next_cursor"]
    change(job, priority=7)
    answer = feed(admin, cursor)
    assert ids(answer) == [str(job.pk)]
    assert answer["jobs"][0]["priority"] == 7


# --- updated_since=0: the full sync -------------------------------------------------------


def test_updated_since_zero_answers_every_row(admin, laptop):
    jobs = {str(new_job(laptop).pk) for _ in range(3)}
    answer = feed(admin, 0)
    assert set(ids(answer)) == jobs
    assert (answer["deleted"], answer["has_more"], answer["next_cursor"]) == ([], False, head())


def test_updated_since_zero_pages_by_offset_and_says_has_more(admin, laptop):
    jobs = {str(new_job(laptop).pk) for _ in range(3)}
    first = feed(admin, 0, limit=2)
    second = feed(admin, 0, limit=2, offset=2)
    assert (first["has_more"], second["has_more"]) == (True, False)
    assert set(ids(first)) | set(ids(second)) == jobs


# --- updated_since=N: what changed after N ------------------------------------------------


def test_the_feed_answers_exactly_the_rows_changed_after_the_cursor(admin, laptop):
    quiet, started, edited = new_job(laptop), new_job(laptop), new_job(laptop)
    cursor = head()
    change(started, status=JobStatus.PROCESSING)
    change(edited, priority=3)
    answer = feed(admin, cursor)
    assert ids(answer) == [str(started.pk), str(edited.pk)]
    assert str(quiet.pk) not in ids(answer)
    assert (answer["deleted"], answer["has_more"], answer["total"]) == ([], False, 2)


def test_the_feed_answers_a_row_in_its_state_now(admin, laptop):
    job = new_job(laptop)
    cursor = head()
    change(job, status=JobStatus.PROCESSING)
    change(job, status=JobStatus.COMPLETED)
    (row,) = feed(admin, cursor)["jobs"]
    assert row["status"] == JobStatus.COMPLETED


def test_the_feed_answers_a_new_row(admin, laptop):
    cursor = head()
    job = new_job(laptop)
    assert ids(feed(admin, cursor)) == [str(job.pk)]


def test_the_feed_at_the_head_answers_nothing_and_stays_there(admin, laptop):
    new_job(laptop)
    cursor = head()
    answer = feed(admin, cursor)
    assert (answer["jobs"], answer["deleted"], answer["next_cursor"], answer["has_more"]) == (
        [],
        [],
        cursor,
        False,
    )


def test_the_feed_ends_at_the_head(admin, laptop):
    cursor = head()
    new_job(laptop)
    assert feed(admin, cursor)["next_cursor"] == head() > cursor


def test_a_job_deleted_after_the_cursor_is_among_deleted(admin, laptop):
    kept, gone = new_job(laptop), new_job(laptop)
    cursor = head()
    change(kept, priority=1)
    Job.objects.filter(pk=gone.pk).delete()
    answer = feed(admin, cursor)
    assert (ids(answer), answer["deleted"]) == ([str(kept.pk)], [str(gone.pk)])


def test_a_job_created_and_deleted_after_the_cursor_is_among_deleted(admin, laptop):
    cursor = head()
    job = new_job(laptop)
    Job.objects.filter(pk=job.pk).delete()
    answer = feed(admin, cursor)
    assert (answer["jobs"], answer["deleted"]) == ([], [str(job.pk)])


def test_a_job_deleted_before_the_cursor_is_not_among_deleted(admin, laptop):
    job = new_job(laptop)
    Job.objects.filter(pk=job.pk).delete()
    cursor = head()
    new_job(laptop)
    assert feed(admin, cursor)["deleted"] == []


def test_the_feed_pages_by_next_cursor_while_has_more(admin, laptop):
    cursor = head()
    jobs = [str(new_job(laptop).pk) for _ in range(5)]
    seen, pages = [], 0
    while True:
        answer = feed(admin, cursor, limit=2)
        seen += ids(answer)
        cursor, pages = answer["next_cursor"], pages + 1
        if not answer["has_more"]:
            break
    assert (seen, pages) == (jobs, 3)


def test_a_page_ends_before_the_first_event_of_a_row_beyond_the_limit(admin, laptop):
    cursor = head()
    first, second = new_job(laptop), new_job(laptop)
    before_second = head() - 1
    change(first, priority=2)  # after second's first event: in the first page all the same
    answer = feed(admin, cursor, limit=1)
    assert (ids(answer), answer["next_cursor"], answer["has_more"]) == (
        [str(first.pk)],
        before_second,
        True,
    )
    assert ids(feed(admin, answer["next_cursor"])) == [str(second.pk), str(first.pk)]


def test_a_row_with_more_events_than_an_answer_reads_pages_on(admin, laptop, monkeypatch):
    monkeypatch.setattr(feeds, "MAX_EVENTS", 3)
    monkeypatch.setattr(feeds, "CHUNK", 2)
    job = new_job(laptop)
    cursor = head()
    for step in range(1, 6):
        change(job, priority=step)
    first = feed(admin, cursor)
    second = feed(admin, first["next_cursor"])
    assert (ids(first), first["has_more"], first["next_cursor"]) == (
        [str(job.pk)],
        True,
        cursor + 3,
    )
    assert (ids(second), second["has_more"], second["next_cursor"]) == (
        [str(job.pk)],
        False,
        head(),
    )


# --- scope ---------------------------------------------------------------------------------


def test_a_client_key_never_sees_another_users_changes(ann, laptop):
    mine, theirs, gone = new_job(laptop), new_job(laptop, owner="bob"), new_job(laptop, owner="bob")
    cursor = head()
    change(mine, priority=1)
    change(theirs, priority=1)
    Job.objects.filter(pk=gone.pk).delete()
    answer = feed(ann, cursor)
    assert (ids(answer), answer["deleted"]) == ([str(mine.pk)], [])


def test_a_client_key_never_sees_another_users_download_or_batch_changes(ann, laptop):
    cursor = head()
    new_download(owner="bob")
    new_batch(laptop, owner="bob")
    for key in ("downloads", "batches"):
        answer = feed(ann, cursor, LISTS[key][0])
        assert (answer[key], answer["deleted"]) == ([], [])


def test_an_admin_key_sees_every_users_changes(admin, laptop):
    cursor = head()
    jobs = [str(new_job(laptop, owner=name).pk) for name in ("ann", "bob")]
    assert ids(feed(admin, cursor)) == jobs


def test_a_client_keys_full_sync_is_its_own_rows(ann, laptop):
    mine = new_job(laptop)
    new_job(laptop, owner="bob")
    assert ids(feed(ann, 0)) == [str(mine.pk)]


# --- batches and downloads ----------------------------------------------------------------


def test_a_batch_changes_when_one_of_its_jobs_does(admin, laptop):
    batch, quiet = new_batch(laptop), new_batch(laptop)
    cursor = head()
    change(batch.jobs.first(), status=JobStatus.COMPLETED)
    answer = feed(admin, cursor, LISTS["batches"][0])
    assert ids(answer, "batches") == [str(batch.pk)]
    assert answer["batches"][0]["counts"]["completed"] == 1
    assert str(quiet.pk) not in ids(answer, "batches")


def test_a_deleted_batch_is_among_deleted(admin, laptop):
    batch = new_batch(laptop)
    cursor = head()
    with transaction.atomic():
        batch.jobs.all().delete()
        Batch.objects.filter(pk=batch.pk).delete()
    answer = feed(admin, cursor, LISTS["batches"][0])
    assert (answer["batches"], answer["deleted"]) == ([], [str(batch.pk)])


def test_a_batch_whose_job_is_deleted_is_not_deleted(admin, laptop):
    batch = new_batch(laptop)
    cursor = head()
    batch.jobs.first().delete()
    answer = feed(admin, cursor, LISTS["batches"][0])
    assert (ids(answer, "batches"), answer["deleted"]) == ([str(batch.pk)], [])


def test_the_download_feed_answers_the_downloads_changed(admin):
    moving, _ = new_download(), new_download()
    cursor = head()
    Download.objects.filter(pk=moving.pk).update(
        status=DownloadStatus.CANCELLED, finished_at=timezone.now()
    )
    answer = feed(admin, cursor, LISTS["downloads"][0])
    assert ids(answer, "downloads") == [str(moving.pk)]
    assert answer["downloads"][0]["status"] == DownloadStatus.CANCELLED


def test_a_deleted_download_is_among_deleted(admin):
    download = new_download()
    cursor = head()
    Download.objects.filter(pk=download.pk).delete()
    assert feed(admin, cursor, LISTS["downloads"][0])["deleted"] == [str(download.pk)]


def test_job_changes_are_not_download_changes(admin, laptop):
    cursor = head()
    new_job(laptop)
    assert feed(admin, cursor, LISTS["downloads"][0])["downloads"] == []


# --- cursors refused ------------------------------------------------------------------------


@pytest.mark.parametrize("key", LISTS)
def test_a_cursor_whose_events_are_pruned_is_gone(admin, laptop, key):
    new_job(laptop)
    new_job(laptop)
    EventLog.objects.update_or_create(pk=1, defaults={"pruned_through": head()})
    response = admin.get(LISTS[key][0], {"updated_since": 1})
    assert (response.status_code, response.json()["code"]) == (410, "cursor_expired")


def test_the_pruning_mark_itself_is_a_cursor_to_read_from(admin, laptop):
    new_job(laptop)
    mark = head()
    EventLog.objects.update_or_create(pk=1, defaults={"pruned_through": mark})
    job = new_job(laptop)
    assert ids(feed(admin, mark)) == [str(job.pk)]


def test_a_cursor_above_the_head_is_refused(admin, laptop):
    new_job(laptop)
    response = admin.get("/api/v1/queue/jobs", {"updated_since": head() + 1})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor")


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "", "99999999999999999999", "\u0661"])
def test_a_malformed_cursor_is_refused(admin, cursor):
    response = admin.get("/api/v1/queue/jobs", {"updated_since": cursor})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor")


def test_two_cursors_are_refused(admin):
    response = admin.get("/api/v1/queue/jobs?updated_since=0&updated_since=0")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor")


@pytest.mark.parametrize("params", [{"status": "pending"}, {"order": "asc"}, {"owner": "ann"}])
def test_the_feed_refuses_the_lists_filters(admin, params):
    response = admin.get("/api/v1/queue/jobs", {"updated_since": 0, **params})
    assert (response.status_code, set(response.json()["fields"])) == (400, set(params))


def test_the_feed_after_a_cursor_refuses_an_offset(admin, laptop):
    new_job(laptop)
    response = admin.get("/api/v1/queue/jobs", {"updated_since": head(), "offset": 0})
    assert (response.status_code, list(response.json()["fields"])) == (400, ["offset"])


# --- concurrent writers ----------------------------------------------------------------------


ON_POSTGRESQL = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="commits from other connections: PostgreSQL"
)


def commit_elsewhere(action: Any) -> None:
    """Run `action` on another connection, committed and numbered, before returning: a
    writer (and a sequencer) that happen while the caller is reading."""

    def run() -> None:
        try:
            action()
            events_sequence()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


@ON_POSTGRESQL
@pytest.mark.django_db(transaction=True)
def test_a_change_committed_while_the_feed_reads_is_in_the_next_answer(laptop, monkeypatch):
    admin = key_client("root", "admin")
    read, late = new_job(laptop), new_job(laptop)
    cursor = head()
    change(read, priority=1)
    original = feeds._changed_subjects

    def then_a_commit(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        commit_elsewhere(lambda: change(late, priority=2))
        return found

    monkeypatch.setattr(feeds, "_changed_subjects", then_a_commit)
    answer = feed(admin, cursor)
    monkeypatch.setattr(feeds, "_changed_subjects", original)
    assert ids(answer) == [str(read.pk)]
    assert ids(feed(admin, answer["next_cursor"])) == [str(late.pk)]


@ON_POSTGRESQL
@pytest.mark.django_db(transaction=True)
def test_a_change_committed_while_the_list_reads_is_after_its_next_cursor(laptop, monkeypatch):
    admin = key_client("root", "admin")
    job = new_job(laptop)
    original = job_views.job_list_count

    def then_a_commit(jobs: Any) -> int:  # between the page's reads
        total = original(jobs)
        commit_elsewhere(lambda: change(job, priority=4))
        return total

    monkeypatch.setattr(job_views, "job_list_count", then_a_commit)
    listed = admin.get("/api/v1/queue/jobs").json()
    monkeypatch.setattr(job_views, "job_list_count", original)
    assert listed["jobs"][0]["priority"] == 0  # the page's snapshot is from before it
    (row,) = feed(admin, listed["next_cursor"])["jobs"]
    assert row["priority"] == 4


def job_state(row: dict) -> tuple[str, int]:
    return row["status"], row["priority"]


def write_jobs(laptop: Server, seed: int, rounds: int, errors: list[BaseException]) -> None:
    """Random inserts, status and priority changes and deletes of ann's jobs, some several
    in one transaction held open a moment (so that commits come out of order)."""
    rng = random.Random(seed)
    try:
        for _ in range(rounds):
            with transaction.atomic():
                for _ in range(rng.randint(1, 3)):
                    mine = list(
                        Job.objects.filter(generation_params__writer=seed).values_list(
                            "pk", flat=True
                        )
                    )
                    what = rng.random()
                    if what < 0.3 or not mine:
                        new_job(laptop, generation_params={"prompt": "a storm", "writer": seed})
                    elif what < 0.6:
                        status = rng.choice([JobStatus.PROCESSING, JobStatus.COMPLETED])
                        Job.objects.filter(pk=rng.choice(mine)).update(status=status)
                    elif what < 0.85:
                        Job.objects.filter(pk=rng.choice(mine)).update(priority=rng.randint(-5, 5))
                    else:
                        Job.objects.filter(pk=rng.choice(mine)).delete()
                if rng.random() < 0.3:
                    threading.Event().wait(rng.uniform(0.001, 0.02))  # a transaction held open
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()


def sequence_until(done: threading.Event, errors: list[BaseException]) -> None:
    try:
        while not done.is_set():
            events_sequence()
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()


@ON_POSTGRESQL
@pytest.mark.django_db(transaction=True)
def test_a_reader_following_the_feed_under_concurrent_writers_misses_no_change(laptop):
    ann = key_client("ann", "client")
    for _ in range(5):
        new_job(laptop, generation_params={"positive_prompt": "calm", "writer": 0})
    first = feed(ann, 0, limit=200)
    view = {row["mobilesd_job_id"]: job_state(row) for row in first["jobs"]}
    cursor = first["next_cursor"]
    errors: list[BaseException] = []
    writers = [
        threading.Thread(target=write_jobs, args=(laptop, seed, 40, errors)) for seed in (1, 2, 3)
    ]
    done = threading.Event()
    # Other readers (a stream's listener, another phone) number events at any moment too.
    sequencer = threading.Thread(target=sequence_until, args=(done, errors))
    for thread in [*writers, sequencer]:
        thread.start()
    reads, changed_reads = 0, 0

    def read() -> dict:
        nonlocal cursor, reads, changed_reads
        answer = feed(ann, cursor, limit=7)
        for row in answer["jobs"]:
            view[row["mobilesd_job_id"]] = job_state(row)
        for gone in answer["deleted"]:
            view.pop(gone, None)
        cursor, reads = answer["next_cursor"], reads + 1
        changed_reads += bool(answer["jobs"] or answer["deleted"])
        return answer

    while any(writer.is_alive() for writer in writers):
        read()
    done.set()
    for thread in [*writers, sequencer]:
        thread.join()
    while read()["has_more"]:
        pass

    assert errors == []
    expected = {
        str(pk): (status, priority)
        for pk, status, priority in Job.objects.values_list("pk", "status", "priority")
    }
    assert view == expected
    assert changed_reads > 3  # it did read while the writers wrote
