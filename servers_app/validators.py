"""Validation of server addresses and aliases."""

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

# "any" asks MobileSD to choose a server for a job, so no server may be called that.
RESERVED_ALIASES = frozenset({"any"})


def validate_api_url(value: str) -> None:
    """An http(s) URL with a host. LAN names without a dot (http://gpu-box:7860) are fine."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"Enter a valid URL: {exc}.", code="invalid_url") from exc
    if parts.scheme not in {"http", "https"}:
        raise ValidationError("The URL must start with http:// or https://.", code="invalid_url")
    if not parts.hostname or any(c.isspace() for c in value):
        raise ValidationError("Enter a valid URL with a host name.", code="invalid_url")
    if port == 0:
        raise ValidationError("Enter a valid port.", code="invalid_url")
    if parts.query or parts.fragment:
        raise ValidationError("The URL must not have a query or fragment.", code="invalid_url")


def validate_alias(value: str) -> None:
    if value != value.strip() or not value:
        raise ValidationError("An alias may not be blank or start or end with spaces.")
    if "/" in value or "\\" in value:
        raise ValidationError("An alias may not contain '/' or '\\'.")
    if value.lower() in RESERVED_ALIASES:
        raise ValidationError(f"'{value}' is reserved.")
