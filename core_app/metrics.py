"""GET /metrics: Prometheus's text format, for an operator's scraper.

Each app contributes collectors that compute their figures from the database at scrape
time (`mobilesd/urls.py` hands them to the view), so what a scrape shows is what the
database holds, whichever process serves it. What only a worker sees as it happens (the
dispatch gaps, checkpoint switches) is counted with prometheus-client's multiprocess mode
in files under PROMETHEUS_MULTIPROC_DIR, and read from there too.
"""

import hmac
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from core_app.authentication import AddressLockedOut, ApiKeyAuthentication
from core_app.errors import error_body
from core_app.models import CeleryProcess, WorkerHeartbeat, heartbeat_window

__all__ = ["HeartbeatCollector", "MetricsView", "duration_histogram"]


MESSAGE = (
    "Metrics need the metrics token (Authorization: Bearer <MOBILESD_METRICS_TOKEN>), an admin "
    "API key or an administrator's session."
)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None if the request may read the metrics: the metrics token, a staff session, or an
    admin API key (checked as the API checks keys, failed attempts counted); else the
    answer in the API's error shape (401, 403 for a client key, 429 for an address locked
    out)."""
    token = settings.MOBILESD_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return None
    try:
        found = ApiKeyAuthentication().authenticate(Request(request))
    except AddressLockedOut as locked:
        response = JsonResponse(error_body(str(locked.detail), str(locked.get_codes())), status=429)
        response["Retry-After"] = str(locked.wait)
        return response
    except AuthenticationFailed as refused:
        return _unauthorized(str(refused.get_codes()))
    if found is None:
        return _unauthorized("authentication_required")
    if not found[1].is_admin:
        return JsonResponse(
            error_body(f"{MESSAGE} A client key may not.", "admin_scope_required"), status=403
        )
    return None


def _unauthorized(code: str) -> HttpResponse:
    response = JsonResponse(error_body(MESSAGE, code), status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


class MetricsView(View):
    """The metrics of `collectors`, and of the worker processes' shared files, for the
    metrics token (`Authorization: Bearer <MOBILESD_METRICS_TOKEN>`), an admin API key or a
    staff session; anyone else gets an answer in the API's error shape."""

    collectors: Sequence[Collector] = ()
    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest) -> HttpResponse:
        if (refusal := _refusal(request)) is not None:
            return refusal
        registry = CollectorRegistry(auto_describe=False)
        for collector in self.collectors:
            registry.register(collector)
        MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def duration_histogram(
    rows: QuerySet[Any],
    *,
    start: str,
    end: str,
    labels: Sequence[str],
    buckets: Iterable[float],
) -> list[tuple[list[str], list[tuple[str, float]], float]]:
    """Per label values, the cumulative bucket counts and the sum (seconds) of `end - start`
    over `rows`: one GROUP BY, each bucket a filtered COUNT (no row is read into Python).
    Rows without both times are left out."""
    bounds = sorted(buckets)
    duration = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    counted = rows.filter(**{f"{start}__isnull": False, f"{end}__isnull": False}).annotate(
        _duration=duration
    )
    aggregates: dict[str, Any] = {
        f"le_{index}": Count("pk", filter=Q(_duration__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(bounds)
    }
    aggregates["total"] = Count("pk")
    aggregates["seconds"] = Sum("_duration")
    result = []
    for row in counted.values(*labels).annotate(**aggregates).order_by(*labels):
        cumulative = [(_le(bound), float(row[f"le_{index}"])) for index, bound in enumerate(bounds)]
        cumulative.append(("+Inf", float(row["total"])))
        seconds = row["seconds"]
        total_seconds = seconds.total_seconds() if isinstance(seconds, timedelta) else 0.0
        result.append(([str(row[label]) for label in labels], cumulative, total_seconds))
    return result


def _le(bound: float) -> str:
    return repr(float(bound))


class HeartbeatCollector(Collector):
    """How many workers, and beats, noted their heartbeat within two periods, as
    /api/v1/health counts them (an alert on `mobilesd_celery_alive{process="beat"} == 0`
    sees the queue stall), and the age of each one's last heartbeat; one query."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        window = heartbeat_window()
        alive = GaugeMetricFamily(
            "mobilesd_celery_alive",
            "Celery workers (and beats) that noted their heartbeat within two periods.",
            labels=["process"],
        )
        age = GaugeMetricFamily(
            "mobilesd_celery_heartbeat_age_seconds",
            "Seconds since each running worker's (and beat's) last heartbeat.",
            labels=["process", "hostname"],
        )
        counts = dict.fromkeys(CeleryProcess.values, 0)
        rows = WorkerHeartbeat.objects.filter(stopped_at__isnull=True).annotate(now=Now())
        for hostname, process, last_seen_at, now in rows.order_by("hostname").values_list(
            "hostname", "process", "last_seen_at", "now"
        ):
            since = now - last_seen_at
            age.add_metric([process, hostname], max(since.total_seconds(), 0.0))
            counts[process] += since <= window
        for process, count in counts.items():
            alive.add_metric([process], count)
        yield alive
        yield age
