"""Rate limits on atomic counters: the per-key limit holds under concurrency (Redis and the
embedded default's memory cache), fails open when the cache is down, and failed API-key
attempts are limited per client address."""

import logging
import threading
import types
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import caches
from django.test import RequestFactory
from rest_framework.request import Request
from rest_framework.test import APIClient
from rest_framework.views import APIView

from core_app import throttling
from core_app.throttling import ApiKeyRateThrottle, window_hit
from tests.support import assert_error, new_key

THREADS = 16
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def redis_cache_settings(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }


@pytest.fixture
def redis_cache(settings) -> Iterator[str]:
    """The cache on the test Redis (the broker's server and database), emptied around the
    test."""
    url = str(django_settings.CELERY_BROKER_URL)
    if not url.startswith("redis://"):
        pytest.skip("needs Redis: set CELERY_BROKER_URL=redis://... (make test does)")
    settings.CACHES = redis_cache_settings(url)
    caches["default"].clear()
    yield url
    caches["default"].clear()


@pytest.fixture
def dead_cache(settings) -> Iterator[None]:
    """The cache points at a Redis that is not there (and back before the suite's own
    fixture clears it)."""
    original = settings.CACHES
    settings.CACHES = redis_cache_settings(DEAD_REDIS)
    throttling.cache_health.reset()
    yield
    settings.CACHES = original


@pytest.fixture
def rate(monkeypatch) -> None:
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "200/hour"})


def hammer(limit_calls: int) -> int:
    """`limit_calls` throttle checks of one key from 16 threads at once; how many passed."""
    api_key, _ = new_key("hammered")
    allowed = 0
    lock = threading.Lock()
    start = threading.Barrier(THREADS)
    per_thread = limit_calls // THREADS

    def run() -> None:
        nonlocal allowed
        start.wait()
        mine = 0
        for _ in range(per_thread):
            request = Request(RequestFactory().get("/api/v1/servers"))
            request.user, request.auth = AnonymousUser(), api_key
            if ApiKeyRateThrottle().allow_request(request, APIView()):
                mine += 1
        with lock:
            allowed += mine

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return allowed


def test_the_per_key_limit_holds_under_16_concurrent_clients_on_redis(
    db, redis_cache, frozen_window, rate
):
    allowed = hammer(800)

    assert allowed == 200


def test_the_per_key_limit_holds_under_16_concurrent_clients_in_memory(
    db, settings, frozen_window, rate
):
    assert settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")

    allowed = hammer(800)

    assert allowed == 200


def test_a_window_counter_expires_with_its_window_on_redis(redis_cache):
    window_hit("expiry", 60, now=1_000_000.0)

    client = redis.Redis.from_url(redis_cache)
    [name] = client.keys("*mobilesd:count:expiry:*")
    assert 0 < client.ttl(name) <= 65


def test_a_new_window_starts_a_new_count(db):
    first = [window_hit("k", 60, now=6000.0 + i).count for i in range(3)]
    later = window_hit("k", 60, now=6060.0)

    assert first == [1, 2, 3]
    assert later.count == 1
    assert later.resets_in == 60


def test_the_api_serves_when_the_cache_is_down(client, dead_cache):
    response = client.get("/api/v1/servers")

    assert response.status_code == 200


def test_a_cache_outage_is_logged_once_not_per_request(client, dead_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="core_app.throttling"):
        for _ in range(5):
            assert client.get("/api/v1/servers").status_code == 200

    warnings = [r for r in caplog.records if r.name == "core_app.throttling"]
    assert len(warnings) == 1
    assert "not enforced" in warnings[0].getMessage()
    assert throttling.cache_health.suppressed >= 4  # the other failures, not logged


