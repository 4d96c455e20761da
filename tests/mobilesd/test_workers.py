"""The web tier's uvicorn worker: a trusted proxy's X-Forwarded-Proto sets the scheme, and
no X-Forwarded-For changes the peer address failed sign-ins are counted for."""

import asyncio
import ipaddress
import types
from typing import Any

import pytest

from mobilesd.workers import SchemeFromProxy, _trusted_proxies


def seen_scope(trusted: str, client: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": "http", "scheme": "http", "client": (client, 5555), "headers": headers}
    asyncio.run(SchemeFromProxy(app, trusted)(scope, None, None))
    return seen


FORWARDED = [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.9")]


@pytest.mark.parametrize("trusted", ["*", "10.0.0.2", "127.0.0.1, 10.0.0.0/8"])
def test_a_trusted_proxy_sets_the_scheme_but_not_the_address(trusted):
    scope = seen_scope(trusted, "10.0.0.2", FORWARDED)

    assert scope["scheme"] == "https"
    assert scope["client"] == ("10.0.0.2", 5555)


def test_an_untrusted_peer_sets_nothing():
    scope = seen_scope("127.0.0.1", "198.51.100.7", FORWARDED)

    assert scope["scheme"] == "http"
    assert scope["client"] == ("198.51.100.7", 5555)


def test_the_trusted_proxies_setting_names_whose_scheme_is_taken(settings):
    settings.MOBILESD_TRUSTED_PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)
    cfg = types.SimpleNamespace(forwarded_allow_ips=["*"])

    scheme_from_proxy = SchemeFromProxy(None, _trusted_proxies(cfg))

    assert scheme_from_proxy.trusts("10.1.2.3")
    assert not scheme_from_proxy.trusts("198.51.100.7")


def test_without_the_setting_gunicorns_forwarded_allow_ips_is_used(settings):
    settings.MOBILESD_TRUSTED_PROXIES = ()
    cfg = types.SimpleNamespace(forwarded_allow_ips=["*"])

    assert _trusted_proxies(cfg) == ["*"]
