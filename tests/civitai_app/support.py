"""Helpers of the Civitai tests: queue a download and run it as a worker would, read it
back, list the files a run left, and call the download API."""

import hashlib
from pathlib import Path

from civitai_app import tasks
from civitai_app.download_requests import download_request
from civitai_app.models import CivitaiSettings, Download, DownloadTarget
from core_app.scopes import local_user
from tests.support import db_snapshot

DOWNLOAD_MODEL_URL = "/api/v1/civitai/download-model"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def queue(version: int, aliases: tuple[str, ...] = ("Laptop",), **options) -> Download:
    download, created, _ = download_request(
        owner=local_user(), server_aliases=list(aliases), model_version_id=version, **options
    )
    assert created
    return download


def run() -> None:
    """What a worker does with a nudge."""
    tasks.run_downloads()


def reload(download: Download) -> Download:
    return Download.objects.get(pk=download.pk)


def files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def snapshot() -> dict:
    rows = {
        "settings": list(CivitaiSettings.objects.values_list("pk", flat=True)),
        "downloads": sorted(str(pk) for pk in Download.objects.values_list("pk", flat=True)),
        "targets": sorted(DownloadTarget.objects.values_list("path", flat=True)),
    }
    return {**db_snapshot(), **rows}


def request(client, **body):
    """POST download-model; the target is Laptop unless given (None leaves it out)."""
    body.setdefault("target_server_alias", "Laptop")
    body = {key: value for key, value in body.items() if value is not None}
    return client.post(DOWNLOAD_MODEL_URL, body, format="json")
