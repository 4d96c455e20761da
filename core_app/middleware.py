"""Request checks that come before any view."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from core_app.errors import error_body

NUL = "\x00"


def _answers_json(request: HttpRequest) -> bool:
    return request.path_info.startswith(("/api/", "/outputs/"))


class RefuseNulMiddleware:
    """A 400 for a NUL character in the path or the query string (`/servers/a%00b`): no
    name or filter value holds one, and PostgreSQL cannot even compare with one (the
    lookup would be a 500). The API answers in its error shape, other pages in plain text."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.GET
        if NUL in request.path_info or any(
            NUL in key or any(NUL in value for value in query.getlist(key)) for key in query
        ):
            message = "The URL may not contain the NUL character (%00)."
            if _answers_json(request):
                return JsonResponse(error_body(message, "malformed_request"), status=400)
            return HttpResponseBadRequest(message, content_type="text/plain")
        return self.get_response(request)
