"""`CivitaiSimulator`: a real HTTP server playing civitai.com's REST API and its file storage.

Stdlib `ThreadingHTTPServer`, one thread per connection, `Connection: close` on every
response. Behaviour follows REFERENCE.md C and the checklist of E:

* auth: `Authorization: Bearer <key>` (split on the first space) or `?token=<key>`; an
  unknown key is anonymous, never a 401 on public endpoints;
* `GET /api/v1/images`: `meta` null unless `withMeta=true`; on the legacy path (`imageId`)
  wrapped as `{"id", "meta"}` unless `flatMeta=true`; `nsfw`/`browsingLevel` filtering
  (absent = PG only); `page*limit > 1000` is a 429;
* `GET /api/v1/models/:id`, `/api/v1/model-versions/:id`, `/model-versions/by-hash/:hash`
  (any hash type, upper-cased, oldest version wins);
* `GET /api/download/models/:versionId`: the C.5 error table (JSON for non-browser
  User-Agents, text or a login redirect for browsers), else a 307 to a short-lived signed
  storage URL whose response has `Content-Disposition`, `Accept-Ranges` and honours
  `Range` (206, or 416 past the end);
* image files (`https://image.civitai.com/...` stand-ins) under the same port.

Fault switches and the request log are on `sim.faults` and `sim.requests`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote

from integrations.simulator_http import Listener, SimRequestHandler, reachable_url

from .catalog import (
    NSFW_LEVEL_BITS,
    NSFW_QUERY_LEVELS,
    Catalog,
    SimFile,
    SimModel,
    SimVersion,
    demo_catalog,
    image_json,
    model_json,
    primary_file,
    version_json,
)

logger = logging.getLogger(__name__)

_BROWSER_UA = re.compile(r"mozilla|chrome|safari|firefox|opera|edge", re.IGNORECASE)
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_INT_MAX = 2147483647
_WRITE_CHUNK = 64 * 1024

MESSAGES = {
    "login": "The creator of this asset requires you to be logged in to download it",
    "disabled": "The creator of this asset has disabled downloads on this file",
    "early": "This asset is in Early Access. You can use Buzz access it now!",
    "no_access": "You do not have access to download this file",
    "rate": "We've noticed an unusual amount of downloading from your account. Contact "
    "support@civitai.com or come back later.",
    "pages": "You've requested too many pages, please use cursors instead",
}


@dataclass
class SimulatorConfig:
    """`api_keys`: keys that sign a user in. `unauthenticated_download` False makes every
    anonymous download a 401 (the site's `UNAUTHENTICATED_DOWNLOAD` flag). `retry_after` is
    the `Retry-After` of 429/503 answers (tests use 0). `honour_flat_meta` False plays a
    deployment that predates `flatMeta` (meta always wrapped on the legacy path)."""

    catalog: Catalog = field(default_factory=demo_catalog)
    api_keys: set[str] = field(default_factory=set)
    unauthenticated_download: bool = True
    retry_after: int = 2
    honour_flat_meta: bool = True
    signed_url_seconds: int = 300
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _Failure:
    prefix: str
    status: int
    body: Any
    times: int
    headers: dict[str, str]


class Faults:
    """Switches, settable from any thread.

    * `fail_next(prefix, status, ...)`: the next `times` requests whose path starts with
      `prefix` get `status` (body `{"error": ...}` unless given; 429/503 carry Retry-After).
    * `rate_limit_downloads`: every download answers C.5's 429.
    * `drop_after_bytes` / `drop_times`: the next `drop_times` storage responses send their
      headers and this many body bytes, then the connection is cut.
    * `ignore_range`: storage answers 200 with the whole file even to a Range request.
    * `corrupt_transfer`: one byte of every storage body is flipped on the way.
    * `bytes_per_second`: storage bodies are sent no faster than this.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self.rate_limit_downloads = False
        self.drop_after_bytes: int | None = None
        self.drop_times = 0
        self.ignore_range = False
        self.corrupt_transfer = False
        self.bytes_per_second: float | None = None

    def fail_next(
        self,
        prefix: str,
        status: int,
        *,
        body: Any = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self._lock:
            self._failures.append(_Failure(prefix, status, body, times, dict(headers or {})))

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if path.startswith(failure.prefix) and failure.times > 0:
                    failure.times -= 1
                    return failure
        return None

    def _take_drop(self) -> int | None:
        with self._lock:
            if self.drop_after_bytes is None or self.drop_times <= 0:
                return None
            self.drop_times -= 1
            return self.drop_after_bytes


@dataclass
class _Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    # Storage: the file and the byte range to stream.
    stream: tuple[SimFile, int, int] | None = None


class _Handler(SimRequestHandler):
    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        self.close_connection = True
        sim = self.server.sim
        # No route reads a body: it is read off the socket and dropped.
        request = self.read_request(method)
        path, query, headers = request.path, request.query, request.headers
        sim._record(RecordedRequest(method, path, query, headers))
        try:
            response = sim._handle(method, path, query, headers)
        except Exception:
            logger.exception("Civitai simulator failed on %s %s", method, path)
            response = _Response(500, {"error": "Internal server error"})
        try:
            self._send(method, response)
        except OSError:
            logger.debug("client went away during %s %s", method, path)

    def _send(self, method: str, response: _Response) -> None:
        if response.stream is not None:
            self._send_stream(method, response)
            return
        if response.raw is not None:
            payload = response.raw
        elif response.body is None:
            payload = b""
        else:
            payload = json.dumps(response.body).encode()
        head = [("Content-Length", str(len(payload))), ("Connection", "close")]
        if payload or response.status != 307:
            head.insert(0, ("Content-Type", response.content_type))
        self.send_head(response.status, [*head, *response.headers.items()])
        if method != "HEAD":
            self.wfile.write(payload)

    def _send_stream(self, method: str, response: _Response) -> None:
        sim = self.server.sim
        assert response.stream is not None
        sim_file, start, end = response.stream
        self.send_head(
            response.status,
            [
                ("Content-Length", str(end - start)),
                ("Connection", "close"),
                *response.headers.items(),
            ],
        )
        if method == "HEAD":
            return
        drop_after = sim.faults._take_drop()
        rate = sim.faults.bytes_per_second
        corrupt = sim.faults.corrupt_transfer
        sent = 0
        began = time.monotonic()
        for chunk in sim_file.chunks(start, end):
            for offset in range(0, len(chunk), _WRITE_CHUNK):
                piece = chunk[offset : offset + _WRITE_CHUNK]
                if corrupt and sent == 0:
                    piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
                if drop_after is not None and sent + len(piece) > drop_after:
                    piece = piece[: drop_after - sent]
                    self.wfile.write(piece)
                    sim._count_bytes(len(piece))
                    self.wfile.flush()
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(piece)
                sent += len(piece)
                sim._count_bytes(len(piece))
                if rate:
                    # Pace the body: never ahead of `rate` bytes per second.
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


class CivitaiSimulator:
    """A Civitai HTTP simulator (see the module docstring). Thread-safe."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.faults = Faults()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._bytes_sent = 0
        self._secret = secrets.token_bytes(16)
        self._listener: Listener | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> CivitaiSimulator:
        if self._listener is None:
            self._listener = Listener(
                (self.config.host, self.config.port),
                _Handler,
                self,
                name="civitai-simulator",
                backlog=64,
                poll_interval=0.01,
            )
            logger.info("Civitai simulator on %s", self.url)
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __enter__(self) -> CivitaiSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._listener is not None, "start the simulator first"
        return reachable_url(self.config.host, self._listener.port)

    # -- observation -------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(prefix)]

    @property
    def storage_bytes_sent(self) -> int:
        with self._lock:
            return self._bytes_sent

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _count_bytes(self, count: int) -> None:
        with self._lock:
            self._bytes_sent += count

    # -- routing -----------------------------------------------------------------------------
    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> _Response:
        failure = self.faults._take_failure(path)
        if failure is not None:
            extra = dict(failure.headers)
            if failure.status in (429, 503):
                extra.setdefault("Retry-After", str(self.config.retry_after))
            body = failure.body if failure.body is not None else {"error": f"HTTP {failure.status}"}
            return _Response(failure.status, body, extra)
        if path.startswith("/storage/"):
            return self._storage(method, path, query, headers)
        if "/original=true/" in path:
            return self._image_file(path)
        if method not in ("GET", "HEAD"):
            return _Response(405, {"error": "Method not allowed"})
        user = self._user(query, headers)
        if path == "/api/v1/images":
            return self._images(query)
        if match := re.fullmatch(r"/api/v1/models/([^/]+)", path):
            return self._model(match.group(1))
        if match := re.fullmatch(r"/api/v1/model-versions/by-hash/([^/]+)", path):
            return self._by_hash(match.group(1))
        if match := re.fullmatch(r"/api/v1/model-versions/([^/]+)", path):
            return self._version(match.group(1))
        if match := re.fullmatch(r"/api/download/models/([^/]+)", path):
            return self._download(match.group(1), query, headers, user)
        return _Response(404, {"error": "Not found"})

    def _user(self, query: dict[str, list[str]], headers: dict[str, str]) -> str | None:
        """The signed-in key, or None: an unknown key is simply anonymous (C.1)."""
        key = ""
        authorization = headers.get("authorization", "")
        if " " in authorization:
            key = authorization.split(" ", 1)[1].strip()
        if not key:
            key = (query.get("token") or [""])[0]
        return key if key in self.config.api_keys else None

    # -- API ---------------------------------------------------------------------------------
    def _base(self) -> str:
        return self.url

    def _images(self, query: dict[str, list[str]]) -> _Response:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        def as_int(name: str, low: int, high: int) -> int | None:
            raw = one(name)
            if raw is None:
                return None
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise ValueError(name)
            return int(raw)

        try:
            limit = as_int("limit", 0, 200)
            page = as_int("page", 1, _INT_MAX)
            image_id = as_int("imageId", 1, _INT_MAX)
            version_id = as_int("modelVersionId", 1, _INT_MAX)
            cursor = as_int("cursor", 0, _INT_MAX)
            level = as_int("browsingLevel", 0, 63)
        except ValueError as exc:
            issue = {"code": "invalid_type", "path": [str(exc)], "message": "Invalid input"}
            return _Response(400, {"error": {"issues": [issue], "name": "ZodError"}})
        limit = 100 if limit is None else limit
        if page is not None and page * limit > 1000:
            return _Response(429, {"error": MESSAGES["pages"]})
        if level is None:
            level = NSFW_QUERY_LEVELS.get((one("nsfw") or "none").lower(), 1)
        with_meta = (one("withMeta") or "false").lower() == "true"
        flat = (one("flatMeta") or "false").lower() == "true" and self.config.honour_flat_meta
        images = self.config.catalog.images
        if image_id is not None:
            images = [i for i in images if i.id == image_id]
        if version_id is not None:
            images = [i for i in images if version_id in i.model_version_ids]
        images = [i for i in images if NSFW_LEVEL_BITS.get(i.nsfw_level, 1) & level]
        images = sorted(images, key=lambda i: i.id)
        if cursor is not None:
            images = [i for i in images if i.id >= cursor]
        page_items, rest = images[:limit], images[limit:]
        # The legacy DB path (imageId queries) wraps meta unless flatMeta (C.2).
        legacy = image_id is not None
        items = []
        for image in page_items:
            meta: Any = image.meta if with_meta else None
            if with_meta and legacy and not flat:
                meta = {"id": image.id, "meta": image.meta}
            items.append(image_json(self._base(), image, meta=meta))
        metadata: dict[str, Any] = {}
        if rest:
            metadata["nextCursor"] = str(rest[0].id)
            metadata["nextPage"] = f"{self._base()}/api/v1/images?cursor={rest[0].id}"
        return _Response(200, {"items": items, "metadata": metadata}, _public_cache())

    def _model(self, raw_id: str) -> _Response:
        model_id = _positive_int(raw_id)
        if model_id is None:
            return _Response(400, {"error": "Invalid id"})
        model = self.config.catalog.model(model_id)
        if model is None or not any(v.published for v in model.versions):
            return _Response(404, {"error": f"No model with id {model_id}"})
        return _Response(200, model_json(self._base(), model), _public_cache())

    def _version(self, raw_id: str) -> _Response:
        version_id = _positive_int(raw_id)
        if version_id is None:
            return _Response(400, {"error": "Invalid id"})
        found = self.config.catalog.version(version_id)
        if found is None or not found[1].published:
            return _Response(404, {"error": "Model not found"})
        model, version = found
        if primary_file(version) is None:
            return _Response(404, {"error": "Missing model file"})
        return _Response(200, version_json(self._base(), model, version), _public_cache())

    def _by_hash(self, value: str) -> _Response:
        found = self.config.catalog.by_hash(unquote(value))
        if found is None:
            return _Response(404, {"error": "Model not found"})
        headers = {"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"}
        return _Response(200, version_json(self._base(), *found), headers)

    # -- downloads ---------------------------------------------------------------------------
    def _download(
        self,
        raw_id: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        user: str | None,
    ) -> _Response:
        browser = bool(_BROWSER_UA.search(headers.get("user-agent", "")))
        no_store = {"Cache-Control": "no-store, max-age=0"}
        version_id = _positive_int(raw_id)
        if version_id is None:
            return _error(400, {"error": "Invalid modelVersionId"}, browser)
        found = self.config.catalog.version(version_id)
        if found is None or not found[1].published or found[0].poi:
            return _error(404, {"error": "File not found"}, browser)
        model, version = found
        if model.mode == "Archived":
            return _error(410, {"error": "Model archived, not available for download"}, browser)
        if self.faults.rate_limit_downloads:
            return _error(429, {"error": MESSAGES["rate"]}, browser, self.config.retry_after)
        if version.blocked:
            return _error(403, {"error": "Forbidden"}, browser)
        anonymous_denied = user is None and not self.config.unauthenticated_download
        if (version.require_auth or anonymous_denied) and user is None:
            if browser:
                login = f"/login?returnUrl=/models/{model.id}"
                return _Response(307, headers={"Location": login})
            return _Response(401, {"error": "Unauthorized", "message": MESSAGES["login"]})
        if version.downloads_disabled:
            body = {"error": "Unauthorized", "message": MESSAGES["disabled"]}
            return _error(401, body, browser)
        if version.early_access_deadline:
            body = {
                "error": "Early Access",
                "deadline": version.early_access_deadline,
                "message": MESSAGES["early"],
            }
            return _error(403, body, browser)
        if version.allowed_keys is not None and user not in version.allowed_keys:
            if user is None:
                body = {"error": "Unauthorized", "message": MESSAGES["login"]}
                return _error(401, body, browser)
            return _error(403, {"error": MESSAGES["no_access"]}, browser)
        sim_file = _choose_file(version, query)
        if sim_file is None:
            return _error(404, {"error": "File not found"}, browser)
        expires = int(time.time()) + self.config.signed_url_seconds
        location = (
            f"{self._base()}/storage/{sim_file.id}/{quote(sim_file.name, safe='')}"
            f"?expires={expires}&sig={self._sign(sim_file.id, expires)}"
        )
        return _Response(307, headers={"Location": location, **no_store})

    def _sign(self, file_id: int, expires: int) -> str:
        message = f"{file_id}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def _storage(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> _Response:
        denied = _Response(
            403,
            raw=b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            content_type="application/xml",
        )
        match = re.fullmatch(r"/storage/(\d+)/[^/]+", path)
        expires_raw = (query.get("expires") or [""])[0]
        signature = (query.get("sig") or [""])[0]
        if match is None or not expires_raw.isdigit() or method not in ("GET", "HEAD"):
            return denied
        file_id, expires = int(match.group(1)), int(expires_raw)
        if expires < time.time() or not hmac.compare_digest(
            signature, self._sign(file_id, expires)
        ):
            return denied
        found = self.config.catalog.file(file_id)
        if found is None:
            return denied
        sim_file = found[2]
        size = sim_file.length
        common = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{sim_file.name}"',
            "Accept-Ranges": "bytes",
            "ETag": f'"{sim_file.hashes["SHA256"][:32].lower()}"',
        }
        wanted = _RANGE.match(headers.get("range", "").strip())
        if wanted is None or self.faults.ignore_range:
            return _Response(200, headers=common, stream=(sim_file, 0, size))
        start = int(wanted.group(1))
        end = int(wanted.group(2)) + 1 if wanted.group(2) else size
        if start >= size or end <= start:
            return _Response(416, raw=b"", headers={"Content-Range": f"bytes */{size}"})
        end = min(end, size)
        common["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return _Response(206, headers=common, stream=(sim_file, start, end))

    def _image_file(self, path: str) -> _Response:
        match = re.search(r"/original=true/(\d+)\.\w+$", path)
        image = self.config.catalog.image(int(match.group(1))) if match else None
        if image is None:
            for model in self.config.catalog.models:
                for version in model.versions:
                    for candidate in version.images:
                        if match and candidate.id == int(match.group(1)):
                            image = candidate
        if image is None:
            return _Response(404, raw=b"Not found", content_type="text/plain")
        return _Response(200, raw=image.png(), content_type="image/png")


def _positive_int(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= _INT_MAX else None


def _public_cache() -> dict[str, str]:
    return {
        "Cache-Control": "public, s-maxage=300, stale-while-revalidate=150",
        "Access-Control-Allow-Origin": "*",
    }


def _error(
    status: int, body: dict[str, Any], browser: bool, retry_after: int | None = None
) -> _Response:
    """A download error: JSON for programs, plain text for browsers (C.1, C.5)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if browser:
        text = str(body.get("message") or body.get("error"))
        return _Response(status, raw=text.encode(), content_type="text/plain", headers=headers)
    return _Response(status, body, headers)


def _choose_file(version: SimVersion, query: dict[str, list[str]]) -> SimFile | None:
    """`fileId` picks exactly; otherwise the primary file, which must match any requested
    `type`/`format`/`size`/`fp` (C.5: a preference the chosen file lacks is a 404)."""

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    file_id = one("fileId")
    if file_id is not None:
        return next((f for f in version.files if str(f.id) == file_id), None)
    wanted = {key: one(key) for key in ("type", "format", "size", "fp")}
    candidates = [
        f
        for f in version.files
        if (wanted["type"] is None or f.type == wanted["type"])
        and (wanted["format"] is None or f.format == wanted["format"])
        and (wanted["size"] is None or f.size == wanted["size"])
        and (wanted["fp"] is None or f.fp == wanted["fp"])
    ]
    if not candidates:
        return None
    return next((f for f in candidates if f.primary), candidates[0])


__all__ = ["CivitaiSimulator", "Faults", "RecordedRequest", "SimModel", "SimulatorConfig"]
