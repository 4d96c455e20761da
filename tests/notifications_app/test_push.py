"""Push notifications from events (notifications_app.push) and their sending
(notifications_app.push_services): who is told, what they are told, retries and leases."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from model_bakery import baker

from events_app.models import Event
from integrations.ntfy.simulator import NtfySimulator
from notifications_app.models import PushMessage, PushState, PushTarget
from notifications_app.push import duration_text, notify_user, push_for_events
from notifications_app.push_services import push_message_send, push_messages_due
from notifications_app.push_tasks import recover_push, send_push
from queue_app.models import Batch, JobStatus
from tests.notifications_app.push_support import (
    add_image,
    allow_loopback,
    finish,
    new_events,
    new_job,
    target,
    user,
)


@pytest.fixture
def ntfy(db, settings) -> Iterator[NtfySimulator]:
    allow_loopback(settings)
    settings.MOBILESD_PUSH_RETRY_SECONDS = (30.0, 120.0)
    settings.MOBILESD_PUBLIC_URL = "https://sd.example.org"
    sim = NtfySimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def ada(db):
    return user("ada")


def fan_out(django_capture_on_commit_callbacks) -> list[Event]:
    """The fan-out's call: push_for_events for every new event, in a transaction."""
    events = new_events()
    with django_capture_on_commit_callbacks(execute=True):
        push_for_events(events)
    return events


def sent_ids(published) -> list[int]:
    return [args[0] for name, args, _ in published if name.endswith("send_push")]


# --- who is told ------------------------------------------------------------------------


def test_a_completed_job_makes_a_notification_for_each_of_its_owners_targets(
    ntfy, ada, published, django_capture_on_commit_callbacks
):
    phone, tablet = target(ada, ntfy, "phone"), target(ada, ntfy, "tablet", name="tablet")
    finish(new_job(ada))

    fan_out(django_capture_on_commit_callbacks)

    rows = PushMessage.objects.order_by("target_id")
    assert [(r.target_id, r.event_type, r.state) for r in rows] == [
        (phone.pk, "job.completed", "pending"),
        (tablet.pk, "job.completed", "pending"),
    ]
    assert sorted(sent_ids(published)) == sorted(r.pk for r in rows)


def test_a_user_never_gets_a_notification_for_another_users_job(
    ntfy, ada, published, django_capture_on_commit_callbacks
):
    bob = user("bob")
    target(bob, ntfy, "bob")
    finish(new_job(ada))

    fan_out(django_capture_on_commit_callbacks)

    assert not PushMessage.objects.exists()
    assert not published


def test_a_disabled_target_or_one_not_wanting_the_type_gets_nothing(
    ntfy, ada, django_capture_on_commit_callbacks
):
    target(ada, ntfy, "off", enabled=False)
    target(ada, ntfy, "failures", events=["job.failed"])
    finish(new_job(ada))

    fan_out(django_capture_on_commit_callbacks)

    assert not PushMessage.objects.exists()


def test_other_events_make_no_notification(ntfy, ada, django_capture_on_commit_callbacks):
    target(ada, ntfy)
    finish(new_job(ada), JobStatus.CANCELLED)
    new_job(ada)  # job.queued

    fan_out(django_capture_on_commit_callbacks)

    assert not PushMessage.objects.exists()


def test_fanning_out_the_same_events_again_adds_nothing(
    ntfy, ada, published, django_capture_on_commit_callbacks
):
    target(ada, ntfy)
    finish(new_job(ada))
    events = fan_out(django_capture_on_commit_callbacks)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        push_for_events(events)

    # One row still; at most a second nudge for it (harmless: only a lease holder sends).
    (row,) = PushMessage.objects.all()
    assert set(sent_ids(published)) <= {row.pk}


def test_nothing_is_queued_before_the_transaction_commits(
    ntfy, ada, published, django_capture_on_commit_callbacks
):
    target(ada, ntfy)
    finish(new_job(ada))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        push_for_events(new_events())

    assert not published
    assert len(callbacks) == 1


# --- what they are told -------------------------------------------------------------------


def test_a_completed_job_is_told_by_prompt_server_time_count_and_link(
    ntfy, ada, django_capture_on_commit_callbacks
):
    target(ada, ntfy)
    job = new_job(ada)
    add_image(job, 0)
    add_image(job, 1)
    finish(job, seconds=75)

    fan_out(django_capture_on_commit_callbacks)

    message = PushMessage.objects.get()
    assert message.title.startswith("Done: a lighthouse at dusk")
    assert message.title.endswith("…")
    assert len(message.title) <= len("Done: ") + 61
    facts, link = message.body.splitlines()
    assert facts == "Laptop · 1 min 15 s · 2 images"
    assert link == message.link
    assert link.startswith(f"https://sd.example.org/api/v1/queue/jobs/{job.pk}/images/0?exp=")
    assert message.job_id == job.pk


