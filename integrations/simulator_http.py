"""The HTTP plumbing the Forge and Civitai simulators share, written once.

A threaded server that lets a stopping simulator go at once (`SimHTTPServer`), run on its
own thread (`Listener`); a request handler that reads a request and writes a response head
as both need (`SimRequestHandler.read_request`, `send_head`); the URL a client on this
machine reaches a simulator at (`reachable_url`); and the foreground loop of the
`forge_simulator` and `civitai_simulator` commands (`run_until_signalled`).

Invariants: stdlib only (no Django, nothing of MobileSD's apps, nothing of either simulator:
each simulator imports this module, never the other simulator), so a simulator runs in a
test, a command or a plain script alike.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

__all__ = [
    "IncomingRequest",
    "Listener",
    "SimHTTPServer",
    "SimRequestHandler",
    "SimulatorStartError",
    "reachable_url",
    "run_until_signalled",
]

# Bind addresses meaning "every interface": a client reaches them at the loopback address.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0"})  # noqa: S104


class SimulatorStartError(Exception):
    """A simulator cannot be started as asked (an option it refuses, a port it cannot bind);
    the message is for the person who started it."""


def reachable_url(host: str, port: int) -> str:
    """The base URL a client on this machine uses for a simulator bound to `host:port`."""
    return f"http://{'127.0.0.1' if host in _WILDCARD_HOSTS else host}:{port}"


class SimHTTPServer(ThreadingHTTPServer):
    """A threaded server that does not keep a stopping simulator waiting for its threads;
    `sim` is the simulator its handler asks."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sim: Any,
        *,
        backlog: int = 128,
    ) -> None:
        self.sim = sim
        self.request_queue_size = backlog
        super().__init__(address, handler)


class Listener:
    """A bound `SimHTTPServer` serving on a daemon thread named `<name>-<port>`.

    Listening starts when the object is made (an `OSError` if the address cannot be bound)
    and ends with `close()`, which returns once the serving loop has stopped; requests
    being served then end on their own threads.
    """

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sim: Any,
        *,
        name: str,
        backlog: int = 128,
        poll_interval: float = 0.05,
    ) -> None:
        self.server = SimHTTPServer(address, handler, sim, backlog=backlog)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": poll_interval},
            name=f"{name}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self, *, timeout: float = 5.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=timeout)


@dataclass(frozen=True)
class IncomingRequest:
    """One request as both simulators read it: header names lower-cased, the query parsed
    with blank values kept, the body as sent (empty without a Content-Length)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class SimRequestHandler(BaseHTTPRequestHandler):
    """Hands every request of the usual methods to `_dispatch(method)`; logs at debug."""

    protocol_version = "HTTP/1.1"
    server: SimHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def read_request(self, method: str) -> IncomingRequest:
        """Parse the request line's target and headers, and read the body off the socket
        (always: a body left unread would be taken for the next request on the connection)."""
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        return IncomingRequest(
            method=method,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
        )

    def send_head(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """The status line, then `headers` in their order (a name may repeat), then the
        blank line that ends the head: the body is the caller's to write."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def _dispatch(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_until_signalled(
    sim: _Stoppable, *, on_ready: Callable[[], None] | None = None, poll_seconds: float = 1.0
) -> None:
    """Serve the started `sim` in the foreground until SIGINT (Ctrl-C) or SIGTERM, then stop
    it, also when `on_ready` or the wait fails.

    The handlers are in place before `on_ready` runs (it tells the user where the simulator
    listens), so a signal sent as soon as that line is read still ends the run cleanly with
    exit status 0; the handlers replaced are put back afterwards. Call from the main thread
    (the only one that may install signal handlers).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in _STOP_SIGNALS}
    try:
        if on_ready is not None:
            on_ready()
        while not stop.wait(poll_seconds):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        sim.stop()
