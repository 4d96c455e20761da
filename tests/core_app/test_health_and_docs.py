"""/api/v1/health (database, broker, cache, worker and beat heartbeats, media storage), the OpenAPI
document and its browsable page."""

from datetime import timedelta
from unittest import mock

from django.utils import timezone
from rest_framework.test import APIClient

from core_app.health import Check, redact_url
from core_app.models import WorkerHeartbeat
from core_app.services import worker_heartbeat_record


def heard_from(hostname: str, *, process: str = "worker", seconds_ago: float = 0) -> None:
    """A heartbeat of `hostname`, last written `seconds_ago`."""
    worker_heartbeat_record(hostname=hostname, started=True, process=process)
    WorkerHeartbeat.objects.filter(hostname=hostname).update(
        last_seen_at=timezone.now() - timedelta(seconds=seconds_ago)
    )


def test_health_reports_database_and_broker_without_a_key(anon_client, worker_seen):
    response = anon_client.get("/api/v1/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True
    assert body["worker"] == {"ok": True, "detail": "1 seen within 20 s: celery@test"}
    assert body["beat"] == {"ok": True, "detail": "1 seen within 20 s: beat@test"}
    assert body["storage"]["ok"] is True


def test_health_is_503_when_no_worker_was_ever_seen(anon_client, no_heartbeats):
    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"]["ok"] is True
    assert body["worker"]["ok"] is False
    assert body["worker"]["detail"].startswith("no worker has ever been seen")


def test_health_is_503_when_the_last_heartbeat_is_older_than_two_periods(
    anon_client, settings, no_heartbeats
):
    settings.MOBILESD_WORKER_HEARTBEAT_SECONDS = 10
    heard_from("celery@gpu-box", seconds_ago=21)

    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    detail = response.json()["worker"]["detail"]
    assert detail.startswith("no worker seen within 20 s")
    assert "celery@gpu-box, silent since" in detail


def test_a_heartbeat_within_two_periods_still_counts(anon_client, settings, worker_seen):
    settings.MOBILESD_WORKER_HEARTBEAT_SECONDS = 10
    WorkerHeartbeat.objects.update(last_seen_at=timezone.now() - timedelta(seconds=15))

    assert anon_client.get("/api/v1/health").status_code == 200


def test_health_is_503_as_soon_as_the_last_worker_stopped_cleanly(anon_client, worker_seen):
    worker_heartbeat_record(hostname="celery@test", stopped=True)

    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    assert "celery@test, stopped since" in response.json()["worker"]["detail"]


def test_health_is_503_when_beat_was_never_seen(anon_client, no_heartbeats):
    worker_heartbeat_record(hostname="celery@test", started=True)

    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    body = response.json()
    assert body["worker"]["ok"] is True
    assert body["beat"]["ok"] is False
    assert body["beat"]["detail"].startswith("beat has never been seen: start exactly one")


def test_health_is_503_when_beat_fell_silent_and_says_what_stops(
    anon_client, settings, no_heartbeats
):
    settings.MOBILESD_WORKER_HEARTBEAT_SECONDS = 10
    heard_from("celery@test")
    heard_from("beat@gpu-box", process="beat", seconds_ago=21)

    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    detail = response.json()["beat"]["detail"]
    assert detail.startswith("no beat seen within 20 s: offline servers are not checked again")
    assert "beat@gpu-box, silent since" in detail
    assert response.json()["worker"]["ok"] is True


def test_beats_heartbeat_does_not_count_as_a_worker(anon_client, no_heartbeats):
    worker_heartbeat_record(hostname="beat@test", started=True, process="beat")

    body = anon_client.get("/api/v1/health").json()

    assert body["beat"]["ok"] is True
    assert body["worker"]["ok"] is False
    assert body["worker"]["detail"].startswith("no worker has ever been seen")


def test_two_beats_are_pointed_out(anon_client, worker_seen):
    worker_heartbeat_record(hostname="beat@other-box", started=True, process="beat")

    beat = anon_client.get("/api/v1/health").json()["beat"]

    assert beat["ok"] is True
    assert beat["detail"] == (
        "2 seen within 20 s: beat@other-box, beat@test "
        "(run exactly one: each sends every periodic task)"
    )


def test_health_does_not_guess_workers_when_the_database_is_down(anon_client, worker_seen):
    with mock.patch("core_app.views.check_database", return_value=Check(False, "refused")):
        response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    assert response.json()["worker"] == {
        "ok": False,
        "detail": "unknown: the database, where workers note their heartbeat, is down",
    }


def test_health_is_503_when_media_storage_cannot_hold_a_file(anon_client, settings, worker_seen):
    settings.MEDIA_ROOT = settings.MEDIA_ROOT / "image.png"
    settings.MEDIA_ROOT.parent.mkdir(parents=True, exist_ok=True)
    settings.MEDIA_ROOT.write_bytes(b"a file where the folder should be")

    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    assert response.json()["storage"]["ok"] is False
    assert "not writable" in response.json()["storage"]["detail"]


def test_health_is_503_below_the_minimum_free_space(anon_client, settings, worker_seen):
    settings.MOBILESD_MEDIA_MIN_FREE_BYTES = 2**62  # more than any disk has

    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    detail = response.json()["storage"]["detail"]
    assert "below MOBILESD_MEDIA_MIN_FREE_BYTES" in detail


def test_the_storage_probe_leaves_nothing_behind(anon_client, settings, worker_seen):
    assert anon_client.get("/api/v1/health").json()["storage"]["ok"] is True

    assert list(settings.MEDIA_ROOT.iterdir()) == []


def test_health_is_503_when_the_broker_is_unreachable(anon_client, worker_seen):
    with mock.patch("core_app.views.check_broker", return_value=Check(False, "Connection refused")):
        response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert response.json()["broker"] == {"ok": False, "detail": "Connection refused"}


def test_health_really_probes_the_broker(anon_client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    response = anon_client.get("/api/v1/health")

    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False


def test_redact_url_hides_the_password():
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_schema_documents_every_api_endpoint(client):
    response = client.get("/api/v1/schema", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/api/v1/generate": {"post"},
        "/api/v1/queue/jobs": {"get"},
        "/api/v1/queue/jobs/{job_id}": {"get", "delete"},
        "/api/v1/queue/jobs/{job_id}/status": {"get"},
        "/api/v1/queue/jobs/{job_id}/cancel": {"post"},
        "/api/v1/servers": {"get", "post"},
        "/api/v1/servers/{alias}": {"get", "put", "patch", "delete"},
        "/api/v1/health": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path


def test_schema_describes_the_documented_job_fields(client):
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()
    job = schema["components"]["schemas"]["Job"]["properties"]

    assert list(job)[:10] == [
        "mobilesd_job_id",
        "status",
        "creation_timestamp",
        "last_updated_timestamp",
        "completion_timestamp",
        "target_server_alias",
        "forge_session_hash",
        "generation_params",
        "result_details",
        "retry_count",
    ]
    assert "Error" in schema["components"]["schemas"]


def test_docs_page_is_served_with_local_assets(client):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr.net" not in html


def test_docs_and_schema_are_readable_without_a_key(db):
    """A browser cannot send the key header, and the document holds no secrets."""
    assert APIClient().get("/api/v1/docs").status_code == 200
    assert APIClient().get("/api/v1/schema").status_code == 200


def test_schema_is_valid_openapi_without_generator_warnings(tmp_path):
    """Every endpoint, field and auth scheme is described, not guessed."""
    from django.core.management import call_command

    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    text = out.read_text()
    assert "ApiKeyBearer" in text
    assert "X-API-Key" in text
