"""The address failed sign-ins and anonymous requests are counted for, behind the reverse
proxies of MOBILESD_TRUSTED_PROXIES: the client they report, never what a client wrote in
X-Forwarded-For itself."""

import ipaddress
import logging

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from core_app import throttling
from core_app.throttling import client_address
from tests.support import assert_error, new_key

PROXY = "10.0.0.2"


@pytest.fixture
def proxies(settings) -> None:
    """A proxy on 10.0.0.2, and a load balancer's network in front of it."""
    settings.MOBILESD_TRUSTED_PROXIES = (
        ipaddress.ip_network("10.0.0.2"),
        ipaddress.ip_network("172.16.0.0/12"),
    )


@pytest.fixture
def failed_limit(settings, frozen_window) -> int:
    settings.MOBILESD_FAILED_ATTEMPTS_LIMIT = 3
    settings.MOBILESD_FAILED_ATTEMPTS_WINDOW = 60
    return 3


def address(peer: str, forwarded: str | None = None) -> str:
    request = RequestFactory().get("/", REMOTE_ADDR=peer)
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(request)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # the proxy's own client
        (PROXY, "198.51.100.7", "198.51.100.7"),
        # what the client wrote comes first; the proxy appended what it saw
        (PROXY, "6.6.6.6, 198.51.100.7", "198.51.100.7"),
        # two trusted hops: the load balancer's entry is passed
        (PROXY, "6.6.6.6, 198.51.100.7, 172.16.4.1", "198.51.100.7"),
        # ports and IPv6 as proxies write them
        (PROXY, "198.51.100.7:5123", "198.51.100.7"),
        (PROXY, "[2001:db8::7]:5123", "2001:db8::7"),
        (PROXY, "2001:db8::7", "2001:db8::7"),
        # an IPv4 proxy seen on a dual-stack socket
        ("::ffff:10.0.0.2", "198.51.100.7", "198.51.100.7"),
        # nothing forwarded, or only trusted hops: the nearest the proxies name
        (PROXY, None, PROXY),
        (PROXY, "172.16.4.1", "172.16.4.1"),
        # a hop that is no address ends the walk at the last one a proxy vouched for
        (PROXY, "198.51.100.7, unknown", PROXY),
        (PROXY, "unknown, 198.51.100.7", "198.51.100.7"),
    ],
)
def test_behind_a_trusted_proxy_the_client_it_reports_is_counted(
    proxies, peer, forwarded, expected
):
    assert address(peer, forwarded) == expected


def test_a_peer_that_is_no_trusted_proxy_is_counted_whatever_it_forwards(proxies):
    assert address("198.51.100.9", "10.0.0.2, 203.0.113.1") == "198.51.100.9"


def test_without_trusted_proxies_forwarded_for_is_never_read(settings):
    settings.MOBILESD_TRUSTED_PROXIES = ()

    assert address(PROXY, "198.51.100.7") == PROXY


def guess(client: APIClient, forwarded: str) -> int:
    return client.get("/api/v1/servers", HTTP_X_FORWARDED_FOR=forwarded).status_code


def test_one_phone_with_a_wrong_key_does_not_lock_out_the_others_behind_the_proxy(
    db, proxies, failed_limit
):
    _, good_key = new_key("phone")
    stale = APIClient(REMOTE_ADDR=PROXY)
    stale.credentials(HTTP_AUTHORIZATION="Bearer msd_revoked-long-ago")
    phone = APIClient(REMOTE_ADDR=PROXY)
    phone.credentials(HTTP_AUTHORIZATION=f"Bearer {good_key}")

    failures = [guess(stale, "192.168.1.20") for _ in range(failed_limit)]

    assert failures == [401] * failed_limit
    assert_error(
        stale.get("/api/v1/servers", HTTP_X_FORWARDED_FOR="192.168.1.20"),
        429,
        "too_many_failed_attempts",
    )
    assert guess(phone, "192.168.1.21") == 200


def test_a_guesser_behind_the_proxy_cannot_reset_its_count_by_forwarding_addresses(
    db, proxies, failed_limit
):
    guesser = APIClient(REMOTE_ADDR=PROXY)
    guesser.credentials(HTTP_AUTHORIZATION="Bearer msd_wrong")
    # The guesser writes a new address each time; the proxy appends the one it saw.
    for attempt in range(failed_limit):
        guess(guesser, f"10.9.9.{attempt}, 192.168.1.66")

    assert_error(
        guesser.get("/api/v1/servers", HTTP_X_FORWARDED_FOR="10.9.9.99, 192.168.1.66"),
        429,
        "too_many_failed_attempts",
    )


def test_the_admins_login_is_locked_per_client_behind_the_proxy(db, proxies, failed_limit):
    get_user_model().objects.create_superuser("operator", "op@example.com", "right-pass")

    def log_in(forwarded: str, password: str) -> int:
        browser = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded)
        form = {"username": "operator", "password": password, "next": "/admin/"}
        return browser.post("/admin/login/", form).status_code

    wrong = [log_in("192.168.1.66", "wrong") for _ in range(failed_limit)]

    assert wrong == [200] * failed_limit
    assert log_in("192.168.1.66", "right-pass") == 429
    assert log_in("192.168.1.10", "right-pass") == 302


def test_requests_forwarded_by_an_unnamed_proxy_are_pointed_out_once(settings, caplog, monkeypatch):
    settings.MOBILESD_TRUSTED_PROXIES = ()
    monkeypatch.setattr(throttling._forwarded_without_proxies, "warned", False)

    with caplog.at_level(logging.WARNING, logger="core_app.throttling"):
        address("127.0.0.1")  # nothing forwarded: nothing to say
        for client in ("192.168.1.20", "192.168.1.21"):
            address("127.0.0.1", client)

    warnings = [r.getMessage() for r in caplog.records if r.name == "core_app.throttling"]
    assert len(warnings) == 1
    assert "A request from 127.0.0.1 came with X-Forwarded-For" in warnings[0]
    assert "MOBILESD_TRUSTED_PROXIES" in warnings[0]
