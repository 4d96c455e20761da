"""The one module that talks HTTP to Civitai (REST API v1, downloads, image files).

Invariants kept here:

* Every call carries a non-browser ``User-Agent: MobileSD/<version>`` (Civitai answers
  browsers with text and redirects instead of JSON errors, REFERENCE.md C.1) and an
  explicit ``(connect, read)`` timeout.
* The API key is sent as ``Authorization: Bearer <key>`` to the configured Civitai origin
  only. The download's redirect to a signed storage URL is followed by hand, without the
  key: the signature is the credential there.
* 429 and 5xx answers to reads are retried with exponential backoff (honouring
  ``Retry-After``), up to `max_retries`; what then still fails surfaces as a
  `CivitaiError` subclass with a message a person can act on. No `requests` exception
  escapes.
* Neither the key nor a signed URL's query is ever logged (URLs are logged by path).

No Django imports: the caller passes settings in (`civitai_app.connection.civitai_client`).
"""

import email.message
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from integrations.errors import IntegrationError
from integrations.http import USER_AGENT, retry_after_seconds

logger = logging.getLogger(__name__)

__all__ = [
    "CivitaiArchived",
    "CivitaiBadRequest",
    "CivitaiClient",
    "CivitaiEarlyAccess",
    "CivitaiError",
    "CivitaiForbidden",
    "CivitaiInterrupted",
    "CivitaiLoginRequired",
    "CivitaiNotFound",
    "CivitaiRateLimited",
    "CivitaiUnavailable",
    "DownloadResponse",
]


_MAX_DETAIL_CHARS = 300


# --- Exceptions ---------------------------------------------------------------------------


class CivitaiError(IntegrationError):
    """A Civitai call failed (`IntegrationError`: `message`, stable `code`, `transient`,
    Civitai's `status_code`, `retry_after`). `code` is also the code of MobileSD's API
    answer, and `http_status` the status that answer has (a class attribute, like `code`)."""

    code = "civitai_error"
    http_status: ClassVar[int] = 502
    transient = False


class CivitaiUnavailable(CivitaiError):
    """Civitai could not be reached, timed out or failed (5xx): try again later."""

    code = "civitai_unavailable"
    http_status = 502
    transient = True


class CivitaiInterrupted(CivitaiUnavailable):
    """A file transfer stopped part-way (connection cut, stalled past the read timeout):
    resume it from the bytes already received."""

    code = "civitai_interrupted"


class CivitaiRateLimited(CivitaiError):
    """Civitai kept answering 429 after backing off."""

    code = "civitai_rate_limited"
    http_status = 429
    transient = True


class CivitaiBadRequest(CivitaiError):
    code = "civitai_bad_request"
    http_status = 400


class CivitaiLoginRequired(CivitaiError):
    """401: the file needs a signed-in account (or its creator disabled downloads)."""

    code = "civitai_login_required"
    http_status = 403


class CivitaiEarlyAccess(CivitaiError):
    """403 Early Access: only buyers may download it until the deadline."""

    code = "civitai_early_access"
    http_status = 403


class CivitaiForbidden(CivitaiError):
    """403: this account (or address) may not download the file."""

    code = "civitai_forbidden"
    http_status = 403


class CivitaiNotFound(CivitaiError):
    code = "civitai_not_found"
    http_status = 404


class CivitaiArchived(CivitaiError):
    """410: the model is archived and its files are no longer offered."""

    code = "civitai_archived"
    http_status = 410


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 1] + "…"


