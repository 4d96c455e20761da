"""Civitai services: image recipes (from Civitai or an uploaded file) and download requests
with their state changes (cancel, retry, delete). The worker side of downloads is
civitai_app.downloads."""

import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from civitai_app.downloads import lease_ended
from civitai_app.folders import creates_folder, type_folder
from civitai_app.imagefile import NotAnImage, read_image_text
from civitai_app.infotext import parse_infotext
from civitai_app.models import (
    ACTIVE_DOWNLOAD_STATUSES,
    FINISHED_DOWNLOAD_STATUSES,
    CivitaiSettings,
    Download,
    DownloadStatus,
    DownloadTarget,
    TargetState,
)
from civitai_app.names import (
    InvalidFileName,
    check_user_file_name,
    extension_of,
    path_inside,
    sanitize_remote_name,
)
from civitai_app.recipes import (
    Resource,
    dedupe,
    generation_params_from,
    lora_tags,
    rename_lora_tags,
    resources_from,
    type_group,
    usable_hash,
    values_from_meta,
)
from civitai_app.selectors import cached_model_for, download_get
from core_app.errors import Conflict, MobileSDError, NotFound
from integrations.civitai.client import (
    CivitaiClient,
    CivitaiError,
    CivitaiNotFound,
    CivitaiRateLimited,
)
from servers_app.models import Server
from servers_app.selectors import model_kind_for_civitai, server_not_found, servers_with_model

logger = logging.getLogger(__name__)

# Resources looked up on Civitai per image (each is one request).
MAX_RESOURCE_LOOKUPS = 12
MAX_TARGETS = 20
_MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".gguf", ".pt", ".bin", ".pth")
# Extensions for files whose Civitai name has none, by `metadata.format`.
_FORMAT_EXTENSIONS = {"safetensor": ".safetensors", "pickletensor": ".ckpt", "gguf": ".gguf"}


class BadRequest(MobileSDError):
    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, status_code=status.HTTP_400_BAD_REQUEST)


def civitai_client(**overrides: Any) -> CivitaiClient:
    """A client configured from settings (the admin's Civitai settings win)."""
    options: dict[str, Any] = {
        "base_url": settings.CIVITAI_BASE_URL,
        "api_key": CivitaiSettings.current().effective_api_key,
        "connect_timeout": settings.CIVITAI_CONNECT_TIMEOUT,
        "read_timeout": settings.CIVITAI_READ_TIMEOUT,
        "download_read_timeout": settings.MOBILESD_DOWNLOAD_READ_TIMEOUT,
        "max_retries": settings.CIVITAI_MAX_RETRIES,
        "backoff_seconds": settings.CIVITAI_BACKOFF_SECONDS,
        "backoff_max_seconds": settings.CIVITAI_BACKOFF_MAX_SECONDS,
    }
    options.update(overrides)
    return CivitaiClient(**options)


def civitai_api_error(exc: CivitaiError) -> MobileSDError:
    """The API error for a failed Civitai call: its own status and stable code."""
    return MobileSDError(exc.message, code=exc.code, status_code=exc.http_status)


# --- references: ids and URLs -----------------------------------------------------------------


def _civitai_hosts() -> set[str]:
    hosts = {"civitai.com", "www.civitai.com", "civitai.green", "www.civitai.green"}
    configured = urlsplit(settings.CIVITAI_BASE_URL).netloc.lower()
    if configured:
        hosts.add(configured)
    return hosts


