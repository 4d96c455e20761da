"""The event log (events_app): the triggers record every change of a job, batch, server,
download and the queue's switches in the change's own transaction; the sequencer numbers
them so that a reader never finds a new event below one it has seen; pruning leaves a mark;
and messages render them in the API's names."""

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.utils import timezone
from model_bakery import baker

from civitai_app.models import Download, DownloadStatus
from events_app.messages import event_message
from events_app.models import Event, EventLog
from events_app.selectors import events_after, events_head, events_pruned_through
from events_app.sequencer import events_sequence
from events_app.services import events_prune
from events_app.triggers import event_triggers_install
from queue_app import dispatch
from queue_app.models import Batch, Job, JobStatus, QueueState
from queue_app.services import job_cancel, job_delete, job_retry
from servers_app.models import Server
from tests.openapi_check import check_stream_message, schema_document

User = get_user_model()


def recorded(prefix: str = "") -> list[Event]:
    """Every event (whose type starts with `prefix`), numbered, in public order."""
    events_sequence()
    return list(Event.objects.filter(type__startswith=prefix).order_by("seq"))


def types(prefix: str = "") -> list[str]:
    return [event.type for event in recorded(prefix)]


@pytest.fixture
def owner(db) -> Any:
    return User.objects.create_user("ada")


@pytest.fixture
def laptop(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")


def new_job(owner: Any, server: Server, **fields: Any) -> Job:
    return baker.make(
        Job,
        owner=owner,
        server=server,
        target_server_alias=server.alias,
        generation_params={"positive_prompt": "a lighthouse", "steps": 5},
        **fields,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (JobStatus.PROCESSING, "job.started"),
        (JobStatus.COMPLETED, "job.completed"),
        (JobStatus.FAILED, "job.failed"),
        (JobStatus.CANCELLED, "job.cancelled"),
    ],
)
def test_a_status_change_is_an_event_of_its_status(owner, laptop, status, expected):
    job = new_job(owner, laptop)
    Job.objects.filter(pk=job.pk).update(status=status)
    assert types()[-1] == expected
    assert recorded()[-1].data["status"] == status


def test_a_new_job_is_queued_with_its_subject_and_owner(owner, laptop):
    job = new_job(owner, laptop, priority=3)
    (event,) = recorded("job.")
    assert event.type == "job.queued"
    assert (event.job_id, event.owner_id, event.server_id) == (job.pk, owner.pk, laptop.pk)
    assert event.data["target_server_alias"] == "Laptop"
    assert event.data["priority"] == 3


def test_a_lease_renewal_is_not_an_event_but_new_progress_is(owner, laptop):
    job = new_job(owner, laptop, status=JobStatus.PROCESSING)
    before = len(recorded())
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    assert len(recorded()) == before
    Job.objects.filter(pk=job.pk).update(progress={"fraction": 0.5})
    assert types()[-1] == "job.progress"
    assert recorded()[-1].data["progress"] == {"fraction": 0.5}


def test_a_new_preview_is_a_preview_event(owner, laptop):
    job = new_job(owner, laptop, status=JobStatus.PROCESSING, progress={"fraction": 0.1})
    Job.objects.filter(pk=job.pk).update(progress={"fraction": 0.2, "preview_id": 1})
    Job.objects.filter(pk=job.pk).update(progress={"fraction": 0.3, "preview_id": 1})
    Job.objects.filter(pk=job.pk).update(progress={"fraction": 0.4, "preview_id": 2})
    assert types()[-3:] == ["job.preview", "job.progress", "job.preview"]


def test_an_edit_is_an_update_and_a_deletion_is_recorded(owner, laptop):
    job = new_job(owner, laptop, status=JobStatus.COMPLETED)
    Job.objects.filter(pk=job.pk).update(priority=7)
    job_delete(job_id=job.pk, owner=None)
    assert types()[-2:] == ["job.updated", "job.deleted"]
    assert recorded()[-1].job_id == job.pk


