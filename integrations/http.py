"""What every outgoing HTTP call carries, shared by the Civitai and generation-server clients.

No Django imports: the clients importing this are unit-tested without Django set up.
"""

from importlib import metadata

import requests

__all__ = ["USER_AGENT"]


def _package_version() -> str:
    try:
        return metadata.version("mobilesd")
    except metadata.PackageNotFoundError:
        return "0"


# A non-browser User-Agent: Civitai answers browsers with text and redirects instead of JSON
# errors (REFERENCE.md C.1).
USER_AGENT = f"MobileSD/{_package_version()} python-requests/{requests.__version__}"
