"""The one module that talks HTTP to Stable Diffusion WebUI Forge / AUTOMATIC1111 servers.

Invariants kept here:

* Every call goes through one `requests.Session` per client, carries Basic auth when the
  endpoint has a username, a non-browser ``User-Agent: MobileSD/<version>``, and an explicit
  ``(connect, read)`` timeout. Nothing retries automatically: resending a `txt2img` would
  queue a second generation behind the server's FIFO lock, so retrying is the caller's
  decision (it owns the backoff and the attempt count).
* Every failure surfaces as a `ForgeError` subclass (an `IntegrationError`: a stable
  `code`, `transient` or not); no `requests` exception escapes. The subclass says what the
  caller may do next: `ForgeTransientError` = try again later,
  `ForgePermanentError` = this request will never succeed as sent, `ForgeAuthError` = fix the
  server record's credentials.
* Basic auth is encoded as UTF-8 (RFC 7617 ``charset="UTF-8"``, what A1111/Forge's
  FastAPI decodes), so any Unicode password works. Passwords are never logged, and URLs
  are logged by host and path only.
* Only URLs `integrations.addresses` allows are called: a refused one fails every call
  with a `ForgePermanentError` before anything is sent.
* What a server answers is passed on (in an exception's `detail`, in a model list) only as
  far as it is a recognised Forge/A1111 answer (REFERENCE.md A.2, A.4): any other body is
  described by its status, media type and size, never quoted, and every failure to get an
  HTTP answer reads "could not connect", so a URL pointed at another service learns
  nothing of it, not even whether its port is open (the log says what happened).

The module imports no Django models so it can be unit-tested without a database; server
records are read duck-typed by `ServerEndpoint.from_server`. Server behaviour relied on here
is described in ``shared/contracts/REFERENCE.md`` section A.
"""

import base64
import binascii
import http
import io
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase
from urllib3.exceptions import NewConnectionError

from integrations.addresses import url_problem
from integrations.errors import IntegrationError
from integrations.http import USER_AGENT, retry_after_seconds

logger = logging.getLogger(__name__)

__all__ = [
    "ForgeAuthError",
    "ForgeClient",
    "ForgeError",
    "ForgePermanentError",
    "ForgeTimeoutError",
    "ForgeTransientError",
    "ForgeUnreachableError",
    "ServerEndpoint",
    "TaskProgress",
    "Txt2ImgResult",
]


# Longest server message kept in an exception (a proxy may answer with a whole HTML page).
_MAX_DETAIL_CHARS = 500


# --- Exceptions --------------------------------------------------------------------------


class ForgeError(IntegrationError):
    """A call to a generation server failed (`IntegrationError`: `message`, stable `code`,
    `transient`, the server's `status_code` (None when no response arrived), `retry_after`).

    `detail` is the same readable message, taken from the server's error body when it is a
    recognised Forge/A1111 error (else describing the answer by status, type and size, or
    the network failure); `body` is that recognised JSON error body, or None; `method` and
    `path` name the request (path only).
    """

    code = "forge_error"
    transient = False

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        body: Any = None,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, status_code=status_code, retry_after=retry_after)
        self.body = body
        self.method = method
        self.path = path

    @property
    def detail(self) -> str:
        return self.message

    def __str__(self) -> str:
        where = f"{self.method} {self.path}".strip()
        status = f"HTTP {self.status_code}" if self.status_code is not None else ""
        prefix = ", ".join(part for part in (where, status) if part)
        return f"{prefix}: {self.detail}" if prefix else self.detail


class ForgeTransientError(ForgeError):
    """The server could not be reached or failed in a way worth retrying later.

    Connection refused/reset, timeouts, dropped connections, 502/503/504, 408/429, and 5xx
    errors not known to be deterministic (including CUDA out-of-memory, which depends on
    what else holds the GPU).
    """

    code = "forge_transient"
    transient = True


class ForgeUnreachableError(ForgeTransientError):
    """No connection could be made (refused, connect timeout, unknown host): the request
    never reached the server, so nothing runs there on its behalf."""

    code = "forge_unreachable"


class ForgeTimeoutError(ForgeTransientError):
    """The request reached the server but the answer did not arrive within the read timeout.

    For `txt2img` this means the generation may still be running (or queued behind the
    server's lock): probe `ForgeClient.progress_for_task` with the task id before sending it
    again, or the server will generate twice.
    """

    code = "forge_timeout"