def test_the_services_transitions_are_recorded(owner, laptop):
    job = new_job(owner, laptop)
    job_cancel(job_id=job.pk, owner=None)
    job_retry(job_id=job.pk, owner=None)
    assert types("job.") == ["job.queued", "job.cancelled", "job.queued"]
    assert recorded()[-1].data["retry_count"] == 1


def test_a_claim_is_a_start(owner, laptop):
    job = new_job(owner, laptop)
    claim = dispatch.job_claim_next(server_id=laptop.pk)
    assert claim is not None
    assert claim.job_id == job.pk
    assert types()[-1] == "job.started"


def test_a_rolled_back_change_leaves_no_event(owner, laptop):
    job = new_job(owner, laptop)
    before = len(recorded())

    def cancel_then_fail() -> None:
        with transaction.atomic():
            Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        cancel_then_fail()
    assert len(recorded()) == before


def test_a_deleted_server_sets_its_jobs_server_to_null_with_an_event_each(owner, laptop):
    job = new_job(owner, laptop, status=JobStatus.COMPLETED)
    laptop.delete()
    assert sorted(types()[-2:]) == ["job.updated", "server.deleted"]
    job_event = next(e for e in reversed(recorded()) if e.job_id == job.pk)
    assert job_event.data["target_server_alias"] == "Laptop"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"is_online": True}, "server.online"),
        ({"is_online": False}, "server.offline"),
        ({"paused_at": "now"}, "server.paused"),
        ({"quarantined_at": "now"}, "server.quarantined"),
        ({"alias": "Desktop"}, "server.updated"),
    ],
)
def test_server_changes(laptop, change, expected):
    values = {k: timezone.now() if v == "now" else v for k, v in change.items()}
    Server.objects.filter(pk=laptop.pk).update(**values)
    event = recorded()[-1]
    assert event.type == expected
    assert event.server_id == laptop.pk
    assert event.owner_id is None


def test_a_health_check_timestamp_is_not_a_server_event(laptop):
    before = len(recorded())
    Server.objects.filter(pk=laptop.pk).update(last_checked_at=timezone.now())
    assert len(recorded()) == before


def test_the_queue_switch(db):
    QueueState.objects.create(paused_at=timezone.now())
    QueueState.objects.filter(pk=1).update(paused_at=None)
    assert types() == ["queue.paused", "queue.resumed"]


def test_batches_are_recorded(owner, laptop):
    batch = baker.make(Batch, owner=owner, server=laptop, target_server_alias="Laptop")
    batch_id = batch.pk
    batch.delete()
    assert types("batch.") == ["batch.created", "batch.deleted"]
    assert {e.batch_id for e in recorded("batch.")} == {batch_id}


LEASE = "00000000-0000-0000-0000-000000000001"


def test_downloads_are_recorded(owner):
    download = baker.make(Download, owner=owner, status=DownloadStatus.PENDING)
    Download.objects.filter(pk=download.pk).update(
        status=DownloadStatus.DOWNLOADING, lease_token=LEASE
    )
    Download.objects.filter(pk=download.pk).update(bytes_done=10, size_bytes=100)
    assert types() == ["download.queued", "download.started", "download.progress"]
    message = event_message(recorded()[-1])
    assert message["download"]["progress_percentage"] == 10
    assert message["download_id"] == str(download.pk)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (DownloadStatus.VERIFYING, "download.verifying"),
        (DownloadStatus.COMPLETED, "download.completed"),
        (DownloadStatus.FAILED, "download.failed"),
        (DownloadStatus.CANCELLED, "download.cancelled"),
        (None, "download.deleted"),
    ],
)
def test_a_running_downloads_change_is_an_event_of_its_type(owner, status, expected):
    download = baker.make(
        Download, owner=owner, status=DownloadStatus.DOWNLOADING, lease_token=LEASE
    )
    download_id = download.pk
    if status is None:
        download.delete()
    else:  # a running status keeps its lease, the others give it back
        running = status == DownloadStatus.VERIFYING
        Download.objects.filter(pk=download_id).update(
            status=status, lease_token=LEASE if running else None
        )
    assert types("download.") == ["download.started", expected]
    event = recorded("download.")[-1]
    assert event.download_id == download_id
    if status is not None:
        assert event_message(event)["download"]["status"] == status


