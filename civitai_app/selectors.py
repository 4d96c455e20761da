"""Reads for Civitai: downloads, and which cached model an image's resource is."""

import uuid
from typing import Any

from django.db.models import Q, QuerySet

from civitai_app.models import Download
from core_app.errors import NotFound
from servers_app.checkpoints import file_stem
from servers_app.models import CachedModel


def download_get(*, download_id: str | uuid.UUID, owner: Any | None) -> Download:
    """The download, if `owner` (a user; None: anyone) owns it, or a 404 (also for ids that
    are not UUIDs, and for another user's download)."""
    try:
        key = download_id if isinstance(download_id, uuid.UUID) else uuid.UUID(str(download_id))
    except ValueError:
        key = None
    download = download_list(owner=owner).filter(pk=key).first() if key is not None else None
    if download is None:
        raise NotFound(f"Download '{download_id}' not found.", code="download_not_found")
    return download


def download_list(*, owner: Any | None) -> QuerySet[Download]:
    """The downloads of `owner` (a user), or everyone's for None."""
    downloads = Download.objects.select_related("owner").prefetch_related("targets__server")
    return downloads if owner is None else downloads.filter(owner=owner)


def cached_model_for(
    *, kind: str, sha256: str = "", short_hash: str = "", name: str = ""
) -> CachedModel | None:
    """The first cached model matching, in `servers_with_model`'s order: by hash, then by
    file name (stem, any case)."""
    models = CachedModel.objects.filter(kind=kind).select_related("server")
    by_hash = Q()
    if sha256:
        by_hash |= Q(sha256__iexact=sha256)
    if short_hash:
        by_hash |= Q(short_hash__iexact=short_hash) | Q(sha256__istartswith=short_hash)
    if by_hash:
        found = models.filter(by_hash).order_by("server__alias").first()
        if found is not None:
            return found
    if name:
        return models.filter(stem_key=file_stem(name).casefold()).order_by("server__alias").first()
    return None
