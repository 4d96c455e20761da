"""The admin's webhook pages: endpoints (the secret shown once, when added), their
deliveries with every try, "Send a test event" and "Deliver again"."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from notifications_app.models import DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from notifications_app.webhook_services import webhook_endpoint_create, webhook_endpoint_test
from tests.admin_support import messages_of, press

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("loopback_allowed")]

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def endpoint(admin_user) -> WebhookEndpoint:
    return webhook_endpoint_create(
        owner=admin_user, is_admin=True, url=HOOK, event_types=["job.completed"]
    )


def add(admin_client, **fields):
    owner = get_user_model().objects.get(username="admin")
    data = {"owner": owner.pk, "url": HOOK, "description": "", "events": "job.completed, job."}
    return admin_client.post(
        reverse("admin:notifications_app_webhookendpoint_add"),
        {**data, "enabled": "on", **fields},
        follow=True,
    )


def test_adding_an_endpoint_shows_its_new_secret_once(admin_client):
    response = add(admin_client)

    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["job.", "job.completed"]
    assert endpoint.secret.startswith("whsec_")
    assert any(endpoint.secret in message for message in messages_of(response))
    page = admin_client.get(
        reverse("admin:notifications_app_webhookendpoint_change", args=[endpoint.pk])
    )
    assert endpoint.secret not in page.content.decode()


def test_a_refused_destination_is_not_added_and_the_form_says_why(admin_client, settings):
    response = add(admin_client, url="http://8.8.8.8/hook")

    assert not WebhookEndpoint.objects.exists()
    assert "MOBILESD_WEBHOOK_ALLOWED_NETWORKS" in response.content.decode()


def test_editing_keeps_the_secret_and_changes_the_events(admin_client, endpoint):
    secret = endpoint.secret
    url = reverse("admin:notifications_app_webhookendpoint_change", args=[endpoint.pk])

    admin_client.post(
        url,
        {"owner": endpoint.owner_id, "url": HOOK, "events": "batch.", "enabled": "on"},
        follow=True,
    )

    endpoint.refresh_from_db()
    assert endpoint.secret == secret
    assert endpoint.event_types == ["batch."]


def test_the_test_button_queues_a_webhook_test_delivery(admin_client, endpoint):
    response = press(admin_client, "notifications_app_webhookendpoint_test", endpoint)

    delivery = WebhookDelivery.objects.get()
    assert delivery.event_type == "webhook.test"
    assert any(delivery.message_id in message for message in messages_of(response))


def test_a_delivery_page_shows_its_tries_and_delivers_again(admin_client, endpoint):
    delivery = webhook_endpoint_test(endpoint=endpoint)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(state=DeliveryState.FAILED, attempts=1)
    WebhookAttempt.objects.create(
        delivery=delivery, number=1, started_at=timezone.now(), status_code=503, error="boom"
    )
    url = reverse("admin:notifications_app_webhookdelivery_change", args=[delivery.pk])

    page = admin_client.get(url).content.decode()
    response = press(admin_client, "notifications_app_webhookdelivery_redeliver", delivery)

    assert "503" in page
    assert "boom" in page
    assert "Deliver again" in page
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.PENDING
    assert delivery.schedule_start == 1
    assert any("delivered again" in message for message in messages_of(response))


def test_deliver_again_is_a_bulk_action_too(admin_client, endpoint):
    deliveries = [webhook_endpoint_test(endpoint=endpoint) for _ in range(2)]
    WebhookDelivery.objects.update(state=DeliveryState.DELIVERED)

    admin_client.post(
        reverse("admin:notifications_app_webhookdelivery_changelist"),
        {"action": "deliver_again_selected", "_selected_action": [d.pk for d in deliveries]},
    )

    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"pending"}


def test_the_endpoint_list_links_to_its_deliveries(admin_client, endpoint):
    webhook_endpoint_test(endpoint=endpoint)

    page = admin_client.get(reverse("admin:notifications_app_webhookendpoint_changelist"))

    assert f"endpoint__id__exact={endpoint.pk}" in page.content.decode()
