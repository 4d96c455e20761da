"""Celery tasks of Civitai downloads. Messages are nudges ("look at the downloads now"):
the Download rows are the truth, so a lost, repeated or late message is harmless.

The tasks are the orchestrators: they call the state changes (`download_states`), the
run (`download_runs`) and the rescans (`rescans`), and enqueue what follows; none of those
modules enqueues anything itself.
"""

import logging
from functools import partial

from celery import shared_task
from celery.signals import worker_ready
from django.db import transaction

from civitai_app.download_runs import download_run
from civitai_app.download_states import (
    download_claim_next,
    downloads_recover_expired,
    downloads_remove_cancelled_parts,
    downloads_startable,
)
from civitai_app.rescans import download_refresh_servers

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


def _refresh_servers_soon(download_id: str) -> None:
    try:
        refresh_after_download.delay(download_id)
    except Exception as exc:  # broker down: the periodic model refresh catches up
        logger.warning("Could not queue the refresh after download %s: %s", download_id, exc)


# Acknowledged on receipt: a download may run for hours, longer than a broker's redelivery
# timeout, and a redelivered nudge would only find the slot taken. A worker that dies
# mid-download is covered by the lease, not by the message.
@shared_task(ignore_result=True, acks_late=False)
def run_downloads() -> None:
    """Claim and run downloads one after the other while a slot is free and one waits;
    after each completed one, the target servers are asked to rescan."""
    while (claim := download_claim_next()) is not None:
        if download_run(claim):
            transaction.on_commit(partial(_refresh_servers_soon, str(claim.download_id)))


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
    nudge_downloads(downloads_startable())


@worker_ready.connect
def _reconcile_downloads_on_start(**kwargs: object) -> None:
    reconcile_downloads.delay()
