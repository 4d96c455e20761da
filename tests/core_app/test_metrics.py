"""GET /metrics: who may read it, and its format."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from core_app.models import WorkerHeartbeat
from core_app.services import worker_heartbeat_record
from tests.metrics_support import scrape
from tests.support import assert_error, new_key

pytestmark = pytest.mark.django_db


def test_metrics_refuse_an_anonymous_scrape_in_the_error_shape(settings):
    settings.MOBILESD_METRICS_TOKEN = "s3cret-token"

    response = Client().get("/metrics")

    assert_error(response, 401, "authentication_required")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_refuse_a_wrong_token(settings):
    settings.MOBILESD_METRICS_TOKEN = "s3cret-token"

    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")

    # Tried as an API key, like any bearer that is not the token (and counted as a failure).
    assert_error(response, 401, "invalid_api_key")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_refuse_any_bearer_when_no_token_is_configured(settings):
    settings.MOBILESD_METRICS_TOKEN = ""

    assert_error(
        Client().get("/metrics", HTTP_AUTHORIZATION="Bearer "), 401, "authentication_required"
    )


def test_metrics_refuse_a_client_key():
    _, raw_key = new_key("phone", username="alice", scope="client")

    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    assert_error(response, 403, "admin_scope_required")


def test_metrics_answer_an_admin_key(client):
    samples = scrape(client)

    assert samples[("mobilesd_servers_online", frozenset())] == 0


def test_metrics_refuse_a_revoked_admin_key():
    api_key, raw_key = new_key("scraper")
    api_key.revoke()

    response = Client().get("/metrics", HTTP_X_API_KEY=raw_key)

    assert_error(response, 401, "revoked_api_key")


def test_metrics_lock_out_an_address_guessing_keys(settings, frozen_window):
    settings.MOBILESD_FAILED_ATTEMPTS_LIMIT = 2
    for _ in range(2):
        Client().get("/metrics", HTTP_AUTHORIZATION="Bearer msd_guess")

    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer msd_guess")

    assert_error(response, 429, "too_many_failed_attempts")
    assert int(response["Retry-After"]) > 0


def test_metrics_answer_the_metrics_token_in_prometheus_format(settings):
    settings.MOBILESD_METRICS_TOKEN = "s3cret-token"

    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert b"# TYPE mobilesd_servers_online gauge" in response.content


def test_metrics_answer_a_staff_session(django_user_model):
    staff = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    browser = Client()
    browser.force_login(staff)

    samples = scrape(browser)

    assert samples[("mobilesd_servers_online", frozenset())] == 0


def test_metrics_refuse_a_session_that_is_not_staff(django_user_model):
    user = django_user_model.objects.create_user("someone", password="x")
    browser = Client()
    browser.force_login(user)

    assert_error(browser.get("/metrics"), 401, "authentication_required")


def test_metrics_count_the_workers_and_beats_alive_as_health_does(client, settings, no_heartbeats):
    settings.MOBILESD_WORKER_HEARTBEAT_SECONDS = 10
    for hostname in ("celery@gpu-box", "celery@laptop", "celery@old"):
        worker_heartbeat_record(hostname=hostname, started=True)
    worker_heartbeat_record(hostname="beat@gpu-box", started=True, process="beat")
    WorkerHeartbeat.objects.filter(hostname="celery@old").update(
        last_seen_at=timezone.now() - timedelta(seconds=25)
    )
    worker_heartbeat_record(hostname="celery@laptop", stopped=True)

    samples = scrape(client)

    alive = {"worker": 1, "beat": 1}  # gpu-box's; laptop stopped, old silent for 25 s
    for process, count in alive.items():
        assert samples[("mobilesd_celery_alive", frozenset({("process", process)}))] == count
    assert client.get("/api/v1/health").json()["worker"]["detail"].startswith("1 seen")
    ages = {
        dict(labels)["hostname"]: value
        for (name, labels), value in samples.items()
        if name == "mobilesd_celery_heartbeat_age_seconds"
    }
    assert set(ages) == {"beat@gpu-box", "celery@gpu-box", "celery@old"}  # not the stopped one
    assert 25 <= ages["celery@old"] < 35
    assert 0 <= ages["celery@gpu-box"] < 5


def test_metrics_say_no_beat_is_alive_when_none_was_seen(client, no_heartbeats):
    samples = scrape(client)

    assert samples[("mobilesd_celery_alive", frozenset({("process", "beat")}))] == 0
    assert samples[("mobilesd_celery_alive", frozenset({("process", "worker")}))] == 0
