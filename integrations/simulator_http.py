"""The HTTP plumbing the simulators share (stdlib only, no Django)."""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


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


class SimRequestHandler(BaseHTTPRequestHandler):
    """Hands every request of the usual methods to `_dispatch(method)`; logs at debug."""

    protocol_version = "HTTP/1.1"
    server: SimHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

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
