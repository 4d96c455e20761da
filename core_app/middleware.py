"""Request checks that come before any view."""

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from core_app.errors import error_body
from core_app.logs import log_context

NUL = "\x00"


def _answers_json(request: HttpRequest) -> bool:
    return request.path_info.startswith(("/api/", "/outputs/"))


class RefuseNulMiddleware:
    """A 400 for a NUL character in the path, the query string (`/servers/a%00b`) or a
    header: no name, filter value or key holds one, and PostgreSQL cannot even compare
    with one (the lookup would be a 500). The API answers in its error shape, other pages
    in plain text."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.GET
        if NUL in request.path_info or any(
            NUL in key or any(NUL in value for value in query.getlist(key)) for key in query
        ):
            return self.refuse(request, "The URL may not contain the NUL character (%00).")
        # gunicorn refuses a NUL in a header itself; another server might pass one on
        # (Idempotency-Key is stored).
        if any(
            name.startswith("HTTP_") and isinstance(value, str) and NUL in value
            for name, value in request.META.items()
        ):
            return self.refuse(request, "A header may not contain the NUL character.")
        return self.get_response(request)

    @staticmethod
    def refuse(request: HttpRequest, message: str) -> HttpResponse:
        if _answers_json(request):
            return JsonResponse(error_body(message, "malformed_request"), status=400)
        return HttpResponseBadRequest(message, content_type="text/plain")


# What a proxy or client may name a request with: printable, no spaces, not too long (it is
# written into every log record of the request and echoed back).
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class RequestIdMiddleware:
    """Names each request: the `X-Request-ID` it came with when that is sane, else a new
    one. Every record logged while it is handled carries it (`core_app.logs`), and the
    response echoes it, so a client's report can be found in the logs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        name = given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        with log_context(request_id=name):
            response = self.get_response(request)
        response["X-Request-ID"] = name
        return response
