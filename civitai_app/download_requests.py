"""Download requests, as a user makes them: queue a Civitai file for servers' model
folders, cancel, retry, delete. The worker's side is `civitai_app.download_states`
(leases) and `civitai_app.download_runs` (the run).

Each service changes the row in one transaction, conditional on its status, and nudges
the workers only after the commit (`civitai_app.tasks.nudge_downloads`).
"""

import logging
import os
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from civitai_app.download_plans import (
    DownloadPlan,
    download_plan,
    invalid_file_name,
    target_servers,
)
from civitai_app.download_states import lease_ended
from civitai_app.models import (
    ACTIVE_DOWNLOAD_STATUSES,
    FINISHED_DOWNLOAD_STATUSES,
    Download,
    DownloadStatus,
    DownloadTarget,
    TargetState,
)
from civitai_app.names import InvalidFileName, check_user_file_name
from civitai_app.references import model_reference_from_url
from civitai_app.selectors import download_get
from civitai_app.tasks import nudge_downloads
from civitai_app.transfer import remove_file
from core_app.errors import Conflict, MobileSDError

logger = logging.getLogger(__name__)


def _redundant_download(plan: DownloadPlan) -> tuple[Download | None, str]:
    """A download that makes this request redundant: one in progress for the same file and
    folders, or a completed one whose verified files are all still there (whoever's)."""
    wanted = {str(path) for path in plan.paths.values()}
    candidates = (
        Download.objects.filter(file_id=int(plan.file["id"]))
        .filter(status__in=[*ACTIVE_DOWNLOAD_STATUSES, DownloadStatus.COMPLETED])
        .prefetch_related("targets")
        .order_by("-created_at")
    )
    for download in candidates:
        paths = {t.path: t for t in download.targets.all()}
        if not wanted <= set(paths):
            continue
        if download.status in ACTIVE_DOWNLOAD_STATUSES:
            return download, "This file is already being downloaded to these folders."
        if download.sha256 != plan.sha256:
            continue
        done = (TargetState.PLACED, TargetState.ALREADY_PRESENT)
        if all(
            paths[p].state in done
            and os.path.isfile(p)
            and (download.size_bytes is None or os.path.getsize(p) == download.size_bytes)
            for p in wanted
        ):
            return download, "This file is already downloaded and verified; nothing to do."
    return None, ""


def download_request(
    *,
    owner: Any,
    server_aliases: list[str],
    model_version_id: int | None = None,
    url: str | None = None,
    file_id: int | None = None,
    file_format: str | None = None,
    precision: str | None = None,
    size: str | None = None,
    file_name: str | None = None,
    mine_only: bool = False,
) -> tuple[Download, bool, str]:
    """Queue the download, by `owner` (a user), of a Civitai file to the servers' model
    folders; returns (download, created, message).

    Everything is checked before a row is written (`civitai_app.download_plans`). A
    request for a file that is already being fetched, or already present and verified,
    returns that download; if it is another user's and `mine_only` (a client key, which
    may not see it), the request is a 409 `download_exists` instead, since a second
    download of the same file to the same folders would race the first.
    """
    if (model_version_id is None) == (url is None):
        raise MobileSDError("Give either model_version_id or url.", code="invalid_reference")
    model_id, version_id = (
        (None, model_version_id) if url is None else model_reference_from_url(url)
    )
    servers = target_servers(server_aliases)
    if file_name is not None:
        try:
            check_user_file_name(file_name, extension="")
        except InvalidFileName as exc:
            raise invalid_file_name(exc) from exc
    plan = download_plan(
        servers=servers,
        model_id=model_id,
        version_id=version_id,
        file_id=file_id,
        file_format=file_format,
        precision=precision,
        size=size,
        file_name=file_name,
    )
    with transaction.atomic():
        existing, message = _redundant_download(plan)
        if existing is not None:
            if mine_only and existing.owner_id != owner.pk:
                raise Conflict(f"{message} (Another user's download.)", code="download_exists")
            return download_get(download_id=existing.pk, owner=None), False, message
        model = plan.version.get("model") or {}
        size_kb = plan.file.get("sizeKB")
        download = Download.objects.create(
            model_version_id=plan.version_id,
            model_id=plan.version.get("modelId"),
            model_name=str(model.get("name") or "")[:300],
            version_name=str(plan.version.get("name") or "")[:300],
            model_type=plan.model_type,
            file_type=str(plan.file.get("type") or ""),
            base_model=str(plan.version.get("baseModel") or "")[:100],
            file_id=int(plan.file["id"]),
            source_file_name=str(plan.file.get("name") or "")[:500],
            file_name=plan.file_name,
            folder=plan.folder,
            download_url=plan.download_url,
            sha256=plan.sha256,
            size_bytes=round(float(size_kb) * 1024) if isinstance(size_kb, int | float) else None,
            requested={
                k: v
                for k, v in {
                    "model_version_id": model_version_id,
                    "url": url,
                    "file_id": file_id,
                    "format": file_format,
                    "precision": precision,
                    "size": size,
                    "file_name": file_name,
                }.items()
                if v is not None
            },
            version_info=plan.version,
            owner=owner,
        )
        DownloadTarget.objects.bulk_create(
            DownloadTarget(download=download, server=server, path=str(plan.paths[server.pk]))
            for server in servers
        )
        transaction.on_commit(nudge_downloads)
    logger.info(
        "Download %s queued: version %s file %s -> %s",
        download.pk,
        plan.version_id,
        plan.file_name,
        ", ".join(s.alias for s in servers),
    )
    return download_get(download_id=download.pk, owner=None), True, "Download queued."


