"""The rules for a server's credentials when it is updated.

A stored password goes only to the origin (scheme, host, port) it was given for: an update
that moves the server to another origin without sending a password drops it, so that
whoever can change a URL cannot have the password sent to a host of their choosing.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from servers_app.models import Server

DEFAULT_PORTS = {"http": 80, "https": 443}
PASSWORD_DROPPED = (
    "The stored password was cleared, as the URL now names another host: send it again."
)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    # The stored password was dropped because the URL now names another origin.
    password_dropped: bool = False


def url_origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of `url`, the default port filled in; None if it cannot be read."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def credentials_resolve(*, server: Server, data: dict[str, Any]) -> Credentials:
    """The username and password `server` has after an update with `data` (validated names:
    `api_url`, `username`, `password`).

    - Credentials left out are kept; a username without a password keeps the password.
    - An empty password clears it, except beside the unchanged username: the original UI
      echoes `authUser` with an empty `authPass` when only the URL or nothing changed.
    - No username, no password (`auth: null` or empty strings clear both).
    - A new origin without a new password drops the stored one.
    """
    username = data.get("username", server.username)
    given: str | None = data.get("password")
    echoed = "username" in data and username == server.username
    password = server.password if given is None or (not given and echoed) else given
    if not username:
        return Credentials(username="", password="")
    old_origin = url_origin(server.api_url)
    same_origin = old_origin is not None and old_origin == url_origin(
        data.get("api_url", server.api_url)
    )
    if password and not given and not same_origin:
        return Credentials(username=username, password="", password_dropped=True)
    return Credentials(username=username, password=password)
