"""Apprise URLs (integrations.push.client): where each kind connects, which are refused,
and a send to the local ntfy-compatible receiver (integrations.ntfy.simulator)."""

import ipaddress
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.destinations import SETTING
from integrations.ntfy.simulator import NtfySimulator
from integrations.push.client import PushError, push_send, push_service, push_url_problem

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60


@pytest.fixture
def networks(settings: Any):
    def use(*cidrs: str) -> None:
        setattr(settings, SETTING, tuple(ipaddress.ip_network(cidr) for cidr in cidrs))

    return use


@pytest.fixture
def ntfy(networks) -> Iterator[NtfySimulator]:
    networks("127.0.0.0/8")
    sim = NtfySimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def mobilesd_logs() -> Iterator[list[str]]:
    """What reaches MobileSD's own log handlers (the root logger's), at every level."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name} {record.getMessage()}")

    root = logging.getLogger()
    handler, level = Keep(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("mobilesd.probe").debug("probe")
    assert lines == ["mobilesd.probe probe"]  # the handler sees what MobileSD logs
    lines.clear()
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("ntfy://10.0.0.5:8080/phone", "10.0.0.5", 8080),
        ("ntfys://ntfy.home.arpa/phone", "ntfy.home.arpa", 443),
        ("ntfy://phone", "ntfy.sh", 443),  # cloud mode: ntfy.sh
        ("gotify://192.168.1.9/AbCdEf123", "192.168.1.9", 80),
        ("json://10.0.0.3:9000/hook", "10.0.0.3", 9000),
        ("pover://user@token", "api.pushover.net", 443),
        ("tgram://123456:abcdef/1234", "api.telegram.org", 443),
        ("discord://1234/abcd", "discord.com", 443),
        ("mailtos://me:secret@example.org?smtp=smtp.example.org", "smtp.example.org", 587),
    ],
)
def test_each_kind_of_url_connects_where_its_plugin_does(url, host, port):
    assert push_service(url).hosts == ((host, port),)


def test_gmail_connects_to_the_smtp_server_apprise_knows_for_it():
    assert push_service("mailto://me:secret@gmail.com").hosts[0][0] == "smtp.gmail.com"


def test_the_url_shown_is_apprises_privacy_form():
    display = push_service("pover://myuserkey@myapptoken").display

    assert "myuserkey" not in display
    assert "myapptoken" not in display
    assert display.startswith("pover://")


@pytest.mark.parametrize("url", ["slack://T1/B2/C3", "https://example.org/hook"])
def test_a_url_whose_destination_cannot_be_told_is_refused(url):
    problem = push_url_problem(url)

    assert problem is not None
    assert "cannot tell where" in problem or "Not an Apprise URL" in problem


@pytest.mark.parametrize("url", ["", "nonsense", "foo://bar"])
def test_what_apprise_does_not_take_is_refused(url):
    assert "Not an Apprise URL" in str(push_url_problem(url))


def test_a_metadata_address_is_refused_whatever_the_setting(networks):
    networks("0.0.0.0/0")

    assert "metadata" in str(push_url_problem("ntfy://169.254.169.254/x"))


def test_loopback_is_refused_unless_listed_naming_the_setting(networks):
    networks("10.0.0.0/8")
    assert SETTING in str(push_url_problem("ntfy://127.0.0.1:8080/phone"))

    networks("10.0.0.0/8", "127.0.0.0/8")
    assert push_url_problem("ntfy://127.0.0.1:8080/phone") is None


def test_an_smtp_server_outside_the_allowed_networks_is_refused(networks):
    networks("10.0.0.0/8")

    assert SETTING in str(push_url_problem("mailto://me:pw@example.org?smtp=8.8.8.8"))


def test_a_message_reaches_the_ntfy_receiver(ntfy):
    push_send(ntfy.apprise_url("phone"), title="Done: a lighthouse", body="Laptop · 4 s")

    (message,) = ntfy.messages("phone")
    assert (message.title, message.message) == ("Done: a lighthouse", "Laptop · 4 s")


def test_an_attachment_goes_with_the_message(ntfy):
    push_send(
        ntfy.apprise_url("phone"),
        title="Done",
        body="1 image",
        attachment=(JPEG, "c0ffee00.jpg", "image/jpeg"),
    )

    (message,) = ntfy.messages("phone")
    assert (message.title, message.message) == ("Done", "1 image")
    assert (message.attachment_name, message.attachment) == ("c0ffee00.jpg", JPEG)
    assert message.as_json()["attachment"]["type"] == "image/jpeg"


def test_a_refused_send_is_an_error_without_the_url_secrets(ntfy, mobilesd_logs):
    ntfy.fail_next(1, status=500)
    url = ntfy.apprise_url("phone") + "?token=tk_s3cr3t&auth=token"

    with pytest.raises(PushError) as failed:
        push_send(url, title="t", body="b")

    assert "simulated failure" in str(failed.value)
    assert "s3cr3t" not in str(failed.value)
    assert not [line for line in mobilesd_logs if "s3cr3t" in line or "apprise" in line]


def test_an_unreachable_service_is_an_error_naming_only_its_host(networks, mobilesd_logs):
    networks("127.0.0.0/8")

    with pytest.raises(PushError) as failed:
        push_send("json://127.0.0.1:9/s3cr3t-path?x=s3cr3t", title="t", body="b", timeout=2)

    assert "127.0.0.1" in str(failed.value)
    assert "s3cr3t" not in str(failed.value)
    assert not [line for line in mobilesd_logs if "s3cr3t" in line or "apprise" in line]


# --- the receiver itself, as ntfy's publish API is documented ----------------------------


def test_the_receiver_takes_json_published_to_its_root(ntfy):
    import json
    import urllib.request

    request = urllib.request.Request(
        ntfy.url,
        data=json.dumps({"topic": "alerts", "title": "Hi", "message": "there"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        body = json.loads(answer.read())

    assert (body["event"], body["topic"], body["title"], body["message"]) == (
        "message",
        "alerts",
        "Hi",
        "there",
    )


def test_the_receiver_takes_a_put_file_with_headers_and_lists_the_topic(ntfy):
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{ntfy.url}/alerts",
        data=JPEG,
        method="PUT",
        headers={"X-Title": "Pic", "X-Message": "look", "Filename": "a.jpg"},
    )
    urllib.request.urlopen(request, timeout=5).close()
    with urllib.request.urlopen(f"{ntfy.url}/alerts/json?poll=1", timeout=5) as answer:
        (line,) = answer.read().decode().splitlines()

    listed = json.loads(line)
    assert (listed["title"], listed["message"], listed["attachment"]["name"]) == (
        "Pic",
        "look",
        "a.jpg",
    )


def test_the_receiver_answers_a_bad_topic_with_ntfys_error_object(ntfy):
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{ntfy.url}/bad%21topic", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)

    assert refused.value.code == 400
    assert json.loads(refused.value.read())["code"] == 40009


def test_a_sends_error_holds_only_its_own_threads_warnings(ntfy, monkeypatch):
    import threading

    from integrations.push import client

    ntfy.fail_next(1)
    other = threading.Thread(
        target=logging.getLogger("apprise").warning, args=("another user's topic 'bob'",)
    )
    original = client.apprise.Apprise.notify

    def notify_while_another_thread_logs(self, *args, **kwargs):
        other.start()
        other.join()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(client.apprise.Apprise, "notify", notify_while_another_thread_logs)
    with pytest.raises(PushError) as failed:
        push_send(ntfy.apprise_url("ada"), title="t", body="b")

    assert "simulated failure" in str(failed.value)
    assert "bob" not in str(failed.value)
