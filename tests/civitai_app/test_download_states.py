"""A download's state changes under its lease: the claim and its limit, retries with
backoff, cancels seen at the next heartbeat, and the recovery of dead workers' downloads."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from civitai_app import download_states, tasks
from civitai_app.download_requests import download_cancel
from civitai_app.models import CivitaiSettings, Download, DownloadStatus
from core_app.leases import LeaseLost
from tests.civitai_app.support import files_below, queue, reload, run, sha
from tests.integration.procs import wait_until
from tests.integrations.civitai.catalog import CHECKPOINT

# --- claims and the limit -------------------------------------------------------------------------


def test_at_most_n_downloads_run_at_once(civitai, laptop, settings):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 2
    for version in (100, 200, 900):
        queue(version)

    claims = [download_states.download_claim_next() for _ in range(3)]

    assert [claim is not None for claim in claims] == [True, True, False]
    assert Download.objects.filter(status=DownloadStatus.DOWNLOADING).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_concurrent_workers(civitai, laptop, settings):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 2
    for version in (100, 200, 900, 300, 400, 600):
        queue(version)
    claims: list = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        claims.append(download_states.download_claim_next())
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(claim is not None for claim in claims) == 2
    assert Download.objects.filter(status=DownloadStatus.DOWNLOADING).count() == 2


def test_the_admin_setting_overrides_the_limit(civitai, laptop, settings):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 5
    CivitaiSettings.objects.update_or_create(pk=1, defaults={"max_concurrent_downloads": 1})
    queue(100)
    queue(200)

    assert download_states.download_claim_next() is not None
    assert download_states.download_claim_next() is None


# --- transient failures: back to pending after a backoff ------------------------------------------


def test_a_transfer_that_keeps_failing_waits_and_retries_later(civitai, laptop, settings):
    civitai.faults.drop_after_bytes, civitai.faults.drop_times = 0, 10
    download = queue(200)

    run()

    waiting = reload(download)
    assert waiting.status == DownloadStatus.PENDING
    assert waiting.attempts == 1
    assert waiting.next_attempt_at > timezone.now()
    assert waiting.error_code == "civitai_interrupted"
    assert "Retrying in 30 s" in waiting.error


def test_rate_limiting_backs_off_then_fails_after_the_retries(civitai, laptop, settings):
    settings.MOBILESD_DOWNLOAD_MAX_RETRIES = 1
    civitai.faults.rate_limit_downloads = True
    download = queue(200)

    run()
    waiting = reload(download)
    Download.objects.filter(pk=download.pk).update(next_attempt_at=None)
    run()

    assert (waiting.status, waiting.error_code) == (DownloadStatus.PENDING, "civitai_rate_limited")
    failed = reload(download)
    assert (failed.status, failed.error_code) == (DownloadStatus.FAILED, "civitai_rate_limited")
    assert "gave up after 2 attempts" in failed.error


# --- cancel ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_download_stops_it_and_removes_the_partial_file(
    civitai, laptop, gpu_root
):
    civitai.faults.bytes_per_second = 400_000  # the 3 MiB file takes ~8 s
    download = queue(100)
    worker = threading.Thread(target=lambda: (run(), connection.close()))
    worker.start()
    wait_until(lambda: reload(download).bytes_done > 100_000, timeout=10, what="progress")
    running = reload(download)

    download_cancel(download_id=download.pk, owner=None)
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert running.status == DownloadStatus.DOWNLOADING
    assert running.speed_bytes_per_second
    assert reload(download).status == DownloadStatus.CANCELLED
    assert files_below(gpu_root) == []


def test_a_cancelled_pending_download_is_never_started(civitai, laptop):
    download = queue(200)
    download_cancel(download_id=download.pk, owner=None)

    run()

    assert reload(download).status == DownloadStatus.CANCELLED
    assert civitai.requests_to("/api/download/") == []


# --- dead workers ---------------------------------------------------------------------------------


def test_a_dead_workers_download_is_resumed_from_its_partial_file(
    civitai, laptop, gpu_root, settings
):
    download = queue(100)
    claim = download_states.download_claim_next()
    assert claim is not None
    # The worker wrote 1.5 MB, then died: its lease lapses.
    part = gpu_root / "models" / settings.MOBILESD_DOWNLOAD_TMP_DIRNAME / f"{download.pk}.part"
    part.parent.mkdir()
    part.write_bytes(CHECKPOINT[:1_500_000])
    Download.objects.filter(pk=download.pk).update(
        part_path=str(part), lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    tasks.reconcile_downloads()
    assert reload(download).status == DownloadStatus.PENDING
    run()

    assert reload(download).status == DownloadStatus.COMPLETED
    assert reload(download).attempts == 1
    assert [r.headers.get("range") for r in civitai.requests_to("/storage/")] == ["bytes=1500000-"]
    assert civitai.storage_bytes_sent == len(CHECKPOINT) - 1_500_000
    final = gpu_root / "models" / "Stable-diffusion" / "juggernautXL_v9.safetensors"
    assert sha(final.read_bytes()) == sha(CHECKPOINT)
    assert not part.exists()


def test_a_worker_lost_too_often_fails_the_download(civitai, laptop, settings):
    settings.MOBILESD_DOWNLOAD_MAX_RETRIES = 1
    download = queue(200)
    Download.objects.filter(pk=download.pk).update(
        status=DownloadStatus.DOWNLOADING,
        lease_token="00000000-0000-4000-8000-000000000000",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        attempts=1,
        speed_bytes_per_second=1e6,  # the dead worker's last reading
    )

    tasks.reconcile_downloads()

    failed = reload(download)
    assert failed.status == DownloadStatus.FAILED
    assert failed.error_code == "worker_lost"
    assert failed.lease_token is None
    assert failed.speed_bytes_per_second is None  # a failed download shows no speed


# --- a lease no longer ours ------------------------------------------------------------------


def test_a_heartbeat_says_why_the_download_is_no_longer_ours(civitai, laptop):
    for version, change, reason in (
        (100, lambda pk: download_cancel(download_id=pk, owner=None), LeaseLost.CANCELLED),
        (200, lambda pk: Download.objects.filter(pk=pk).delete(), LeaseLost.GONE),
        (
            900,
            lambda pk: Download.objects.filter(pk=pk).update(lease_token=uuid.uuid4()),
            LeaseLost.LOST,
        ),
    ):
        download = queue(version)
        claim = download_states.download_claim_next()
        assert claim is not None
        assert claim.download_id == download.pk
        change(download.pk)

        with pytest.raises(download_states.Stop) as stopped:
            download_states.download_heartbeat(claim, bytes_done=1)

        assert stopped.value.reason is reason


def test_a_heartbeat_of_a_held_download_renews_its_lease_and_writes_progress(civitai, laptop):
    download = queue(200)
    claim = download_states.download_claim_next()
    assert claim is not None
    Download.objects.filter(pk=download.pk).update(lease_expires_at=timezone.now())

    download_states.download_heartbeat(claim, bytes_done=42)

    held = reload(download)
    assert held.bytes_done == 42
    assert held.lease_expires_at > timezone.now() + timedelta(seconds=1)