def download_cancel(*, download_id: str | uuid.UUID, owner: Any | None) -> Download:
    """Cancel a pending or running download of `owner` (None: anyone's). A running one
    stops at its worker's next heartbeat, which removes the partial file; a pending one's
    is removed here."""
    download = download_get(download_id=download_id, owner=owner)
    with transaction.atomic():
        row = Download.objects.select_for_update().get(pk=download.pk)
        if row.status in FINISHED_DOWNLOAD_STATUSES:
            raise Conflict(
                f"Download {row.pk} is already {row.status}.", code="download_already_finished"
            )
        was_pending = row.status == DownloadStatus.PENDING
        now = timezone.now()
        Download.objects.filter(pk=row.pk).update(
            status=DownloadStatus.CANCELLED,
            next_attempt_at=None,
            finished_at=now,
            **lease_ended(now),
        )
        if was_pending and row.part_path:
            part = row.part_path
            transaction.on_commit(lambda: remove_file(part))
            Download.objects.filter(pk=row.pk).update(part_path="", bytes_done=0)
    logger.info("Download %s cancelled", download.pk)
    return download_get(download_id=download.pk, owner=None)


def download_retry(*, download_id: str | uuid.UUID, owner: Any | None) -> Download:
    """Queue a failed or cancelled download of `owner` (None: anyone's) again (it resumes
    from its partial file)."""
    download = download_get(download_id=download_id, owner=owner)
    with transaction.atomic():
        updated = Download.objects.filter(
            pk=download.pk, status__in=[DownloadStatus.FAILED, DownloadStatus.CANCELLED]
        ).update(
            status=DownloadStatus.PENDING,
            attempts=0,
            error="",
            error_code="",
            next_attempt_at=None,
            finished_at=None,
            updated_at=timezone.now(),
        )
        if not updated:
            raise Conflict(
                f"Download {download.pk} is {download.status}; only failed or cancelled "
                "downloads can be retried.",
                code="download_not_retryable",
            )
        DownloadTarget.objects.filter(download=download).exclude(
            state__in=[TargetState.PLACED, TargetState.ALREADY_PRESENT]
        ).update(state=TargetState.WAITING, error="")
        transaction.on_commit(nudge_downloads)
    return download_get(download_id=download.pk, owner=None)


def download_delete(*, download_id: str | uuid.UUID, owner: Any | None) -> str:
    """Delete a download's record of `owner` (None: anyone's), cancelling it first if it
    runs, and its partial file. Model files already placed stay where they are."""
    download = download_get(download_id=download_id, owner=owner)
    if download.status in ACTIVE_DOWNLOAD_STATUSES:
        try:
            download = download_cancel(download_id=download.pk, owner=None)
        except Conflict:
            download = download_get(download_id=download.pk, owner=None)
    part = download.part_path
    Download.objects.filter(pk=download.pk).delete()
    # A worker still writing it finds the row gone at its next heartbeat and stops; the
    # file is unlinked either way.
    if part:
        remove_file(part)
    return str(download.pk)