def test_health_reports_the_cache_as_degraded_but_serving(anon_client, dead_cache, worker_seen):
    response = anon_client.get("/api/v1/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["cache"]["ok"] is False
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True


def test_health_reports_a_working_cache(anon_client, worker_seen):
    body = anon_client.get("/api/v1/health").json()

    assert body["status"] == "ok"
    assert body["cache"] == {"ok": True, "detail": "per-process memory"}


@pytest.fixture
def failed_limit(settings, frozen_window) -> int:
    settings.MOBILESD_FAILED_ATTEMPTS_LIMIT = 3
    settings.MOBILESD_FAILED_ATTEMPTS_WINDOW = 60
    return 3


def test_wrong_api_keys_from_an_address_are_refused_after_the_limit(db, failed_limit):
    _, good_key = new_key("phone")
    guesser = APIClient(REMOTE_ADDR="203.0.113.7")
    guesser.credentials(HTTP_AUTHORIZATION="Bearer msd_wrong")

    statuses = [guesser.get("/api/v1/servers").status_code for _ in range(failed_limit)]
    guesser.credentials(HTTP_AUTHORIZATION=f"Bearer {good_key}")
    refused = guesser.get("/api/v1/servers")

    assert statuses == [401] * failed_limit
    assert_error(refused, 429, "too_many_failed_attempts")
    assert int(refused["Retry-After"]) > 0


def test_failed_key_attempts_are_counted_per_address(db, failed_limit):
    _, good_key = new_key("phone")
    guesser = APIClient(REMOTE_ADDR="203.0.113.7")
    guesser.credentials(HTTP_AUTHORIZATION="Bearer msd_wrong")
    for _ in range(failed_limit):
        guesser.get("/api/v1/servers")
    phone = APIClient(REMOTE_ADDR="198.51.100.2")
    phone.credentials(HTTP_AUTHORIZATION=f"Bearer {good_key}")

    assert phone.get("/api/v1/servers").status_code == 200


def test_a_spoofed_forwarded_for_does_not_reset_the_count(db, failed_limit):
    guesser = APIClient(REMOTE_ADDR="203.0.113.7")
    guesser.credentials(HTTP_AUTHORIZATION="Bearer msd_wrong")
    for attempt in range(failed_limit):
        guesser.get("/api/v1/servers", HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}")

    response = guesser.get("/api/v1/servers", HTTP_X_FORWARDED_FOR="10.0.0.99")

    assert_error(response, 429, "too_many_failed_attempts")


def test_a_good_key_works_again_once_the_window_passed(db, failed_limit, monkeypatch):
    _, good_key = new_key("phone")
    now = [1_000_040.0]  # 20 s into the 60 s window that starts at 1_000_020
    clock = types.SimpleNamespace(time=lambda: now[0], monotonic=throttling.time.monotonic)
    monkeypatch.setattr(throttling, "time", clock)
    guesser = APIClient(REMOTE_ADDR="203.0.113.7")
    guesser.credentials(HTTP_AUTHORIZATION="Bearer msd_wrong")
    for _ in range(failed_limit):
        guesser.get("/api/v1/servers")
    guesser.credentials(HTTP_AUTHORIZATION=f"Bearer {good_key}")
    assert guesser.get("/api/v1/servers").status_code == 429

    now[0] += 40  # the window's end

    assert guesser.get("/api/v1/servers").status_code == 200


def test_anonymous_requests_are_limited_per_address_whatever_their_forwarded_for(
    db, settings, monkeypatch, frozen_window
):
    settings.MOBILESD_ALLOW_ANONYMOUS = True
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/hour"})
    phone = APIClient(REMOTE_ADDR="203.0.113.9")
    answers = [
        phone.get("/api/v1/servers", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(4)
    ]

    assert answers == [200, 200, 200, 429]


def test_a_locked_out_address_gets_a_429_in_the_browsable_api_too(db, failed_limit):
    guesser = APIClient(REMOTE_ADDR="203.0.113.7")
    guesser.credentials(HTTP_AUTHORIZATION="Bearer msd_wrong")
    for _ in range(failed_limit):
        guesser.get("/api/v1/servers", HTTP_ACCEPT="text/html")

    response = guesser.get("/api/v1/servers", HTTP_ACCEPT="text/html")

    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
