"""Webhook deliveries (issue 15 point 1) against a real local receiver that checks every
signature with the specification's algorithm (tests/notifications_app/receiver.py): the
fan-out from the event log, the payload, signing, retries and their growing delays, what
is not retried, lapsed leases, disabling, callback URLs and who receives which events."""

import base64
import ipaddress
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from model_bakery import baker

from integrations.webhook_client import Outcome
from notifications_app import delivery as delivery_module
from notifications_app.delivery import delivery_claim, delivery_send
from notifications_app.fanout import notifications_fanout
from notifications_app.models import (
    DeliveryState,
    FanoutCursor,
    PushMessage,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSigningSecret,
)
from notifications_app.push_services import push_target_create
from notifications_app.tasks import notifications_poll
from notifications_app.webhook_services import (
    webhook_delivery_redeliver,
    webhook_endpoint_create,
    webhook_signing_secret_rotate,
)
from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.integration.procs import wait_until
from tests.notifications_app.receiver import HOLD, Receiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loopback_allowed")]

User = get_user_model()


def user(name: str) -> Any:
    return User.objects.get_or_create(username=name)[0]


@pytest.fixture
def laptop(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")


def endpoint_of(owner: str, url: str, events: list[str], **kwargs: Any) -> WebhookEndpoint:
    return webhook_endpoint_create(
        owner=user(owner),
        is_admin=kwargs.pop("is_admin", False),
        url=url,
        event_types=events,
        **kwargs,
    )


def new_job(laptop: Server, owner: str = "ann", **fields: Any) -> Job:
    return baker.make(
        Job,
        owner=user(owner),
        server=laptop,
        target_server_alias=laptop.alias,
        generation_params={"positive_prompt": "a lighthouse", "steps": 5},
        **fields,
    )


def complete(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.COMPLETED, completed_at=timezone.now(), result_details={"images": []}
    )


def settle(delivery: WebhookDelivery, *, timeout: float = 15) -> WebhookDelivery:
    """Try the delivery whenever it is due until it is delivered or failed (what the
    worker's task and its scheduled retries do), within `timeout` seconds."""

    def settled() -> WebhookDelivery | None:
        delivery_send(delivery_id=delivery.pk)
        row = WebhookDelivery.objects.get(pk=delivery.pk)
        return row if row.state in (DeliveryState.DELIVERED, DeliveryState.FAILED) else None

    return wait_until(settled, timeout=timeout, interval=0.02, what="the delivery to settle")


def test_a_completed_job_reaches_its_endpoint_signed_with_the_job_status(laptop, receiver):
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    job = new_job(laptop)
    complete(job)

    notifications_fanout()
    delivery = WebhookDelivery.objects.get()
    done = settle(delivery)

    assert done.state == DeliveryState.DELIVERED
    (got,) = receiver.requests()
    receiver.assert_all_signed(endpoint.secret)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("MobileSD/")
    assert got.webhook_id == delivery.message_id
    assert got.webhook_id.startswith("msg_")
    body = got.json
    assert body["type"] == "job.completed"
    assert body["timestamp"].endswith("Z")
    assert body["data"]["mobilesd_job_id"] == str(job.pk)
    assert body["data"]["status"] == "completed"
    assert body["data"]["image_links"] == []
    (attempt,) = done.tries.all()
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    assert attempt.response_body == '{"ok": true}'


def test_the_secret_is_standard_webhooks_base64_of_32_random_bytes(receiver):
    endpoint = endpoint_of("ann", receiver.url, ["job."])
    other = endpoint_of("ann", receiver.url, ["job."])

    assert endpoint.secret.startswith("whsec_")
    assert len(base64.b64decode(endpoint.secret.removeprefix("whsec_"))) == 32
    assert endpoint.secret != other.secret


def test_two_500s_then_200_is_delivered_on_the_third_try_after_growing_delays(laptop):
    receiver = Receiver(plan=[500, 500])
    try:
        endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
        complete(new_job(laptop))
        notifications_fanout()

        done = settle(WebhookDelivery.objects.get())

        first, second, third = receiver.requests()
        receiver.assert_all_signed(endpoint.secret)
    finally:
        receiver.stop()
    assert done.state == DeliveryState.DELIVERED
    assert [a.status_code for a in done.tries.all()] == [500, 500, 200]
    assert first.webhook_id == second.webhook_id == third.webhook_id == done.message_id
    gaps = (second.at - first.at, third.at - second.at)
    assert gaps[0] >= 0.3
    assert gaps[1] >= 0.9
    assert gaps[1] > gaps[0]
    # At most 300 bytes of the 5000-byte answer are kept.
    assert len(done.tries.first().response_body) == 300


def test_the_tries_are_spent_after_the_last_delay(laptop):
    receiver = Receiver(plan=[503, 503, 503, 503])
    try:
        endpoint_of("ann", receiver.url, ["job.completed"])
        complete(new_job(laptop))
        notifications_fanout()

        done = settle(WebhookDelivery.objects.get())
    finally:
        receiver.stop()
    assert done.state == DeliveryState.FAILED
    assert done.attempts == 3  # two delays, three tries
    assert len(receiver.requests()) == 3


@pytest.mark.parametrize("status", [410, 404, 400, 302])
def test_a_4xx_or_redirect_is_tried_once_not_again(laptop, status):
    receiver = Receiver(plan=[status])
    try:
        endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
        complete(new_job(laptop))
        notifications_fanout()

        done = settle(WebhookDelivery.objects.get())
        assert done.state == DeliveryState.FAILED
        assert delivery_send(delivery_id=done.pk) is None
    finally:
        receiver.stop()
    assert len(receiver.requests()) == 1
    assert done.attempts == 1
    endpoint.refresh_from_db()
    # 410 Gone: the receiver says it is gone for good, and the endpoint is disabled.
    assert endpoint.enabled is (status != 410)


def test_a_429_and_a_408_are_tried_again(laptop):
    receiver = Receiver(plan=[429, 408])
    try:
        endpoint_of("ann", receiver.url, ["job.completed"])
        complete(new_job(laptop))
        notifications_fanout()

        done = settle(WebhookDelivery.objects.get())
    finally:
        receiver.stop()
    assert done.state == DeliveryState.DELIVERED
    assert [a.status_code for a in done.tries.all()] == [429, 408, 200]


def test_a_destination_refused_at_delivery_fails_without_a_try(laptop, receiver, settings):
    endpoint_of("ann", receiver.url, ["job.completed"])
    complete(new_job(laptop))
    notifications_fanout()
    settings.MOBILESD_WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("10.0.0.0/8"),)

    done = settle(WebhookDelivery.objects.get())

    assert done.state == DeliveryState.FAILED
    assert receiver.requests() == []
    (attempt,) = done.tries.all()
    assert attempt.status_code is None
    assert "MOBILESD_WEBHOOK_ALLOWED_NETWORKS" in attempt.error