def test_the_link_is_the_first_image_opening_without_a_key(
    ntfy, ada, anon_client, django_capture_on_commit_callbacks
):
    target(ada, ntfy)
    job = new_job(ada)
    add_image(job)
    finish(job)
    fan_out(django_capture_on_commit_callbacks)

    response = anon_client.get(
        PushMessage.objects.get().link.removeprefix("https://sd.example.org")
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"


def test_a_job_without_images_links_to_its_page(ntfy, ada, django_capture_on_commit_callbacks):
    target(ada, ntfy)
    job = finish(new_job(ada))

    fan_out(django_capture_on_commit_callbacks)

    message = PushMessage.objects.get()
    assert message.link == f"https://sd.example.org/admin/queue_app/job/{job.pk}/change/"
    assert message.body.splitlines()[0] == "Laptop · 12 s · 0 images"


def test_without_a_public_url_there_is_no_link(
    ntfy, ada, settings, django_capture_on_commit_callbacks
):
    settings.MOBILESD_PUBLIC_URL = ""
    target(ada, ntfy)
    job = new_job(ada)
    add_image(job)
    finish(job)

    fan_out(django_capture_on_commit_callbacks)

    message = PushMessage.objects.get()
    assert message.link == ""
    assert message.body == "Laptop · 12 s · 1 image"


def test_a_failed_job_is_told_by_its_errors_first_line(
    ntfy, ada, django_capture_on_commit_callbacks
):
    target(ada, ntfy)
    finish(new_job(ada), JobStatus.FAILED, seconds=3, error="CUDA out of memory\nTraceback ...")

    fan_out(django_capture_on_commit_callbacks)

    message = PushMessage.objects.get()
    assert message.title.startswith("Failed: a lighthouse")
    assert message.body.splitlines()[:2] == ["Laptop · 3 s", "Error: CUDA out of memory"]
    assert message.job_id is None  # no image to attach


def test_a_finished_batch_is_told_by_its_counts_and_time(
    ntfy, ada, django_capture_on_commit_callbacks
):
    target(ada, ntfy, events=["batch.finished"])
    batch = baker.make(
        Batch, owner=ada, name="Lighthouses", target_server_alias="Laptop", job_count=3
    )
    jobs = [new_job(ada, batch=batch) for _ in range(3)]
    Batch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - timedelta(seconds=200))
    finish(jobs[0])
    finish(jobs[1], JobStatus.FAILED, error="boom")
    finish(jobs[2])  # the last one: the triggers write batch.finished

    events = fan_out(django_capture_on_commit_callbacks)

    assert "batch.finished" in [event.type for event in events]
    message = PushMessage.objects.get()
    assert (message.event_type, message.title) == ("batch.finished", "Batch done: Lighthouses")
    tally, facts, link = message.body.splitlines()
    assert tally == "2 completed, 1 failed"
    assert facts.startswith("Laptop · 3 min")
    assert link == f"https://sd.example.org/admin/queue_app/batch/{batch.pk}/change/"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (8, "8 s"), (60, "1 min"), (200, "3 min 20 s"), (7500, "2 h 5 min")],
)
def test_times_are_said_as_a_person_would(seconds, text):
    assert duration_text(seconds) == text


# --- sending --------------------------------------------------------------------------------


def test_a_notification_reaches_the_receiver_with_the_thumbnail(
    ntfy, ada, django_capture_on_commit_callbacks
):
    phone = target(ada, ntfy)
    job = new_job(ada)
    add_image(job)
    finish(job)
    fan_out(django_capture_on_commit_callbacks)
    message = PushMessage.objects.get()

    send_push(message.pk)

    (received,) = ntfy.messages("phone")
    assert received.title == message.title
    assert received.message == message.body
    assert "Laptop" in received.message
    assert "https://sd.example.org/" in received.message
    assert received.attachment_name == f"{job.pk.hex[:8]}.jpg"
    assert received.attachment.startswith(b"\xff\xd8\xff")  # a JPEG thumbnail
    message.refresh_from_db()
    phone.refresh_from_db()
    assert (message.state, message.attempts) == ("sent", 1)
    assert phone.last_sent_at is not None
    assert phone.last_error == ""


def test_a_failing_target_is_retried_then_recorded_as_failed(ntfy, ada):
    phone = target(ada, ntfy)
    notify_user(ada.pk, title="Hello", body="there")
    message = PushMessage.objects.get()
    ntfy.fail_next(10)

    delays = []
    for _ in range(3):
        delays.append(push_message_send(message_id=message.pk))
        message.refresh_from_db()
        if message.state == PushState.PENDING:
            assert message.next_attempt_at > timezone.now()
            # the retry's time has come
            PushMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())

    assert delays == [30.0, 120.0, None]
    assert (message.state, message.attempts) == ("failed", 3)
    assert "simulated failure" in message.last_error
    phone.refresh_from_db()
    assert "simulated failure" in phone.last_error
    assert phone.last_error_at is not None
    assert ntfy.requests == 3
    assert not ntfy.messages()


def test_a_retry_is_not_sent_before_its_time(ntfy, ada):
    target(ada, ntfy)
    notify_user(ada.pk, title="Hello", body="there")
    message = PushMessage.objects.get()
    ntfy.fail_next(1)
    push_message_send(message_id=message.pk)

    assert push_message_send(message_id=message.pk) is None
    assert ntfy.requests == 1
    assert message.pk not in push_messages_due()


