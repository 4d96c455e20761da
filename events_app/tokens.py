"""Short-lived stream tokens: what a browser's EventSource, which cannot send headers, puts
in the query string (`GET /api/v1/events?token=`).

A token is signed with the project's SECRET_KEY (django.core.signing, with a timestamp)
and names the API key it was obtained with (or, from a staff session, its user); it is
good for MOBILESD_EVENTS_TOKEN_SECONDS, and only while that key is active. It authenticates
the stream and nothing else.
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from core_app.models import ApiKey

SALT = "mobilesd.events.token"


def event_token_issue(*, api_key: ApiKey | None, user: Any) -> tuple[str, datetime]:
    """A token for the stream acting as `api_key` (or as `user`'s staff session when there
    is no key), and when it expires."""
    payload = {"k": api_key.pk} if api_key is not None else {"u": user.pk}
    token = signing.dumps(payload, salt=SALT, compress=False)
    lifetime = timedelta(seconds=settings.MOBILESD_EVENTS_TOKEN_SECONDS)
    return token, timezone.now() + lifetime


def _refused(message: str, code: str) -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(message, code=code)


def event_token_check(token: str) -> tuple[Any, ApiKey | None]:
    """(the user, the API key) a token acts as; AuthenticationFailed if it is expired,
    tampered with, or its key (or user) is no longer active."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=settings.MOBILESD_EVENTS_TOKEN_SECONDS)
    except signing.SignatureExpired:
        raise _refused(
            "The stream token has expired: get a new one (POST /api/v1/events/token).",
            "expired_token",
        ) from None
    except signing.BadSignature:
        raise _refused("The stream token is not valid.", "invalid_token") from None
    if not isinstance(payload, dict):
        raise _refused("The stream token is not valid.", "invalid_token")
    if "k" in payload:
        api_key = ApiKey.objects.select_related("user").filter(pk=payload["k"]).first()
        if api_key is None or not api_key.is_active:
            raise _refused("The API key of this stream token has been revoked.", "revoked_api_key")
        if not api_key.user.is_active:
            raise _refused("The user of this API key is deactivated.", "inactive_user")
        return api_key.user, api_key
    user_id = payload.get("u")
    user = (
        get_user_model().objects.filter(pk=user_id, is_active=True).first()
        if isinstance(user_id, int)
        else None
    )
    if user is None or not user.is_staff:
        raise _refused("The stream token's user may no longer sign in.", "invalid_token")
    return user, None


class EventTokenAuthentication(BaseAuthentication):
    """`?token=` of POST /api/v1/events/token, on the stream only."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        token = request.query_params.get("token")
        if not token:
            return None
        return event_token_check(token)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="MobileSD"'
