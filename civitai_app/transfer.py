"""The byte transfer of a download: from Civitai's storage into the servers' model folders.

The file is streamed in fixed-size chunks to `<models_dir>/<tmp dirname>/<id>.part` (same
filesystem as the model folders), hashed while it streams (a resumed transfer first
re-hashes the bytes already there), fsynced, and only moved with `os.replace` into its
type folder once the caller has compared the hash with the SHA256 Civitai publishes.
Nothing unverified ever reaches a model folder, a file already there is never
overwritten, and memory use does not depend on the file's size.

No database writes here: the lease is renewed through the `Progress` the caller passes
in, and a permanent failure is raised as `DownloadFailed` for the caller to record.
"""

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from PIL import Image

from civitai_app.folders import creates_folder
from civitai_app.models import Download, DownloadTarget, TargetState
from civitai_app.names import InvalidFileName, path_inside, stem_of
from integrations.civitai.client import CivitaiClient, CivitaiError, CivitaiInterrupted
from servers_app.validators import inside_models_roots, models_dir_problem

logger = logging.getLogger(__name__)

PREVIEW_MAX_BYTES = 20 * 1024 * 1024
PREVIEW_MAX_SIDE = 1024
# Consecutive interruptions without a single new byte before the attempt is given up.
MAX_STALLED_RESUMES = 3


