"""Writes for API keys."""

from django.db.models import QuerySet
from django.utils import timezone

from core_app.models import ApiKey, generate_raw_key, hash_key


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the raw key, which is never stored or shown again."""
    api_key = ApiKey(name=name)
    return api_key, api_key_issue(api_key=api_key)


def api_key_issue(*, api_key: ApiKey) -> str:
    """Give a new, unsaved key row its secret and save it; returns the raw key (the admin's
    add form fills in the rest of the row)."""
    raw_key, api_key.prefix = generate_raw_key()
    api_key.key_hash = hash_key(raw_key)
    api_key.save()
    return raw_key


def api_key_revoke(*, keys: QuerySet[ApiKey]) -> int:
    """Revoke every still-active key of the queryset; returns how many were revoked."""
    return keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
