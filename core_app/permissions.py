"""Who may call the API."""

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from core_app.models import ApiKey

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