def test_public_ids_grow_in_the_order_of_writing(owner, laptop):
    for _ in range(5):
        new_job(owner, laptop)
    events_sequence()
    seqs = [e.seq for e in Event.objects.order_by("id")]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 6  # the server's and the five jobs'
    assert events_head() == seqs[-1]


def test_a_message_has_the_job_in_the_api_names(owner, laptop):
    job = new_job(owner, laptop, status=JobStatus.PROCESSING)
    Job.objects.filter(pk=job.pk).update(progress={"fraction": 0.42})
    message = event_message(recorded()[-1])
    assert message["type"] == "job.progress"
    assert message["id"] == events_head()
    assert message["job_id"] == str(job.pk)
    assert message["job"]["mobilesd_job_id"] == str(job.pk)
    assert message["job"]["status"] == "processing"
    assert message["job"]["result_details"] == {"progress_percentage": 42}
    assert message["job"]["creation_timestamp"].endswith("Z")
    assert message["server_alias"] == "Laptop"


def test_every_kind_of_message_is_what_the_openapi_document_says(owner, laptop):
    # Each subject with its fields filled in, and empty (a new one), and gone.
    batch = baker.make(Batch, owner=owner, server=laptop, target_server_alias="Laptop")
    job = new_job(owner, laptop, batch=batch, priority=2)
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.PROCESSING,
        forge_session_hash="abc",
        progress={"fraction": 0.5, "step": 5, "total_steps": 10, "textinfo": "working"},
    )
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.COMPLETED,
        completed_at=timezone.now(),
        result_details={"images": ["a.png"], "info": "done", "generation_info": {"seed": 1}},
        progress=None,
    )
    Job.objects.filter(pk=job.pk).delete()
    Server.objects.filter(pk=laptop.pk).update(
        is_online=True, paused_at=timezone.now(), last_error="refused", slots=2
    )
    Server.objects.filter(pk=laptop.pk).update(
        quarantined_at=timezone.now(), quarantine_reason="flaky", enabled=False
    )
    QueueState.objects.create(paused_at=timezone.now())
    QueueState.objects.filter(pk=1).update(paused_at=None)
    download = baker.make(Download, owner=owner, status=DownloadStatus.PENDING)
    Download.objects.filter(pk=download.pk).update(
        status=DownloadStatus.DOWNLOADING, lease_token=LEASE
    )
    Download.objects.filter(pk=download.pk).update(
        bytes_done=10, size_bytes=100, speed_bytes_per_second=1.5
    )
    Download.objects.filter(pk=download.pk).update(
        status=DownloadStatus.FAILED, lease_token=None, error="gone", error_code="not_found"
    )
    download.delete()
    Server.objects.filter(pk=laptop.pk).delete()

    messages = [event_message(event) for event in recorded()]

    kinds = {message["type"].partition(".")[0] for message in messages}
    assert kinds == {"job", "batch", "server", "queue", "download"}
    for message in messages:
        check_stream_message(message["type"], message)  # every key typed, none undeclared
    schemas = schema_document()["components"]["schemas"]
    for kind in kinds:
        subject = schemas["EventMessage"]["properties"][kind]
        assert "$ref" in subject or "allOf" in subject, f"{kind}: an untyped object"
        component = schemas[(subject.get("$ref") or subject["allOf"][0]["$ref"]).rsplit("/")[-1]]
        sent = {key for m in messages if m["type"].startswith(f"{kind}.") for key in m[kind]}
        assert sent == set(component["properties"]), kind
        # Always there, but for batch.finished's counts.
        assert set(component["properties"]) - set(component["required"]) <= {"counts"}, kind


