"""Who may call the API."""

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from core_app.models import ApiKey
from core_app.scopes import request_is_admin

if TYPE_CHECKING:
    from rest_framework.views import APIView


class HasApiKeyOrStaff(BasePermission):
    """An API key, a staff session (browsable API from the admin), or anonymous access
    when MOBILESD_ALLOW_ANONYMOUS is set for a trusted network."""

    message = "An API key is required: send it as 'Authorization: Bearer <key>'."
    code = "authentication_required"

    def has_permission(self, request: Request, view: "APIView") -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        if request.user and request.user.is_authenticated and request.user.is_staff:
            return True
        return bool(settings.MOBILESD_ALLOW_ANONYMOUS)


class AdminScopeForWrites(BasePermission):
    """Reads for every caller let in; writes (POST, PUT, PATCH, DELETE) only with the admin
    scope. For the endpoints of servers, models and settings, which a client key reads."""

    message = "Only an admin key (or a staff session) may change this."
    code = "admin_scope_required"

    def has_permission(self, request: Request, view: "APIView") -> bool:
        return request.method in SAFE_METHODS or request_is_admin(request)


class AdminScope(BasePermission):
    """Only the admin scope, for reads too (e.g. every user's downloads, metrics)."""

    message = AdminScopeForWrites.message
    code = "admin_scope_required"

    def has_permission(self, request: Request, view: "APIView") -> bool:
        return request_is_admin(request)


# The permission classes of an endpoint that any caller reads and only the admin scope
# changes (servers and their models), and of one only the admin scope uses at all (debug).
ADMIN_WRITES = [HasApiKeyOrStaff, AdminScopeForWrites]
ADMIN_ONLY = [HasApiKeyOrStaff, AdminScope]


def needs_admin_scope(permission: object, method: str) -> bool:
    """Whether `permission` refuses a `method` request without the admin scope (for the
    OpenAPI document's 403)."""
    if isinstance(permission, AdminScope):
        return True
    return isinstance(permission, AdminScopeForWrites) and method not in SAFE_METHODS
