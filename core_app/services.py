"""Writes for API keys."""

from django.db.models import QuerySet
from django.utils import timezone

from core_app.models import ApiKey, generate_raw_key, hash_key


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the raw key, which is never stored or shown again."""
    raw_key, prefix = generate_raw_key()
    api_key = ApiKey.objects.create(name=name, prefix=prefix, key_hash=hash_key(raw_key))
    return api_key, raw_key


def api_key_revoke(*, keys: QuerySet[ApiKey]) -> int:
    """Revoke every still-active key of the queryset; returns how many were revoked."""
    return keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
