"""The download worker: claim, stream with resume, verify, place, finish.

The Download row is the truth. Every state change here is one conditional update on the
row's status and lease token, so a repeated nudge, a worker that lost its lease, or a
cancel racing the end can never move a download twice:

* claim: pending -> downloading, only while fewer than N downloads run. The Civitai
  settings row is locked (`select_for_update`), which serialises claims across every
  worker and host, so the limit holds; candidates are locked with `skip_locked`.
* heartbeat: renews the lease and writes progress while the row is still ours; when it
  is not (cancelled, deleted, taken over) the transfer stops at once.
* verifying -> completed / failed, or back to pending with a backoff for transient errors.
  A download whose worker died (lease lapsed) is put back to pending by `reconcile` and
  resumes from its partial file.

On disk: the file is streamed in fixed-size chunks to `<models_dir>/<tmp dirname>/<id>.part`
(same filesystem as the model folders), hashed while it streams (a resumed transfer first
re-hashes the bytes already there), fsynced, compared with the SHA256 Civitai publishes,
and only then moved with `os.replace` into the type folder. A mismatch deletes it: nothing
unverified ever reaches a model folder. Memory use does not depend on the file's size.
"""

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image

from civitai_app.folders import creates_folder, refresh_for_folder
from civitai_app.models import (
    RUNNING_DOWNLOAD_STATUSES,
    CivitaiSettings,
    Download,
    DownloadStatus,
    DownloadTarget,
    TargetState,
)
from civitai_app.names import InvalidFileName, path_inside, stem_of
from integrations.civitai.client import CivitaiClient, CivitaiError, CivitaiInterrupted

logger = logging.getLogger(__name__)

