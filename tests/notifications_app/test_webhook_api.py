"""The webhook API: endpoints (the secret shown once), their deliveries, deliver again, a
test event, the signing secret; destinations refused at registration; another user's
endpoint is a 404; callback_url in a submit and a batch."""

from typing import Any

import pytest
from model_bakery import baker
from rest_framework.test import APIClient

from notifications_app.fanout import notifications_fanout
from notifications_app.models import DeliveryState, WebhookDelivery, WebhookEndpoint
from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.support import DOCUMENTED_GENERATE_REQUEST, assert_error, new_key

pytestmark = pytest.mark.django_db

URL = "/api/v1/webhooks"
SETTING = "MOBILESD_WEBHOOK_ALLOWED_NETWORKS"
HOOK = "http://127.0.0.1:9/hook"


def key_client(username: str, scope: str = "client") -> APIClient:
    _, raw = new_key(f"{username}'s phone", username=username, scope=scope)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


@pytest.fixture
def ann(db) -> APIClient:
    return key_client("ann")


@pytest.fixture
def bob(db) -> APIClient:
    return key_client("bob")


@pytest.fixture
def root(db) -> APIClient:
    return key_client("root", "admin")


def create(api: APIClient, **body: Any) -> dict[str, Any]:
    response = api.post(URL, {"url": HOOK, "events": ["job.completed"], **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_new_endpoint_answers_its_secret_once(ann, loopback_allowed):
    made = create(ann, description="phone", events=["job.", "job.completed"])

    assert made["secret"].startswith("whsec_")
    assert made["events"] == ["job.", "job.completed"]
    assert (made["url"], made["description"], made["owner"]) == (HOOK, "phone", "ann")
    assert made["enabled"] is True
    assert made["all_users"] is False
    shown = ann.get(f"{URL}/{made['id']}").json()
    assert "secret" not in shown
    listed = ann.get(URL).json()
    assert listed["total"] == 1
    assert "secret" not in listed["webhooks"][0]


def test_a_destination_outside_the_allowed_networks_is_refused_naming_the_setting(ann):
    response = ann.post(URL, {"url": HOOK, "events": ["job.completed"]}, format="json")

    assert_error(response, 400, "validation_error")
    assert SETTING in response.json()["fields"]["url"][0]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest", "ftp://192.168.1.5/x", "http://user:pw@10.0.0.5/"]
)
def test_metadata_other_schemes_and_credentials_are_refused(ann, url):
    response = ann.post(URL, {"url": url, "events": ["job.completed"]}, format="json")

    assert_error(response, 400, "validation_error")


@pytest.mark.parametrize("events", [[], ["Job Completed"], "job.completed", [""], [1]])
def test_bad_event_types_are_refused(ann, loopback_allowed, events):
    response = ann.post(URL, {"url": HOOK, "events": events}, format="json")

    assert_error(response, 400, "validation_error")


def test_a_client_key_may_not_take_every_users_events(ann, loopback_allowed):
    response = ann.post(URL, {"url": HOOK, "events": ["job."], "all_users": True}, format="json")

    assert_error(response, 400, "validation_error")
    assert "all_users" in response.json()["fields"]


def test_an_admin_key_may_take_every_users_events(root, loopback_allowed):
    assert create(root, all_users=True)["all_users"] is True


def test_a_client_lists_its_own_endpoints_and_an_admin_everyones(ann, bob, root, loopback_allowed):
    create(ann)
    create(bob)

    assert [w["owner"] for w in ann.get(URL).json()["webhooks"]] == ["ann"]
    assert sorted(w["owner"] for w in root.get(URL).json()["webhooks"]) == ["ann", "bob"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("get", "/deliveries"),
        ("post", "/test"),
        ("post", "/deliveries/1/redeliver"),
    ],
)
def test_another_users_endpoint_is_not_found(ann, bob, loopback_allowed, method, suffix):
    theirs = create(bob)

    response = getattr(ann, method)(f"{URL}/{theirs['id']}{suffix}", {}, format="json")

    assert_error(response, 404, "webhook_not_found")
    assert WebhookEndpoint.objects.filter(pk=theirs["id"]).exists()


def test_an_id_beyond_bigint_is_not_found(ann):
    assert_error(ann.get(f"{URL}/{2**70}"), 404, "webhook_not_found")


def test_patch_changes_the_endpoint_and_checks_the_url(ann, loopback_allowed, settings):
    made = create(ann)

    changed = ann.patch(
        f"{URL}/{made['id']}",
        {"events": ["batch.", "job.failed"], "description": "x", "enabled": False},
        format="json",
    )
    refused = ann.patch(f"{URL}/{made['id']}", {"url": "http://8.8.8.8/"}, format="json")

    assert changed.status_code == 200
    body = changed.json()
    assert body["events"] == ["batch.", "job.failed"]
    assert body["enabled"] is False
    assert body["disabled_at"] is not None
    assert_error(refused, 400, "validation_error")
    assert SETTING in refused.json()["fields"]["url"][0]


def test_enabling_again_forgets_why_it_was_disabled(ann, loopback_allowed):
    made = create(ann)
    WebhookEndpoint.objects.filter(pk=made["id"]).update(
        enabled=False, disabled_reason="The receiver answered 410 Gone."
    )

    body = ann.patch(f"{URL}/{made['id']}", {"enabled": True}, format="json").json()

    assert body["enabled"] is True
    assert (body["disabled_at"], body["disabled_reason"], body["failing_since"]) == (None, "", None)


def test_delete_removes_the_endpoint(ann, loopback_allowed):
    made = create(ann)

    response = ann.delete(f"{URL}/{made['id']}")

    assert response.status_code == 200
    assert not WebhookEndpoint.objects.exists()