def _civitai_url(url: str) -> tuple[str, dict[str, list[str]]]:
    """(path, query) of a Civitai URL; a 400 for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or parts.netloc.lower() not in _civitai_hosts():
        raise BadRequest(
            "Not a Civitai URL: expected https://civitai.com/...", code="invalid_civitai_url"
        )
    return parts.path.rstrip("/"), parse_qs(parts.query)


def image_id_from_url(url: str) -> int:
    """The id in `https://civitai.com/images/<id>`."""
    path, _ = _civitai_url(url)
    match = re.fullmatch(r"/images/(\d{1,10})", path)
    if match is None or not 1 <= int(match.group(1)) <= 2**31 - 1:
        raise BadRequest(
            "Not a Civitai image URL: expected https://civitai.com/images/<id>.",
            code="invalid_civitai_url",
        )
    return int(match.group(1))


def model_reference_from_url(url: str) -> tuple[int | None, int | None]:
    """(model id, version id) of a model page (`/models/<id>[/slug][?modelVersionId=<v>]`),
    a download URL (`/api/download/models/<v>`) or an API URL (`/api/v1/model-versions/<v>`)."""
    path, query = _civitai_url(url)
    for pattern in (r"/api/download/models/(\d{1,10})", r"/api/v1/model-versions/(\d{1,10})"):
        if match := re.fullmatch(pattern, path):
            return None, int(match.group(1))
    if match := re.fullmatch(r"/models/(\d{1,10})(?:/[^/]*)?", path):
        version = (query.get("modelVersionId") or [""])[0]
        if version and not version.isdigit():
            raise BadRequest(
                "modelVersionId in the URL is not a number.", code="invalid_civitai_url"
            )
        return int(match.group(1)), int(version) if version else None
    raise BadRequest(
        "Not a Civitai model URL: expected https://civitai.com/models/<id>[?modelVersionId=<id>].",
        code="invalid_civitai_url",
    )


# --- image recipes ----------------------------------------------------------------------------


def _pick_file(version: dict[str, Any], digest: str) -> dict[str, Any]:
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    wanted = digest.upper()
    for candidate in files:
        hashes = candidate.get("hashes") or {}
        if wanted and any(str(v).upper() == wanted for v in hashes.values()):
            return candidate
    return next((f for f in files if f.get("primary")), files[0] if files else {})


def _fill(resource: Resource, version: dict[str, Any], digest: str) -> None:
    model = version.get("model") or {}
    resource.model_version_id = version.get("id") or resource.model_version_id
    resource.model_id = version.get("modelId") or resource.model_id
    resource.model_name = str(model.get("name") or resource.model_name)
    resource.version_name = str(version.get("name") or resource.version_name)
    if model.get("type"):
        resource.type = str(model["type"])
    chosen = _pick_file(version, digest)
    resource.file_name = str(chosen.get("name") or "")
    resource.hashes = {str(k): str(v) for k, v in (chosen.get("hashes") or {}).items()}
    if not resource.name and resource.file_name:
        resource.name = os.path.splitext(resource.file_name)[0]


def _look_up(client: CivitaiClient, resources: list[Resource]) -> list[str]:
    """Fill in what Civitai knows of each resource (by version id, else by hash). Lookups
    are best-effort: a failure becomes a warning, never an error of the whole answer."""
    warnings: list[str] = []
    for resource in resources[:MAX_RESOURCE_LOOKUPS]:
        digest = usable_hash(resource.hash)
        try:
            version: dict[str, Any] | None = None
            if resource.model_version_id:
                try:
                    version = client.model_version(resource.model_version_id)
                except CivitaiNotFound:
                    version = None
            elif digest:
                # A 12-hex LoRA hash is AutoV3 (A1111) or, from Forge, SHA-256[:12]: its
                # first 10 are then the AutoV2 (REFERENCE.md C.7).
                for candidate in [digest] + ([digest[:10]] if len(digest) == 12 else []):
                    version = client.model_version_by_hash(candidate)
                    if version is not None:
                        break
        except CivitaiRateLimited as exc:
            warnings.append(f"Stopped looking resources up on Civitai: {exc.message}")
            break
        except CivitaiError as exc:
            warnings.append(f"Could not look up {resource.name or resource.type}: {exc.message}")
            continue
        if version:
            _fill(resource, version, digest)
    return warnings


def _match_name(name: str) -> str:
    """A name for stem matching: a bare model name gets an extension so that a dot in it
    (`sd_xl_base_1.0`) is not taken for one."""
    return name if name.lower().endswith(_MODEL_EXTENSIONS) else f"{name}.safetensors"


def _locate(resource: Resource) -> None:
    """Which of our servers have it (by hash, then by name), and its name there."""
    kind = model_kind_for_civitai(resource.type)
    if kind is None:
        return
    digest = usable_hash(resource.hash)
    sha256 = (resource.hashes.get("SHA256") or (digest if len(digest) == 64 else "")).lower()
    short = digest if len(digest) in (10, 12) else resource.hashes.get("AutoV2", "").lower()
    for name in dict.fromkeys(n for n in (resource.name, resource.file_name) if n):
        resource.servers = servers_with_model(
            kind=kind, sha256=sha256, short_hash=short, name=_match_name(name)
        )
        if resource.servers:
            cached = cached_model_for(
                kind=kind, sha256=sha256, short_hash=short, name=_match_name(name)
            )
            if cached is not None:
                resource.server_name = cached.name
                resource.server_path = cached.relative_path.replace("\\", "/")
            return
    if sha256 or short:
        resource.servers = servers_with_model(kind=kind, sha256=sha256, short_hash=short)


def _resource_data(resource: Resource) -> dict[str, Any]:
    return {
        "type": resource.type,
        "name": resource.name,
        "weight": resource.weight,
        "hash": resource.hash or None,
        "model_id": resource.model_id,
        "model_version_id": resource.model_version_id,
        "model_name": resource.model_name or None,
        "version_name": resource.version_name or None,
        "file_name": resource.file_name or None,
        "hashes": resource.hashes,
        "servers": resource.servers,
    }


def _recipe(values: dict[str, str], resources: list[Resource]) -> dict[str, Any]:
    """generation_params using our servers' names for the checkpoint and LoRAs."""
    checkpoint = next((r for r in resources if r.type == "Checkpoint" and r.server_path), None)
    loras = [r for r in resources if type_group(r.type) == "LORA"]
    renames = {
        r.name: r.server_name for r in loras if r.name and r.server_name and r.name != r.server_name
    }
    values = dict(values)
    values["Prompt"] = rename_lora_tags(values.get("Prompt", ""), renames)
    tagged = {name.casefold() for name in lora_tags(values["Prompt"])}
    extra = [
        {"name": r.server_name or r.name, "weight": r.weight}
        for r in loras
        if r.weight is not None
        and (r.server_name or r.name)
        and (r.server_name or r.name).casefold() not in tagged
    ]
    return generation_params_from(
        values,
        checkpoint_name=checkpoint.server_path if checkpoint else None,
        loras=extra or None,
    )


