"""An ntfy-compatible receiver: takes what ntfy's publish API takes, keeps what it received.

It follows ntfy's documented publishing (https://docs.ntfy.sh/publish/), as far as
Apprise's ntfy plugin uses it and a test needs to see it:

* `POST /` with a JSON object (`topic`, `message`, `title`, `tags`, `priority`, `click`,
  `attach`, `filename`): "publish as JSON";
* `PUT` or `POST /<topic>` with the message as the body, or, when a file name is given
  (`Filename` / `X-Filename` / `f` header, or `filename` / `f` query parameter), the body
  as an attachment; the title and message then come from the `X-Title` / `Title` / `t` and
  `X-Message` / `Message` / `m` headers or the `title` / `message` (`t` / `m`) query
  parameters;
* the answer is the message as JSON (`id`, `time`, `event: "message"`, `topic`, ...); a
  request it cannot take is ntfy's error object (`{"code", "http", "error"}`);
* `GET /<topic>/json?poll=1` lists the topic's messages, one JSON object a line.

For tests: `messages()`, `wait_for()`, `fail_next()` (answer the next N publishes with an
error status, as a broken server would) and `hold_next()` (keep the next one waiting, to
kill its sender meanwhile). Stdlib only, like the other simulators:
`python -m integrations.ntfy.simulator --port 8090` runs one in the foreground.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from integrations.simulator_http import (
    IncomingRequest,
    Listener,
    SimRequestHandler,
    reachable_url,
    run_until_signalled,
)

__all__ = ["NtfyMessage", "NtfySimulator"]

_TOPIC_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class NtfyMessage:
    """One published message as the receiver took it."""

    id: str
    time: int
    topic: str
    title: str
    message: str
    headers: dict[str, str]
    tags: list[str] = field(default_factory=list)
    click: str = ""
    attachment_name: str = ""
    attachment_type: str = ""
    attachment: bytes = b""

    def as_json(self) -> dict[str, Any]:
        """The message as ntfy answers it (and lists it)."""
        body: dict[str, Any] = {
            "id": self.id,
            "time": self.time,
            "expires": self.time + 12 * 3600,
            "event": "message",
            "topic": self.topic,
            "message": self.message,
        }
        if self.title:
            body["title"] = self.title
        if self.tags:
            body["tags"] = self.tags
        if self.click:
            body["click"] = self.click
        if self.attachment_name:
            body["attachment"] = {
                "name": self.attachment_name,
                "type": self.attachment_type,
                "size": len(self.attachment),
                "url": f"/file/{self.id}",
            }
        return body


class _Refused(Exception):
    def __init__(self, status: int, code: int, error: str) -> None:
        super().__init__(error)
        self.status, self.code, self.error = status, code, error


def _first(request: IncomingRequest, headers: tuple[str, ...], params: tuple[str, ...]) -> str:
    for name in headers:
        if name in request.headers:
            return request.headers[name]
    for name in params:
        if request.query.get(name):
            return request.query[name][0]
    return ""


def _topic(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _TOPIC_CHARS:
        raise _Refused(400, 40009, "invalid topic")
    return name


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(tag) for tag in value]
    return [tag.strip() for tag in str(value or "").split(",") if tag.strip()]


def _content_type(data: bytes) -> str:
    """What ntfy would say the attachment is (it sniffs the bytes)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