def test_deliveries_are_listed_newest_first_with_their_tries(
    ann, loopback_allowed, django_capture_on_commit_callbacks, published
):
    made = create(ann)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            assert ann.post(f"{URL}/{made['id']}/test").status_code == 202

    body = ann.get(f"{URL}/{made['id']}/deliveries").json()

    assert body["total"] == 2
    first, second = body["deliveries"]
    assert first["id"] > second["id"]
    assert first["event_type"] == "webhook.test"
    assert first["state"] == "pending"
    assert first["webhook_id"].startswith("msg_")
    assert first["attempts"] == []
    assert first["payload"]["type"] == "webhook.test"
    sent = [name for name, _, _ in published]
    assert sent == ["notifications_app.webhook_tasks.deliver_webhook"] * 2


def test_redeliver_queues_the_same_webhook_id_again(
    ann, loopback_allowed, django_capture_on_commit_callbacks, published
):
    made = create(ann)
    with django_capture_on_commit_callbacks(execute=True):
        test = ann.post(f"{URL}/{made['id']}/test").json()
    WebhookDelivery.objects.filter(pk=test["id"]).update(state=DeliveryState.FAILED)

    with django_capture_on_commit_callbacks(execute=True):
        response = ann.post(f"{URL}/{made['id']}/deliveries/{test['id']}/redeliver")

    assert response.status_code == 202
    assert response.json()["webhook_id"] == test["webhook_id"]
    assert response.json()["state"] == "pending"
    assert published[-1][1] == (test["id"],)


def test_redeliver_of_a_delivery_being_sent_is_a_conflict(ann, loopback_allowed):
    made = create(ann)
    test = ann.post(f"{URL}/{made['id']}/test").json()
    WebhookDelivery.objects.filter(pk=test["id"]).update(state=DeliveryState.DELIVERING)

    response = ann.post(f"{URL}/{made['id']}/deliveries/{test['id']}/redeliver")

    assert_error(response, 409, "delivery_in_progress")


def test_redeliver_of_an_unknown_delivery_is_not_found(ann, loopback_allowed):
    made = create(ann)

    response = ann.post(f"{URL}/{made['id']}/deliveries/12345/redeliver")

    assert_error(response, 404, "delivery_not_found")


def test_the_signing_secret_is_shown_when_made_and_rotated(ann):
    first = ann.post(f"{URL}/signing-secret")
    second = ann.post(f"{URL}/signing-secret")

    assert first.status_code == second.status_code == 201
    assert first.json()["secret"].startswith("whsec_")
    assert first.json()["secret"] != second.json()["secret"]


# --- callback_url in submits and batches ---------------------------------------------------


@pytest.fixture
def laptop(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


def test_a_submit_keeps_its_callback_url_and_shows_it(ann, laptop, loopback_allowed):
    response = ann.post(
        "/api/v1/generate", {**DOCUMENTED_GENERATE_REQUEST, "callback_url": HOOK}, format="json"
    )

    assert response.status_code == 202, response.content
    job_id = response.json()["mobilesd_job_id"]
    assert Job.objects.get(pk=job_id).callback_url == HOOK
    assert ann.get(f"/api/v1/queue/jobs/{job_id}/status").json()["callback_url"] == HOOK


def test_a_submit_without_a_callback_url_shows_an_empty_one(ann, laptop):
    response = ann.post("/api/v1/generate", DOCUMENTED_GENERATE_REQUEST, format="json")

    job_id = response.json()["mobilesd_job_id"]
    assert ann.get(f"/api/v1/queue/jobs/{job_id}/status").json()["callback_url"] == ""


def test_a_submit_with_a_refused_callback_url_is_a_400_naming_the_setting(ann, laptop):
    response = ann.post(
        "/api/v1/generate", {**DOCUMENTED_GENERATE_REQUEST, "callback_url": HOOK}, format="json"
    )

    assert_error(response, 400, "validation_error")
    assert SETTING in response.json()["fields"]["callback_url"][0]
    assert not Job.objects.exists()


def test_a_batch_gives_its_callback_url_to_every_job(ann, laptop, loopback_allowed):
    body = {
        "target_server_alias": "Laptop",
        "items": [{"positive_prompt": p, "steps": 4} for p in ("a cat", "a dog")],
        "callback_url": HOOK,
    }

    response = ann.post("/api/v1/batches", body, format="json")

    assert response.status_code == 202, response.content
    assert list(Job.objects.values_list("callback_url", flat=True)) == [HOOK, HOOK]


def test_a_batch_with_a_refused_callback_url_is_a_400(ann, laptop):
    body = {"target_server_alias": "Laptop", "items": [{"positive_prompt": "a cat"}]}

    response = ann.post(
        "/api/v1/batches", {**body, "callback_url": "http://8.8.8.8/x"}, format="json"
    )

    assert_error(response, 400, "validation_error")
    assert SETTING in response.json()["fields"]["callback_url"][0]


def test_a_clients_endpoint_gets_only_its_own_users_job_events(ann, bob, laptop, loopback_allowed):
    made = create(ann, events=["job."])
    for api in (ann, bob):
        api.post("/api/v1/generate", DOCUMENTED_GENERATE_REQUEST, format="json")
    Job.objects.update(status=JobStatus.COMPLETED)

    notifications_fanout()

    owners = set(
        Job.objects.filter(
            pk__in=WebhookDelivery.objects.filter(endpoint_id=made["id"]).values("job_id")
        ).values_list("owner__username", flat=True)
    )
    assert owners == {"ann"}
    assert WebhookDelivery.objects.filter(endpoint_id=made["id"]).count() == 2
