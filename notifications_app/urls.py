from django.urls import URLPattern, URLResolver, path

from notifications_app import push_views

urlpatterns: list[URLPattern | URLResolver] = []

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
