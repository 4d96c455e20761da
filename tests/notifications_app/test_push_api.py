"""The notification targets API: /api/v1/notification-targets (and /test)."""

from collections.abc import Iterator

import pytest

from integrations.ntfy.simulator import NtfySimulator
from notifications_app.models import PushMessage, PushTarget
from tests.notifications_app.push_support import allow_loopback, target, user
from tests.support import assert_error, key_client

LIST = "/api/v1/notification-targets"


@pytest.fixture
def ntfy(db, settings) -> Iterator[NtfySimulator]:
    allow_loopback(settings)
    sim = NtfySimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def ada(db):
    return key_client("ada")


def test_a_target_is_registered_and_shown_without_its_secrets(ntfy, ada):
    url = ntfy.apprise_url("phone") + "?auth=token&token=tk_s3cr3t"

    response = ada.post(LIST, {"name": "Phone", "url": url}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Phone"
    assert body["events"] == ["job.completed", "job.failed", "batch.finished"]
    assert body["enabled"] is True
    assert body["owner"] == "ada"
    assert body["url"].startswith("ntfy://t...t@127.0.0.1:")  # Apprise's privacy form
    assert "s3cr3t" not in response.content.decode()
    assert PushTarget.objects.get().url == url
    assert "s3cr3t" not in ada.get(f"{LIST}/{body['id']}").content.decode()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ntfy://169.254.169.254/x", "metadata"),
        ("ntfy://127.0.0.1:8080/x", "MOBILESD_WEBHOOK_ALLOWED_NETWORKS"),
        ("slack://T1/B2/C3", "cannot tell where"),
        ("not a url", "Not an Apprise URL"),
    ],
)
def test_a_refused_destination_is_a_400_on_url(db, ada, url, said):
    response = ada.post(LIST, {"name": "Phone", "url": url}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert said in body["fields"]["url"][0]
    assert not PushTarget.objects.exists()


def test_loopback_unlisted_is_refused_naming_the_setting(db, ada, settings):
    settings.MOBILESD_WEBHOOK_ALLOWED_NETWORKS = ()
    response = ada.post(LIST, {"name": "P", "url": "ntfy://127.0.0.1:9/x"}, format="json")

    assert (
        "MOBILESD_WEBHOOK_ALLOWED_NETWORKS"
        in assert_error(response, 400, "validation_error")["message"]
    )


@pytest.mark.parametrize(
    "data",
    [
        {"name": "P", "url": "ntfy://127.0.0.1:9/x", "events": ["job.queued"]},
        {"name": "P", "url": "ntfy://127.0.0.1:9/x", "events": []},
        {"name": "", "url": "ntfy://127.0.0.1:9/x"},
        {"name": "P"},
        {"name": "P", "url": 5},
    ],
)
def test_bad_input_is_a_400(ntfy, ada, data):
    assert_error(ada.post(LIST, data, format="json"), 400, "validation_error")


def test_a_name_with_bidirectional_overrides_is_refused(ntfy, ada):
    data = {"name": "P\u202e", "url": "ntfy://127.0.0.1:9/x"}

    assert_error(ada.post(LIST, data, format="json"), 400, "invalid_name")


def test_a_client_lists_only_its_own_targets_and_an_admin_all(ntfy, ada):
    mine = target(user("ada"), ntfy, "ada")
    target(user("bob"), ntfy, "bob")

    listed = ada.get(LIST).json()
    everyone = key_client("root", scope="admin").get(LIST).json()

    assert [t["id"] for t in listed["notification_targets"]] == [mine.pk]
    assert listed["total"] == 1
    assert everyone["total"] == 2


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_users_target_is_a_404(ntfy, ada, method):
    theirs = target(user("bob"), ntfy, "bob")

    response = getattr(ada, method)(f"{LIST}/{theirs.pk}", {"name": "mine"}, format="json")

    assert_error(response, 404, "notification_target_not_found")
    assert PushTarget.objects.get().name == "bob's phone"


@pytest.mark.parametrize("target_id", ["999", "abc", "-1"])
def test_an_unknown_target_is_a_404(db, ada, target_id):
    assert_error(ada.get(f"{LIST}/{target_id}"), 404, "notification_target_not_found")


def test_a_target_is_changed_and_a_new_url_checked(ntfy, ada):
    mine = target(user("ada"), ntfy, "ada")

    changed = ada.patch(
        f"{LIST}/{mine.pk}", {"events": ["job.failed"], "enabled": False}, format="json"
    )
    refused = ada.patch(f"{LIST}/{mine.pk}", {"url": "ntfy://169.254.169.254/x"}, format="json")

    assert changed.status_code == 200
    assert (changed.json()["events"], changed.json()["enabled"]) == (["job.failed"], False)
    assert_error(refused, 400, "validation_error")
    mine.refresh_from_db()
    assert mine.url == ntfy.apprise_url("ada")


def test_a_target_is_deleted(ntfy, ada):
    mine = target(user("ada"), ntfy, "ada")

    assert ada.delete(f"{LIST}/{mine.pk}").status_code == 200
    assert not PushTarget.objects.exists()


def test_the_test_endpoint_sends_to_the_receiver_now(ntfy, ada):
    mine = target(user("ada"), ntfy, "ada")

    response = ada.post(f"{LIST}/{mine.pk}/test")

    assert response.status_code == 200
    assert response.json()["sent"] is True
    (received,) = ntfy.messages("ada")
    assert received.title == "MobileSD test notification"
    assert "ada's phone" in received.message
    assert PushMessage.objects.get().state == "sent"
    assert ada.get(f"{LIST}/{mine.pk}").json()["last_sent_at"] is not None


def test_a_failed_test_is_a_502_with_the_services_error(ntfy, ada):
    mine = target(user("ada"), ntfy, "ada")
    ntfy.fail_next(1)

    response = ada.post(f"{LIST}/{mine.pk}/test")

    body = assert_error(response, 502, "notification_failed")
    assert "simulated failure" in body["message"]
    assert ntfy.requests == 1  # a test is not retried
    assert "simulated failure" in ada.get(f"{LIST}/{mine.pk}").json()["last_error"]


def test_another_users_target_cannot_be_tested(ntfy, ada):
    theirs = target(user("bob"), ntfy, "bob")

    assert_error(ada.post(f"{LIST}/{theirs.pk}/test"), 404, "notification_target_not_found")
    assert ntfy.requests == 0
