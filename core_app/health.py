"""Reachability checks of the services MobileSD depends on."""

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from celery import current_app as celery_app
from django.conf import settings
from django.core.cache import caches
from django.db import connection

from core_app.models import CeleryProcess, WorkerHeartbeat, heartbeat_window

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


def check_worker(*, database: Check) -> Check:
    """Whether some worker has written its heartbeat within two periods (one missed beat is
    forgiven): without one, submitted jobs wait forever."""
    return _check_seen(
        CeleryProcess.WORKER,
        database=database,
        never="no worker has ever been seen: start one (celery -A mobilesd worker)",
        missing="jobs wait",
    )


def check_beat(*, database: Check) -> Check:
    """Whether beat has written its heartbeat within two periods: without it the periodic
    tasks stop, so a server once offline is never found back, the jobs of a worker that
    died stay running, and jobs due more than an hour ahead are never released."""
    return _check_seen(
        CeleryProcess.BEAT,
        database=database,
        never="beat has never been seen: start exactly one (celery -A mobilesd beat)",
        missing="offline servers are not checked again and dead workers' jobs not recovered",
    )


def _check_seen(process: CeleryProcess, *, database: Check, never: str, missing: str) -> Check:
    """Whether a `process` (a worker, beat) noted its heartbeat within two periods; `never`
    when none ever did, `missing` what stops while none does."""
    name = process.value
    if not database.ok:
        return Check(False, f"unknown: the database, where {name}s note their heartbeat, is down")
    window = heartbeat_window().total_seconds()
    try:
        alive = sorted(WorkerHeartbeat.objects.alive(process).values_list("hostname", flat=True))
        last = (
            None
            if alive
            else WorkerHeartbeat.objects.filter(process=process).order_by("-last_seen_at").first()
        )
    except Exception as exc:  # the database went away between the checks
        logger.warning("%s check failed: %s", name.capitalize(), exc)
        return Check(False, f"unknown: {exc}")
    if alive:
        seen = f"{len(alive)} seen within {window:g} s: {', '.join(alive)}"
        if process == CeleryProcess.BEAT and len(alive) > 1:
            seen += " (run exactly one: each sends every periodic task)"
        return Check(True, seen)
    if last is None:
        return Check(False, never)
    how = "stopped" if last.stopped_at else "silent"
    return Check(
        False,
        f"no {name} seen within {window:g} s: {missing}; the last, {last.hostname}, "
        f"{how} since {last.last_seen_at.isoformat(timespec='seconds')}",
    )


def check_storage() -> Check:
    """Whether generated images can be saved: a probe file written and deleted in
    MEDIA_ROOT, and at least MOBILESD_MEDIA_MIN_FREE_BYTES free there. (The path is not
    shown: anyone may call the health check.)"""
    root = Path(settings.MEDIA_ROOT)
    minimum = settings.MOBILESD_MEDIA_MIN_FREE_BYTES
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".health-") as probe:
            probe.write(b"ok")
            probe.flush()
        free = shutil.disk_usage(root).free
    except OSError as exc:
        logger.warning("Storage check of %s failed: %s", root, exc)
        return Check(False, f"media storage (MEDIA_ROOT) not writable: {exc.strerror or exc}")
    if free < minimum:
        return Check(
            False,
            f"media storage (MEDIA_ROOT) has {_mib(free)} free, "
            f"below MOBILESD_MEDIA_MIN_FREE_BYTES ({_mib(minimum)})",
        )
    return Check(True, f"writable, {_mib(free)} free")


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"