def test_events_after_sees_only_its_users_and_everyones(owner, laptop):
    other = User.objects.create_user("bob")
    mine = new_job(owner, laptop)
    new_job(other, laptop)
    Server.objects.filter(pk=laptop.pk).update(is_online=True)
    events_sequence()
    seen = events_after(0, owner_id=owner.pk)
    assert [(e.type, e.job_id) for e in seen] == [
        ("server.added", None),
        ("job.queued", mine.pk),
        ("server.online", None),
    ]
    assert len(events_after(0, owner_id=None)) == 4


def test_events_after_filters_by_job_batch_and_type(owner, laptop):
    batch = baker.make(Batch, owner=owner, server=laptop, target_server_alias="Laptop")
    first = new_job(owner, laptop)
    in_batch = new_job(owner, laptop, batch=batch)
    Server.objects.filter(pk=laptop.pk).update(is_online=True)
    events_sequence()
    assert [e.job_id for e in events_after(0, owner_id=None, job_ids=[first.pk])] == [first.pk]
    by_batch = events_after(0, owner_id=None, batch_ids=[batch.pk])
    assert [e.type for e in by_batch] == ["batch.created", "job.queued"]
    assert by_batch[1].job_id == in_batch.pk
    assert [e.type for e in events_after(0, owner_id=None, types=["server."])] == [
        "server.added",
        "server.online",
    ]


def test_prune_deletes_old_events_and_marks_how_far(owner, laptop):
    new_job(owner, laptop)
    new_job(owner, laptop)
    events_sequence()
    old = list(Event.objects.order_by("seq"))  # the server's, then the two jobs'
    Event.objects.filter(pk__in=[old[0].pk, old[1].pk]).update(
        created_at=timezone.now() - timedelta(days=30)
    )
    assert events_prune(older_than=timedelta(days=7)) == 2
    assert events_pruned_through() == old[1].seq
    assert list(Event.objects.values_list("seq", flat=True)) == [old[2].seq]


def test_numbering_continues_above_what_was_pruned(owner, laptop):
    new_job(owner, laptop)
    events_sequence()
    Event.objects.update(created_at=timezone.now() - timedelta(days=30))
    events_prune(older_than=timedelta(days=7))
    assert not Event.objects.exists()
    new_job(owner, laptop)
    events_sequence()
    assert Event.objects.get().seq > EventLog.objects.get().pruned_through > 0


def test_triggers_are_installed_once(db):
    assert event_triggers_install() is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_an_event_committed_after_a_later_one_is_numbered_above_it():
    """Writer A writes its event first but commits last: a reader that has seen B's never
    finds A's below it."""
    owner = User.objects.create_user("ada")
    server = baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")
    early, late = new_job(owner, server), new_job(owner, server)
    events_sequence()
    head = events_head()
    a_wrote, b_read = threading.Event(), threading.Event()

    def writer_a() -> None:
        try:
            with transaction.atomic():
                Job.objects.filter(pk=early.pk).update(priority=1)
                a_wrote.set()
                assert b_read.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer_a)
    thread.start()
    assert a_wrote.wait(10)
    Job.objects.filter(pk=late.pk).update(priority=2)  # B: written after A's, committed
    events_sequence()
    seen = events_after(head, owner_id=None)
    b_read.set()  # now A commits
    thread.join(10)
    events_sequence()
    later = events_after(seen[-1].seq, owner_id=None)
    assert [e.job_id for e in seen] == [late.pk]
    assert [e.job_id for e in later] == [early.pk]
    assert connection.vendor == "postgresql"


def test_the_admins_count_of_events_is_exact_without_counting(owner, laptop, admin_client):
    for _ in range(3):
        new_job(owner, laptop)
    events_sequence()
    Event.objects.filter(seq=Event.objects.order_by("seq").first().seq).delete()  # pruned
    new_job(owner, laptop)  # not numbered yet on PostgreSQL
    from events_app.admin import EventPaginator

    assert EventPaginator(Event.objects.all(), 50).count == Event.objects.count() == 4
    response = admin_client.get("/admin/events_app/event/")
    assert response.status_code == 200
