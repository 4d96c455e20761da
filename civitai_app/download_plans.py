"""What a download request resolves to, before any row is written: the target servers,
the Civitai version and file, the file's name, and its path on each server.

Everything is checked here: the servers (known, with a models folder that exists), the
version (published, not archived) and the file on Civitai, the type's folder, the file
name (refused if it could leave that folder), the published SHA256.
"""

import os
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from civitai_app.connection import civitai_api_error, civitai_client
from civitai_app.folders import creates_folder, type_folder
from civitai_app.names import (
    InvalidFileName,
    check_user_file_name,
    extension_of,
    path_inside,
    sanitize_remote_name,
)
from core_app.errors import Conflict, MobileSDError, NotFound
from integrations.civitai.client import CivitaiClient, CivitaiError
from servers_app.models import Server
from servers_app.selectors import server_not_found
from servers_app.validators import inside_models_roots, models_dir_problem

MAX_TARGETS = 20
# Extensions for files whose Civitai name has none, by `metadata.format`.
_FORMAT_EXTENSIONS = {"safetensor": ".safetensors", "pickletensor": ".ckpt", "gguf": ".gguf"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DownloadPlan:
    """What a download request resolved to."""

    version_id: int
    version: dict[str, Any]
    file: dict[str, Any]
    model_type: str
    folder: str
    file_name: str
    sha256: str
    paths: dict[int, Path]  # server pk -> the file's final path there

    @property
    def download_url(self) -> str:
        """Civitai's URL for this exact file. Its own `downloadUrl` is used when it points
        at the configured Civitai (it carries the right query); otherwise one is built with
        `fileId`, so the API key never goes to another host."""
        base = settings.CIVITAI_BASE_URL.rstrip("/")
        published = str(self.file.get("downloadUrl") or "")
        if published and urlsplit(published).netloc.lower() == urlsplit(base).netloc.lower():
            return published
        return f"{base}/api/download/models/{self.version_id}?fileId={self.file.get('id')}"


def invalid_file_name(exc: InvalidFileName) -> MobileSDError:
    return MobileSDError(f"Invalid file_name: {exc}", code="invalid_file_name")


def target_servers(aliases: list[str]) -> list[Server]:
    """The servers named (each once, in the order given), each with a models folder that
    exists on this host."""
    wanted = list(dict.fromkeys(a.strip() for a in aliases if a.strip()))
    if not wanted:
        raise MobileSDError("Name at least one target server.", code="no_target_server")
    if len(wanted) > MAX_TARGETS:
        raise MobileSDError(f"At most {MAX_TARGETS} target servers.", code="too_many_targets")
    found = {s.alias: s for s in Server.objects.filter(alias__in=wanted)}
    servers = []
    for alias in wanted:
        server = found.get(alias)
        if server is None:
            raise server_not_found(alias)
        models_dir = server.models_dir.strip()
        if not models_dir:
            raise MobileSDError(
                f"Server '{alias}' has no models folder set (models_dir): set where its "
                "models folder is reachable from MobileSD, e.g. /mnt/gpu-box/models.",
                code="models_dir_not_set",
            )
        problem = models_dir_problem(models_dir)
        if problem:
            raise MobileSDError(
                f"The models folder of server '{alias}' cannot be used. {problem}",
                code="models_dir_missing",
            )
        servers.append(server)
    return servers


def download_plan(
    *,
    servers: list[Server],
    model_id: int | None,
    version_id: int | None,
    file_id: int | None,
    file_format: str | None,
    precision: str | None,
    size: str | None,
    file_name: str | None,
) -> DownloadPlan:
    """Resolve a request on Civitai and on the servers' disks; raises MobileSD's errors
    (Civitai's own ones with their status) for anything that cannot be downloaded."""
    with civitai_client() as client:
        try:
            vid = _version_id(client, model_id, version_id)
            version = client.model_version(vid)
        except CivitaiError as exc:
            raise civitai_api_error(exc) from exc
    mode = (version.get("model") or {}).get("mode")
    if mode in ("Archived", "TakenDown"):
        raise MobileSDError(
            f"Model version {vid} is {mode.lower().replace('takendown', 'taken down')} on "
            "Civitai and can no longer be downloaded.",
            code="civitai_archived",
            status_code=HTTPStatus.GONE,
        )
    chosen = _choose_file(
        version, file_id=file_id, file_format=file_format, precision=precision, size=size
    )
    model_type = str((version.get("model") or {}).get("type") or "")
    where = type_folder(model_type, str(chosen.get("type") or ""))
    if where is None:
        raise MobileSDError(
            f"A {model_type or 'model'} file of type {chosen.get('type')} has no place on an "
            "A1111/Forge server; MobileSD downloads checkpoints, LoRAs (LoCon, DoRA), "
            "embeddings, VAEs, text encoders, hypernetworks, ControlNets and upscalers.",
            code="unsupported_model_type",
        )
    sha256 = str((chosen.get("hashes") or {}).get("SHA256") or "").lower()
    if not _SHA256.fullmatch(sha256):
        raise Conflict(
            "Civitai has not published a SHA256 for this file yet (it may still be being "
            "scanned), so it cannot be verified; try again later.",
            code="civitai_hash_unavailable",
        )
    extension = _extension_for(chosen)
    try:
        name = (
            check_user_file_name(file_name, extension=extension)
            if file_name is not None
            else sanitize_remote_name(
                str(chosen.get("name") or ""), fallback=f"civitai-{vid}", extension=extension
            )
        )
        paths = {server.pk: _final_path(server, where.folder, name) for server in servers}
    except InvalidFileName as exc:
        raise invalid_file_name(exc) from exc
    return DownloadPlan(vid, version, chosen, model_type, where.folder, name, sha256, paths)


def _version_id(client: CivitaiClient, model_id: int | None, version_id: int | None) -> int:
    """The version asked for, else the model's newest published one."""
    if version_id is not None:
        return version_id
    assert model_id is not None
    model = client.model(model_id)
    versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict) and v.get("id")]
    if not versions:
        raise NotFound(
            f"Civitai model {model_id} has no published version.", code="civitai_not_found"
        )
    return int(versions[0]["id"])  # newest first (REFERENCE.md C.3)


