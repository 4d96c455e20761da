"""The admin of push notifications: targets (the URL never shown after it is saved),
their outbox, and the "Send a test notification" button."""

from collections.abc import Iterator

import pytest
from django.urls import reverse

from integrations.ntfy.simulator import NtfySimulator
from notifications_app.models import PushMessage, PushTarget
from notifications_app.push import notify_user
from notifications_app.push_services import push_target_create
from tests.admin_support import messages_of, press
from tests.notifications_app.push_support import allow_loopback, user

SECRET = "tk_s3cr3t"


@pytest.fixture
def ntfy(db, settings) -> Iterator[NtfySimulator]:
    allow_loopback(settings)
    sim = NtfySimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def secret_target(ntfy) -> PushTarget:
    """A target whose URL holds a token (sent by ntfy's plugin as a Bearer header)."""
    return push_target_create(
        owner=user("ada"),
        name="Ada's phone",
        url=f"{ntfy.apprise_url('phone')}?auth=token&token={SECRET}",
        events=["job.completed"],
    )


def test_the_pages_show_the_url_only_in_its_privacy_form(admin_client, secret_target):
    listing = admin_client.get(reverse("admin:notifications_app_pushtarget_changelist"))
    page = admin_client.get(
        reverse("admin:notifications_app_pushtarget_change", args=[secret_target.pk])
    )

    for response in (listing, page):
        assert response.status_code == 200
        assert SECRET not in response.content.decode()
    assert "ntfy://t...t@127.0.0.1" in page.content.decode()


def test_a_target_is_added_with_its_url_checked(admin_client, ntfy):
    add = reverse("admin:notifications_app_pushtarget_add")
    form = {"owner": user("ada").pk, "name": "Phone", "events": ["job.failed"], "enabled": "on"}

    refused = admin_client.post(add, {**form, "new_url": "ntfy://169.254.169.254/x"})
    added = admin_client.post(add, {**form, "new_url": ntfy.apprise_url("phone")})

    assert refused.status_code == 200
    assert "metadata" in refused.content.decode()
    assert added.status_code == 302
    saved = PushTarget.objects.get()
    assert (saved.url, saved.events) == (ntfy.apprise_url("phone"), ["job.failed"])


def test_saving_without_a_new_url_keeps_the_stored_one(admin_client, secret_target):
    change = reverse("admin:notifications_app_pushtarget_change", args=[secret_target.pk])
    form = {"owner": secret_target.owner_id, "name": "Renamed", "events": ["job.completed"]}

    assert admin_client.post(change, {**form, "new_url": ""}).status_code == 302

    secret_target.refresh_from_db()
    assert secret_target.name == "Renamed"
    assert SECRET in secret_target.url
    assert secret_target.enabled is False  # the unchecked box


def test_the_button_sends_a_test_notification(admin_client, ntfy, secret_target):
    response = press(admin_client, "notifications_app_pushtarget_test", secret_target)

    assert "A test notification was sent to Ada's phone." in messages_of(response)
    (received,) = ntfy.messages("phone")
    assert received.title == "MobileSD test notification"
    assert received.headers["authorization"] == f"Bearer {SECRET}"


def test_a_failed_test_is_reported_with_the_services_error(admin_client, ntfy, secret_target):
    ntfy.fail_next(1)

    response = press(admin_client, "notifications_app_pushtarget_test", secret_target)

    (message,) = messages_of(response)
    assert "simulated failure" in message


def test_the_outbox_is_listed_and_shown(admin_client, secret_target):
    notify_user(secret_target.owner_id, title="Hello there", body="A notice.")
    row = PushMessage.objects.get()

    listing = admin_client.get(reverse("admin:notifications_app_pushmessage_changelist"))
    page = admin_client.get(reverse("admin:notifications_app_pushmessage_change", args=[row.pk]))

    assert "Ada&#x27;s phone" in listing.content.decode()
    assert "Hello there" in page.content.decode()


def test_failed_notifications_are_sent_again_from_the_list(
    admin_client, ntfy, secret_target, published, django_capture_on_commit_callbacks
):
    notify_user(secret_target.owner_id, title="Hello", body="A notice.")
    failed = PushMessage.objects.get()
    PushMessage.objects.filter(pk=failed.pk).update(state="failed", attempts=4)
    notify_user(secret_target.owner_id, title="Second", body="Not failed.")
    pending = PushMessage.objects.exclude(pk=failed.pk).get()
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:notifications_app_pushmessage_changelist"),
            {"action": "send_again", "_selected_action": [failed.pk, pending.pk]},
            follow=True,
        )

    shown = messages_of(response)
    assert "Queued 1 notification(s) again." in shown
    assert any("only a failed one can be sent again" in text for text in shown)
    failed.refresh_from_db()
    assert (failed.state, failed.attempts) == ("pending", 0)
    assert [args for name, args, _ in published if name.endswith("send_push")] == [(failed.pk,)]
