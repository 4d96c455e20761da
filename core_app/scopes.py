"""Who a request acts as, and what it may see.

Every request the API lets in acts as a user: an API key's user, a staff session's user, or
(MOBILESD_ALLOW_ANONYMOUS) the local user named by MOBILESD_ANONYMOUS_USER. Its scope is
the key's (`client` or `admin`); a staff session and anonymous mode have the admin scope.
A client sees only its own user's work: `owner_scope` is the owner a query must be limited
to, or None where the request may see everyone's.
"""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.request import Request

from core_app.models import ApiKey


def local_user() -> Any:
    """The user anonymous mode acts as (created, without a usable password, if missing)."""
    user, _ = get_user_model().objects.get_or_create(
        username=settings.MOBILESD_ANONYMOUS_USER, defaults={"password": "!"}
    )
    return user


def request_user(request: Request) -> Any:
    """The user the request acts as (only for requests the permission classes let in)."""
    if isinstance(request.auth, ApiKey):
        return request.auth.user
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    return local_user()


def request_api_key(request: Request) -> ApiKey | None:
    """The API key the request came with (None: a staff session or anonymous mode)."""
    return request.auth if isinstance(request.auth, ApiKey) else None


def request_is_admin(request: Request) -> bool:
    """Whether the request has the admin scope: an admin key, a staff session, or anonymous
    mode (a trusted network with no keys at all)."""
    if isinstance(request.auth, ApiKey):
        return request.auth.is_admin
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return bool(user.is_staff)
    return bool(settings.MOBILESD_ALLOW_ANONYMOUS)


def owner_scope(request: Request) -> Any:
    """The owner whose work alone the request may see, or None for an admin (everyone's)."""
    return None if request_is_admin(request) else request_user(request)
