"""API keys: required by default, hashed, revocable; anonymous access by setting."""

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from core_app.models import ApiKey, hash_key
from core_app.services import api_key_revoke
from tests.support import assert_error, new_key

PROTECTED = [
    ("get", "/api/v1/queue/jobs"),
    ("get", "/api/v1/queue/jobs/88615c9d-71ec-4803-88b0-14f5162f6c66/status"),
    ("post", "/api/v1/queue/jobs/88615c9d-71ec-4803-88b0-14f5162f6c66/cancel"),
    ("delete", "/api/v1/queue/jobs/88615c9d-71ec-4803-88b0-14f5162f6c66"),
    ("post", "/api/v1/generate"),
    ("get", "/api/v1/servers"),
    ("post", "/api/v1/servers"),
    ("get", "/api/v1/servers/Laptop"),
    ("put", "/api/v1/servers/Laptop"),
    ("delete", "/api/v1/servers/Laptop"),
]


@pytest.mark.parametrize(("method", "url"), PROTECTED)
def test_every_endpoint_needs_a_key(anon_client, method, url):
    response = getattr(anon_client, method)(url, {}, format="json")

    error = assert_error(response, 401, "authentication_required")
    assert "API key" in error["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "url"), PROTECTED[:2])
def test_wrong_key_is_401(db, method, url):
    api_client = APIClient()
    api_client.credentials(HTTP_AUTHORIZATION="Bearer msd_nothing_here")

    assert_error(getattr(api_client, method)(url), 401, "invalid_api_key")


def test_key_in_x_api_key_header_works(raw_api_key):
    response = APIClient().get("/api/v1/queue/jobs", HTTP_X_API_KEY=raw_api_key)

    assert response.status_code == 200


def test_revoked_key_is_refused(raw_api_key):
    api_key_revoke(keys=ApiKey.objects.all())

    response = APIClient().get("/api/v1/queue/jobs", HTTP_X_API_KEY=raw_api_key)

    assert_error(response, 401, "revoked_api_key")


def test_only_the_hash_of_a_key_is_stored(db):
    api_key, raw_key = new_key("phone")

    assert raw_key.startswith(f"msd_{api_key.prefix}_")
    assert api_key.key_hash == hash_key(raw_key)
    stored = " ".join(str(v) for v in ApiKey.objects.values_list().get())
    assert raw_key not in stored
    assert raw_key.split("_", 2)[2] not in stored


def test_using_a_key_records_when(client, raw_api_key):
    assert ApiKey.objects.get().last_used_at is None

    client.get("/api/v1/queue/jobs")

    assert ApiKey.objects.get().last_used_at is not None


def test_anonymous_access_when_allowed(anon_client, settings):
    settings.MOBILESD_ALLOW_ANONYMOUS = True

    assert anon_client.get("/api/v1/queue/jobs").status_code == 200


def test_a_wrong_key_is_refused_even_when_anonymous_is_allowed(db, settings):
    settings.MOBILESD_ALLOW_ANONYMOUS = True
    api_client = APIClient()
    api_client.credentials(HTTP_AUTHORIZATION="Bearer wrong")

    assert_error(api_client.get("/api/v1/queue/jobs"), 401, "invalid_api_key")


def test_staff_session_may_browse_the_api(admin_client):
    assert admin_client.get("/api/v1/queue/jobs").status_code == 200


def test_create_api_key_command_prints_a_working_key(db, capsys):
    call_command("create_api_key", "--name", "my-phone", "--user", "me")

    out = capsys.readouterr().out
    raw_key = next(line for line in out.splitlines() if line.startswith("msd_"))
    assert ApiKey.objects.get().name == "my-phone"
    assert APIClient().get("/api/v1/servers", HTTP_X_API_KEY=raw_key).status_code == 200


def test_create_api_key_quiet_prints_only_the_key(db, capsys):
    call_command("create_api_key", "--name", "script", "--user", "me", "--quiet")

    assert capsys.readouterr().out.strip().startswith("msd_")


def test_throttling_is_per_key(db, settings, frozen_window):
    from core_app.throttling import ApiKeyRateThrottle

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK}
    original = ApiKeyRateThrottle.THROTTLE_RATES
    ApiKeyRateThrottle.THROTTLE_RATES = {"api_key": "3/min"}
    try:
        first, second = APIClient(), APIClient()
        first.credentials(HTTP_X_API_KEY=new_key("a")[1])
        second.credentials(HTTP_X_API_KEY=new_key("b")[1])

        statuses = [first.get("/api/v1/servers").status_code for _ in range(4)]
        other = second.get("/api/v1/servers")

        assert statuses == [200, 200, 200, 429]
        assert_error(first.get("/api/v1/servers"), 429, "throttled")
        assert other.status_code == 200
    finally:
        ApiKeyRateThrottle.THROTTLE_RATES = original


def test_cors_allows_configured_origins(client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["http://phone.local:3000"]

    allowed = client.get("/api/v1/servers", HTTP_ORIGIN="http://phone.local:3000")
    other = client.get("/api/v1/servers", HTTP_ORIGIN="http://evil.example")

    assert allowed["Access-Control-Allow-Origin"] == "http://phone.local:3000"
    assert "Access-Control-Allow-Origin" not in other
