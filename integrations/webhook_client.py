"""The one HTTP call to a webhook receiver: a POST of a JSON body, as safe as a call to an
address someone else chose can be made: no redirects followed, connect and read timeouts,
and at most `KEEP_BYTES` of the answer read (a receiver cannot make MobileSD download a
large body). It never raises for what the receiver does: the outcome says it.

No Django imports (as integrations.http).
"""

import time
from dataclasses import dataclass

import requests

from integrations.http import USER_AGENT, retry_after_seconds

__all__ = ["KEEP_BYTES", "Outcome", "post_json"]

# The most of an answer's body read and kept.
KEEP_BYTES = 300
# The most of an error's text kept.
ERROR_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    """What a POST came to: the answer's status (None: no answer) and its first bytes, or
    why there was none; how long it took; its Retry-After."""

    status_code: int | None
    duration_ms: int
    body: str = ""
    error: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _short(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def post_json(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    connect_timeout: float,
    read_timeout: float,
) -> Outcome:
    """POST `body` (JSON) to `url` with `headers` (and our Content-Type and User-Agent)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    sent = {
        **headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    try:
        with requests.post(
            url,
            data=body,
            headers=sent,
            timeout=(connect_timeout, read_timeout),
            allow_redirects=False,
            stream=True,
        ) as response:
            kept = b""
            try:
                for chunk in response.iter_content(chunk_size=KEEP_BYTES):
                    kept += chunk
                    if len(kept) >= KEEP_BYTES:
                        break
            except requests.RequestException as exc:
                # The status came; a body cut short is still an answer.
                return Outcome(
                    response.status_code,
                    took(),
                    body=kept[:KEEP_BYTES].decode("utf-8", "replace"),
                    error=_short(f"Reading the answer failed: {exc}"),
                )
            return Outcome(
                response.status_code,
                took(),
                body=kept[:KEEP_BYTES].decode("utf-8", "replace"),
                retry_after=retry_after_seconds(response),
            )
    except requests.Timeout as exc:
        return Outcome(None, took(), error=_short(f"Timed out: {exc}"))
    except requests.ConnectionError as exc:
        return Outcome(None, took(), error=_short(f"Could not connect: {exc}"))
    except requests.RequestException as exc:
        return Outcome(None, took(), error=_short(f"Request failed: {exc}"))
