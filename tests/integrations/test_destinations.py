"""Where notifications may go (integrations.destinations): MOBILESD_WEBHOOK_ALLOWED_NETWORKS."""

import ipaddress
import socket
from typing import Any

import pytest

from integrations.destinations import SETTING, destination_problem, host_problem


@pytest.fixture
def networks(settings: Any):
    def use(*cidrs: str) -> None:
        setattr(settings, SETTING, tuple(ipaddress.ip_network(cidr) for cidr in cidrs))

    return use


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch):
    """Host names resolve to the addresses given here (and to nothing else)."""
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.parametrize(
    "url",
    [
        "http://192.168.1.5:8080/hook",
        "https://10.1.2.3/hooks/mobilesd?token=abc",
        "http://172.16.0.9/",
        "http://[fd00:1::5]:9000/x",
    ],
)
def test_the_lan_is_allowed_by_default(url: str) -> None:
    assert destination_problem(url) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://8.8.8.8/hook", "not in the networks"),
    ],
)
def test_loopback_and_the_internet_are_refused_by_default_naming_the_setting(
    url: str, expected: str
) -> None:
    problem = destination_problem(url) or ""
    assert expected in problem
    assert SETTING in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/x",
        "http://0.0.0.0/x",
        "http://100.100.100.200/",
        "http://metadata.google.internal/",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_whatever_the_setting_lists(
    networks: Any, url: str
) -> None:
    networks("0.0.0.0/0", "::/0", "169.254.0.0/16", "fe80::/10")
    assert destination_problem(url) is not None


def test_the_whole_internet_listed_still_does_not_open_loopback(networks: Any) -> None:
    networks("0.0.0.0/0", "::/0")
    assert destination_problem("http://8.8.8.8/hook") is None
    assert "loopback" in (destination_problem("http://127.0.0.1/hook") or "")
    networks("0.0.0.0/0", "127.0.0.0/8")
    assert destination_problem("http://127.0.0.1/hook") is None


@pytest.mark.parametrize(
    "url",
    ["ftp://192.168.1.5/x", "http://user:pw@192.168.1.5/x", "http://192.168.1.5/x#frag", "nope"],
)
def test_only_plain_http_urls_without_credentials(url: str) -> None:
    problem = destination_problem(url)
    assert problem is not None
    assert "pw" not in problem, "a refusal never echoes the URL"


def test_a_host_name_counts_by_every_address_it_resolves_to(dns: dict[str, list[str]]) -> None:
    dns["receiver.lan"] = ["192.168.1.7"]
    dns["sneaky.example"] = ["192.168.1.7", "127.0.0.1"]
    assert host_problem("receiver.lan") is None
    assert destination_problem("http://receiver.lan:8080/hook") is None
    problem = destination_problem("http://sneaky.example/hook") or ""
    assert "'sneaky.example' resolves to 127.0.0.1" in problem
    assert "does not resolve" in (destination_problem("http://gone.example/hook") or "")