def test_a_try_whose_worker_died_is_taken_again_with_the_same_webhook_id(laptop, receiver):
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    complete(new_job(laptop))
    notifications_fanout()
    delivery = WebhookDelivery.objects.get()
    # A worker claimed it and died (nothing recorded); its lease lapses.
    assert delivery_claim(delivery_id=delivery.pk) is not None
    assert delivery_send(delivery_id=delivery.pk) is None  # held: nobody else takes it
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    done = settle(delivery)

    assert done.state == DeliveryState.DELIVERED
    (got,) = receiver.requests()
    assert got.webhook_id == delivery.message_id
    receiver.assert_all_signed(endpoint.secret)
    lost, sent = done.tries.all()
    assert (lost.number, lost.status_code) == (1, None)
    assert "stopped" in lost.error
    assert (sent.number, sent.status_code) == (2, 200)


def test_the_fan_out_makes_each_delivery_once_and_moves_its_cursor(laptop, receiver):
    endpoint_of("ann", receiver.url, ["job."])
    job = new_job(laptop)
    complete(job)

    first = notifications_fanout()
    again = notifications_fanout()

    assert first >= 2
    assert again == 0
    types = sorted(WebhookDelivery.objects.values_list("event_type", flat=True))
    assert types == ["job.completed", "job.queued"]
    assert FanoutCursor.objects.get().position == max(
        WebhookDelivery.objects.values_list("event_seq", flat=True)
    )


def test_an_endpoint_receives_only_the_types_it_asked_for(laptop, receiver):
    job = new_job(laptop)
    endpoint_of("ann", receiver.url, ["job.completed", "server."])
    complete(job)
    Server.objects.filter(pk=laptop.pk).update(is_online=True)

    notifications_fanout()

    types = sorted(WebhookDelivery.objects.values_list("event_type", flat=True))
    assert types == ["job.completed", "server.online"]


