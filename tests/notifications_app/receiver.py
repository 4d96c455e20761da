"""A real webhook receiver for the tests: an HTTP server on a thread of the test process that
answers each POST as told (a status, or holding the request unanswered), records what it
received and when, and checks signatures with the Standard Webhooks algorithm written out
here, not with the library that signed them."""

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The specification's tolerance of a webhook-timestamp.
TOLERANCE_SECONDS = 5 * 60
HOLD = "hold"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


def signature_problem(secret: str, received: Received) -> str | None:
    """Why `received` is not signed by `secret` as the Standard Webhooks specification says
    (None: it is): HMAC-SHA256 keyed by the base64-decoded secret after `whsec_`, over
    `<webhook-id>.<webhook-timestamp>.<body>`, base64-encoded, as one of the space-separated
    `v1,<signature>` of webhook-signature; the timestamp within the tolerance of now."""
    msg_id = received.headers.get("webhook-id")
    stamp = received.headers.get("webhook-timestamp")
    signatures = received.headers.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        return "a webhook header is missing"
    if not stamp.isdigit() or abs(received.wall - int(stamp)) > TOLERANCE_SECONDS:
        return f"webhook-timestamp {stamp!r} is not within {TOLERANCE_SECONDS} s of now"
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    signed = f"{msg_id}.{stamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return None
    return "no v1 signature matches"


@dataclass
class Receiver:
    """Answers the POSTs with `plan` in order (a status code, or HOLD: never answered until
    `release()`), then with `then`."""

    plan: list[int | str] = field(default_factory=list)
    then: int = 200
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            at=time.monotonic(),
                            wall=time.time(),
                        )
                    )
                    answer = receiver.plan.pop(0) if receiver.plan else receiver.then
                if answer == HOLD:
                    receiver._released.wait(60)
                    return
                text = b'{"ok": true}' if answer == 200 else b"x" * 5000
                self.send_response(int(answer))
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def assert_all_signed(self, secret: str, *, path: str | None = None) -> None:
        """Every request received (at `path`, if given) is signed with `secret`."""
        checked = [r for r in self.requests() if path is None or r.path == path]
        assert checked, "nothing was received"
        for received in checked:
            problem = signature_problem(secret, received)
            assert problem is None, f"{received.webhook_id}: {problem}"

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
