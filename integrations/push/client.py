"""Push notifications as Apprise URLs: what a URL is, where it connects, and sending to it.

Apprise (https://github.com/caronc/apprise) turns one URL per service (`ntfy://host/topic`,
`pover://user@token`, `mailto://user:pass@example.org`) into the service's own API call.
MobileSD lets a user register such URLs, so before one is stored, and before each send,
the host(s) its plugin will connect to are checked against the destination policy
(integrations.destinations, MOBILESD_WEBHOOK_ALLOWED_NETWORKS):

* self-hosted services (ntfy in its private mode, Gotify, Apprise API, json://, xml://,
  form://) connect to the URL's own host and port;
* cloud services connect to the fixed host of the plugin's API URL (Pushover's
  api.pushover.net, Telegram's api.telegram.org, Discord's discord.com, ntfy.sh), read from
  the installed plugin class, not written here;
* e-mail connects to its SMTP server (the `smtp=` parameter, or the one Apprise's templates
  name for the address's domain).

Any other kind of Apprise URL is refused: MobileSD cannot tell where it would connect.

A URL carries tokens and passwords: it is never logged nor put in an error; Apprise's
privacy form (`url(privacy=True)`) is what may be shown. Apprise logs through its own
logger ("apprise"), which mobilesd/settings.py keeps out of MobileSD's logs; a send's
warnings are captured, stripped of URLs, and returned as the error.
"""

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import apprise
from apprise.attachment.memory import AttachMemory
from apprise.plugins.apprise_api import NotifyAppriseAPI
from apprise.plugins.custom_form import NotifyForm
from apprise.plugins.custom_json import NotifyJSON
from apprise.plugins.custom_xml import NotifyXML
from apprise.plugins.discord import NotifyDiscord
from apprise.plugins.email import NotifyEmail
from apprise.plugins.gotify import NotifyGotify
from apprise.plugins.ntfy import NotifyNtfy, NtfyMode
from apprise.plugins.pushover import NotifyPushover
from apprise.plugins.telegram import NotifyTelegram

from integrations.destinations import host_problem

__all__ = [
    "PushError",
    "PushService",
    "push_send",
    "push_service",
    "push_url_problem",
]

logger = logging.getLogger(__name__)

# Plugins that connect to the URL's own host and port.
_SELF_HOSTED: tuple[type[Any], ...] = (
    NotifyGotify,
    NotifyAppriseAPI,
    NotifyJSON,
    NotifyXML,
    NotifyForm,
)
# Cloud plugins, and the class attribute holding the API URL they call.
_CLOUD: tuple[tuple[type[Any], str], ...] = (
    (NotifyPushover, "notify_url"),
    (NotifyTelegram, "notify_url"),
    (NotifyDiscord, "notify_url"),
)
SUPPORTED = "ntfy, Gotify, Apprise API, json/xml/form, Pushover, Telegram, Discord, e-mail"

# An error kept at most this long (a target's last_error, an API answer).
_ERROR_CHARS = 300
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


class _Capture(logging.Handler):
    """The warnings Apprise logs in this thread while it is attached: a worker runs several
    sends at once (its thread pool), and one user's error must not be another's. (Apprise's
    own LogCapture takes every thread's records.)"""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []
        self.logger = logging.getLogger("apprise")

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())

    def __enter__(self) -> "_Capture":
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


class PushError(Exception):
    """A send failed; the message is safe to show and store (no URL, no token)."""


@dataclass(frozen=True)
class PushService:
    """What MobileSD knows of a valid Apprise URL."""

    display: str  # Apprise's privacy form: secrets elided
    service: str  # the plugin's name ("ntfy", "Pushover", ...)
    hosts: tuple[tuple[str, int | None], ...]  # where it connects
    takes_attachments: bool


def _asset() -> apprise.AppriseAsset:
    # No redirects (as for webhooks: a redirect could lead past the destination policy), no
    # files written by Apprise's persistent store, and the send in the calling thread, so
    # that its warnings are told apart from other sends' by thread (_Capture): no
    # service_timeout, whose deadline Apprise enforces from a thread of its own; the
    # plugin's connect and read timeouts bound the send instead (push_send), and the task's
    # time limit a plugin that ignores them.
    return apprise.AppriseAsset(
        http_redirects=False, service_timeout=0, storage_mode="memory", async_mode=False
    )


