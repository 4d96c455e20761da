from django.urls import URLPattern, URLResolver, path

from notifications_app import push_views
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

# --- Push notifications ---------------------------------------------------------------
urlpatterns += [
    path(
        "notification-targets",
        push_views.PushTargetListView.as_view(),
        name="notification-target-list",
    ),
    path(
        "notification-targets/<str:target_id>",
        push_views.PushTargetDetailView.as_view(),
        name="notification-target-detail",
    ),
    path(
        "notification-targets/<str:target_id>/test",
        push_views.PushTargetTestView.as_view(),
        name="notification-target-test",
    ),
]
# --- End of push notifications ----------------------------------------------------------