def test_an_endpoint_receives_only_the_events_after_it_was_made(laptop, receiver):
    complete(new_job(laptop))  # not handed on yet when the endpoint is made
    endpoint_of("ann", receiver.url, ["job.", "server."])
    later = new_job(laptop)

    notifications_fanout()

    assert list(WebhookDelivery.objects.values_list("job_id", "event_type")) == [
        (later.pk, "job.queued")
    ]


def test_a_client_endpoint_never_receives_another_users_job_events(laptop, receiver):
    endpoint_of("ann", receiver.url, ["job."])
    complete(new_job(laptop, owner="bob"))

    notifications_fanout()

    assert not WebhookDelivery.objects.exists()


def test_an_admin_endpoint_for_all_users_receives_every_users_events(laptop, receiver):
    mine = endpoint_of("root", receiver.url, ["job.completed"], is_admin=True)
    every = endpoint_of("root", receiver.url, ["job.completed"], is_admin=True, all_users=True)
    complete(new_job(laptop, owner="bob"))

    notifications_fanout()

    assert list(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == [every.pk]
    assert mine.pk != every.pk


def test_a_disabled_endpoint_receives_nothing(laptop, receiver):
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
    complete(new_job(laptop))

    notifications_fanout()

    assert not WebhookDelivery.objects.exists()


def test_a_job_callback_url_receives_its_end_signed_with_the_users_secret(laptop, receiver):
    secret = webhook_signing_secret_rotate(owner=user("ann")).secret
    job = new_job(laptop, callback_url=receiver.url_for("job-done"))
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)
    complete(job)

    notifications_fanout()
    (delivery,) = WebhookDelivery.objects.all()
    done = settle(delivery)

    assert (done.endpoint_id, done.event_type, done.state) == (None, "job.completed", "delivered")
    (got,) = receiver.requests()
    assert got.path == "/job-done"
    receiver.assert_all_signed(secret)
    assert got.json["data"]["mobilesd_job_id"] == str(job.pk)


def test_a_callback_url_without_a_signing_secret_gets_one_made(laptop, receiver):
    job = new_job(laptop, callback_url=receiver.url)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)

    notifications_fanout()
    settle(WebhookDelivery.objects.get())

    receiver.assert_all_signed(WebhookSigningSecret.objects.get(owner=user("ann")).secret)


def test_a_callback_url_of_an_endpoint_is_signed_with_its_secret_and_sent_once(laptop, receiver):
    webhook_signing_secret_rotate(owner=user("ann"))
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    job = new_job(laptop, callback_url=receiver.url)
    complete(job)

    notifications_fanout()
    (delivery,) = WebhookDelivery.objects.all()
    settle(delivery)

    assert delivery.endpoint_id == endpoint.pk
    receiver.assert_all_signed(endpoint.secret)


def test_a_callback_url_that_is_another_users_endpoint_uses_the_owners_secret(laptop, receiver):
    bobs = endpoint_of("bob", receiver.url, ["job.failed"])
    job = new_job(laptop, callback_url=receiver.url)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED)

    notifications_fanout()
    settle(WebhookDelivery.objects.get())

    (got,) = receiver.requests()
    assert got.json["type"] == "job.cancelled"
    receiver.assert_all_signed(WebhookSigningSecret.objects.get(owner=user("ann")).secret)
    assert bobs.secret != WebhookSigningSecret.objects.get(owner=user("ann")).secret


def test_a_callback_url_receives_only_the_jobs_end(laptop, receiver):
    job = new_job(laptop, callback_url=receiver.url)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)

    notifications_fanout()

    assert not WebhookDelivery.objects.exists()


def test_deliver_again_sends_the_same_webhook_id_with_a_fresh_schedule(laptop, receiver):
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    complete(new_job(laptop))
    notifications_fanout()
    first = settle(WebhookDelivery.objects.get())

    webhook_delivery_redeliver(delivery_id=first.pk, endpoint=endpoint)
    again = settle(first)

    one, two = receiver.requests()
    assert one.webhook_id == two.webhook_id == first.message_id
    assert again.state == DeliveryState.DELIVERED
    assert again.attempts == 2
    receiver.assert_all_signed(endpoint.secret)