class ForgePermanentError(ForgeError):
    """The server rejected this request deterministically; sending it again cannot help.

    4xx responses (404, 422 validation, ...) and 500s whose message is known to depend only
    on the request: unknown checkpoint/upscaler/script, ``KeyError`` on an option, an
    undecodable image.
    """

    code = "forge_rejected"
    transient = False


class ForgeAuthError(ForgePermanentError):
    """The server refused our credentials (HTTP 401/403): the server record needs fixing."""

    code = "forge_auth_failed"


# 500 messages raised by A1111/Forge for problems of the request itself (REFERENCE.md A.2).
_PERMANENT_MESSAGES = re.compile(
    r"model '.*' not found"
    r"|could not find upscaler"
    r"|could not find checkpoint"
    r"|invalid encoded image"
    r"|script '.*' not found"
    r"|always on script .* not found"
    r"|cannot have a selectable script"
    r"|sampler not found"
    r"|init image not found"
    r"|requests not allowed"
    r"|request to local resource not allowed",
    re.IGNORECASE,
)
# Exception class names (the "error" key of a 500 body) that are deterministic per request.
_PERMANENT_ERROR_CLASSES = frozenset({"KeyError"})
# 4xx statuses that mean "later", not "never".
_TRANSIENT_4XX = frozenset({408, 425, 429})
# Gateway statuses: the generation server itself was not reached or did not answer in time.
_GATEWAY_5XX = frozenset({502, 503, 504})


def _classify(status_code: int, detail: str, error_class: str | None) -> type[ForgeError]:
    """Choose the exception class for an HTTP error response."""
    if status_code in (401, 403):
        return ForgeAuthError
    if status_code in _TRANSIENT_4XX:
        return ForgeTransientError
    if 400 <= status_code < 500:
        return ForgePermanentError
    if status_code in _GATEWAY_5XX:
        return ForgeTransientError
    if status_code == 501:
        return ForgePermanentError
    if error_class in _PERMANENT_ERROR_CLASSES or _PERMANENT_MESSAGES.search(detail):
        return ForgePermanentError
    return ForgeTransientError