class DownloadFailed(Exception):
    """A permanent failure, recorded as the download's error with a stable code;
    `discard_part` when the partial file is worthless (it failed verification)."""

    def __init__(self, code: str, message: str, *, discard_part: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.discard_part = discard_part


class Progress(Protocol):
    """What the transfer reports to while it works; each call may renew the lease, and
    raises when the download is no longer the worker's (the transfer then stops)."""

    def start(self, done: int) -> None:
        """Bytes start flowing, `done` of them already on disk."""

    def tick(self, done: int, total: int | None, *, force: bool = False) -> None:
        """`done` of `total` bytes are on disk."""

    def alive(self, *, now_or_never: bool = False) -> None:
        """Work that moves no bytes over the network goes on (at once with
        `now_or_never`: before a step that cannot be undone)."""


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding `path`."""
    return shutil.disk_usage(path).free


def human_bytes(count: float) -> str:
    """`1.5 MiB`: a byte count for people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


# --- files --------------------------------------------------------------------------------------


def remove_file(path: Path | str) -> None:
    """Delete a file if it is there; a failure is logged, never raised (a cleanup)."""
    try:
        Path(path).unlink()
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


def hash_file(path: Path, progress: Progress, *, limit: int | None = None) -> Any:
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
            progress.alive()
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
        remove_file(temporary)


# --- where the file goes ------------------------------------------------------------------------


@dataclass
class Placement:
    """One type folder the file goes to, and the targets (servers) it serves."""

    folder: Path
    final: Path
    tmp_dir: Path
    may_create: bool
    targets: list[DownloadTarget] = field(default_factory=list)
    state: str = TargetState.WAITING


def _tmp_dirname() -> str:
    return os.path.basename(settings.MOBILESD_DOWNLOAD_TMP_DIRNAME.strip()) or ".mobilesd-downloads"


def placements_for(download: Download, targets: list[DownloadTarget]) -> list[Placement]:
    """Where the file goes, one entry per distinct folder (servers sharing a models folder
    share one copy). Re-checks every path: a models folder may have changed or gone."""
    by_folder: dict[str, Placement] = {}
    for target in targets:
        models_dir = target.server.models_dir.strip()
        problem = models_dir_problem(models_dir) if models_dir else "It is not set."
        if problem:
            # Checked again: the folder may have gone, or MOBILESD_MODELS_ROOTS changed.
            raise DownloadFailed(
                "models_dir_missing",
                f"The models folder of server '{target.server.alias}' cannot be used. {problem}",
            )
        folder = Path(models_dir) / download.folder
        may_create = creates_folder(download.folder)
        if not may_create and not (folder.is_dir() and inside_models_roots(str(folder))):
            raise DownloadFailed(
                "embeddings_dir_missing",
                f"{os.path.normpath(folder)} is not an existing folder MobileSD may write to; "
                f"MobileSD never creates folders outside {models_dir}.",
            )
        try:
            final = path_inside(folder, download.file_name)
        except InvalidFileName as exc:
            raise DownloadFailed("invalid_file_name", str(exc)) from exc
        # path_inside resolves: targets whose folders are one folder share one `final`.
        key = os.path.realpath(final.parent)
        if key not in by_folder:
            by_folder[key] = Placement(
                folder=final.parent,
                final=final,
                tmp_dir=Path(models_dir) / _tmp_dirname(),
                may_create=may_create,
            )
        by_folder[key].targets.append(target)
    return list(by_folder.values())


def check_space(download: Download, todo: list[Placement], part: Path) -> None:
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


# --- the bytes ----------------------------------------------------------------------------------


def stream_into_part(
    client: CivitaiClient, download: Download, part: Path, progress: Progress
) -> tuple[int, str]:
    """Stream the file into `part`, resuming from what is already there; returns its size
    and SHA-256. Interruptions resume at once while bytes keep coming."""
    chunk_size = settings.MOBILESD_DOWNLOAD_CHUNK_BYTES
    done = part.stat().st_size if part.exists() else 0
    hasher = hash_file(part, progress) if done else hashlib.sha256()
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
                progress.start(done)
                with part.open("ab") as handle:
                    for chunk in response.chunks(chunk_size):
                        handle.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        progress.tick(done, total)
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
    progress.tick(done, total, force=True)
    return done, hasher.hexdigest()


def move_into_place(source: Path, placement: Placement, sha256: str, progress: Progress) -> str:
    """Atomically put `source` (same filesystem) at the placement's final path; returns the
    placement's state. A file that appeared there meanwhile is kept: when it is this very
    file (a concurrent download of it), ours is dropped; otherwise the download fails."""
    if placement.may_create:
        placement.folder.mkdir(parents=True, exist_ok=True)
    final = path_inside(placement.folder, placement.final.name)
    if final.exists():
        if hash_file(final, progress).hexdigest() == sha256:
            remove_file(source)
            return TargetState.ALREADY_PRESENT
        raise DownloadFailed(
            "file_exists",
            f"A different file named {final.name} appeared in {placement.folder} meanwhile; "
            "it was left alone.",
        )
    progress.alive(now_or_never=True)  # a cancel now still leaves the model folder untouched
    try:
        os.replace(source, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # The temporary folder is on another filesystem: copy beside the target first.
        copy_verified(source, placement.folder / f".{final.name}.part", sha256, progress)
        os.replace(placement.folder / f".{final.name}.part", final)
        remove_file(source)
    _fsync_dir(placement.folder)
    return TargetState.PLACED


def copy_verified(source: Path, destination: Path, sha256: str, progress: Progress) -> None:
    """Copy in chunks, fsync, and check the copy's hash (a second disk may corrupt too)."""
    hasher = hashlib.sha256()
    chunk = settings.MOBILESD_DOWNLOAD_CHUNK_BYTES
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with source.open("rb") as reader, destination.open("wb") as writer:
            while block := reader.read(chunk):
                writer.write(block)
                hasher.update(block)
                progress.alive()
            writer.flush()
            os.fsync(writer.fileno())
        if hasher.hexdigest() != sha256:
            raise DownloadFailed("copy_mismatch", f"The copy to {destination.parent} is damaged.")
    except BaseException:
        remove_file(destination)
        raise


# --- beside the file ----------------------------------------------------------------------------


def preview_png(client: CivitaiClient, version: dict[str, Any]) -> bytes | None:
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


def write_sidecars(placement: Placement, download: Download, preview: bytes | None) -> None:
    """`<stem>.civitai.info` (the version JSON) and `<stem>.preview.png` beside the file,
    as the Civitai Helper extension and the A1111 UI read them."""
    stem = stem_of(download.file_name)
    info = json.dumps(download.version_info, indent=2, ensure_ascii=False).encode()
    _atomic_write(path_inside(placement.folder, f"{stem}.civitai.info"), info)
    if preview is not None:
        _atomic_write(path_inside(placement.folder, f"{stem}.preview.png"), preview)