def _answer(
    *,
    source: str,
    image: dict[str, Any],
    values: dict[str, str] | None,
    meta: dict[str, Any] | None,
    raw: Any,
    client: CivitaiClient | None,
) -> dict[str, Any]:
    if values is None:
        return {
            "source": source,
            "image": image,
            "has_metadata": False,
            "message": "This image carries no generation data: it was made without it, or "
            "its author chose to hide it.",
            "generation_params": None,
            "resources": [],
            "raw_metadata": raw,
            "warnings": [],
        }
    resources = resources_from(values, meta)
    warnings = _look_up(client, resources) if client is not None else []
    resources = dedupe(resources)
    for resource in resources:
        _locate(resource)
    return {
        "source": source,
        "image": image,
        "has_metadata": True,
        "message": "Generation data found.",
        "generation_params": _recipe(values, resources),
        "resources": [_resource_data(r) for r in resources],
        "raw_metadata": raw,
        "warnings": warnings,
    }


def image_info_from_civitai(*, image_id: int) -> dict[str, Any]:
    """The recipe of a Civitai image (`GET /api/v1/images?imageId=`, with its meta)."""
    with civitai_client() as client:
        try:
            item = client.image(image_id)
        except CivitaiError as exc:
            raise civitai_api_error(exc) from exc
        if item is None:
            raise NotFound(
                f"Civitai shows no image {image_id} (it may not exist, or be private).",
                code="civitai_image_not_found",
            )
        image = {
            "id": item.get("id"),
            "url": item.get("url"),
            "width": item.get("width"),
            "height": item.get("height"),
            "nsfw_level": item.get("nsfwLevel"),
            "username": item.get("username"),
            "base_model": item.get("baseModel"),
            "post_id": item.get("postId"),
            "model_version_ids": item.get("modelVersionIds") or [],
            "format": None,
        }
        meta = item.get("meta") if isinstance(item.get("meta"), dict) and item.get("meta") else None
        values = values_from_meta(meta) if meta else None
        return _answer(
            source="civitai", image=image, values=values, meta=meta, raw=meta, client=client
        )


def image_info_from_file(*, data: bytes) -> dict[str, Any]:
    """The recipe in an uploaded PNG/JPEG/WebP (its infotext), resources looked up on
    Civitai by hash when it answers."""
    try:
        found = read_image_text(data)
    except NotAnImage as exc:
        raise BadRequest(str(exc), code="invalid_image") from exc
    image = {"format": found.format, "width": found.width, "height": found.height}
    raw: dict[str, Any]
    if found.infotext is None:
        raw = {"infotext": None, "parameters": None, "other": found.other}
        return _answer(source="file", image=image, values=None, meta=None, raw=raw, client=None)
    values = parse_infotext(found.infotext)
    raw = {"infotext": found.infotext, "parameters": values, "other": found.other}
    with civitai_client(max_retries=min(settings.CIVITAI_MAX_RETRIES, 1)) as client:
        return _answer(source="file", image=image, values=values, meta=None, raw=raw, client=client)


# --- download requests --------------------------------------------------------------------------


