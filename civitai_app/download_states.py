"""State changes of a download's worker: claim, heartbeat, complete, release, fail, and
the recovery of downloads whose worker died (the lease vocabulary is `core_app.leases`).

The Download row is the truth. Every change here is one conditional update on the row's
status and lease token, so a repeated nudge, a worker that lost its lease, or a cancel
racing the end can never move a download twice:

* claim: pending -> downloading, only while fewer than N downloads run. The Civitai
  settings row is locked (`select_for_update`), which serialises claims across every
  worker and host, so the limit holds; candidates are locked with `skip_locked`.
* heartbeat: renews the lease and writes progress while the row is still ours; when it
  is not (cancelled, deleted, taken over) it raises `Stop` and the transfer stops at once.
* downloading/verifying -> completed / failed, or back to pending with a backoff for
  transient errors (release). A download whose worker died (lease lapsed) is put back to
  pending by `downloads_recover_expired` and resumes from its partial file.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from civitai_app.models import (
    RUNNING_DOWNLOAD_STATUSES,
    CivitaiSettings,
    Download,
    DownloadStatus,
    DownloadTarget,
)
from civitai_app.transfer import human_bytes, remove_file
from core_app.leases import LeaseLost, backoff_seconds, lease_expiry, lease_lost_reason
from integrations.civitai.client import CivitaiError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadClaim:
    """A download this worker now holds; every later change presents `token`."""

    download_id: uuid.UUID
    token: uuid.UUID


class Stop(Exception):
    """The row is no longer ours; `reason` says why (cancelled, gone or lost)."""

    def __init__(self, reason: LeaseLost) -> None:
        super().__init__(reason.value)
        self.reason = reason


def lease_ended(now: datetime) -> dict[str, Any]:
    """The fields every update that ends a download's lease writes (spread into
    `.update()`): no lease, and no speed, as nothing is downloading it any more."""
    return {
        "lease_token": None,
        "lease_expires_at": None,
        "speed_bytes_per_second": None,
        "updated_at": now,
    }


def _ready(now: datetime) -> QuerySet[Download]:
    """Pending downloads not waiting out a backoff."""
    return Download.objects.filter(status=DownloadStatus.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def download_claim_next() -> DownloadClaim | None:
    """Claim the oldest ready pending download if fewer than the limit run; else None.
    Safe to call from any number of workers at once."""
    CivitaiSettings.load()  # the lock row must exist before it can be locked
    now = timezone.now()
    with transaction.atomic():
        config = CivitaiSettings.objects.select_for_update().get(pk=CivitaiSettings.SINGLETON_ID)
        running = Download.objects.filter(status__in=RUNNING_DOWNLOAD_STATUSES).count()
        if running >= config.effective_max_concurrent_downloads:
            return None
        candidate = _ready(now).select_for_update(skip_locked=True).order_by("created_at").first()
        if candidate is None:
            return None
        token = uuid.uuid4()
        Download.objects.filter(pk=candidate.pk, status=DownloadStatus.PENDING).update(
            status=DownloadStatus.DOWNLOADING,
            lease_token=token,
            lease_expires_at=lease_expiry(settings.MOBILESD_DOWNLOAD_LEASE_SECONDS, now=now),
            started_at=now,
            updated_at=now,
            next_attempt_at=None,
            speed_bytes_per_second=None,
        )
    logger.info("Claimed download %s", candidate.pk)
    return DownloadClaim(download_id=candidate.pk, token=token)


def downloads_startable() -> int:
    """How many downloads could start now: free slots, at most as many as are ready."""
    limit = CivitaiSettings.current().effective_max_concurrent_downloads
    running = Download.objects.filter(status__in=RUNNING_DOWNLOAD_STATUSES).count()
    return min(max(limit - running, 0), _ready(timezone.now()).count())


def _held(claim: DownloadClaim) -> QuerySet[Download]:
    """The row, only while this claim still holds it."""
    return Download.objects.filter(
        pk=claim.download_id, lease_token=claim.token, status__in=RUNNING_DOWNLOAD_STATUSES
    )


def _why_not_held(claim: DownloadClaim) -> LeaseLost:
    status = Download.objects.filter(pk=claim.download_id).values_list("status", flat=True).first()
    return lease_lost_reason(
        exists=status is not None, cancelled=status == DownloadStatus.CANCELLED
    )


def download_heartbeat(claim: DownloadClaim, **values: Any) -> None:
    """Renew the lease and write `values` (progress); raises `Stop` if the row is not ours."""
    now = timezone.now()
    renewed = _held(claim).update(
        lease_expires_at=lease_expiry(settings.MOBILESD_DOWNLOAD_LEASE_SECONDS, now=now),
        updated_at=now,
        **values,
    )
    if not renewed:
        raise Stop(_why_not_held(claim))


def download_fail(claim: DownloadClaim, *, code: str, message: str) -> None:
    """Held -> failed with this error (nothing happens when the row is no longer ours)."""
    now = timezone.now()
    updated = _held(claim).update(
        status=DownloadStatus.FAILED,
        error=message[:4000],
        error_code=code,
        finished_at=now,
        **lease_ended(now),
    )
    if updated:
        logger.warning("Download %s failed (%s): %s", claim.download_id, code, message)


def download_release(claim: DownloadClaim, *, error: CivitaiError) -> None:
    """A transient failure: held -> pending after a backoff, or failed after the limit."""
    attempts = (
        Download.objects.filter(pk=claim.download_id).values_list("attempts", flat=True).first()
    )
    if attempts is None:
        return
    if attempts + 1 > settings.MOBILESD_DOWNLOAD_MAX_RETRIES:
        download_fail(
            claim,
            code=error.code,
            message=f"{error.message} (gave up after {attempts + 1} attempts)",
        )
        return
    now = timezone.now()
    delay = backoff_seconds(
        attempts + 1,
        base=settings.MOBILESD_DOWNLOAD_RETRY_BACKOFF_SECONDS,
        cap=settings.MOBILESD_DOWNLOAD_RETRY_BACKOFF_MAX_SECONDS,
        retry_after=error.retry_after,
    )
    _held(claim).update(
        status=DownloadStatus.PENDING,
        attempts=F("attempts") + 1,
        next_attempt_at=now + timedelta(seconds=delay),
        error=f"{error.message} Retrying in {delay:.0f} s.",
        error_code=error.code,
        **lease_ended(now),
    )
    logger.warning("Download %s will be retried in %.0fs: %s", claim.download_id, delay, error)


def download_complete(claim: DownloadClaim, *, size: int, target_states: dict[int, str]) -> bool:
    """Held -> completed with its size, each target ({pk: state}) placed or already
    present, in one transaction. False (and nothing written) when the row is no longer
    ours: cancelled or deleted while the last steps ran."""
    now = timezone.now()
    with transaction.atomic():
        updated = _held(claim).update(
            status=DownloadStatus.COMPLETED,
            size_bytes=size,
            bytes_done=size,
            part_path="",
            error="",
            error_code="",
            finished_at=now,
            **lease_ended(now),
        )
        if not updated:
            logger.warning(
                "Download %s finished after it was cancelled or deleted", claim.download_id
            )
            return False
        for state in set(target_states.values()):
            pks = [pk for pk, its in target_states.items() if its == state]
            DownloadTarget.objects.filter(pk__in=pks).update(state=state, error="")
    logger.info("Download %s completed (%s)", claim.download_id, human_bytes(size))
    return True


def download_forget_part(*, download_id: uuid.UUID) -> None:
    """The partial file was deleted (it failed verification): the next attempt starts
    from zero."""
    Download.objects.filter(pk=download_id).update(part_path="", bytes_done=0)


def downloads_recover_expired() -> list[uuid.UUID]:
    """Put downloads whose worker stopped renewing its lease back to pending (they resume
    from their partial file), or fail them after too many attempts."""
    now = timezone.now()
    recovered = []
    expired = Download.objects.filter(
        status__in=RUNNING_DOWNLOAD_STATUSES, lease_expires_at__lt=now
    ).values_list("pk", "lease_token", "attempts")
    for pk, token, attempts in expired:
        still_expired = Download.objects.filter(
            pk=pk, status__in=RUNNING_DOWNLOAD_STATUSES, lease_token=token
        )
        if attempts + 1 > settings.MOBILESD_DOWNLOAD_MAX_RETRIES:
            still_expired.update(
                status=DownloadStatus.FAILED,
                error="The worker running this download stopped too many times.",
                error_code="worker_lost",
                finished_at=now,
                **lease_ended(now),
            )
            continue
        if still_expired.update(
            status=DownloadStatus.PENDING,
            attempts=F("attempts") + 1,
            next_attempt_at=None,
            **lease_ended(now),
        ):
            logger.warning("Download %s lost its worker; it will resume", pk)
            recovered.append(pk)
    return recovered


def downloads_remove_cancelled_parts() -> int:
    """Delete the partial files of cancelled downloads that no worker holds."""
    removed = 0
    rows = Download.objects.filter(status=DownloadStatus.CANCELLED).exclude(part_path="")
    for pk, part in rows.values_list("pk", "part_path"):
        remove_file(part)
        removed += Download.objects.filter(pk=pk, status=DownloadStatus.CANCELLED).update(
            part_path=""
        )
    return removed