class _Handler(SimRequestHandler):
    server: Any

    def _dispatch(self, method: str) -> None:
        request = self.read_request(method)
        sim: NtfySimulator = self.server.sim
        try:
            status, body = sim.handle(request)
        except _Refused as refused:
            status = refused.status
            body = json.dumps(
                {"code": refused.code, "http": refused.status, "error": refused.error}
            ).encode()
        self.send_head(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        self.wfile.write(body)


class NtfySimulator:
    """An ntfy-compatible receiver on its own thread. `start()`, `url`, `stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._messages: list[NtfyMessage] = []
        self._failures: list[int] = []
        self._hold = False
        self.held = threading.Event()  # set when a held publish has arrived
        self._released = threading.Event()
        self._changed = threading.Condition()
        self._listener: Listener | None = None
        self.requests = 0

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> NtfySimulator:
        self._listener = Listener((self.host, self.port), _Handler, self, name="ntfy-sim")
        self.port = self._listener.port
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    @property
    def url(self) -> str:
        return reachable_url(self.host, self.port)

    def apprise_url(self, topic: str) -> str:
        """The Apprise URL of a topic here (ntfy's private mode, plain HTTP)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104
        return f"ntfy://{host}:{self.port}/{topic}"

    # --- what a test asks --------------------------------------------------------------
    def messages(self, topic: str | None = None) -> list[NtfyMessage]:
        with self._changed:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def wait_for(
        self, predicate: Callable[[list[NtfyMessage]], bool], *, timeout: float = 20.0
    ) -> list[NtfyMessage]:
        """The messages once `predicate(messages)` holds; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._messages)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"ntfy simulator: not there after {timeout} s; received "
                        f"{[m.as_json() for m in self._messages]}"
                    )
                self._changed.wait(left)
            return list(self._messages)

    def fail_next(self, count: int, *, status: int = 500) -> None:
        """Answer the next `count` publishes with `status` (nothing is kept)."""
        with self._changed:
            self._failures.extend([status] * count)

    def hold_next(self) -> None:
        """Keep the next publish waiting (`held` is set when it arrives) until `release()`,
        then refuse it without keeping it: a sender that died meanwhile never learns."""
        with self._changed:
            self._hold = True
            self.held.clear()
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    # --- the API -----------------------------------------------------------------------
    def handle(self, request: IncomingRequest) -> tuple[int, bytes]:
        parts = [part for part in request.path.split("/") if part]
        if request.method == "GET" and len(parts) == 2 and parts[1] == "json":
            lines = [json.dumps(m.as_json()) for m in self.messages(_topic(parts[0]))]
            return 200, ("\n".join(lines) + "\n" if lines else "").encode()
        if request.method not in ("POST", "PUT") or len(parts) > 1:
            raise _Refused(404, 40401, "page not found")
        with self._changed:
            self.requests += 1
            hold, self._hold = self._hold, False
        if hold:
            self.held.set()
            self._released.wait(60)
            raise _Refused(503, 50301, "held, then dropped")
        with self._changed:
            if self._failures:
                status = self._failures.pop(0)
                raise _Refused(status, status * 100 + 1, "simulated failure")
        message = self._published_json(request) if not parts else self._published(parts[0], request)
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()
        return 200, json.dumps(message.as_json()).encode()

    def _published_json(self, request: IncomingRequest) -> NtfyMessage:
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            raise _Refused(400, 40017, "invalid request: request body must be JSON") from None
        if not isinstance(data, dict):
            raise _Refused(400, 40017, "invalid request: request body must be a JSON object")
        return NtfyMessage(
            id=secrets.token_hex(6),
            time=int(time.time()),
            topic=_topic(str(data.get("topic") or "")),
            title=str(data.get("title") or ""),
            message=str(data.get("message") or "triggered"),
            headers=request.headers,
            tags=_tags(data.get("tags")),
            click=str(data.get("click") or ""),
            attachment_name=str(data.get("filename") or "") if data.get("attach") else "",
        )

    def _published(self, topic: str, request: IncomingRequest) -> NtfyMessage:
        filename = _first(
            request, ("x-filename", "filename", "file", "f"), ("filename", "file", "f")
        )
        title = _first(request, ("x-title", "title", "t"), ("title", "t"))
        text = _first(request, ("x-message", "message", "m"), ("message", "m"))
        attachment = b""
        if filename:
            attachment = request.body
        elif not text:
            text = request.body.decode("utf-8", "replace")
        return NtfyMessage(
            id=secrets.token_hex(6),
            time=int(time.time()),
            topic=_topic(topic),
            title=title,
            message=text or (f"You received a file: {filename}" if filename else "triggered"),
            headers=request.headers,
            tags=_tags(_first(request, ("x-tags", "tags", "ta"), ("tags", "ta"))),
            click=_first(request, ("x-click", "click"), ("click",)),
            attachment_name=filename,
            attachment_type=_content_type(attachment) if filename else "",
            attachment=attachment,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    sim = NtfySimulator(args.host, args.port).start()

    def ready() -> None:
        print(f"ntfy simulator on {sim.url}: send to {sim.apprise_url('<topic>')}", flush=True)

    run_until_signalled(sim, on_ready=ready)


if __name__ == "__main__":
    main()
