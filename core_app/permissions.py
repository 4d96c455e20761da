"""Who may call the API."""

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.permissions import BasePermission
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
        return request.method in ("GET", "HEAD", "OPTIONS") or request_is_admin(request)


class AdminScope(BasePermission):
    """Only the admin scope, for reads too (e.g. every user's downloads, metrics)."""

    message = AdminScopeForWrites.message
    code = "admin_scope_required"

    def has_permission(self, request: Request, view: "APIView") -> bool:
        return request_is_admin(request)