PREVIEW_MAX_BYTES = 20 * 1024 * 1024
PREVIEW_MAX_SIDE = 1024
# Consecutive interruptions without a single new byte before the attempt is given up.
MAX_STALLED_RESUMES = 3


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding `path`."""
    return shutil.disk_usage(path).free


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


@dataclass(frozen=True)
class DownloadClaim:
    """A download this worker now holds; every later change presents `token`."""

    download_id: uuid.UUID
    token: uuid.UUID


class Stop(Exception):
    """The row is no longer ours: `reason` is "cancelled", "gone" or "lost"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DownloadFailed(Exception):
    """A permanent failure, recorded as the download's error with a stable code."""

    def __init__(self, code: str, message: str, *, discard_part: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.discard_part = discard_part


# --- state changes ------------------------------------------------------------------------------


def _lease_until() -> Any:
    return timezone.now() + timedelta(seconds=settings.MOBILESD_DOWNLOAD_LEASE_SECONDS)


def lease_ended(now: datetime) -> dict[str, Any]:
    """The fields every update that ends a download's lease writes (spread into
    `.update()`): no lease, and no speed, as nothing is downloading it any more."""
    return {
        "lease_token": None,
        "lease_expires_at": None,
        "speed_bytes_per_second": None,
        "updated_at": now,
    }


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
        candidate = (
            Download.objects.filter(status=DownloadStatus.PENDING)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .select_for_update(skip_locked=True)
            .order_by("created_at")
            .first()
        )
        if candidate is None:
            return None
        token = uuid.uuid4()
        Download.objects.filter(pk=candidate.pk, status=DownloadStatus.PENDING).update(
            status=DownloadStatus.DOWNLOADING,
            lease_token=token,
            lease_expires_at=_lease_until(),
            started_at=now,
            updated_at=now,
            next_attempt_at=None,
            speed_bytes_per_second=None,
        )
    logger.info("Claimed download %s", candidate.pk)
    return DownloadClaim(download_id=candidate.pk, token=token)


def _ours(claim: DownloadClaim) -> Any:
    return Download.objects.filter(
        pk=claim.download_id, lease_token=claim.token, status__in=RUNNING_DOWNLOAD_STATUSES
    )


def _why_not_ours(claim: DownloadClaim) -> str:
    status = Download.objects.filter(pk=claim.download_id).values_list("status", flat=True).first()
    if status is None:
        return "gone"
    return "cancelled" if status == DownloadStatus.CANCELLED else "lost"


def download_heartbeat(claim: DownloadClaim, **values: Any) -> None:
    """Renew the lease and write `values` (progress); raises `Stop` if the row is not ours."""
    now = timezone.now()
    if not _ours(claim).update(lease_expires_at=_lease_until(), updated_at=now, **values):
        raise Stop(_why_not_ours(claim))


def _fail(claim: DownloadClaim, code: str, message: str) -> None:
    now = timezone.now()
    updated = _ours(claim).update(
        status=DownloadStatus.FAILED,
        error=message[:4000],
        error_code=code,
        finished_at=now,
        **lease_ended(now),
    )
    if updated:
        logger.warning("Download %s failed (%s): %s", claim.download_id, code, message)


def _backoff(attempt: int, retry_after: float | None) -> float:
    delay = settings.MOBILESD_DOWNLOAD_RETRY_BACKOFF_SECONDS * (2 ** max(attempt - 1, 0))
    return min(settings.MOBILESD_DOWNLOAD_RETRY_BACKOFF_MAX_SECONDS, max(delay, retry_after or 0))


def _release(claim: DownloadClaim, exc: CivitaiError) -> None:
    """A transient failure: back to pending after a backoff, or failed after the limit."""
    attempts = (
        Download.objects.filter(pk=claim.download_id).values_list("attempts", flat=True).first()
    )
    if attempts is None:
        return
    if attempts + 1 > settings.MOBILESD_DOWNLOAD_MAX_RETRIES:
        _fail(claim, exc.code, f"{exc.message} (gave up after {attempts + 1} attempts)")
        return
    now = timezone.now()
    delay = _backoff(attempts + 1, exc.retry_after)
    _ours(claim).update(
        status=DownloadStatus.PENDING,
        attempts=F("attempts") + 1,
        next_attempt_at=now + timedelta(seconds=delay),
        error=f"{exc.message} Retrying in {delay:.0f} s.",
        error_code=exc.code,
        **lease_ended(now),
    )
    logger.warning("Download %s will be retried in %.0fs: %s", claim.download_id, delay, exc)


def downloads_recover_expired() -> list[uuid.UUID]:
    """Put downloads whose worker stopped renewing its lease back to pending (they resume
    from their partial file), or fail them after too many attempts."""
    now = timezone.now()
    recovered = []
    expired = Download.objects.filter(
        status__in=RUNNING_DOWNLOAD_STATUSES, lease_expires_at__lt=now
    ).values_list("pk", "lease_token", "attempts")
    for pk, token, attempts in expired:
        mine = Download.objects.filter(
            pk=pk, status__in=RUNNING_DOWNLOAD_STATUSES, lease_token=token
        )
        if attempts + 1 > settings.MOBILESD_DOWNLOAD_MAX_RETRIES:
            mine.update(
                status=DownloadStatus.FAILED,
                error="The worker running this download stopped too many times.",
                error_code="worker_lost",
                finished_at=now,
                **lease_ended(now),
            )
            continue
        if mine.update(
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
        _remove(Path(part))
        removed += Download.objects.filter(pk=pk, status=DownloadStatus.CANCELLED).update(
            part_path=""
        )
    return removed


# --- progress -----------------------------------------------------------------------------------


class _Meter:
    """Writes progress and renews the lease at most every MOBILESD_HEARTBEAT_SECONDS; the
    speed is smoothed over the last intervals."""

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
        """Renew the lease during work that moves no bytes over the network (at once with
        `now_or_never`: before a step that cannot be undone, such as the final move)."""
        now = time.monotonic()
        if now_or_never or now - self.last >= self.interval:
            download_heartbeat(self.claim)
            self.last = now


# --- files --------------------------------------------------------------------------------------


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("Could not remove %s: %s", path, exc)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform/filesystem; the data itself was fsynced
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _hash_file(path: Path, meter: _Meter, *, limit: int | None = None) -> Any:
    """A running SHA-256 over the file (its first `limit` bytes), renewing the lease."""
    hasher = hashlib.sha256()
    chunk = settings.MOBILESD_DOWNLOAD_CHUNK_BYTES
    left = limit
    with path.open("rb") as handle:
        while left is None or left > 0:
            block = handle.read(chunk if left is None else min(chunk, left))
            if not block:
                break
            hasher.update(block)
            if left is not None:
                left -= len(block)
            meter.alive()
    return hasher


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        _remove(temporary)


@dataclass
class _Placement:
    """One type folder the file goes to, and the targets (servers) it serves."""

    folder: Path
    final: Path
    tmp_dir: Path
    may_create: bool
    targets: list[DownloadTarget] = field(default_factory=list)
    state: str = TargetState.WAITING


def _tmp_dirname() -> str:
    return os.path.basename(settings.MOBILESD_DOWNLOAD_TMP_DIRNAME.strip()) or ".mobilesd-downloads"


def _placements(download: Download, targets: list[DownloadTarget]) -> list[_Placement]:
    """Where the file goes, one entry per distinct folder (servers sharing a models folder
    share one copy). Re-checks every path: a models folder may have changed or gone."""
    by_folder: dict[str, _Placement] = {}
    for target in targets:
        models_dir = target.server.models_dir.strip()
        if not models_dir or not os.path.isdir(models_dir):
            raise DownloadFailed(
                "models_dir_missing",
                f"The models folder of server '{target.server.alias}' ({models_dir or 'not set'})"
                " is not reachable from MobileSD (is it mounted?).",
            )
        folder = Path(models_dir) / download.folder
        may_create = creates_folder(download.folder)
        if not may_create and not folder.is_dir():
            raise DownloadFailed(
                "embeddings_dir_missing",
                f"{os.path.normpath(folder)} does not exist; MobileSD never creates folders "
                f"outside {models_dir}.",
            )
        try:
            final = path_inside(folder, download.file_name)
        except InvalidFileName as exc:
            raise DownloadFailed("invalid_file_name", str(exc)) from exc
        if str(final) != target.path:
            DownloadTarget.objects.filter(pk=target.pk).update(path=str(final))
            target.path = str(final)
        key = os.path.realpath(final.parent)
        if key not in by_folder:
            by_folder[key] = _Placement(
                folder=final.parent,
                final=final,
                tmp_dir=Path(models_dir) / _tmp_dirname(),
                may_create=may_create,
            )
        by_folder[key].targets.append(target)
    return list(by_folder.values())


def _check_space(download: Download, todo: list[_Placement], part: Path) -> None:
    """Refuse before downloading when a disk lacks room for the file (plus the margin)."""
    size = download.size_bytes
    if not size:
        return
    have = part.stat().st_size if part.exists() else 0
    margin = settings.MOBILESD_DOWNLOAD_FREE_SPACE_MARGIN_BYTES
    needs: dict[int, tuple[int, Path]] = {}
    for index, placement in enumerate(todo):
        probe = placement.tmp_dir if placement.tmp_dir.is_dir() else placement.tmp_dir.parent
        device = os.stat(probe).st_dev
        need = size - have if index == 0 else size
        total, _ = needs.get(device, (0, probe))
        needs[device] = (total + need, probe)
    for need, probe in needs.values():
        free = free_disk_bytes(probe)
        if free < need + margin:
            raise DownloadFailed(
                "insufficient_disk_space",
                f"Not enough free space in {probe}: {download.file_name} needs "
                f"{human_bytes(need)} more (and {human_bytes(margin)} is kept free), but only "
                f"{human_bytes(free)} is free.",
            )


def _fetch(client: CivitaiClient, download: Download, part: Path, meter: _Meter) -> tuple[int, str]:
    """Stream the file into `part`, resuming from what is already there; returns its size
    and SHA-256. Interruptions resume at once while bytes keep coming."""
    chunk_size = settings.MOBILESD_DOWNLOAD_CHUNK_BYTES
    done = part.stat().st_size if part.exists() else 0
    hasher = _hash_file(part, meter) if done else hashlib.sha256()
    total = download.size_bytes
    stalled = 0
    while True:
        before = done
        try:
            with client.open_download(download.download_url, start=done) as response:
                if response.range_not_satisfiable and response.total == done:
                    total = done  # everything was already here
                    break
                if response.range_not_satisfiable:
                    # Ours is longer than the file (it changed on Civitai?): start over.
                    logger.info("Download %s: partial file too long; restarting", download.pk)
                    part.write_bytes(b"")
                    done, hasher = 0, hashlib.sha256()
                    continue
                if response.start != done:
                    logger.info("Download %s: storage ignored Range; restarting", download.pk)
                    part.write_bytes(b"")
                    done, hasher = 0, hashlib.sha256()
                total = response.total
                meter.start(done)
                with part.open("ab") as handle:
                    for chunk in response.chunks(chunk_size):
                        handle.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        meter.tick(done, total)
                    handle.flush()
                    os.fsync(handle.fileno())
            if total is None or done == total:
                break
            if done > total:
                part.write_bytes(b"")
                done, hasher = 0, hashlib.sha256()
            raise CivitaiInterrupted(f"The transfer ended at {done} of {total} bytes.")
        except CivitaiInterrupted as exc:
            stalled = 0 if done > before else stalled + 1
            if stalled >= MAX_STALLED_RESUMES:
                raise
            logger.warning(
                "Download %s interrupted at %s bytes (%s); resuming", download.pk, done, exc
            )
    meter.tick(done, total, force=True)
    return done, hasher.hexdigest()


def _move_into_place(source: Path, placement: _Placement, sha256: str, meter: _Meter) -> str:
    """Atomically put `source` (same filesystem) at the placement's final path; returns the
    placement's state. A file that appeared there meanwhile is kept: when it is this very
    file (a concurrent download of it), ours is dropped; otherwise the download fails."""
    if placement.may_create:
        placement.folder.mkdir(parents=True, exist_ok=True)
    final = path_inside(placement.folder, placement.final.name)
    if final.exists():
        if _hash_file(final, meter).hexdigest() == sha256:
            _remove(source)
            return TargetState.ALREADY_PRESENT
        raise DownloadFailed(
            "file_exists",
            f"A different file named {final.name} appeared in {placement.folder} meanwhile; "
            "it was left alone.",
        )
    meter.alive(now_or_never=True)  # a cancel now still leaves the model folder untouched
    try:
        os.replace(source, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # The temporary folder is on another filesystem: copy beside the target first.
        _copy_verified(source, placement.folder / f".{final.name}.part", sha256, meter)
        os.replace(placement.folder / f".{final.name}.part", final)
        _remove(source)
    _fsync_dir(placement.folder)
    return TargetState.PLACED


def _copy_verified(source: Path, destination: Path, sha256: str, meter: _Meter) -> None:
    """Copy in chunks, fsync, and check the copy's hash (a second disk may corrupt too)."""
    hasher = hashlib.sha256()
    chunk = settings.MOBILESD_DOWNLOAD_CHUNK_BYTES
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with source.open("rb") as reader, destination.open("wb") as writer:
            while block := reader.read(chunk):
                writer.write(block)
                hasher.update(block)
                meter.alive()
            writer.flush()
            os.fsync(writer.fileno())
        if hasher.hexdigest() != sha256:
            raise DownloadFailed("copy_mismatch", f"The copy to {destination.parent} is damaged.")
    except BaseException:
        _remove(destination)
        raise


def _preview_png(client: CivitaiClient, version: dict[str, Any]) -> bytes | None:
    """The version's first preview image as a PNG (at most 1024 px), or None."""
    for image in version.get("images") or []:
        if (
            not isinstance(image, dict)
            or image.get("type", "image") != "image"
            or not image.get("url")
        ):
            continue
        try:
            data = client.fetch_image(str(image["url"]), max_bytes=PREVIEW_MAX_BYTES)
            with Image.open(io.BytesIO(data)) as picture:
                picture.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
                converted = picture.convert(
                    "RGBA" if picture.mode in ("RGBA", "LA", "P") else "RGB"
                )
                buffer = io.BytesIO()
                converted.save(buffer, format="PNG")
                return buffer.getvalue()
        except (CivitaiError, OSError, ValueError, Image.DecompressionBombError) as exc:
            logger.warning("No preview image for version %s: %s", version.get("id"), exc)
            return None
    return None


def _write_sidecars(placement: _Placement, download: Download, preview: bytes | None) -> None:
    """`<stem>.civitai.info` (the version JSON) and `<stem>.preview.png` beside the file,
    as the Civitai Helper extension and the A1111 UI read them."""
    stem = stem_of(download.file_name)
    info = json.dumps(download.version_info, indent=2, ensure_ascii=False).encode()
    _atomic_write(path_inside(placement.folder, f"{stem}.civitai.info"), info)
    if preview is not None:
        _atomic_write(path_inside(placement.folder, f"{stem}.preview.png"), preview)


# --- the run ------------------------------------------------------------------------------------


def _execute(
    client: CivitaiClient,
    download: Download,
    claim: DownloadClaim,
    meter: _Meter,
    parts: list[Path],
) -> None:
    """The run's steps; `parts` collects the temporary files it creates."""
    targets = list(download.targets.select_related("server").order_by("pk"))
    placements = _placements(download, targets)
    for placement in placements:
        if placement.final.exists():
            if _hash_file(placement.final, meter).hexdigest() != download.sha256:
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
            _remove(Path(download.part_path))  # the models folder moved: start afresh
        parts.append(part)
        _check_space(download, todo, part)
        first.tmp_dir.mkdir(parents=True, exist_ok=True)
        download_heartbeat(claim, part_path=str(part))
        size, digest = _fetch(client, download, part, meter)
        download_heartbeat(claim, status=DownloadStatus.VERIFYING, speed_bytes_per_second=None)
        if digest != download.sha256:
            raise DownloadFailed(
                "hash_mismatch",
                f"The downloaded file's SHA256 ({digest.upper()}) is not the one Civitai "
                f"publishes ({download.sha256.upper()}); it was deleted and nothing was put "
                "in the model folder.",
                discard_part=True,
            )
        first.state = _move_into_place(part, first, download.sha256, meter)
        for other in todo[1:]:
            copy = other.tmp_dir / f"{download.pk}.copy.part"
            parts.append(copy)
            _copy_verified(first.final, copy, download.sha256, meter)
            other.state = _move_into_place(copy, other, download.sha256, meter)
    elif placements:
        size = placements[0].final.stat().st_size
    preview = _preview_png(client, download.version_info)
    for placement in placements:
        _write_sidecars(placement, download, preview)
    _complete(claim, placements, size)


def _complete(claim: DownloadClaim, placements: list[_Placement], size: int) -> None:
    now = timezone.now()
    with transaction.atomic():
        updated = _ours(claim).update(
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
            return
        for placement in placements:
            DownloadTarget.objects.filter(pk__in=[t.pk for t in placement.targets]).update(
                state=placement.state, error=""
            )
        transaction.on_commit(lambda: _refresh_soon(claim.download_id))
    logger.info("Download %s completed (%s)", claim.download_id, human_bytes(size))


def _refresh_soon(download_id: uuid.UUID) -> None:
    from civitai_app.tasks import refresh_after_download

    try:
        refresh_after_download.delay(str(download_id))
    except Exception as exc:  # broker down: the periodic model refresh catches up
        logger.warning("Could not queue the refresh after download %s: %s", download_id, exc)


def download_run(claim: DownloadClaim, *, client: CivitaiClient | None = None) -> None:
    """Run a claimed download to its end: completed, failed, back to pending (transient
    error, with backoff), or stopped because it was cancelled or deleted."""
    from civitai_app.services import civitai_client

    download = Download.objects.filter(pk=claim.download_id).first()
    if download is None:
        return
    own_client = client is None
    client = client or civitai_client()
    parts: list[Path] = []
    try:
        _execute(client, download, claim, _Meter(claim), parts)
    except Stop as stop:
        logger.info("Download %s stopped: %s", claim.download_id, stop.reason)
        if stop.reason in ("cancelled", "gone"):
            for part in parts:
                _remove(part)
    except DownloadFailed as failure:
        if failure.discard_part:
            for part in parts:
                _remove(part)
            Download.objects.filter(pk=claim.download_id).update(part_path="", bytes_done=0)
        _fail(claim, failure.code, failure.message)
    except CivitaiError as exc:
        if exc.transient:
            _release(claim, exc)
        else:
            _fail(claim, exc.code, exc.message)
    except OSError as exc:
        _fail(claim, "disk_error", f"Could not write the file: {exc.strerror or exc}")
    finally:
        if own_client:
            client.close()


def download_refresh_servers(*, download_id: str | uuid.UUID) -> None:
    """After a completed download: ask each target server to rescan its checkpoints or
    LoRAs, then refresh MobileSD's cache of them. Failures are recorded on the target,
    never on the download (the file is in place either way)."""
    from integrations.forge.client import (
        ForgeClient,
        ForgeError,
        ForgePermanentError,
        ServerEndpoint,
    )
    from servers_app.services import server_refresh_models

    download = Download.objects.filter(pk=download_id, status=DownloadStatus.COMPLETED).first()
    if download is None:
        return
    refresh = refresh_for_folder(download.folder)
    if not refresh:
        return
    targets = download.targets.select_related("server").filter(
        state__in=[TargetState.PLACED, TargetState.ALREADY_PRESENT]
    )
    for target in targets:
        server = target.server
        error = ""
        client = ForgeClient(
            ServerEndpoint.from_server(server),
            connect_timeout=settings.MOBILESD_FORGE_CONNECT_TIMEOUT,
            read_timeout=60.0,
        )
        try:
            # The rescans of checkpoints, embeddings and VAEs wait behind the server's
            # generation lock.
            if refresh == "checkpoints":
                client.refresh_checkpoints(timeout=settings.MOBILESD_FORGE_TIMEOUT_CAP)
            elif refresh == "embeddings":
                client.refresh_embeddings(timeout=settings.MOBILESD_FORGE_TIMEOUT_CAP)
            elif refresh == "vae":
                client.refresh_vae(timeout=settings.MOBILESD_FORGE_TIMEOUT_CAP)
            else:
                client.refresh_loras(timeout=120.0)
        except ForgePermanentError as exc:
            # A server without that route (Forge has no VAE list; old A1111 no embeddings
            # rescan) picks the file up on its own or after a restart.
            if exc.status_code != 404:
                error = f"The server could not be asked to rescan: {exc}"
        except ForgeError as exc:
            error = f"The server could not be asked to rescan: {exc}"
        finally:
            client.close()
        if not error:
            error = server_refresh_models(server=server).error
        DownloadTarget.objects.filter(pk=target.pk).update(
            refreshed_at=timezone.now(), refresh_error=error[:2000]
        )
        if error:
            logger.warning("Refresh of %s after download %s: %s", server.alias, download_id, error)
