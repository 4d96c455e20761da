from django.urls import URLPattern, URLResolver, path

from notifications_app.webhook_views import (
    WebhookDeliveryListView,
    WebhookDetailView,
    WebhookListView,
    WebhookRedeliverView,
    WebhookSigningSecretView,
    WebhookTestView,
)

urlpatterns: list[URLPattern | URLResolver] = []

# --- Webhooks ---
urlpatterns += [
    path("webhooks", WebhookListView.as_view(), name="webhooks"),
    path("webhooks/signing-secret", WebhookSigningSecretView.as_view(), name="webhook-secret"),
    path("webhooks/<int:webhook_id>", WebhookDetailView.as_view(), name="webhook"),
    path(
        "webhooks/<int:webhook_id>/deliveries",
        WebhookDeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<int:webhook_id>/deliveries/<int:delivery_id>/redeliver",
        WebhookRedeliverView.as_view(),
        name="webhook-redeliver",
    ),
    path("webhooks/<int:webhook_id>/test", WebhookTestView.as_view(), name="webhook-test"),
]
# --- End of webhooks ---
