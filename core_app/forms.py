"""The admin's login form, with the limit on failed logins per client address."""

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from core_app.throttling import TooManyFailedAttempts, client_address, failed_admin_logins


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form; past MOBILESD_FAILED_ATTEMPTS_LIMIT failed logins from an
    address within the window, it refuses that address without checking the password, and
    says so. `refused` is set then, so the view can answer 429."""

    refused: TooManyFailedAttempts | None = None

    def clean(self) -> dict[str, Any]:
        address = client_address(self.request) if self.request is not None else "unknown"
        try:
            failed_admin_logins.check(address)
        except TooManyFailedAttempts as exc:
            self.refused = exc
            raise ValidationError(exc.message, code=exc.code) from exc
        try:
            return super().clean()
        except ValidationError:
            if self.cleaned_data.get("username") is not None:
                failed_admin_logins.record(address)
            raise
