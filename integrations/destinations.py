"""Where MobileSD may deliver notifications: webhook endpoints, per-job callback URLs and
push targets. One policy for all of them, applied when a destination is registered (with a
message that names the setting) and again before every delivery.

A receiver is usually at home, beside MobileSD, so the default is the private LAN ranges
(10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7); the setting
`MOBILESD_WEBHOOK_ALLOWED_NETWORKS` replaces the list (comma-separated CIDRs: add
`0.0.0.0/0,::/0` to reach the internet, e.g. ntfy.sh or Discord). Whatever it lists:

* never link-local, unspecified, multicast or reserved addresses, nor the cloud metadata
  services (`integrations.addresses`): no CIDR opens them;
* loopback only when a listed network is itself loopback (`127.0.0.0/8`, `::1/128`), so
  `0.0.0.0/0` opens the internet, not MobileSD's own host;
* a host name counts by every address it resolves to: one refused address refuses it
  (it is resolved at registration and again before each delivery; the check and the
  connection still resolve separately, so a name whose answer changes in between is
  only caught at the next delivery).

Django's settings are read when called (never at import), so the unit tests may override them.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from integrations.addresses import IPAddress, address_problem, url_problem

__all__ = ["SETTING", "destination_problem", "host_problem"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "MOBILESD_WEBHOOK_ALLOWED_NETWORKS"


def _allowed() -> tuple[IPNetwork, ...]:
    """The networks of the setting (mobilesd/settings.py parses and checks them)."""
    return tuple(getattr(settings, SETTING))


def _unwrapped(ip: IPAddress) -> IPAddress:
    """An IPv4 address written as IPv6 (::ffff:10.0.0.5) is checked as the IPv4 one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _ip_problem(ip: IPAddress, allowed: tuple[IPNetwork, ...]) -> str | None:
    ip = _unwrapped(ip)
    problem = address_problem(ip)
    if problem:
        return f"{ip} is {problem}, which MobileSD never delivers to."
    listed = [net for net in allowed if net.version == ip.version and ip in net]
    if ip.is_loopback and not any(net.is_loopback for net in listed):
        return (
            f"{ip} is a loopback address: list it in {SETTING} (e.g. 127.0.0.0/8) to deliver "
            "to a receiver on MobileSD's own machine."
        )
    if not listed:
        return (
            f"{ip} is not in the networks {SETTING} allows "
            f"({', '.join(str(net) for net in allowed) or 'none'})."
        )
    return None


def _resolve(host: str, port: int | None) -> list[IPAddress]:
    try:
        answers = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(answer[4][0]).partition("%")[0]) for answer in answers]


def host_problem(host: str, port: int | None = None) -> str | None:
    """Why MobileSD may not deliver to `host` (an IP address or a name, resolved here), as a
    sentence; None if it may."""
    host = host.strip("[]").lower()
    allowed = _allowed()
    try:
        return _ip_problem(ipaddress.ip_address(host), allowed)
    except ValueError:
        pass
    addresses = _resolve(host, port)
    if not addresses:
        return f"The host name {host!r} does not resolve."
    for ip in addresses:
        problem = _ip_problem(ip, allowed)
        if problem:
            return f"{host!r} resolves to {problem}"
    return None


def destination_problem(url: str) -> str | None:
    """Why MobileSD may not deliver to `url` (an http(s) URL; a query is fine, credentials
    are not), as a sentence; None if it may. Never echoes the URL: it may carry a secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "Enter a valid URL."
    if "@" in parts.netloc:
        return "The URL must not contain a user name or password."
    # The shape as for servers' URLs, but a query string is allowed (receivers take tokens).
    shape = url_problem(parts._replace(query="", fragment="").geturl())
    if shape:
        return shape
    if parts.fragment:
        return "The URL must not have a fragment."
    return host_problem(parts.hostname or "", parts.port)