class _SignallingBody(io.BytesIO):
    """A request body that calls `on_sent` when it has been read to its end: the HTTP
    connection reads a file-like body block by block and writes each block to the socket
    before reading the next, so the final, empty read means the request is on its way.
    Its length is known (requests sends a Content-Length, not chunks)."""

    def __init__(self, data: bytes, on_sent: Callable[[], None]) -> None:
        super().__init__(data)
        self._on_sent: Callable[[], None] | None = on_sent

    def read(self, size: int | None = -1, /) -> bytes:
        block = super().read(size)
        if not block and self._on_sent is not None:
            on_sent, self._on_sent = self._on_sent, None
            on_sent()
        return block


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was never made, as opposed to dropped mid-request.

    requests wraps urllib3's MaxRetryError, whose `reason` is a NewConnectionError (refused,
    unknown host) for failures before anything was sent.
    """
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _truncate(text: str) -> str:
    text = text.strip()
    if len(text) <= _MAX_DETAIL_CHARS:
        return text
    return text[: _MAX_DETAIL_CHARS - 1] + "…"


def _format_validation_errors(items: list[Mapping[str, Any]]) -> str:
    """Render FastAPI 422 lists (pydantic 1 and 2 item shapes) as ``field: message; ...``."""
    parts: list[str] = []
    for item in items[:10]:
        loc = item.get("loc") or []
        if isinstance(loc, list | tuple):
            # "body" is the FastAPI location of every JSON field: noise for a reader.
            names = [str(p) for p in loc if p != "body"]
            where = ".".join(names)
        else:
            where = str(loc)
        msg = str(item.get("msg") or item.get("type") or "invalid")
        parts.append(f"{where}: {msg}" if where else msg)
    if len(items) > 10:
        parts.append(f"... and {len(items) - 10} more")
    return "; ".join(parts) or "validation error"


# The keys of A1111's `api_middleware` error body and of Forge 2's exception handler.
_WEBUI_ERROR_KEYS = frozenset({"error", "detail", "body", "errors", "message"})
_EXCEPTION_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")


def _is_validation_list(value: Any) -> TypeGuard[list[Mapping[str, Any]]]:
    return isinstance(value, list) and all(
        isinstance(item, Mapping) and isinstance(item.get("msg"), str) for item in value
    )


def _recognised_error(body: Any) -> tuple[str, str | None] | None:
    """(readable detail, exception class name or None) of a Forge/A1111 error body, or None
    when `body` is not one (REFERENCE.md A.2).

    Recognised: FastAPI's ``{"detail": str}`` and 422 ``{"detail": [{"loc", "msg", ...}]}``;
    A1111's ``{"error", "detail", "body", "errors"}`` and Forge 2's ``{"error", "detail",
    "body", "message"}`` (string values, `error` an exception class name).
    """
    if not isinstance(body, Mapping) or not body:
        return None
    detail = body.get("detail")
    if set(body) == {"detail"}:
        if isinstance(detail, str) and detail.strip():
            return _truncate(detail), None
        if _is_validation_list(detail):
            return _truncate(_format_validation_errors(detail)), None
        return None
    error_class = body.get("error")
    if (
        not set(body) <= _WEBUI_ERROR_KEYS
        or not isinstance(error_class, str)
        or not _EXCEPTION_CLASS.fullmatch(error_class)
    ):
        return None
    if not all(isinstance(body.get(key, ""), str) for key in ("body", "errors", "message")):
        return None
    detail = detail or ""
    if _is_validation_list(detail):
        return _truncate(_format_validation_errors(detail)), error_class
    if not isinstance(detail, str):
        return None
    if detail.strip():
        return _truncate(detail), error_class
    # Uncaught exceptions: the message is in "errors" (A1111) or "message" (Forge 2).
    for key in ("errors", "message"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            # HTTPException is the wrapper class, not the cause: its name adds nothing.
            if error_class != "HTTPException":
                return _truncate(f"{error_class}: {value}"), error_class
            return _truncate(value), error_class
    return error_class, error_class


_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
)


def _describe_answer(response: requests.Response) -> str:
    """An answer that is not a recognised Forge/A1111 one, by media type and size only."""
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    kind = media_type if _MEDIA_TYPE.fullmatch(media_type) else "no known media type"
    size = len(response.content)
    return f"{kind}, {size} byte{'' if size == 1 else 's'}"


def _status_phrase(status: int) -> str:
    # The standard phrase, never the answer's own reason line (the server chooses that).
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "no details"


def _json_kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


class _Utf8BasicAuth(AuthBase):
    """HTTP Basic auth with the credentials encoded as UTF-8 (RFC 7617 ``charset="UTF-8"``).

    requests' own `HTTPBasicAuth` encodes as Latin-1 and raises on anything else (``€``).
    """

    def __init__(self, username: str, password: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._header = f"Basic {token}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<_Utf8BasicAuth>"


# --- Endpoint and results ----------------------------------------------------------------


@dataclass(frozen=True)
class ServerEndpoint:
    """Where a generation server answers and how to authenticate.

    `base_url` is normalised to the server root without a trailing slash; a pasted
    ``.../sdapi/v1`` suffix is removed because every path below is absolute from the root.
    """

    base_url: str
    username: str = ""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        if url.lower().endswith("/sdapi/v1"):
            url = url[: -len("/sdapi/v1")].rstrip("/")
        object.__setattr__(self, "base_url", url)

    @classmethod
    def from_server(cls, server: Any) -> "ServerEndpoint":
        """Build from a server record (anything with ``.api_url``, ``.username``, ``.password``)."""
        return cls(
            base_url=str(server.api_url or ""),
            username=str(getattr(server, "username", "") or ""),
            password=str(getattr(server, "password", "") or ""),
        )

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


@dataclass(frozen=True)
class Txt2ImgResult:
    """A finished `txt2img`: decoded image bytes (PNG unless the server's format differs),
    the echoed request `parameters`, `info` parsed from the JSON string (empty when
    unparsable) and that string as received in `raw_info`."""

    images: list[bytes]
    parameters: dict[str, Any]
    info: dict[str, Any]
    raw_info: str


@dataclass(frozen=True)
class TaskProgress:
    """What the server says about a task.

    With ``source == "internal"`` (``POST /internal/progress``) the answer is about the task
    id asked for: `active` only for the task holding the server's lock, `queued` while it
    waits (then `queue_position`/`queue_size` come from ``"In queue: i/n"``), `completed`
    while it is among the server's last 16 finished ids. With ``source == "sdapi"``
    (``GET /sdapi/v1/progress``, servers started with ``--nowebui``) the answer is about
    whatever the server is running: `active` means "the server is busy", `task_specific` is
    False, `queued`/`completed` are unknown (False), and `step`/`total_steps` are known.

    `preview` is a live preview image (its bytes as the server encoded them: PNG, JPEG or
    WebP) when one was asked for and there is a new one: from ``/internal/progress`` with
    its `preview_id` (the server's ``id_live_preview``, to send back next time so the same
    image is not sent twice); from ``/sdapi/v1/progress`` the server's current image, sent
    at every probe and without an id (`preview_id` None: compare the bytes).
    """

    active: bool
    queued: bool
    completed: bool
    progress: float | None
    eta: float | None
    textinfo: str | None
    queue_position: int | None
    queue_size: int | None
    step: int | None
    total_steps: int | None
    source: Literal["internal", "sdapi"]
    task_specific: bool
    preview: bytes | None = None
    preview_id: int | None = None


_IN_QUEUE = re.compile(r"In queue:\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _clamp_fraction(value: float | None) -> float | None:
    if value is None:
        return None
    return min(max(value, 0.0), 1.0)


def _image_bytes(value: Any, *, data_uri: bool) -> bytes | None:
    """The bytes of a preview: a ``data:image/...;base64,`` URI (`/internal/progress`) or
    bare base64 (`/sdapi/v1/progress`); None for anything else. A damaged preview is only
    a missing one: never an error of the progress it came with."""
    if not isinstance(value, str) or not value:
        return None
    if data_uri:
        header, _, value = value.partition(",")
        if not (header.startswith("data:image/") and header.endswith(";base64")):
            return None
    try:
        return base64.b64decode(value, validate=True) or None
    except (binascii.Error, ValueError):
        return None


# --- Client ------------------------------------------------------------------------------


class ForgeClient:
    """Synchronous client for one Forge / A1111 server (API enabled with ``--api``).

    Not thread-safe beyond what `requests.Session` offers: use one client per thread/job.
    `read_timeout` applies to quick calls; pass `timeout=` (sized to the job by the caller)
    for calls that wait behind the server's generation lock (`txt2img`, the `refresh_*`
    rescans).
    """

    def __init__(
        self,
        endpoint: ServerEndpoint,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._owns_session = session is None
        self.session = session if session is not None else requests.Session()
        # Passed per request rather than set on the session so an injected session is
        # never mutated.
        self._auth = (
            _Utf8BasicAuth(endpoint.username, endpoint.password) if endpoint.username else None
        )
        self._url_problem = url_problem(endpoint.base_url)
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        # None = not tried yet; False once the server answered 404 (--nowebui mode).
        self._internal_progress: bool | None = None

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> "ForgeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport --

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Any:
        """Send one request and return its parsed JSON (None for an empty or ``null`` body).

        `on_sent` is called once the whole request is written, while the answer is awaited.
        Raises the `ForgeError` subclass matching the failure; never a `requests` exception.
        """
        if self._url_problem:
            logger.warning(
                "%s %s not sent: the server URL is refused (%s)", method, path, self._url_problem
            )
            raise ForgePermanentError(
                f"the server URL is not allowed: {self._url_problem}", method=method, path=path
            )
        read_timeout = self.read_timeout if timeout is None else timeout
        headers, data = self._headers, None
        if on_sent is not None and json_body is not None:
            headers = {**headers, "Content-Type": "application/json"}
            data = _SignallingBody(json.dumps(json_body, allow_nan=False).encode(), on_sent)
            json_body = None
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                self.endpoint.url(path),
                json=json_body,
                data=data,
                params=params,
                auth=self._auth,
                headers=headers,
                timeout=(self.connect_timeout, read_timeout),
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise self._network_error(exc, method, path, read_timeout) from exc
        elapsed = time.monotonic() - started
        logger.debug(
            "%s %s on %s -> %s in %.2fs",
            method,
            path,
            self._host(),
            response.status_code,
            elapsed,
        )
        if response.status_code >= 300:
            raise self._http_error(response, method, path)
        return self._parse_json(response, method, path)

    def _host(self) -> str:
        # Host and port only, never the user information of a URL.
        parts = urlsplit(self.endpoint.base_url)
        try:
            port = parts.port
        except ValueError:
            port = None
        host = parts.hostname or "?"
        return f"{host}:{port}" if port else host

    def _network_error(
        self, exc: requests.exceptions.RequestException, method: str, path: str, read: float
    ) -> ForgeError:
        # What the caller (and whoever reads its message) learns is "could not connect",
        # whatever happened: refused, timed out, dropped or answered in another protocol
        # all mean the same to a user, and telling them apart would map another host's
        # ports. The class still says what the engine may do next; the log says the rest.
        kind: type[ForgeError]
        detail = f"could not connect to {self._host()}"
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            kind, reason = ForgeUnreachableError, f"connect timed out after {self.connect_timeout}s"
        elif isinstance(exc, requests.exceptions.ReadTimeout):
            kind, reason = ForgeTimeoutError, f"no answer within the read timeout of {read}s"
        elif isinstance(
            exc,
            requests.exceptions.InvalidURL
            | requests.exceptions.MissingSchema
            | requests.exceptions.InvalidSchema
            | requests.exceptions.InvalidHeader
            | requests.exceptions.TooManyRedirects,
        ):
            # A misconfigured server record: retrying sends the same bad request.
            kind = ForgePermanentError
            reason = detail = f"invalid request: {type(exc).__name__}"
        elif isinstance(
            exc,
            requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError,
        ):
            kind, reason = ForgeTransientError, "connection dropped while reading the response"
        elif isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc):
            kind, reason = ForgeUnreachableError, "connection refused or host unknown"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            kind, reason = ForgeTransientError, "connection lost"
        else:
            kind, reason = ForgeTransientError, f"request failed: {type(exc).__name__}"
        logger.warning(
            "%s %s on %s failed: %s (%s)", method, path, self._host(), reason, type(exc).__name__
        )
        return kind(detail, method=method, path=path)

    def _http_error(self, response: requests.Response, method: str, path: str) -> ForgeError:
        status = response.status_code
        body: Any = None
        if response.content.strip():
            try:
                body = response.json()
            except ValueError:
                body = None
        recognised = _recognised_error(body)
        error_class: str | None = None
        if recognised is not None:
            detail, error_class = recognised
        elif response.content.strip():
            body, detail = None, f"not a Forge/A1111 error ({_describe_answer(response)})"
        else:
            detail = _status_phrase(status)
        if 300 <= status < 400:
            # Redirects are not followed (a redirect to a login page would hide a 401), and
            # where to is not repeated: the answer is not the API's.
            kind: type[ForgeError] = ForgePermanentError
            detail = "unexpected redirect: check the URL's scheme, host and port"
        else:
            kind = _classify(status, detail if recognised else "", error_class)
        # 404 is how a server says "this mode/version lacks the route"; callers probe for it.
        level = logging.INFO if status == 404 else logging.WARNING
        logger.log(
            level,
            "%s %s on %s -> HTTP %s (%s): %s",
            method,
            path,
            self._host(),
            status,
            kind.__name__,
            detail,
        )
        return kind(
            detail,
            status_code=status,
            body=body,
            method=method,
            path=path,
            retry_after=retry_after_seconds(response),
        )

    def _parse_json(self, response: requests.Response, method: str, path: str) -> Any:
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError as exc:
            # A 2xx that is not JSON is not the API (a proxy page, a wrong port): treated as
            # transient so the caller's bounded retries decide, rather than failing a job on
            # one glitch.
            raise ForgeTransientError(
                f"the server answered with a body that is not JSON ({_describe_answer(response)})",
                status_code=response.status_code,
                method=method,
                path=path,
            ) from exc

    def _get_list(
        self, path: str, *, required: tuple[str, ...] = (), timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """A JSON list of objects, each with a string under every `required` key (the
        documented shape); anything else is an error that quotes nothing of it."""
        body = self._request("GET", path, timeout=timeout)
        if not isinstance(body, list):
            raise ForgeTransientError(
                f"expected a JSON list, got {_json_kind(body)}", method="GET", path=path
            )
        for item in body:
            if not isinstance(item, dict) or not all(
                isinstance(item.get(key), str) for key in required
            ):
                raise ForgeTransientError(
                    "the list is not in the Forge/A1111 shape (each entry an object with "
                    f"{', '.join(required) or 'fields'})",
                    method="GET",
                    path=path,
                )
        return body

    def _get_dict(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        body = self._request("GET", path, timeout=timeout)
        if not isinstance(body, dict):
            raise ForgeTransientError(
                f"expected a JSON object, got {_json_kind(body)}", method="GET", path=path
            )
        return body

    # -- generation --

    def txt2img(
        self,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Txt2ImgResult:
        """``POST /sdapi/v1/txt2img`` and decode the answer.

        The call blocks until the generation is finished (it waits behind any job holding the
        server's lock), so the caller passes a `timeout` sized to the job. A
        `ForgeTimeoutError` means the generation may still be running under
        ``payload["force_task_id"]``. `on_sent` is called (in this thread) as soon as the
        request is written, before the wait.
        """
        return self._generate("txt2img", payload, timeout=timeout, on_sent=on_sent)

    def img2img(
        self,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Txt2ImgResult:
        """``POST /sdapi/v1/img2img`` (init images and mask as base64 in `payload`) and
        decode the answer; as `txt2img` in every other way."""
        return self._generate("img2img", payload, timeout=timeout, on_sent=on_sent)

    def _generate(
        self,
        mode: str,
        payload: dict[str, Any],
        *,
        timeout: float | None,
        on_sent: Callable[[], None] | None,
    ) -> Txt2ImgResult:
        path = f"/sdapi/v1/{mode}"
        logger.info(
            "%s on %s: task %s, %s step(s), %sx%s",
            mode,
            self._host(),
            payload.get("force_task_id"),
            payload.get("steps"),
            payload.get("width"),
            payload.get("height"),
        )
        body = self._request("POST", path, json_body=payload, timeout=timeout, on_sent=on_sent)
        if not isinstance(body, dict) or not isinstance(body.get("images", 0), list | None):
            # Not a TextToImageResponse ({"images", "parameters", "info"}): nothing of it is kept.
            raise ForgeTransientError(
                f"{mode} answered without a Forge/A1111 result (images, parameters, info)",
                method="POST",
                path=path,
            )
        images: list[bytes] = []
        for index, encoded in enumerate(body.get("images") or []):
            images.append(self._decode_image(encoded, index, path))
        parameters = body.get("parameters")
        raw = body.get("info")
        info: dict[str, Any] = {}
        if isinstance(raw, str):
            raw_info = raw
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                info = parsed
        elif isinstance(raw, dict):
            # Not what A1111/Forge send, but a proxy may have decoded it already.
            info = raw
            raw_info = json.dumps(raw)
        else:
            raw_info = ""
        return Txt2ImgResult(
            images=images,
            parameters=parameters if isinstance(parameters, dict) else {},
            info=info,
            raw_info=raw_info,
        )

    @staticmethod
    def _decode_image(encoded: Any, index: int, path: str) -> bytes:
        if not isinstance(encoded, str):
            raise ForgeTransientError(
                f"image {index} is not a base64 string", method="POST", path=path
            )
        # A1111 sends bare base64; tolerate a data: URI prefix all the same.
        if encoded.startswith("data:") and "," in encoded:
            encoded = encoded.split(",", 1)[1]
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ForgeTransientError(
                f"image {index} is not valid base64", method="POST", path=path
            ) from exc

    def interrupt(self) -> None:
        """``POST /sdapi/v1/interrupt``: stops whatever job is running, ours or not.

        Check `is_task_active` first; the running request still returns 200 with the images
        made so far. Interrupting an idle server has no effect on later jobs.
        """
        logger.info("Interrupting the current job on %s", self._host())
        self._request("POST", "/sdapi/v1/interrupt")

    # -- progress and task ids --

    def progress_for_task(
        self, task_id: str, *, live_preview_id: int | None = None
    ) -> TaskProgress:
        """Progress of `task_id`, from ``/internal/progress`` or, without a web UI, from
        ``/sdapi/v1/progress`` (see `TaskProgress` for what each source can tell).

        `live_preview_id` asks for a live preview newer than the one of that id (-1: none
        received yet; pass the `preview_id` of the last preview received); None asks for
        none (the answer is then small)."""
        previews = live_preview_id is not None
        if self._internal_progress is not False:
            try:
                body = self._request(
                    "POST",
                    "/internal/progress",
                    json_body={
                        "id_task": task_id,
                        "id_live_preview": live_preview_id if previews else -1,
                        "live_preview": previews,
                    },
                )
            except ForgePermanentError as exc:
                if exc.status_code != 404 or isinstance(exc, ForgeAuthError):
                    raise
                # --nowebui: the /internal routes do not exist; remember it for this client.
                logger.info(
                    "%s has no /internal/progress (API-only mode); using /sdapi/v1/progress",
                    self._host(),
                )
                self._internal_progress = False
            else:
                self._internal_progress = True
                return self._parse_internal_progress(body, previews=previews)
        return self._parse_sdapi_progress(
            self._sdapi_progress(current_image=previews), task_id, previews=previews
        )

    @staticmethod
    def _parse_internal_progress(body: Any, *, previews: bool = False) -> TaskProgress:
        data = body if isinstance(body, dict) else {}
        # The text is shown with the job: only from an answer in the documented shape.
        documented = all(
            isinstance(data.get(key), bool) for key in ("active", "queued", "completed")
        )
        textinfo = (
            data.get("textinfo") if documented and isinstance(data.get("textinfo"), str) else None
        )
        position = size = None
        if textinfo:
            match = _IN_QUEUE.search(textinfo)
            if match:
                position, size = int(match.group(1)), int(match.group(2))
        active = bool(data.get("active"))
        preview = preview_id = None
        if previews and active:
            preview_id = _as_int(data.get("id_live_preview"))
            preview = _image_bytes(data.get("live_preview"), data_uri=True)
            if preview is None or preview_id is None:
                preview = preview_id = None
        return TaskProgress(
            active=active,
            queued=bool(data.get("queued")),
            completed=bool(data.get("completed")),
            progress=_clamp_fraction(_as_float(data.get("progress"))),
            eta=_as_float(data.get("eta")),
            textinfo=textinfo,
            queue_position=position,
            queue_size=size,
            step=None,
            total_steps=None,
            source="internal",
            task_specific=True,
            preview=preview,
            preview_id=preview_id,
        )

    def _sdapi_progress(self, *, current_image: bool = False) -> dict[str, Any]:
        skip = "false" if current_image else "true"
        body = self._request("GET", "/sdapi/v1/progress", params={"skip_current_image": skip})
        return body if isinstance(body, dict) else {}

    @staticmethod
    def _parse_sdapi_progress(
        body: dict[str, Any], task_id: str, *, previews: bool = False
    ) -> TaskProgress:
        raw_state = body.get("state")
        state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
        job_count = _as_int(state.get("job_count")) or 0
        busy = job_count > 0 or bool(state.get("job"))
        # Stock servers drop `current_task` from this response; a server that keeps it lets
        # us answer for the task itself.
        current = body.get("current_task")
        task_specific = isinstance(current, str) and bool(current)
        active = (current == task_id) if task_specific else busy
        steps = _as_int(state.get("sampling_steps"))
        step = _as_int(state.get("sampling_step"))
        eta = _as_float(body.get("eta_relative"))
        return TaskProgress(
            active=active,
            queued=False,
            completed=False,
            progress=_clamp_fraction(_as_float(body.get("progress"))) if active else None,
            eta=eta if active and eta else None,
            textinfo=body.get("textinfo")
            if isinstance(raw_state, dict) and isinstance(body.get("textinfo"), str)
            else None,
            queue_position=None,
            queue_size=None,
            step=step if active and steps else None,
            total_steps=steps if active and steps else None,
            source="sdapi",
            task_specific=task_specific,
            # Whatever the server runs: ours while our request holds its lock.
            preview=_image_bytes(body.get("current_image"), data_uri=False)
            if previews and active
            else None,
        )

    def is_task_active(self, task_id: str) -> bool:
        """True only when the server confirms `task_id` is the job it is running now.

        Use before `interrupt` so we never stop someone else's job. Where the server cannot
        answer per task (``--nowebui``), this is False: "not confirmed" (check
        `progress_for_task(...).source` to tell the cases apart). A small race remains: the
        task may finish between this probe and the interrupt.
        """
        progress = self.progress_for_task(task_id)
        return progress.active and progress.task_specific

    # -- resources --

    def sd_models(self) -> list[dict[str, Any]]:
        """``GET /sdapi/v1/sd-models``: ``[{"title", "model_name", "hash", "sha256", ...}]``."""
        return self._get_list("/sdapi/v1/sd-models", required=("title", "model_name"))

    def loras(self) -> list[dict[str, Any]]:
        """``GET /sdapi/v1/loras``: ``[{"name", "alias", "path", "metadata"}]``."""
        return self._get_list("/sdapi/v1/loras", required=("name", "path"))

    # The lists of servers_app.extension_cache. Each answers 404 (ForgePermanentError)
    # where the server lacks it: A1111 has no sd-modules, Forge no sd-vae, and the ControlNet
    # routes exist only with that extension.
    def upscalers(self) -> list[dict[str, Any]]:
        """``GET /sdapi/v1/upscalers``: ``[{"name", "model_name", "model_path", "scale"}]``;
        their names are valid ``hr_upscaler`` values."""
        return self._get_list("/sdapi/v1/upscalers", required=("name",))

    def sd_vae(self) -> list[dict[str, Any]]:
        """``GET /sdapi/v1/sd-vae`` (A1111): ``[{"model_name", "filename"}]``."""
        return self._get_list("/sdapi/v1/sd-vae", required=("model_name", "filename"))

    def sd_modules(self) -> list[dict[str, Any]]:
        """``GET /sdapi/v1/sd-modules`` (Forge): the VAEs and text encoders
        ``forge_additional_modules`` takes, ``[{"model_name", "filename"}]``."""
        return self._get_list("/sdapi/v1/sd-modules", required=("model_name", "filename"))

    def prompt_styles(self) -> list[dict[str, Any]]:
        """``GET /sdapi/v1/prompt-styles``: ``[{"name", "prompt", "negative_prompt"}]``."""
        return self._get_list("/sdapi/v1/prompt-styles", required=("name",))

    def scripts(self) -> dict[str, Any]:
        """``GET /sdapi/v1/scripts``: ``{"txt2img": [titles], "img2img": [titles]}``,
        lower-case titles of every script, always-on ones included."""
        return self._get_dict("/sdapi/v1/scripts")

    def script_info(self) -> list[dict[str, Any]]:
        """``GET /sdapi/v1/script-info``: ``[{"name", "is_alwayson", "is_img2img", "args"}]``
        (one entry per script and mode)."""
        return self._get_list("/sdapi/v1/script-info")

    def controlnet_model_list(self) -> dict[str, Any]:
        """``GET /controlnet/model_list`` (the ControlNet extension): ``{"model_list":
        [names]}``."""
        return self._get_dict("/controlnet/model_list")

    def latent_upscale_modes(self) -> list[dict[str, Any]]:
        """Latent modes, which are valid `hr_upscaler` values too."""
        return self._get_list("/sdapi/v1/latent-upscale-modes")

    def options(self) -> dict[str, Any]:
        """``GET /sdapi/v1/options``; an object without `sd_model_checkpoint` (a string, or
        null before any checkpoint was chosen) is not a Forge/A1111 answer."""
        path = "/sdapi/v1/options"
        options = self._get_dict(path)
        checkpoint = options.get("sd_model_checkpoint", 0)
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise ForgeTransientError(
                "the options are not in the Forge/A1111 shape (no sd_model_checkpoint)",
                method="GET",
                path=path,
            )
        return options

    def refresh_checkpoints(self, *, timeout: float | None = None) -> None:
        """Rescan checkpoints. Waits behind the generation lock: pass a long `timeout`."""
        self._request("POST", "/sdapi/v1/refresh-checkpoints", timeout=timeout)

    def refresh_loras(self, *, timeout: float | None = None) -> None:
        self._request("POST", "/sdapi/v1/refresh-loras", timeout=timeout)

    def refresh_embeddings(self, *, timeout: float | None = None) -> None:
        """Rescan textual-inversion embeddings (A1111 1.7+, Forge; waits behind the lock)."""
        self._request("POST", "/sdapi/v1/refresh-embeddings", timeout=timeout)

    def refresh_vae(self, *, timeout: float | None = None) -> None:
        """Rescan VAEs (waits behind the lock)."""
        self._request("POST", "/sdapi/v1/refresh-vae", timeout=timeout)
