"""Image info: the recipe of an image, a Civitai image (by id or URL) or an uploaded file,
with each resource it used looked up on Civitai and found on our servers.

The answer is the same shape for both sources. Looking resources up is best-effort: a
Civitai that fails or rate-limits costs warnings, never the answer; only reading the
Civitai image itself can fail the request.
"""

import logging
import os
from typing import Any

from django.conf import settings

from civitai_app.connection import civitai_api_error, civitai_client
from civitai_app.extension_recipes import extension_warnings
from civitai_app.infotext import parse_infotext
from civitai_app.recipes import (
    Resource,
    dedupe,
    generation_params_for_servers,
    resources_from,
    usable_hash,
    values_from_meta,
)
from civitai_app.references import image_id_from_url
from civitai_app.selectors import cached_model_for
from core_app.errors import MobileSDError, NotFound
from integrations.civitai.client import (
    CivitaiClient,
    CivitaiError,
    CivitaiNotFound,
    CivitaiRateLimited,
)
from integrations.forge.image_text import UnreadableImage, read_image_text
from servers_app.checkpoints import MODEL_EXTENSIONS
from servers_app.selectors import model_kind_for_civitai, servers_with_model

logger = logging.getLogger(__name__)

# Resources looked up on Civitai per image (each is one request).
MAX_RESOURCE_LOOKUPS = 12
# A PNG's other text chunks are answered, each cut to this many characters.
MAX_OTHER_TEXT_CHARS = 10_000


def image_info_from_civitai(
    *, image_id: int | None = None, url: str | None = None
) -> dict[str, Any]:
    """The recipe of a Civitai image (`GET /api/v1/images?imageId=`, with its meta), named
    by its id or its page URL (`https://civitai.com/images/<id>`)."""
    if image_id is None:
        if url is None:
            raise MobileSDError("Give either image_id or url.", code="invalid_reference")
        image_id = image_id_from_url(url)
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
    except UnreadableImage as exc:
        raise MobileSDError(str(exc), code="invalid_image") from exc
    image = {"format": found.format, "width": found.width, "height": found.height}
    other = {key: text[:MAX_OTHER_TEXT_CHARS] for key, text in found.other_texts.items()}
    raw: dict[str, Any]
    if not found.infotext.strip():
        raw = {"infotext": None, "parameters": None, "other": other}
        return _answer(source="file", image=image, values=None, meta=None, raw=raw, client=None)
    values = parse_infotext(found.infotext)
    raw = {"infotext": found.infotext, "parameters": values, "other": other}
    # One retry at most: a user waits on this answer, and the lookups are only a bonus.
    with civitai_client(max_retries=min(settings.CIVITAI_MAX_RETRIES, 1)) as client:
        return _answer(source="file", image=image, values=values, meta=None, raw=raw, client=client)


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
    warnings = _look_up_on_civitai(client, resources) if client is not None else []
    resources = dedupe(resources)
    for resource in resources:
        _find_on_our_servers(resource)
    params = generation_params_for_servers(values, resources)
    return {
        "source": source,
        "image": image,
        "has_metadata": True,
        "message": "Generation data found.",
        "generation_params": params,
        "resources": [_resource_answer(r) for r in resources],
        "raw_metadata": raw,
        "warnings": warnings + extension_warnings(params),
    }


# --- on Civitai -------------------------------------------------------------------------------


def _look_up_on_civitai(client: CivitaiClient, resources: list[Resource]) -> list[str]:
    """Fill in what Civitai knows of each resource (by version id, else by hash); returns
    the warnings. A rate limit stops the lookups; any other failure skips one resource."""
    warnings: list[str] = []
    for resource in resources[:MAX_RESOURCE_LOOKUPS]:
        digest = usable_hash(resource.hash)
        try:
            version = _civitai_version_of(client, resource, digest)
        except CivitaiRateLimited as exc:
            warnings.append(f"Stopped looking resources up on Civitai: {exc.message}")
            break
        except CivitaiError as exc:
            warnings.append(f"Could not look up {resource.name or resource.type}: {exc.message}")
            continue
        if version:
            _fill_from_version(resource, version, digest)
    return warnings


def _civitai_version_of(
    client: CivitaiClient, resource: Resource, digest: str
) -> dict[str, Any] | None:
    """The Civitai model version a resource is, or None when Civitai does not know it."""
    if resource.model_version_id:
        try:
            return client.model_version(resource.model_version_id)
        except CivitaiNotFound:
            return None
    if not digest:
        return None
    # A 12-hex LoRA hash is AutoV3 (A1111) or, from Forge, SHA-256[:12]: its first 10 are
    # then the AutoV2 (REFERENCE.md C.7).
    for candidate in [digest] + ([digest[:10]] if len(digest) == 12 else []):
        version = client.model_version_by_hash(candidate)
        if version is not None:
            return version
    return None


def _file_matching(version: dict[str, Any], digest: str) -> dict[str, Any]:
    """The version's file with this hash, else its primary file, else its first."""
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    wanted = digest.upper()
    for candidate in files:
        hashes = candidate.get("hashes") or {}
        if wanted and any(str(v).upper() == wanted for v in hashes.values()):
            return candidate
    return next((f for f in files if f.get("primary")), files[0] if files else {})


def _fill_from_version(resource: Resource, version: dict[str, Any], digest: str) -> None:
    model = version.get("model") or {}
    resource.model_version_id = version.get("id") or resource.model_version_id
    resource.model_id = version.get("modelId") or resource.model_id
    resource.model_name = str(model.get("name") or resource.model_name)
    resource.version_name = str(version.get("name") or resource.version_name)
    if model.get("type"):
        resource.type = str(model["type"])
    chosen = _file_matching(version, digest)
    resource.file_name = str(chosen.get("name") or "")
    resource.hashes = {str(k): str(v) for k, v in (chosen.get("hashes") or {}).items()}
    if not resource.name and resource.file_name:
        resource.name = os.path.splitext(resource.file_name)[0]


# --- on our servers ---------------------------------------------------------------------------


def _name_for_matching(name: str) -> str:
    """A name for stem matching: a bare model name gets an extension so that a dot in it
    (`sd_xl_base_1.0`) is not taken for one."""
    return name if name.lower().endswith(MODEL_EXTENSIONS) else f"{name}.safetensors"


def _find_on_our_servers(resource: Resource) -> None:
    """Which of our servers have it (by hash, then by name), and its name there."""
    kind = model_kind_for_civitai(resource.type)
    if kind is None:
        return
    digest = usable_hash(resource.hash)
    sha256 = (resource.hashes.get("SHA256") or (digest if len(digest) == 64 else "")).lower()
    short = digest if len(digest) in (10, 12) else resource.hashes.get("AutoV2", "").lower()
    for name in dict.fromkeys(n for n in (resource.name, resource.file_name) if n):
        matching = _name_for_matching(name)
        resource.servers = servers_with_model(
            kind=kind, sha256=sha256, short_hash=short, name=matching
        )
        if resource.servers:
            cached = cached_model_for(kind=kind, sha256=sha256, short_hash=short, name=matching)
            if cached is not None:
                resource.server_name = cached.name
                resource.server_path = cached.relative_path.replace("\\", "/")
            return
    if sha256 or short:
        resource.servers = servers_with_model(kind=kind, sha256=sha256, short_hash=short)


def _resource_answer(resource: Resource) -> dict[str, Any]:
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