def _choose_file(
    version: dict[str, Any],
    *,
    file_id: int | None,
    file_format: str | None,
    precision: str | None,
    size: str | None,
) -> dict[str, Any]:
    """The version's file to fetch: `file_id` exactly, else the best file matching the
    format/precision/size asked for (primary first, model weights before other files)."""
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    vid = version.get("id")

    def describe(f: dict[str, Any]) -> str:
        meta = f.get("metadata") or {}
        details = ", ".join(str(meta[k]) for k in ("format", "fp", "size") if meta.get(k))
        return f"{f.get('id')} {f.get('name')} ({f.get('type')}{', ' + details if details else ''})"

    available = "; ".join(describe(f) for f in files) or "none"
    if file_id is not None:
        chosen = next((f for f in files if f.get("id") == file_id), None)
        if chosen is None:
            raise NotFound(
                f"Version {vid} has no file {file_id}. Its files: {available}.",
                code="civitai_file_not_found",
            )
        return chosen

    def matches(f: dict[str, Any], key: str, wanted: str | None) -> bool:
        value = str((f.get("metadata") or {}).get(key) or "")
        return wanted is None or value.lower() == wanted.lower()

    candidates = [
        f
        for f in files
        if matches(f, "format", file_format)
        and matches(f, "fp", precision)
        and matches(f, "size", size)
    ]
    if not candidates:
        raise NotFound(
            f"Version {vid} has no file matching the format/precision/size asked for. "
            f"Its files: {available}.",
            code="civitai_file_not_found",
        )

    def score(f: dict[str, Any]) -> tuple[int, int, int]:
        meta = f.get("metadata") or {}
        return (
            1 if f.get("primary") else 0,
            1 if f.get("type") in ("Model", "Pruned Model") else 0,
            1 if str(meta.get("format") or "") == "SafeTensor" else 0,
        )

    return max(candidates, key=score)


def _extension_for(file: dict[str, Any]) -> str:
    """The file's extension: its name's, else its format's, else `.safetensors`."""
    name = str(file.get("name") or "")
    fmt = str((file.get("metadata") or {}).get("format") or "").lower()
    return extension_of(name) or _FORMAT_EXTENSIONS.get(fmt, ".safetensors")


def _final_path(server: Server, folder_name: str, name: str) -> Path:
    """Where the file lands on this server; a folder outside models_dir must exist."""
    base = Path(server.models_dir)
    folder = base / folder_name
    # The embeddings folder lies beside models_dir: it must exist, and inside the roots too.
    if not creates_folder(folder_name) and not (
        folder.is_dir() and inside_models_roots(str(folder))
    ):
        raise MobileSDError(
            f"{os.path.normpath(folder)} is not an existing folder MobileSD may write to. "
            "A1111/Forge keep embeddings beside the models folder, not in it; MobileSD never "
            f"creates folders outside {base}.",
            code="embeddings_dir_missing",
        )
    return path_inside(folder, name)
