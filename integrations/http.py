"""What every outgoing HTTP call carries, and what every answer is read for, shared by the
Civitai and generation-server clients: the User-Agent (defined here only) and the
`Retry-After` of an answer.

No Django imports: the clients importing this are unit-tested without Django set up.
"""

from importlib import metadata

import requests

__all__ = ["USER_AGENT", "retry_after_seconds"]


def _package_version() -> str:
    try:
        return metadata.version("mobilesd")
    except metadata.PackageNotFoundError:
        return "0"


# A non-browser User-Agent: Civitai answers browsers with text and redirects instead of JSON
# errors (REFERENCE.md C.1).
USER_AGENT = f"MobileSD/{_package_version()} python-requests/{requests.__version__}"


def retry_after_seconds(response: requests.Response) -> float | None:
    """The seconds an answer's `Retry-After` asks to wait (never negative), or None when it
    has none or one that is not a number of seconds (an HTTP date is not followed)."""
    raw = response.headers.get("Retry-After", "").strip()
    try:
        return max(float(raw), 0.0) if raw else None
    except ValueError:
        return None
