"""URLs: the API under /api/v1/, its schema and docs, result images under /outputs/ (as
the original served them), Prometheus metrics at /metrics, and the admin."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from civitai_app.metrics import DownloadCollector
from core_app.metrics import HeartbeatCollector, MetricsView
from core_app.views import HealthView
from queue_app.metrics import JobCollector
from queue_app.views import OutputImageView
from servers_app.metrics import ServerCollector

api_v1: list[URLPattern | URLResolver] = [
    path("health", HealthView.as_view(), name="health"),
    path("", include("queue_app.urls")),
    path("", include("servers_app.urls")),
    path("debug/", include("debug_app.urls")),
    path("civitai/", include("civitai_app.urls")),
    path("", include("events_app.urls")),
    path("", include("notifications_app.urls")),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    # Where the original MobileSD served result images; `path:` so that any name, slashes
    # included, gets the API's answer (a 404 in the error shape) rather than a page.
    path("outputs/<path:name>", OutputImageView.as_view(), name="output-image"),
    # Outside /api/v1/: for a scraper, not a phone; not part of the OpenAPI document.
    path(
        "metrics",
        MetricsView.as_view(
            collectors=[
                JobCollector(),
                ServerCollector(),
                DownloadCollector(),
                HeartbeatCollector(),
            ]
        ),
        name="metrics",
    ),
    path("admin/", admin.site.urls),  # the dashboard (dashboard_app.sites) and the models
]

handler400 = "core_app.exceptions.bad_request"
handler404 = "core_app.exceptions.not_found"
handler500 = "core_app.exceptions.server_error"
