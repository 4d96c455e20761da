"""Celery tasks of Civitai downloads. Messages are nudges ("look at the downloads now"):
the Download rows are the truth, so a lost, repeated or late message is harmless."""

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db.models import Q
from django.utils import timezone

from civitai_app.downloads import (
    download_claim_next,
    download_refresh_servers,
    download_run,
    downloads_recover_expired,
    downloads_remove_cancelled_parts,
)
from civitai_app.models import (
    RUNNING_DOWNLOAD_STATUSES,
    CivitaiSettings,
    Download,
    DownloadStatus,
)

logger = logging.getLogger(__name__)


def nudge_downloads(count: int = 1) -> None:
    """Ask workers to run waiting downloads. Never raises: with the broker down the rows
    wait, and the reconcile task finds them."""
    for _ in range(count):
        try:
            run_downloads.apply_async()
        except Exception as exc:  # any broker error
            logger.warning("Could not nudge the downloads (broker: %s)", exc)
            return


# Acknowledged on receipt: a download may run for hours, longer than a broker's redelivery
# timeout, and a redelivered nudge would only find the slot taken. A worker that dies
# mid-download is covered by the lease, not by the message.
@shared_task(ignore_result=True, acks_late=False)
def run_downloads() -> None:
    """Claim and run downloads one after the other while a slot is free and one waits."""
    while (claim := download_claim_next()) is not None:
        download_run(claim)


@shared_task(ignore_result=True, time_limit=3900)
def refresh_after_download(download_id: str) -> None:
    """Ask the target servers to rescan their models, then refresh MobileSD's cache."""
    download_refresh_servers(download_id=download_id)


@shared_task(ignore_result=True, time_limit=120)
def reconcile_downloads() -> None:
    """Resume downloads of dead workers, remove cancelled partial files, and nudge as many
    workers as there are free slots and waiting downloads."""
    downloads_recover_expired()
    downloads_remove_cancelled_parts()
    now = timezone.now()
    limit = CivitaiSettings.current().effective_max_concurrent_downloads
    running = Download.objects.filter(status__in=RUNNING_DOWNLOAD_STATUSES).count()
    ready = (
        Download.objects.filter(status=DownloadStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .count()
    )
    nudge_downloads(min(max(limit - running, 0), ready))


@worker_ready.connect
def _reconcile_downloads_on_start(**kwargs: object) -> None:
    reconcile_downloads.delay()