def test_a_success_after_failures_clears_the_targets_error(ntfy, ada):
    phone = target(ada, ntfy)
    PushTarget.objects.filter(pk=phone.pk).update(
        last_error="earlier", last_error_at=timezone.now()
    )
    notify_user(ada.pk, title="Hello", body="there")
    message = PushMessage.objects.get()
    ntfy.fail_next(1)
    push_message_send(message_id=message.pk)
    PushMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())

    push_message_send(message_id=message.pk)

    phone.refresh_from_db()
    assert phone.last_error == ""
    assert phone.last_error_at is None
    assert len(ntfy.messages()) == 1


def test_a_destination_refused_since_is_not_sent_and_fails_at_once(ntfy, ada, settings):
    phone = target(ada, ntfy)
    notify_user(ada.pk, title="Hello", body="there")
    settings.MOBILESD_WEBHOOK_ALLOWED_NETWORKS = ()

    assert push_message_send(message_id=PushMessage.objects.get().pk) is None

    message = PushMessage.objects.get()
    assert message.state == "failed"
    assert message.attempts == 1
    assert "MOBILESD_WEBHOOK_ALLOWED_NETWORKS" in message.last_error
    assert ntfy.requests == 0
    phone.refresh_from_db()
    assert phone.last_error.startswith("Destination refused")


def test_a_row_another_worker_holds_is_left_alone(ntfy, ada):
    target(ada, ntfy)
    notify_user(ada.pk, title="Hello", body="there")
    message = PushMessage.objects.get()
    held = {
        "state": PushState.SENDING,
        "lease_token": "00000000-0000-0000-0000-000000000001",
        "lease_expires_at": timezone.now() + timedelta(seconds=60),
    }
    PushMessage.objects.filter(pk=message.pk).update(**held)

    push_message_send(message_id=message.pk)

    assert ntfy.requests == 0
    assert message.pk not in push_messages_due()


def test_a_killed_workers_row_is_sent_again_once_its_lease_lapses(ntfy, ada, published):
    target(ada, ntfy)
    notify_user(ada.pk, title="Hello", body="there")
    message = PushMessage.objects.get()
    PushMessage.objects.filter(pk=message.pk).update(
        state=PushState.SENDING,
        attempts=1,
        lease_token="00000000-0000-0000-0000-000000000001",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )

    assert recover_push() == 1
    send_push(*next(args for name, args, _ in published if name.endswith("send_push")))

    message.refresh_from_db()
    assert (message.state, message.attempts) == ("sent", 2)
    assert len(ntfy.messages()) == 1


def test_a_disabled_targets_queued_notification_is_not_sent(ntfy, ada):
    phone = target(ada, ntfy)
    notify_user(ada.pk, title="Hello", body="there")
    PushTarget.objects.filter(pk=phone.pk).update(enabled=False)

    push_message_send(message_id=PushMessage.objects.get().pk)

    assert PushMessage.objects.get().state == "failed"
    assert ntfy.requests == 0


def test_a_notice_goes_to_every_enabled_target_of_the_user(ntfy, ada):
    target(ada, ntfy, "phone", events=["job.failed"])
    target(ada, ntfy, "off", enabled=False)
    target(user("bob"), ntfy, "bob")

    notify_user(ada.pk, title="Webhook disabled", body="It failed for 3 days.")

    assert list(PushMessage.objects.values_list("target__name", "event_type")) == [
        ("ada's phone", "notice")
    ]


def test_a_failure_retried_since_is_not_told(ntfy, ada, django_capture_on_commit_callbacks):
    target(ada, ntfy)
    job = finish(new_job(ada), JobStatus.FAILED, error="boom")
    events = new_events()
    finish(job)  # retried and completed before the fan-out reached the failure

    with django_capture_on_commit_callbacks(execute=True):
        push_for_events(events)

    assert not PushMessage.objects.exists()


def test_finished_rows_are_forgotten_after_the_event_retention(ntfy, ada, settings):
    target(ada, ntfy)
    for _ in range(3):
        notify_user(ada.pk, title="Hello", body="there")
    old_sent, old_pending, recent_failed = PushMessage.objects.order_by("id")
    long_ago = timezone.now() - timedelta(seconds=settings.MOBILESD_EVENTS_RETENTION_SECONDS + 60)
    PushMessage.objects.filter(pk=old_sent.pk).update(state="sent", created_at=long_ago)
    PushMessage.objects.filter(pk=old_pending.pk).update(
        created_at=long_ago, next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    PushMessage.objects.filter(pk=recent_failed.pk).update(state="failed")

    recover_push()

    assert set(PushMessage.objects.values_list("pk", flat=True)) == {
        old_pending.pk,
        recent_failed.pk,
    }


def test_beat_runs_the_push_recovery_under_a_registered_name(settings):
    from mobilesd.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["recover-push"]

    assert entry["task"] == recover_push.name
    assert entry["task"] in app.tasks
    assert send_push.name in app.tasks
    assert entry["schedule"] == settings.MOBILESD_PUSH_RECOVERY_SECONDS
