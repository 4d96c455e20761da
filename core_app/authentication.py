"""API key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from core_app.models import ApiKey, hash_key
from core_app.throttling import TooManyFailedAttempts, client_address, failed_api_keys

# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AddressLockedOut(exceptions.APIException):
    """TooManyFailedAttempts as DRF's authentication needs it: an APIException, so the
    request is marked unauthenticated (the browsable API reads request.user afterwards),
    with `wait` for the Retry-After header."""

    status_code = 429
    default_code = "too_many_failed_attempts"

    def __init__(self, refused: TooManyFailedAttempts) -> None:
        super().__init__(refused.message, code=refused.code)
        self.wait = refused.retry_after


def key_from_request(request: Request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in {"bearer", "token", "api-key"} and value.strip():
        return value.strip()
    api_key = request.META.get("HTTP_X_API_KEY", "").strip()
    return api_key or None


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates a request by its API key; `request.auth` is the ApiKey row.

    A key that is sent but unknown or revoked is an error even where anonymous access is
    allowed, so a misconfigured phone finds out at once. Such failures are counted per
    client address: past MOBILESD_FAILED_ATTEMPTS_LIMIT in a window, the address gets a
    429 `too_many_failed_attempts` without its key being looked at.
    """

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        """(the key's user, the key), or None when no key is sent."""
        raw_key = key_from_request(request)
        if raw_key is None:
            return None
        address = client_address(request)
        # Before the lookup: an address over the limit learns nothing, not even whether
        # this guess was right.
        try:
            failed_api_keys.check(address)
        except TooManyFailedAttempts as refused:
            raise AddressLockedOut(refused) from None
        try:  # the hash is unique: get() reads it without an ORDER BY
            api_key = ApiKey.objects.select_related("user").get(key_hash=hash_key(raw_key))
        except ApiKey.DoesNotExist:
            failed_api_keys.record(address)
            raise exceptions.AuthenticationFailed(
                "Invalid API key.", code="invalid_api_key"
            ) from None
        if not api_key.is_active:
            failed_api_keys.record(address)
            raise exceptions.AuthenticationFailed(
                "This API key has been revoked.", code="revoked_api_key"
            )
        if not api_key.user.is_active:
            failed_api_keys.record(address)
            raise exceptions.AuthenticationFailed(
                "The user of this API key is deactivated.", code="inactive_user"
            )
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="MobileSD"'
