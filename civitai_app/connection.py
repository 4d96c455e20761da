"""How MobileSD reaches Civitai: the client configured from settings, and a failed call as
the API's error. The one place either is made."""

from typing import Any

from django.conf import settings

from civitai_app.models import CivitaiSettings
from core_app.errors import MobileSDError
from integrations.civitai.client import CivitaiClient, CivitaiError


def civitai_client(**overrides: Any) -> CivitaiClient:
    """A client configured from settings (the admin's Civitai settings win); `overrides`
    are CivitaiClient arguments, e.g. fewer `max_retries` for a lookup a user waits on."""
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
