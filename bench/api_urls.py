"""URLconf of the web process of bench/api.py (bench/api_settings.py): MobileSD's URLs,
plus `/bench/floor/<uuid>`, the floor of the API benchmark. Not part of the product's
URLconf: only a process started with `DJANGO_SETTINGS_MODULE=bench.api_settings` serves it.
"""

import uuid

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from mobilesd.urls import handler400, handler404, handler500
from queue_app.models import Job

# The columns the status read shows, read the plainest way Django can.
FLOOR_FIELDS = (
    "id",
    "status",
    "created_at",
    "updated_at",
    "completed_at",
    "target_server_alias",
    "forge_session_hash",
    "generation_params",
    "result_details",
    "retry_count",
    "priority",
)


def floor(request: HttpRequest, job_id: uuid.UUID) -> JsonResponse:
    """The same job row as the status read, with neither DRF, authentication, throttling
    nor a serializer: what any Django view reading that row costs in this process."""
    return JsonResponse(Job.objects.values(*FLOOR_FIELDS).get(pk=job_id))


urlpatterns = [
    path("bench/floor/<uuid:job_id>", floor, name="bench-floor"),
    path("", include("mobilesd.urls")),
]

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]
