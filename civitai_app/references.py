"""Civitai references a user pastes: which image or model version a civitai.com URL names.

Only URLs of Civitai itself (civitai.com, civitai.green, or the configured
CIVITAI_BASE_URL's host) are accepted; anything else is a 400 `invalid_civitai_url`
before Civitai is asked anything.
"""

import re
from urllib.parse import parse_qs, urlsplit

from django.conf import settings

from core_app.errors import MobileSDError

_PUBLIC_HOSTS = frozenset({"civitai.com", "www.civitai.com", "civitai.green", "www.civitai.green"})
# Civitai ids are 32-bit signed integers.
_MAX_ID = 2**31 - 1
_IMAGE_PATH = re.compile(r"/images/(\d{1,10})")
_MODEL_PAGE_PATH = re.compile(r"/models/(\d{1,10})(?:/[^/]*)?")
# Paths that name a version directly: a download URL and the API's version URL.
_VERSION_PATHS = (
    re.compile(r"/api/download/models/(\d{1,10})"),
    re.compile(r"/api/v1/model-versions/(\d{1,10})"),
)


def _invalid(message: str) -> MobileSDError:
    return MobileSDError(message, code="invalid_civitai_url")


def _accepted_hosts() -> set[str]:
    hosts = set(_PUBLIC_HOSTS)
    configured = urlsplit(settings.CIVITAI_BASE_URL).netloc.lower()
    if configured:
        hosts.add(configured)
    return hosts


def _split_civitai_url(url: str) -> tuple[str, dict[str, list[str]]]:
    """(path without a trailing slash, query) of a Civitai URL; a 400 for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or parts.netloc.lower() not in _accepted_hosts():
        raise _invalid("Not a Civitai URL: expected https://civitai.com/...")
    return parts.path.rstrip("/"), parse_qs(parts.query)


def image_id_from_url(url: str) -> int:
    """The id in `https://civitai.com/images/<id>`."""
    path, _ = _split_civitai_url(url)
    match = _IMAGE_PATH.fullmatch(path)
    if match is None or not 1 <= int(match.group(1)) <= _MAX_ID:
        raise _invalid("Not a Civitai image URL: expected https://civitai.com/images/<id>.")
    return int(match.group(1))


def model_reference_from_url(url: str) -> tuple[int | None, int | None]:
    """(model id, version id) of a model page (`/models/<id>[/slug][?modelVersionId=<v>]`),
    a download URL (`/api/download/models/<v>`) or an API URL (`/api/v1/model-versions/<v>`).
    A model page without `modelVersionId` names no version: (model id, None)."""
    path, query = _split_civitai_url(url)
    for pattern in _VERSION_PATHS:
        if match := pattern.fullmatch(path):
            return None, int(match.group(1))
    if match := _MODEL_PAGE_PATH.fullmatch(path):
        version = (query.get("modelVersionId") or [""])[0]
        if version and not version.isdigit():
            raise _invalid("modelVersionId in the URL is not a number.")
        return int(match.group(1)), int(version) if version else None
    raise _invalid(
        "Not a Civitai model URL: expected https://civitai.com/models/<id>[?modelVersionId=<id>]."
    )