def _target_servers(aliases: list[str]) -> list[Server]:
    wanted = list(dict.fromkeys(a.strip() for a in aliases if a.strip()))
    if not wanted:
        raise BadRequest("Name at least one target server.", code="no_target_server")
    if len(wanted) > MAX_TARGETS:
        raise BadRequest(f"At most {MAX_TARGETS} target servers.", code="too_many_targets")
    found = {s.alias: s for s in Server.objects.filter(alias__in=wanted)}
    servers = []
    for alias in wanted:
        server = found.get(alias)
        if server is None:
            raise server_not_found(alias)
        models_dir = server.models_dir.strip()
        if not models_dir:
            raise BadRequest(
                f"Server '{alias}' has no models folder set (models_dir): set where its "
                "models folder is reachable from MobileSD, e.g. /mnt/gpu-box/models.",
                code="models_dir_not_set",
            )
        if not os.path.isabs(models_dir) or not os.path.isdir(models_dir):
            raise BadRequest(
                f"The models folder of server '{alias}' ({models_dir}) does not exist on the "
                "MobileSD host or is not a folder (is it mounted?).",
                code="models_dir_missing",
            )
        servers.append(server)
    return servers


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


def _extension(source: dict[str, Any]) -> str:
    name = str(source.get("name") or "")
    fmt = str((source.get("metadata") or {}).get("format") or "").lower()
    return extension_of(name) or _FORMAT_EXTENSIONS.get(fmt, ".safetensors")


@dataclass(frozen=True)
class Planned:
    """What a download request resolved to, before any row is written."""

    version_id: int
    version: dict[str, Any]
    file: dict[str, Any]
    model_type: str
    folder: str
    file_name: str
    sha256: str
    paths: dict[int, Path]


def _resolve_version(client: CivitaiClient, model_id: int | None, version_id: int | None) -> int:
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


def _download_url(version_id: int, chosen: dict[str, Any]) -> str:
    """Civitai's URL for this exact file. Its own `downloadUrl` is used when it points at
    the configured Civitai (it carries the right query); otherwise one is built with
    `fileId`, so the API key never goes to another host."""
    base = settings.CIVITAI_BASE_URL.rstrip("/")
    published = str(chosen.get("downloadUrl") or "")
    if published and urlsplit(published).netloc.lower() == urlsplit(base).netloc.lower():
        return published
    return f"{base}/api/download/models/{version_id}?fileId={chosen.get('id')}"


def _plan(
    *,
    servers: list[Server],
    model_id: int | None,
    version_id: int | None,
    file_id: int | None,
    file_format: str | None,
    precision: str | None,
    size: str | None,
    file_name: str | None,
) -> Planned:
    with civitai_client() as client:
        try:
            vid = _resolve_version(client, model_id, version_id)
            version = client.model_version(vid)
        except CivitaiError as exc:
            raise civitai_api_error(exc) from exc
    mode = (version.get("model") or {}).get("mode")
    if mode in ("Archived", "TakenDown"):
        raise MobileSDError(
            f"Model version {vid} is {mode.lower().replace('takendown', 'taken down')} on "
            "Civitai and can no longer be downloaded.",
            code="civitai_archived",
            status_code=status.HTTP_410_GONE,
        )
    chosen = _choose_file(
        version, file_id=file_id, file_format=file_format, precision=precision, size=size
    )
    model_type = str((version.get("model") or {}).get("type") or "")
    where = type_folder(model_type, str(chosen.get("type") or ""))
    if where is None:
        raise BadRequest(
            f"A {model_type or 'model'} file of type {chosen.get('type')} has no place on an "
            "A1111/Forge server; MobileSD downloads checkpoints, LoRAs (LoCon, DoRA), "
            "embeddings, VAEs, text encoders, hypernetworks, ControlNets and upscalers.",
            code="unsupported_model_type",
        )
    sha256 = str((chosen.get("hashes") or {}).get("SHA256") or "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise Conflict(
            "Civitai has not published a SHA256 for this file yet (it may still be being "
            "scanned), so it cannot be verified; try again later.",
            code="civitai_hash_unavailable",
        )
    extension = _extension(chosen)
    try:
        name = (
            check_user_file_name(file_name, extension=extension)
            if file_name is not None
            else sanitize_remote_name(
                str(chosen.get("name") or ""), fallback=f"civitai-{vid}", extension=extension
            )
        )
        paths = {}
        for server in servers:
            base = Path(server.models_dir)
            folder = base / where.folder
            if not creates_folder(where.folder) and not folder.is_dir():
                raise BadRequest(
                    f"{folder.resolve()} does not exist on the MobileSD host. A1111/Forge keep "
                    f"embeddings beside the models folder, not in it; MobileSD never creates "
                    f"folders outside {base}.",
                    code="embeddings_dir_missing",
                )
            paths[server.pk] = path_inside(folder, name)
    except InvalidFileName as exc:
        raise BadRequest(f"Invalid file_name: {exc}", code="invalid_file_name") from exc
    return Planned(vid, version, chosen, model_type, where.folder, name, sha256, paths)