def _civitai_message(response: requests.Response) -> tuple[str, dict[str, Any]]:
    """Civitai's own words from an error body (`{"error", "message"?}` or text)."""
    try:
        body = response.json()
    except ValueError:
        return _truncate(response.text or ""), {}
    if not isinstance(body, dict):
        return _truncate(json.dumps(body)), {}
    error, message = body.get("error"), body.get("message")
    if isinstance(error, dict):  # the images endpoint's raw ZodError
        issues = error.get("issues") or []
        error = "; ".join(
            f"{'.'.join(map(str, i.get('path') or []))}: {i.get('message')}"
            for i in issues
            if isinstance(i, dict)
        )
    parts = [str(p) for p in (message, error) if isinstance(p, str) and p.strip()]
    return _truncate(parts[0] if parts else json.dumps(body)), body


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def error_for(response: requests.Response, *, what: str, has_key: bool) -> CivitaiError:
    """The exception for an error answer to `what` ("model version 123", "the download")."""
    status = response.status_code
    detail, body = _civitai_message(response)
    said = f" Civitai said: {detail}" if detail else ""
    retry_after = retry_after_seconds(response)
    if status == 401:
        if "disabled downloads" in detail:
            return CivitaiLoginRequired(
                f"The creator of {what} has disabled downloads on Civitai.", status_code=401
            )
        hint = (
            "Civitai did not accept the configured API key (it may be invalid or expired): "
            "create a new one at civitai.com/user/account."
            if has_key
            else "Civitai requires a logged-in account for it: set CIVITAI_API_KEY (or the "
            "API key in the admin's Civitai settings) to a key from civitai.com/user/account."
        )
        return CivitaiLoginRequired(f"Login required to get {what}. {hint}", status_code=401)
    if status == 403:
        if body.get("error") == "Early Access":
            deadline = body.get("deadline")
            until = f" until {deadline}" if deadline else ""
            return CivitaiEarlyAccess(
                f"{_capital(what)} is in Early Access on Civitai{until}: only "
                "accounts that bought access may download it.",
                status_code=403,
            )
        return CivitaiForbidden(
            f"Civitai does not allow this account to get {what}.{said}", status_code=403
        )
    if status == 404:
        return CivitaiNotFound(f"{_capital(what)} was not found on Civitai.{said}", status_code=404)
    if status == 410:
        return CivitaiArchived(
            f"{_capital(what)} is archived on Civitai and can no longer be downloaded.{said}",
            status_code=410,
        )
    if status == 429:
        return CivitaiRateLimited(
            f"Civitai is rate-limiting requests for {what}; try again later.{said}",
            status_code=429,
            retry_after=retry_after,
        )
    if 400 <= status < 500:
        return CivitaiBadRequest(
            f"Civitai refused the request for {what} (HTTP {status}).{said}", status_code=status
        )
    return CivitaiUnavailable(
        f"Civitai failed to answer for {what} (HTTP {status}).{said}",
        status_code=status,
        retry_after=retry_after,
    )


# --- Downloads ----------------------------------------------------------------------------


def content_disposition_filename(value: str) -> str:
    """The file name of a `Content-Disposition` header (RFC 6266/2231), or ""."""
    if not value:
        return ""
    message = email.message.Message()
    message["content-disposition"] = value
    return message.get_filename() or ""


@dataclass
class DownloadResponse:
    """An open file transfer from storage. `start` is where its body begins in the file
    (the Range asked for, or 0 when the server sent the whole file), `total` the file's
    size when known. Iterate `chunks()`; close() when done (a context manager)."""

    response: requests.Response
    start: int
    total: int | None
    filename: str
    range_not_satisfiable: bool = False

    def chunks(self, size: int) -> Iterator[bytes]:
        """The body in chunks of at most `size` bytes; a cut connection or a stall past the
        read timeout raises `CivitaiInterrupted`.

        Read with `read1` (whatever has arrived, up to `size`) rather than `read(size)`,
        which drops a partly filled buffer when the connection breaks: every byte received
        reaches the caller, so a resumed transfer asks for exactly what is missing.
        """
        raw = self.response.raw
        try:
            while True:
                chunk = raw.read1(size, decode_content=True)
                if not chunk:
                    return
                yield chunk
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise CivitaiInterrupted(f"The transfer was interrupted: {type(exc).__name__}") from exc

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> "DownloadResponse":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- Client -------------------------------------------------------------------------------