def test_an_endpoint_failing_for_too_long_is_disabled_and_its_owner_told(
    laptop, settings, caplog, django_capture_on_commit_callbacks
):
    settings.MOBILESD_WEBHOOK_RETRY_SECONDS = ()
    receiver = Receiver(then=500)
    try:
        endpoint = endpoint_of("ann", f"{receiver.url}?token=s3cret", ["job.completed"])
        phone = push_target_create(
            owner=user("ann"), name="phone", url="ntfy://127.0.0.1:9/ann", events=[]
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            failing_since=timezone.now() - timedelta(days=4)
        )
        complete(new_job(laptop))
        notifications_fanout()

        with (
            caplog.at_level(logging.WARNING, logger="notifications_app.delivery"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            settle(WebhookDelivery.objects.get())
    finally:
        receiver.stop()
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_at is not None
    assert "Every delivery failed" in endpoint.disabled_reason
    (logged,) = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert "s3cret" not in logged, "the URL's query may be the receiver's token"
    # Told on every target, whatever event types it wants.
    (notice,) = PushMessage.objects.filter(target=phone)
    assert notice.title == "MobileSD: a webhook endpoint was disabled"
    assert endpoint.disabled_reason in notice.body
    assert f"PATCH /api/v1/webhooks/{endpoint.pk}" in notice.body


def test_a_success_forgets_an_endpoints_failures(laptop, receiver):
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now())
    complete(new_job(laptop))
    notifications_fanout()

    settle(WebhookDelivery.objects.get())

    endpoint.refresh_from_db()
    assert endpoint.failing_since is None
    assert endpoint.enabled


def test_an_unanswered_try_times_out_and_is_tried_again(laptop, settings):
    settings.MOBILESD_WEBHOOK_READ_TIMEOUT = 0.5
    receiver = Receiver(plan=[HOLD])
    try:
        endpoint_of("ann", receiver.url, ["job.completed"])
        complete(new_job(laptop))
        notifications_fanout()

        done = settle(WebhookDelivery.objects.get())
    finally:
        receiver.stop()
    assert done.state == DeliveryState.DELIVERED
    timed_out, ok = done.tries.all()
    assert timed_out.status_code is None
    assert "Timed out" in timed_out.error
    assert ok.status_code == 200


def test_a_try_whose_delivery_was_deleted_meanwhile_records_nothing(laptop, receiver):
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    complete(new_job(laptop))
    notifications_fanout()
    claim = delivery_claim(delivery_id=WebhookDelivery.objects.get().pk)
    assert claim is not None
    endpoint.delete()  # with its deliveries, while the try was out

    kept = delivery_module.delivery_record(
        claim, Outcome(200, 5), started_at=timezone.now(), refused=False
    )

    assert kept is None
    assert not WebhookAttempt.objects.exists()


def test_the_poll_hands_events_on_and_resends_lost_deliveries(laptop, receiver, published):
    endpoint = endpoint_of("ann", receiver.url, ["job.completed"])
    complete(new_job(laptop))
    past = timezone.now() - timedelta(minutes=1)
    late = WebhookDelivery.objects.create(
        endpoint=endpoint,
        owner_id=endpoint.owner_id,
        message_id="msg_late",
        event_type="x",
        payload={},
        next_attempt_at=past,
    )
    lapsed = WebhookDelivery.objects.create(
        endpoint=endpoint,
        owner_id=endpoint.owner_id,
        message_id="msg_lapsed",
        event_type="x",
        payload={},
        state=DeliveryState.DELIVERING,
        lease_expires_at=past,
    )
    WebhookDelivery.objects.create(
        endpoint=endpoint,
        owner_id=endpoint.owner_id,
        message_id="msg_due_later",
        event_type="x",
        payload={},
        next_attempt_at=timezone.now() + timedelta(minutes=1),
    )

    notifications_poll()

    assert WebhookDelivery.objects.filter(event_type="job.completed").count() == 1
    resent = {args[0] for name, args, _ in published if name.endswith("deliver_webhook")}
    assert resent == {late.pk, lapsed.pk}


def test_an_event_that_cannot_be_rendered_still_goes_out_and_does_not_stop_the_fan_out(
    laptop, receiver, monkeypatch
):
    endpoint_of("ann", receiver.url, ["job.completed"])
    complete(new_job(laptop))

    def broken(job):
        raise ValueError("a snapshot it cannot read")

    monkeypatch.setattr("notifications_app.webhooks.job_data", broken)

    notifications_fanout()

    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.payload == {
        "type": "job.completed",
        "timestamp": None,
        "data": {"id": delivery.event_seq},
    }
    assert FanoutCursor.objects.get().position >= delivery.event_seq
