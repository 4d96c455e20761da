"""Request checks that come before any view.

Each middleware here runs in both modes: under ASGI on the event loop, without the hop to a
thread and back that Django makes around a sync-only one (which, for the event stream, would
hold the thread its requests share while the stream opens: core_app.asgi)."""

import re
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from core_app.errors import error_body
from core_app.logs import log_context

NUL = "\x00"


def _answers_json(request: HttpRequest) -> bool:
    return request.path_info.startswith(("/api/", "/outputs/"))


GetResponse = Callable[[HttpRequest], Any]


def _follow_mode(middleware: Callable[..., Any], get_response: GetResponse) -> bool:
    """Whether the chain below `middleware` is async; then `middleware` is marked a
    coroutine function, as Django expects of an async middleware."""
    async_mode = iscoroutinefunction(get_response)
    if async_mode:
        markcoroutinefunction(middleware)
    return async_mode


class BothModesMiddleware:
    """A middleware for sync (WSGI) and async (ASGI) chains alike: under an async one it is
    a coroutine function (Django calls `__call__`, which returns `acall`'s coroutine)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = _follow_mode(self, get_response)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.acall(request)
        return self.call(request)

    def call(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    async def acall(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError


class RefuseNulMiddleware(BothModesMiddleware):
    """A 400 for a NUL character in the path, the query string (`/servers/a%00b`) or a
    header: no name, filter value or key holds one, and PostgreSQL cannot even compare
    with one (the lookup would be a 500). The API answers in its error shape, other pages
    in plain text."""

    def call(self, request: HttpRequest) -> HttpResponse:
        refusal = self.check(request)
        return refusal if refusal is not None else self.get_response(request)

    async def acall(self, request: HttpRequest) -> HttpResponse:
        refusal = self.check(request)
        return refusal if refusal is not None else await self.get_response(request)

    def check(self, request: HttpRequest) -> HttpResponse | None:
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
        return None

    @staticmethod
    def refuse(request: HttpRequest, message: str) -> HttpResponse:
        if _answers_json(request):
            return JsonResponse(error_body(message, "malformed_request"), status=400)
        return HttpResponseBadRequest(message, content_type="text/plain")


# What a proxy or client may name a request with: printable, no spaces, not too long (it is
# written into every log record of the request and echoed back).
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class RequestIdMiddleware(BothModesMiddleware):
    """Names each request: the `X-Request-ID` it came with when that is sane, else a new
    one. Every record logged while it is handled carries it (`core_app.logs`), and the
    response echoes it, so a client's report can be found in the logs."""

    def call(self, request: HttpRequest) -> HttpResponse:
        name = self.name(request)
        with log_context(request_id=name):
            response = self.get_response(request)
        response["X-Request-ID"] = name
        return response

    async def acall(self, request: HttpRequest) -> HttpResponse:
        name = self.name(request)
        with log_context(request_id=name):
            response = await self.get_response(request)
        response["X-Request-ID"] = name
        return response

    @staticmethod
    def name(request: HttpRequest) -> str:
        given = request.headers.get("X-Request-ID", "")
        return given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise's middleware (the static files), in both modes: WhiteNoise's own is
    sync-only, and under ASGI every request went through a thread to pass it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        super().__init__(get_response)
        self.async_mode = _follow_mode(self, get_response)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.acall(request)
        return super().__call__(request)

    async def acall(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # development: looked up on disk each time
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(
                request.path_info
            )
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            response: HttpResponse = await sync_to_async(self.serve, thread_sensitive=False)(
                static_file, request
            )
            return response
        return await self.get_response(request)
