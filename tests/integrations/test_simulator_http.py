"""The plumbing both simulators share: listening, reading requests, the foreground loop."""

import os
import signal

import pytest
import requests

from integrations.simulator_http import (
    Listener,
    SimRequestHandler,
    reachable_url,
    run_until_signalled,
)


class EchoHandler(SimRequestHandler):
    """Answers every request with what `read_request` made of it."""

    def _dispatch(self, method: str) -> None:
        request = self.read_request(method)
        payload = repr(
            (request.method, request.path, request.query, request.headers["x-probe"], request.body)
        ).encode()
        self.send_head(200, [("Content-Length", str(len(payload))), ("X-Twice", "1")])
        self.wfile.write(payload)


class Recorder:
    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:7860"),
        ("", "http://127.0.0.1:7860"),
        ("127.0.0.1", "http://127.0.0.1:7860"),
        ("192.168.1.5", "http://192.168.1.5:7860"),
    ],
)
def test_a_wildcard_bind_address_is_reached_on_loopback(host: str, url: str) -> None:
    assert reachable_url(host, 7860) == url


def test_a_listener_on_port_zero_serves_on_the_port_it_got_until_closed() -> None:
    listener = Listener(("127.0.0.1", 0), EchoHandler, None, name="probe")
    url = reachable_url("127.0.0.1", listener.port)
    try:
        answer = requests.post(
            f"{url}/some/path?a=1&blank=", data=b"body", headers={"X-Probe": "p"}, timeout=5
        )
    finally:
        listener.close()

    assert listener.port > 0
    assert answer.text == repr(("POST", "/some/path", {"a": ["1"], "blank": [""]}, "p", b"body"))
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


def test_run_until_signalled_stops_the_simulator_on_sigterm_and_restores_handlers() -> None:
    sim = Recorder()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    run_until_signalled(sim, on_ready=lambda: os.kill(os.getpid(), signal.SIGTERM))

    assert sim.stopped == 1
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_run_until_signalled_stops_on_sigint_as_on_ctrl_c() -> None:
    sim = Recorder()

    run_until_signalled(sim, on_ready=lambda: os.kill(os.getpid(), signal.SIGINT))

    assert sim.stopped == 1


def test_run_until_signalled_stops_the_simulator_when_announcing_fails() -> None:
    sim = Recorder()

    def broken() -> None:
        raise BrokenPipeError

    with pytest.raises(BrokenPipeError):
        run_until_signalled(sim, on_ready=broken)

    assert sim.stopped == 1
