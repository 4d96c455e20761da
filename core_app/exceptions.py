"""The one error body of the API, made by one exception handler.

Every error answers::

    {"message": "<for people>", "error": "<the same>", "code": "<stable, for programs>",
     "fields": {...}}

`error` repeats `message` under the original MobileSD's key, for its clients. `fields`
appears on validation errors only and maps a dotted field path (`generation_params.steps`)
to its messages.
"""

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from core_app.errors import (
    SPECIFIC_VALIDATION_CODES,
    DatabaseUnavailable,
    InvalidInput,
    MobileSDError,
    PayloadTooLarge,
    error_body,
)

logger = logging.getLogger(__name__)


# Codes of DRF's own exceptions, renamed where DRF's are vague.
_CODES = {
    exceptions.NotAuthenticated: "authentication_required",
    exceptions.ParseError: "malformed_request",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.Throttled: "throttled",
    exceptions.NotAcceptable: "not_acceptable",
}


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error detail into {"a.b.0.c": ["message", ...]}."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" and prefix else str(key)
            if prefix and key != "non_field_errors":
                name = f"{prefix}.{key}"
            for path, messages in flatten_errors(value, name).items():
                flat.setdefault(path, []).extend(messages)
        return flat
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or "non_field_errors": [str(item) for item in detail]}
        flat = {}
        for index, item in enumerate(detail):
            if item:
                path = f"{prefix}.{index}" if prefix else str(index)
                for key, messages in flatten_errors(item, path).items():
                    flat.setdefault(key, []).extend(messages)
        return flat
    return {prefix or "non_field_errors": [str(detail)]}


def _validation_code(exc: exceptions.ValidationError) -> str:
    """`validation_error`, or the one code of MobileSD's own (`SPECIFIC_VALIDATION_CODES`)
    that every message of the error carries: `invalid_url` says more than "invalid"."""
    codes = {code for found in flatten_errors(exc.get_codes()).values() for code in found}
    if len(codes) == 1 and (code := codes.pop()) in SPECIFIC_VALIDATION_CODES:
        return code
    return InvalidInput.default_code


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """The API's one exception handler: every error leaves in the one shape."""
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(settings.MOBILESD_MAX_BODY_BYTES)
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is down or restarting, or the pool lent no connection in time: the
        # request's transaction rolls back, and the client is told to retry, not that
        # MobileSD broke. (A statement's own mistake is a ProgrammingError: still a 500.)
        view_name = context.get("view").__class__.__name__
        logger.warning("Database unavailable in %s: %s", view_name, exc)
        exc = DatabaseUnavailable()
    if isinstance(exc, MobileSDError):
        set_rollback()
        return Response(
            error_body(exc.message, exc.code, exc.fields),
            status=exc.status_code,
            headers=exc.headers,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail)

    response = exception_handler(exc, context)
    if response is None:
        view_name = context.get("view").__class__.__name__
        logger.error("Unhandled error in %s", view_name, exc_info=exc)
        return Response(
            error_body("Internal server error.", "server_error"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        invalid = InvalidInput(flatten_errors(exc.detail))
        response.data = error_body(invalid.message, _validation_code(exc), invalid.fields)
        return response

    code = _CODES.get(type(exc))
    if code is None:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
    message = str(exc.detail) if not isinstance(exc.detail, dict | list) else str(exc)
    if isinstance(exc, exceptions.NotAuthenticated):
        message = "An API key is required: send it as 'Authorization: Bearer <key>'."
    response.data = error_body(message, str(code))
    return response


# Where the API answers, so a request refused before any view gets the error shape there:
# /outputs/ serves the API's images (a name no route takes, e.g. with a newline, lands here).
API_PREFIXES = ("/api/", "/outputs/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 for URLs that match no route: the error shape under the API, HTML elsewhere."""
    if request.path.startswith(API_PREFIXES):
        return JsonResponse(error_body("No such endpoint.", "not_found"), status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400 for requests refused before any route (a host not served, a suspicious
    operation): the error shape under the API, Django's page elsewhere."""
    if request.path.startswith(API_PREFIXES):
        return JsonResponse(error_body("Bad request.", "bad_request"), status=400)
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(API_PREFIXES):
        return JsonResponse(error_body("Internal server error.", "server_error"), status=500)
    return defaults.server_error(request)
