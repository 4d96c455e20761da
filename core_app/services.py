"""Writes for API keys."""

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from core_app.models import (
    ApiKey,
    CeleryProcess,
    KeyScope,
    WorkerHeartbeat,
    generate_raw_key,
    hash_key,
)


def api_key_create(*, name: str, user: Any, scope: str = KeyScope.CLIENT) -> tuple[ApiKey, str]:
    """Create a key of `user` with `scope`; returns the row and the raw key, which is never
    stored or shown again."""
    api_key = ApiKey(name=name, user=user, scope=scope)
    return api_key, api_key_issue(api_key=api_key)


def api_key_issue(*, api_key: ApiKey) -> str:
    """Give a new, unsaved key row its secret and save it; returns the raw key (the admin's
    add form fills in the rest of the row)."""
    raw_key, api_key.prefix = generate_raw_key()
    api_key.key_hash = hash_key(raw_key)
    api_key.save()
    return raw_key


def api_key_revoke(*, keys: QuerySet[ApiKey]) -> int:
    """Revoke every still-active key of the queryset; returns how many were revoked."""
    return keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


# Rows of workers silent this long are forgotten (a renamed or retired host).
WORKER_HEARTBEAT_FORGET_AFTER = timedelta(days=7)


def worker_heartbeat_record(
    *,
    hostname: str,
    started: bool = False,
    stopped: bool = False,
    process: str = CeleryProcess.WORKER,
    threads: int | None = None,
) -> None:
    """Note that worker (or beat) `hostname` is alive (`started`: it has just started;
    `stopped`: it has shut down cleanly). Times are the database's, so that processes on
    other hosts with other clocks agree with the health check, which reads them on the same
    clock. `threads`: a worker's pool size, when it says."""
    now = Now()
    fields: dict[str, object] = {
        "last_seen_at": now,
        "stopped_at": now if stopped else None,
        "process": process,
    }
    if threads is not None:
        fields["threads"] = threads
    if started:
        fields["started_at"] = now
        WorkerHeartbeat.objects.filter(
            last_seen_at__lt=now - WORKER_HEARTBEAT_FORGET_AFTER
        ).delete()
    if not WorkerHeartbeat.objects.filter(hostname=hostname).update(**fields):
        WorkerHeartbeat.objects.create(hostname=hostname, **{"started_at": now, **fields})
