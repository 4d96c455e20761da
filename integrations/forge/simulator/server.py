"""`ForgeSimulator`: a real HTTP server playing a Forge 2 / A1111 1.10 instance.

Stdlib `ThreadingHTTPServer`, one thread per connection. Connections are kept alive between
requests as uvicorn keeps them (HTTP/1.1, closed after `KEEP_ALIVE_SECONDS` idle, with
TCP_NODELAY), so a client reuses its connection from one job to the next as it does with a
real server. Stopping, restarting or refusing connections also closes the idle ones, so
"the server went away" is always visible to the next request. Lifecycle invariants:
* `restart()` kills the current `Runtime` (queue, task ids, loaded model are gone; waiting and
  running requests lose their connection without a response), then serves a fresh one on the
  same port. Options saved with POST /options and computed hashes survive (`disk.py`), as
  `config.json` and `cache.json` do on a real server.
* `faults.refuse_connections = True` closes the listening socket (connects are refused) and
  the idle kept-alive connections; setting it back to False binds the same port again.
  Requests in flight are unaffected.
* `set_models()` / `set_loras()` change the files "on disk"; the API shows them after
  POST /sdapi/v1/refresh-checkpoints / refresh-loras, or after a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from integrations.simulator_http import Listener, SimRequestHandler, reachable_url

from .api import Api, Img2ImgInputs, Request
from .catalog import default_options
from .config import SimLora, SimModel, SimulatorConfig
from .disk import Disk
from .events import Event, EventLog
from .faults import Faults
from .generation import JobAbortedError, load_model
from .imaging import warm_up
from .runtime import Runtime

logger = logging.getLogger(__name__)


# uvicorn's default `--timeout-keep-alive`.
KEEP_ALIVE_SECONDS = 5.0


class _Handler(SimRequestHandler):
    # Like uvicorn: no Nagle delay between the headers and the body of a response.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self._dropped = False
        self.server.sim._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.sim._untrack(self.connection)

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _drop(self) -> None:
        """Close the connection now, without a response (fault injection / process death)."""
        self._dropped = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def end_headers(self) -> None:
        if self.server.sim.faults.refuse_connections:
            # Refusing already: say in this response that the connection ends with it (as
            # uvicorn does while shutting down), so that a client does not send its next
            # request on it in the moment before the close below reaches it.
            self.send_header("Connection", "close")
            self.close_connection = True
        super().end_headers()

    def parse_request(self) -> bool:
        # A request line has arrived: the connection is busy until its response is written.
        self.server.sim._set_busy(self.connection, True)
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            # Waiting for the next request on a kept-alive connection: closed when idle
            # too long.
            self.connection.settimeout(KEEP_ALIVE_SECONDS)
            super().handle_one_request()
        finally:
            sim = self.server.sim
            sim._set_busy(self.connection, False)
            if sim.faults.refuse_connections:
                # The server refuses connections: this one ends with its response too (if
                # refusing starts after this check, it finds the connection idle and closes it).
                self.close_connection = True

    def _dispatch(self, method: str) -> None:
        # No socket timeout while a request is served: a job takes as long as it takes.
        self.connection.settimeout(None)
        self._serve(method)

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        incoming = self.read_request(method)
        sim._count(method, incoming.path)
        request = Request(
            method=method,
            path=incoming.path,
            query=incoming.query,
            body=incoming.body,
            headers=incoming.headers,
            drop_connection=self._drop,
        )
        try:
            response = sim.api.handle(request)
        except JobAbortedError:
            self._drop()
            return
        if self._dropped:
            return
        payload = json.dumps(response.body).encode("utf-8")
        try:
            self.send_head(
                response.status,
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(payload))),
                    *response.headers.items(),
                ],
            )
            self.wfile.write(payload)
        except OSError:
            logger.debug("client went away before the response to %s %s", method, request.path)


def _has_input(conn: socket.socket) -> bool:
    """Bytes have arrived on `conn` and wait to be read (or the peer closed it)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


