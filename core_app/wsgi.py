"""WSGI middleware: request bodies without a Content-Length.

Django reads exactly CONTENT_LENGTH bytes of a body and takes none when the header is
missing, so a chunked request (`Transfer-Encoding: chunked`) arrived empty: its JSON was
"missing" and a POST could even succeed with defaults. Here such a body is read into
memory, up to MOBILESD_MAX_BODY_BYTES, and handed on with its length. When the server
does not mark the input as terminated (`wsgi.input_terminated`, which gunicorn sets after
decoding the chunks) there is no safe end to read to, so the request is refused with 411.
"""

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from core_app.errors import PayloadTooLarge, error_body

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _error(start_response: StartResponse, status: str, message: str, code: str) -> list[bytes]:
    body = json.dumps(error_body(message, code)).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


class ChunkedBodyMiddleware:
    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            if not environ.get("wsgi.input_terminated"):
                return _error(
                    start_response,
                    "411 Length Required",
                    "Send the body with a Content-Length header, not chunked.",
                    "length_required",
                )
            limit = settings.MOBILESD_MAX_BODY_BYTES
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                too_large = PayloadTooLarge(limit)
                return _error(
                    start_response,
                    "413 Request Entity Too Large",
                    too_large.message,
                    too_large.code,
                )
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)
