"""The run of one claimed download, to its end: the transfer's steps in order
(`civitai_app.transfer`), and each outcome recorded as its state change
(`civitai_app.download_states`): completed, failed, back to pending after a transient
error, or stopped because the download was cancelled, deleted or taken over.

The run never enqueues anything: the task that called it does what follows a completion.
"""

import logging
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from civitai_app.connection import civitai_client
from civitai_app.download_states import (
    DownloadClaim,
    Stop,
    download_complete,
    download_fail,
    download_forget_part,
    download_heartbeat,
    download_release,
)
from civitai_app.models import Download, DownloadStatus, DownloadTarget, TargetState
from civitai_app.transfer import (
    DownloadFailed,
    Placement,
    check_space,
    copy_verified,
    hash_file,
    move_into_place,
    placements_for,
    preview_png,
    remove_file,
    stream_into_part,
    write_sidecars,
)
from core_app.leases import LeaseLost
from integrations.civitai.client import CivitaiClient, CivitaiError

logger = logging.getLogger(__name__)


class _LeaseMeter:
    """The transfer's `Progress`: writes progress and renews the lease at most every
    MOBILESD_HEARTBEAT_SECONDS; the speed is smoothed over the last intervals."""

    def __init__(self, claim: DownloadClaim) -> None:
        self.claim = claim
        self.interval = settings.MOBILESD_HEARTBEAT_SECONDS
        self.last = time.monotonic()
        self.last_bytes = 0
        self.speed: float | None = None

    def start(self, done: int) -> None:
        self.last = time.monotonic()
        self.last_bytes = done

    def tick(self, done: int, total: int | None, *, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self.last
        if not force and elapsed < self.interval:
            return
        if elapsed > 0 and done >= self.last_bytes:
            rate = (done - self.last_bytes) / elapsed
            self.speed = rate if self.speed is None else 0.6 * self.speed + 0.4 * rate
        values: dict[str, Any] = {"bytes_done": done, "speed_bytes_per_second": self.speed}
        if total is not None:
            values["size_bytes"] = total
        download_heartbeat(self.claim, **values)
        self.last, self.last_bytes = now, done

    def alive(self, *, now_or_never: bool = False) -> None:
        now = time.monotonic()
        if now_or_never or now - self.last >= self.interval:
            download_heartbeat(self.claim)
            self.last = now


def download_run(claim: DownloadClaim, *, client: CivitaiClient | None = None) -> bool:
    """Run a claimed download to its end; True when it completed (its files are in place
    and the row says so), False for every other end."""
    download = Download.objects.filter(pk=claim.download_id).first()
    if download is None:
        return False
    own_client = client is None
    client = client or civitai_client()
    parts: list[Path] = []
    try:
        return _transfer_and_complete(client, download, claim, _LeaseMeter(claim), parts)
    except Stop as stop:
        logger.info("Download %s stopped: %s", claim.download_id, stop.reason)
        if stop.reason in (LeaseLost.CANCELLED, LeaseLost.GONE):
            for part in parts:
                remove_file(part)
    except DownloadFailed as failure:
        if failure.discard_part:
            for part in parts:
                remove_file(part)
            download_forget_part(download_id=claim.download_id)
        download_fail(claim, code=failure.code, message=failure.message)
    except CivitaiError as exc:
        if exc.transient:
            download_release(claim, error=exc)
        else:
            download_fail(claim, code=exc.code, message=exc.message)
    except OSError as exc:
        download_fail(
            claim, code="disk_error", message=f"Could not write the file: {exc.strerror or exc}"
        )
    finally:
        if own_client:
            client.close()
    return False


def _record_target_paths(placements: list[Placement]) -> None:
    """A models folder that moved since the request moves its targets' paths with it."""
    for placement in placements:
        for target in placement.targets:
            if str(placement.final) != target.path:
                DownloadTarget.objects.filter(pk=target.pk).update(path=str(placement.final))
                target.path = str(placement.final)


def _transfer_and_complete(
    client: CivitaiClient,
    download: Download,
    claim: DownloadClaim,
    meter: _LeaseMeter,
    parts: list[Path],
) -> bool:
    """The run's steps; `parts` collects the temporary files it creates."""
    targets = list(download.targets.select_related("server").order_by("pk"))
    placements = placements_for(download, targets)
    _record_target_paths(placements)
    for placement in placements:
        if placement.final.exists():
            if hash_file(placement.final, meter).hexdigest() != download.sha256:
                raise DownloadFailed(
                    "file_exists",
                    f"A different file named {placement.final.name} is already in "
                    f"{placement.folder}; it was left alone. Choose another file_name.",
                )
            placement.state = TargetState.ALREADY_PRESENT
    todo = [p for p in placements if p.state == TargetState.WAITING]
    size = download.size_bytes or 0
    if todo:
        first = todo[0]
        part = first.tmp_dir / f"{download.pk}.part"
        if download.part_path and download.part_path != str(part):
            remove_file(download.part_path)  # the models folder moved: start afresh
        parts.append(part)
        check_space(download, todo, part)
        first.tmp_dir.mkdir(parents=True, exist_ok=True)
        download_heartbeat(claim, part_path=str(part))
        size, digest = stream_into_part(client, download, part, meter)
        download_heartbeat(claim, status=DownloadStatus.VERIFYING, speed_bytes_per_second=None)
        if digest != download.sha256:
            raise DownloadFailed(
                "hash_mismatch",
                f"The downloaded file's SHA256 ({digest.upper()}) is not the one Civitai "
                f"publishes ({download.sha256.upper()}); it was deleted and nothing was put "
                "in the model folder.",
                discard_part=True,
            )
        first.state = move_into_place(part, first, download.sha256, meter)
        for other in todo[1:]:
            copy = other.tmp_dir / f"{download.pk}.copy.part"
            parts.append(copy)
            copy_verified(first.final, copy, download.sha256, meter)
            other.state = move_into_place(copy, other, download.sha256, meter)
    elif placements:
        size = placements[0].final.stat().st_size
    preview = preview_png(client, download.version_info)
    for placement in placements:
        write_sidecars(placement, download, preview)
    target_states = {t.pk: p.state for p in placements for t in p.targets}
    return download_complete(claim, size=size, target_states=target_states)