class ForgeSimulator:
    """A Forge/A1111 HTTP simulator; see the module docstring for lifecycle invariants.

    Thread-safe: `start`, `stop`, `restart`, `set_models`, `set_loras` and the `faults`
    switches may be called from any thread while requests are being served.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.events = EventLog()
        self.faults = Faults(self._on_refuse_change)
        self._lifecycle = threading.RLock()
        models = self.config.models
        initial = self.config.initial_checkpoint or (models[0].name if models else "")
        self._disk = Disk(
            models=models,
            loras=self.config.loras,
            options=default_options(
                is_forge=self.config.is_forge, checkpoint=self.config.server_name(initial)
            ),
        )
        self._runtime: Runtime | None = None
        self._running = False
        self._listener: Listener | None = None
        self._port = self.config.port
        self._connections: dict[socket.socket, bool] = {}  # connection -> serving a request
        self._conn_lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        # The routes and endpoints, without a socket: tests call `sim.api.handle(request)`
        # to act on the server while its listener is closed.
        self.api = Api(
            config=self.config,
            faults=self.faults,
            events=self.events,
            disk=self._disk,
            runtime=self._live_runtime,
        )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> ForgeSimulator:
        """Create the process state (if needed) and listen; returns self."""
        with self._lifecycle:
            if self._running:
                return self
            if self._runtime is None or self._runtime.killed:
                self._runtime = self._new_runtime()
            warm_up()
            self._running = True
            if not self.faults.refuse_connections:
                self._open_listener()
            self.events.record("started", port=self._port)
            logger.info("%s simulator on %s", self.config.flavour, self.url)
            return self

    def stop(self) -> None:
        """Stop listening, kill in-flight requests and the process state."""
        with self._lifecycle:
            if not self._running:
                return
            self._running = False
            if self._runtime is not None:
                self._runtime.kill()
            self._close_listener()
            self._close_connections()
            self.events.record("stopped")

    def restart(self) -> None:
        """Simulate a process restart: new queue, task ids, no model; same port and options."""
        with self._lifecycle:
            if self._runtime is not None:
                self._runtime.kill()
            self._close_listener()
            self._close_connections()
            self._runtime = self._new_runtime()
            self._running = True
            if not self.faults.refuse_connections:
                self._open_listener()
            self.events.record("restarted", port=self._port)
            logger.info("simulator restarted on %s", self.url)

    def __enter__(self) -> ForgeSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return reachable_url(self.config.host, self._port)

    @property
    def current_task_id(self) -> str | None:
        """The task the server reports as active (a failed one stays until the next starts)."""
        rt = self._runtime
        if rt is None:
            return None
        with rt.cond:
            return rt.tasks.current

    @property
    def pending_task_ids(self) -> list[str]:
        rt = self._runtime
        if rt is None:
            return []
        with rt.cond:
            return sorted(rt.tasks.pending, key=rt.tasks.pending.__getitem__)

    @property
    def completed_task_ids(self) -> list[str]:
        """The last 16 finished task ids, oldest first."""
        rt = self._runtime
        if rt is None:
            return []
        with rt.cond:
            return list(rt.tasks.finished)

    @property
    def loaded_checkpoint_title(self) -> str | None:
        rt = self._runtime
        if rt is None:
            return None
        with rt.cond:
            return rt.title(rt.loaded) if rt.loaded is not None else None

    @property
    def options(self) -> dict[str, Any]:
        """A copy of the current option values (native types)."""
        rt = self._runtime
        if rt is None:
            return self._disk.options()
        with rt.cond:
            return dict(rt.options)

    @property
    def last_img2img_inputs(self) -> Img2ImgInputs | None:
        """The init images and mask of the last img2img request that passed validation,
        decoded from base64: the exact bytes the client sent (None: none yet)."""
        return self.api.last_img2img_inputs

    def request_count(self, method: str, path: str) -> int:
        """How many requests `method path` received (any status), since construction."""
        with self._conn_lock:
            return self._counts[(method, path)]

    def wait_for_event(
        self,
        type: str,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Event:
        """First event of `type` (index >= `since`) matching `predicate`; `TimeoutError` else."""
        return self.events.wait_for(type, predicate, timeout, since=since)

    # -- "disk" ---------------------------------------------------------------------------
    def set_models(self, models: Iterable[SimModel]) -> None:
        """Replace the checkpoint files; listed after refresh-checkpoints or a restart."""
        self._disk.set_models(models)

    def set_loras(self, loras: Iterable[SimLora]) -> None:
        """Replace the LoRA files; listed after refresh-loras or a restart."""
        self._disk.set_loras(loras)

    # -- internals used by the handler (and handed to the Api) ---------------------------
    def _live_runtime(self) -> Runtime:
        rt = self._runtime
        if rt is None or rt.killed:
            raise JobAbortedError("no live process")
        return rt

    def _new_runtime(self) -> Runtime:
        rt = Runtime(
            self.config,
            models=self._disk.models(),
            loras=self._disk.loras(),
            options=self._disk.options(),
            hash_cache=self._disk.hash_cache,
        )
        if not self.config.is_forge:
            # A1111 loads the configured checkpoint at start-up; Forge loads on first use.
            with rt.cond:
                entry = rt.configured_checkpoint()
                if entry is not None:
                    load_model(rt, entry)
            if entry is not None:
                self.events.record(
                    "model_loaded",
                    task_id=None,
                    title=rt.title(entry),
                    name=entry.name,
                    startup=True,
                )
        return rt

    def _count(self, method: str, path: str) -> None:
        with self._conn_lock:
            self._counts[(method, path)] += 1

    def _track(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections[conn] = False

    def _untrack(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.pop(conn, None)

    def _set_busy(self, conn: socket.socket, busy: bool) -> None:
        with self._conn_lock:
            if conn in self._connections:
                self._connections[conn] = busy

    def _close_connections(self, *, idle_only: bool = False) -> None:
        """Close the open connections; with `idle_only`, spare those serving a request or
        holding one that has arrived and is not read yet (they close after responding)."""
        with self._conn_lock:
            conns = [c for c, busy in self._connections.items() if not (idle_only and busy)]
        if idle_only:
            conns = [c for c in conns if not _has_input(c)]
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _open_listener(self) -> None:
        listener = Listener((self.config.host, self._port), _Handler, self, name="forge-simulator")
        # Port 0 asks for any free port: later re-binds (after refusing) take the same one.
        self._port = listener.port
        self._listener = listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _on_refuse_change(self, refuse: bool) -> None:
        with self._lifecycle:
            if not self._running:
                return
            if refuse:
                self._close_listener()
                self._close_connections(idle_only=True)
                self.events.record("refusing_connections", port=self._port)
            elif self._listener is None:
                self._open_listener()
                self.events.record("accepting_connections", port=self._port)