class CivitaiClient:
    """A synchronous Civitai client. One per thread (a `requests.Session` inside)."""

    def __init__(
        self,
        *,
        base_url: str = "https://civitai.com",
        api_key: str = "",
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        download_read_timeout: float = 60.0,
        max_retries: int = 4,
        backoff_seconds: float = 1.0,
        backoff_max_seconds: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.strip().rstrip("/")
        self._origin = _origin(self.base_url)
        self._api_key = api_key.strip()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.download_read_timeout = download_read_timeout
        self.max_retries = max(0, max_retries)
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._owns_session = session is None
        self.session = session if session is not None else requests.Session()
        self._sleep = sleep

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> "CivitaiClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def has_key(self) -> bool:
        return bool(self._api_key)

    # -- transport --

    def _headers(self, url: str, *, accept: str = "application/json") -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": accept}
        if self._api_key and _origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = self.backoff_seconds * (2**attempt)
        return min(self.backoff_max_seconds, max(backoff, retry_after or 0.0))

    def _send(
        self,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        headers: dict[str, str],
        stream: bool = False,
        read_timeout: float | None = None,
        retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504}),
    ) -> requests.Response:
        """GET with backoff on `retry_statuses` and on connection failures. Returns any
        non-retried response (the caller checks its status)."""
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        path = urlsplit(url).path
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self.session.get(
                    url,
                    params=params,
                    headers=headers,
                    timeout=timeout,
                    stream=stream,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                if last:
                    raise CivitaiUnavailable(
                        f"Civitai could not be reached for {what}: {type(exc).__name__}."
                    ) from exc
                delay = self._delay(attempt, None)
                logger.warning("Civitai GET %s failed (%s); retrying in %.1fs", path, exc, delay)
                self._sleep(delay)
                continue
            if response.status_code in retry_statuses and not last:
                delay = self._delay(attempt, retry_after_seconds(response))
                logger.warning(
                    "Civitai GET %s answered %s; retrying in %.1fs",
                    path,
                    response.status_code,
                    delay,
                )
                response.close()
                self._sleep(delay)
                continue
            return response
        raise AssertionError("unreachable")  # the loop returns or raises on its last pass

    def _get_json(self, path: str, *, what: str, params: Mapping[str, str] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        response = self._send(url, what=what, params=params, headers=self._headers(url))
        if response.status_code != 200:
            raise error_for(response, what=what, has_key=self.has_key)
        try:
            return response.json()
        except ValueError as exc:
            raise CivitaiUnavailable(f"Civitai's answer for {what} was not JSON.") from exc

    # -- REST API v1 --

    def image(self, image_id: int) -> dict[str, Any] | None:
        """The image with its generation data (`meta` flat, or None when it has none), or
        None when Civitai does not show it. Every browsing level is asked for: the user
        named this image."""
        body = self._get_json(
            "/api/v1/images",
            what=f"image {image_id}",
            params={
                "imageId": str(image_id),
                "withMeta": "true",
                "flatMeta": "true",
                "browsingLevel": "31",
                "limit": "1",
            },
        )
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise CivitaiUnavailable(f"Civitai's answer for image {image_id} had no items.")
        item = next((i for i in items if isinstance(i, dict) and i.get("id") == image_id), None)
        if item is None:
            return None
        meta = item.get("meta")
        # A deployment that ignores flatMeta wraps it as {"id", "meta"} (REFERENCE.md C.2).
        if isinstance(meta, dict) and set(meta) <= {"id", "meta"} and meta.get("id") == image_id:
            item = {**item, "meta": meta.get("meta")}
        return item

    def model(self, model_id: int) -> dict[str, Any]:
        body = self._get_json(f"/api/v1/models/{model_id}", what=f"model {model_id}")
        return body if isinstance(body, dict) else {}

    def model_version(self, version_id: int) -> dict[str, Any]:
        body = self._get_json(
            f"/api/v1/model-versions/{version_id}", what=f"model version {version_id}"
        )
        return body if isinstance(body, dict) else {}

    def model_version_by_hash(self, value: str) -> dict[str, Any] | None:
        """The version having a file with this hash (any type), or None."""
        try:
            body = self._get_json(
                f"/api/v1/model-versions/by-hash/{value.upper()}",
                what=f"the file with hash {value}",
            )
        except CivitaiNotFound:
            return None
        return body if isinstance(body, dict) else None

    # -- files --

    def open_download(self, url: str, *, start: int = 0) -> DownloadResponse:
        """Start the transfer of a model file from byte `start` (HTTP Range).

        `url` is Civitai's download URL; its redirect to storage is followed here without
        the API key. A 416 (nothing left past `start`) is returned with
        `range_not_satisfiable` set; errors raise `CivitaiError`s.
        """
        what = "this file"
        headers = self._headers(url, accept="*/*")
        if start:
            # For a server that sends the file itself instead of redirecting to storage.
            headers["Range"] = f"bytes={start}-"
        response = self._send(url, what=what, headers=headers, stream=True)
        hops = 0
        while response.is_redirect and hops < 5:
            location = urljoin(response.url or url, response.headers.get("Location", ""))
            response.close()
            hops += 1
            # No key here: the signature in the URL is the credential.
            storage_headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
            if start:
                storage_headers["Range"] = f"bytes={start}-"
            try:
                response = self.session.get(
                    location,
                    headers=storage_headers,
                    timeout=(self.connect_timeout, self.download_read_timeout),
                    stream=True,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise CivitaiInterrupted(
                    f"The file's storage could not be reached: {type(exc).__name__}."
                ) from exc
        if response.status_code == 416:
            total = _content_range_total(response.headers.get("Content-Range", ""))
            response.close()
            return DownloadResponse(
                response, start=start, total=total, filename="", range_not_satisfiable=True
            )
        if response.status_code not in (200, 206):
            if response.status_code == 403 and hops:
                response.close()
                # An expired or refused signature: the next attempt asks for a new URL.
                raise CivitaiUnavailable(
                    "The file's storage refused the signed URL (expired?).", status_code=403
                )
            error = error_for(response, what=what, has_key=self.has_key)
            response.close()
            raise error
        filename = content_disposition_filename(response.headers.get("Content-Disposition", ""))
        if response.status_code == 206:
            begin, total = _content_range(response.headers.get("Content-Range", ""))
            if begin != start:
                response.close()
                raise CivitaiUnavailable(f"Storage sent bytes from {begin}, not {start}.")
            return DownloadResponse(response, start=start, total=total, filename=filename)
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        return DownloadResponse(response, start=0, total=total, filename=filename)

    def fetch_image(self, url: str, *, max_bytes: int) -> bytes:
        """An image file (a preview), at most `max_bytes`; errors raise `CivitaiError`."""
        what = "the preview image"
        headers = {"User-Agent": USER_AGENT, "Accept": "image/*"}
        response = self._send(url, what=what, headers=headers, stream=True)
        try:
            if response.status_code != 200:
                raise error_for(response, what=what, has_key=False)
            data = bytearray()
            for chunk in DownloadResponse(response, 0, None, "").chunks(64 * 1024):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise CivitaiBadRequest(f"The preview image is larger than {max_bytes} bytes.")
            return bytes(data)
        finally:
            response.close()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _content_range(value: str) -> tuple[int | None, int | None]:
    """(first byte, total) of `bytes a-b/total`."""
    try:
        _, _, rest = value.partition(" ")
        span, _, total = rest.partition("/")
        first = int(span.split("-", 1)[0])
        return first, (int(total) if total.isdigit() else None)
    except ValueError:
        return None, None


def _content_range_total(value: str) -> int | None:
    """The total of `bytes */total` (a 416's Content-Range)."""
    total = value.rpartition("/")[2]
    return int(total) if total.isdigit() else None