def _already_done(planned: Planned) -> tuple[Download | None, str]:
    """A download that makes this request redundant: one in progress for the same file and
    folders, or a completed one whose verified files are all still there."""
    wanted = {str(path) for path in planned.paths.values()}
    file_id = int(planned.file["id"])
    candidates = (
        Download.objects.filter(file_id=file_id)
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
        if download.sha256 != planned.sha256:
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
    server_aliases: list[str],
    model_version_id: int | None = None,
    url: str | None = None,
    file_id: int | None = None,
    file_format: str | None = None,
    precision: str | None = None,
    size: str | None = None,
    file_name: str | None = None,
) -> tuple[Download, bool, str]:
    """Queue the download of a Civitai file to the servers' model folders; returns
    (download, created, message).

    Everything is checked before a row is written: the servers (known, with a models
    folder that exists), the version and file on Civitai, the type's folder, the file name
    (refused if it could leave that folder), the published SHA256. A request for a file
    that is already being fetched, or already present and verified, returns that download.
    """
    if (model_version_id is None) == (url is None):
        raise BadRequest("Give either model_version_id or url.", code="invalid_reference")
    model_id, version_id = (
        (None, model_version_id) if url is None else model_reference_from_url(url)
    )
    servers = _target_servers(server_aliases)
    if file_name is not None:
        try:
            check_user_file_name(file_name, extension="")
        except InvalidFileName as exc:
            raise BadRequest(f"Invalid file_name: {exc}", code="invalid_file_name") from exc
    planned = _plan(
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
        existing, message = _already_done(planned)
        if existing is not None:
            return existing, False, message
        model = planned.version.get("model") or {}
        size_kb = planned.file.get("sizeKB")
        download = Download.objects.create(
            model_version_id=planned.version_id,
            model_id=planned.version.get("modelId"),
            model_name=str(model.get("name") or "")[:300],
            version_name=str(planned.version.get("name") or "")[:300],
            model_type=planned.model_type,
            file_type=str(planned.file.get("type") or ""),
            base_model=str(planned.version.get("baseModel") or "")[:100],
            file_id=int(planned.file["id"]),
            source_file_name=str(planned.file.get("name") or "")[:500],
            file_name=planned.file_name,
            folder=planned.folder,
            download_url=_download_url(planned.version_id, planned.file),
            sha256=planned.sha256,
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
            version_info=planned.version,
        )
        DownloadTarget.objects.bulk_create(
            DownloadTarget(download=download, server=server, path=str(planned.paths[server.pk]))
            for server in servers
        )
        transaction.on_commit(_nudge)
    logger.info(
        "Download %s queued: version %s file %s -> %s",
        download.pk,
        planned.version_id,
        planned.file_name,
        ", ".join(s.alias for s in servers),
    )
    return download, True, "Download queued."


def _nudge() -> None:
    from civitai_app.tasks import nudge_downloads

    nudge_downloads()


def _remove_part(path: str) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("Could not remove temporary file %s: %s", path, exc)


def download_cancel(*, download_id: str | uuid.UUID) -> Download:
    """Cancel a pending or running download. A running one stops at its worker's next
    heartbeat, which removes the partial file; a pending one's is removed here."""
    download = download_get(download_id=download_id)
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
            transaction.on_commit(lambda: _remove_part(part))
            Download.objects.filter(pk=row.pk).update(part_path="", bytes_done=0)
    logger.info("Download %s cancelled", download.pk)
    return download_get(download_id=download.pk)


def download_retry(*, download_id: str | uuid.UUID) -> Download:
    """Queue a failed or cancelled download again (it resumes from its partial file)."""
    download = download_get(download_id=download_id)
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
        transaction.on_commit(_nudge)
    return download_get(download_id=download.pk)


def download_delete(*, download_id: str | uuid.UUID) -> str:
    """Delete a download's record (cancelling it first if it runs) and its partial file.
    Model files already placed stay where they are."""
    download = download_get(download_id=download_id)
    if download.status in ACTIVE_DOWNLOAD_STATUSES:
        try:
            download = download_cancel(download_id=download.pk)
        except Conflict:
            download = download_get(download_id=download.pk)
    part = download.part_path
    Download.objects.filter(pk=download.pk).delete()
    # A worker still writing it finds the row gone at its next heartbeat and stops; the
    # file is unlinked either way.
    _remove_part(part)
    return str(download.pk)
