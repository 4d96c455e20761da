"""Which generation-server URLs MobileSD will call: the one policy, used both where a
server's `api_url` is validated and by the client that calls it (so a row stored before
the policy, or written around the API, is refused too).

Home servers live on loopback and the LAN, so those are allowed. Refused:

* URLs carrying credentials (``http://user:pw@host``): they have their own fields, and a
  URL is shown in every server answer;
* unspecified (``0.0.0.0/8``, ``::``), link-local (``169.254.0.0/16``, ``fe80::/10``),
  multicast, broadcast and reserved addresses, and the cloud metadata services
  (``169.254.169.254``, ``fd00:ec2::254``, ``100.100.100.200``,
  ``metadata.google.internal`` and the like), also when wrapped in an IPv6 address
  (IPv4-mapped, NAT64, 6to4);
* IPv4 addresses in any spelling but the canonical dotted quad: ``2130706433``,
  ``0177.0.0.1``, ``0x7f.1``, ``127.1`` all mean 127.0.0.1 to some parser, and a URL must
  mean one host to every reader.

Host names are not resolved: a name whose DNS answer is a refused address is called all
the same. Resolving here would promise what it cannot keep (the answer may change between
this check and the call); who may set a server's URL at all is a question of permissions.

No Django imports: the client importing this is unit-tested without Django set up.
"""

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

__all__ = ["IPAddress", "address_problem", "url_problem"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task credentials
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_RESERVED_V4 = ipaddress.ip_network("240.0.0.0/4")  # includes 255.255.255.255
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A last label that WHATWG URL parsers and inet_aton read as a number make the host an IPv4
# address, whatever comes before it.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_HOST_PUNCTUATION = frozenset("-._")


def address_problem(ip: IPAddress) -> str | None:
    """What kind of address `ip` is if MobileSD never calls it ("a link-local address"),
    else None. IPv4 addresses wrapped in IPv6 (mapped, 6to4, NAT64) count as the IPv4 one."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _RESERVED_V4:
        return "a broadcast or reserved address"
    return None


def _host_problem(host: str) -> str | None:
    """Why `host` (as `urlsplit(...).hostname` gives it: lower case, no brackets) may not
    be called, or None."""
    if ":" in host:
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            return "The URL's host is not a valid IPv6 address."
        problem = address_problem(ip6)
        return f"The URL's host is {problem}." if problem else None
    if not all(c.isalnum() or c in _HOST_PUNCTUATION for c in host):
        return "The URL's host may only contain letters, digits, '-', '.' and '_'."
    # IDNA maps full-width digits and dots to ASCII ones: check what will be looked up.
    name = unicodedata.normalize("NFKC", host).replace("\u3002", ".").lower()
    labels = name.rstrip(".").split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            ip4 = ipaddress.IPv4Address(host)
        except ValueError:
            return (
                "Write an IP address as four decimal numbers without leading zeros "
                "(e.g. 192.168.1.20)."
            )
        problem = address_problem(ip4)
        return f"The URL's host is {problem}." if problem else None
    if name.rstrip(".") in METADATA_HOSTS:
        return "The URL's host is a cloud metadata service."
    return None


def url_problem(url: str) -> str | None:
    """Why MobileSD will not call the server at `url`, as a sentence; None if it may.

    Checks the URL's shape (http or https, a host, a port in range, no query, fragment or
    credentials) and its host (see the module docstring). Never echoes the URL: it may
    carry a password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "Enter a valid URL."
    if parts.scheme not in {"http", "https"}:
        return "The URL must start with http:// or https://."
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return "The URL must not contain spaces or control characters."
    if "@" in parts.netloc:
        return (
            "The URL must not contain a user name or password: "
            "send them as 'username' and 'password'."
        )
    if not parts.hostname:
        return "Enter a valid URL with a host name."
    if port == 0:
        return "Enter a valid port."
    if parts.query or parts.fragment:
        return "The URL must not have a query or fragment."
    return _host_problem(parts.hostname)