def _plugin(url: str) -> Any:
    if not isinstance(url, str) or "://" not in url:
        return None
    try:
        return apprise.Apprise.instantiate(url, asset=_asset())
    except Exception:  # a plugin's parser failing on odd input: not a URL it takes
        return None


def _host_of(api_url: str) -> tuple[str, int | None]:
    parts = urlsplit(api_url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _default_port(plugin: Any) -> int:
    return 443 if getattr(plugin, "secure", False) else 80


def _hosts(plugin: Any) -> tuple[tuple[str, int | None], ...] | None:
    """Where `plugin` connects, or None if MobileSD cannot tell."""
    if isinstance(plugin, NotifyNtfy):
        if plugin.mode == NtfyMode.CLOUD:
            return (_host_of(NotifyNtfy.cloud_notify_url),)
        return ((plugin.host, plugin.port or _default_port(plugin)),)
    if isinstance(plugin, _SELF_HOSTED):
        return ((plugin.host, plugin.port or _default_port(plugin)),)
    for cls, attribute in _CLOUD:
        if isinstance(plugin, cls):
            return (_host_of(getattr(cls, attribute)),)
    if isinstance(plugin, NotifyEmail):
        return ((plugin.smtp_host or plugin.host, plugin.port),)
    return None


def push_service(url: str) -> PushService:
    """The service behind an Apprise URL; ValueError (its message for the user) if Apprise
    does not take it or MobileSD cannot tell where it connects."""
    plugin = _plugin(url)
    if plugin is None:
        raise ValueError(
            "Not an Apprise URL MobileSD can send to (e.g. ntfy://host/topic, "
            "pover://user@token, mailto://user:password@example.org)."
        )
    hosts = _hosts(plugin)
    if hosts is None or not all(host for host, _ in hosts):
        raise ValueError(
            f"MobileSD cannot tell where this kind of Apprise URL ({plugin.service_name}) "
            f"connects, so it cannot check it against the allowed networks; supported: "
            f"{SUPPORTED}."
        )
    return PushService(
        display=str(plugin.url(privacy=True)),
        service=str(plugin.service_name),
        hosts=hosts,
        takes_attachments=bool(plugin.attachment_support),
    )


def push_url_problem(url: str) -> str | None:
    """Why MobileSD may not send to this Apprise URL (not one it takes, or a destination
    the allowed networks refuse), as a sentence; None if it may. Never echoes the URL."""
    try:
        service = push_service(url)
    except ValueError as exc:
        return str(exc)
    for host, port in service.hosts:
        problem = host_problem(host, port)
        if problem:
            return problem
    return None


def _scrubbed(lines: Iterable[str]) -> str:
    """Apprise's warnings as an error to keep: URLs cut to their scheme and host (a URL's
    path and query may hold a token), the last lines first, at most _ERROR_CHARS."""

    def cut(match: re.Match[str]) -> str:
        parts = urlsplit(match.group(0))
        return f"{parts.scheme}://{parts.hostname or ''}"

    kept = [_URL_IN_TEXT.sub(cut, line.strip()) for line in lines if line.strip()]
    text = " / ".join(reversed(kept[-3:])) or "The service did not accept the notification."
    return text[:_ERROR_CHARS]


def push_send(
    url: str,
    *,
    title: str,
    body: str,
    attachment: tuple[bytes, str, str] | None = None,
    timeout: float = 10.0,
) -> None:
    """Send one notification to an Apprise URL, each connection and read within `timeout`
    seconds, in this thread; `attachment` is (bytes, file name, content
    type), attached only where the service takes attachments. PushError if it failed."""
    plugin = _plugin(url)
    if plugin is None:
        raise PushError("The target's URL is no longer one Apprise takes.")
    plugin.redirects = False  # whatever the URL's own redirect= says
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    notifier = apprise.Apprise(asset=plugin.asset)
    notifier.add(plugin)
    attach = None
    if attachment is not None and plugin.attachment_support:
        data, name, content_type = attachment
        attach = apprise.AppriseAttachment(
            AttachMemory(content=data, name=name, mimetype=content_type)
        )
    with _Capture() as captured:
        try:
            sent = bool(notifier.notify(title=title, body=body, attach=attach))
        except Exception as exc:  # a plugin's bug must not take the worker's task with it
            logger.warning("Apprise raised %s while sending", type(exc).__name__)
            sent = False
    if not sent:
        raise PushError(_scrubbed(captured.lines))
