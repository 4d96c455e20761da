"""Reachability checks of the services MobileSD depends on."""

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from celery import current_app as celery_app
from django.conf import settings
from django.core.cache import caches
from django.db import connection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def redact_url(url: str) -> str:
    """The URL without its password, safe to show."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "unreachable"
        logger.warning("Database check failed: %s", exc)
        return Check(False, str(exc))
    return Check(True, connection.vendor)


def check_broker(timeout: int = 2) -> Check:
    url = settings.CELERY_BROKER_URL
    try:
        with celery_app.connection_for_write(url) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as exc:  # kombu raises transport-specific errors
        logger.warning("Broker check failed: %s", exc)
        return Check(False, str(exc))
    return Check(True, redact_url(url))


def check_cache() -> Check:
    """The cache of the rate limits: a write and a read. When it fails the API still
    serves (throttling fails open), so this is reported but is no outage."""
    backend = caches["default"]
    try:
        backend.set("mobilesd:health", "ok", 10)
        if backend.get("mobilesd:health") != "ok":
            return Check(False, "the value written was not read back")
    except Exception as exc:  # redis-py and socket errors
        logger.warning("Cache check failed: %s", exc)
        return Check(False, f"unreachable: {exc}; rate limits are not enforced")
    location = str(settings.CACHES["default"].get("LOCATION") or "")
    return Check(True, redact_url(location) if location else "per-process memory")
