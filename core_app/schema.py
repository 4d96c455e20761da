"""OpenAPI descriptions drf-spectacular cannot infer: how API keys are sent, and the error
answers every operation can give (the document lists every status an operation answers)."""

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny

from core_app.permissions import needs_admin_scope
from core_app.serializers import ErrorSerializer
from core_app.signed_links import SIGNATURE_PARAMETER

# Why each implied error status is answered, as the document describes it.
ERROR_DESCRIPTIONS = {
    400: "Invalid input (body, query or header): `fields` says where; or a malformed body, "
    "or a NUL character in the path, query or a header.",
    401: "No API key where one is needed, or an unknown or revoked key.",
    403: "A client key where the admin scope is needed (`admin_scope_required`), or a staff "
    "session's write without a CSRF token.",
    404: "No such object (for another key's user too), or no such named object in the input.",
    406: "No answer in a media type the Accept header allows.",
    411: "A chunked body the web server did not finish reading; send a Content-Length.",
    413: "The request body is larger than the limit.",
    415: "The request body's Content-Type is not accepted here.",
    429: "Too many requests for this key, or too many failed sign-ins from this address; "
    "see Retry-After.",
    500: "An internal error in MobileSD.",
    503: "The database is unavailable for the moment (`database_unavailable`): nothing was "
    "changed; see Retry-After.",
}


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core_app.authentication.ApiKeyAuthentication"
    name = ["ApiKeyBearer", "ApiKeyHeader"]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, str]]:
        return [
            {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        ]


class OpenObjectSerializerScheme(OpenApiSerializerExtension):
    """Serializers of objects that keep keys they do not declare: `additionalProperties`."""

    target_class = "core_app.serializers.OpenObjectSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = True
        return schema


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema, adding to each operation the error answers its view can
    give whether or not the view declares them: 400, 500 and 503 everywhere (a NUL in a
    header is refused before any view; the database may be unavailable), 401 (and 403 for
    session writes, 429 for an address with too many failed sign-ins) where it
    authenticates, 403 where a permission class wants the admin scope for the method, 404
    where the path names an object,
    411/413/415 where it parses a body, 429 where it is throttled. Each in the one error
    shape; what a view declares itself wins."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for status in self._implied_error_statuses():
            if str(status) in responses:
                continue
            response = self._get_response_for_code(
                ErrorSerializer, str(status), ("application/json",), direction
            )
            response["description"] = ERROR_DESCRIPTIONS[status]
            responses[str(status)] = response
        return dict(sorted(responses.items()))

    def _implied_error_statuses(self) -> set[int]:
        view, method = self.view, self.method
        statuses = {400, 500, 503}
        authenticators = view.get_authenticators()
        if authenticators:
            statuses.update({401, 429})
            unsafe = method not in ("GET", "HEAD", "OPTIONS")
            if unsafe and any(isinstance(a, SessionAuthentication) for a in authenticators):
                statuses.add(403)
        elif not all(isinstance(p, AllowAny) for p in view.get_permissions()):
            statuses.add(403)
        if any(needs_admin_scope(p, method) for p in view.get_permissions()):
            statuses.add(403)
        if "{" in self.path:
            statuses.add(404)
        if view.get_throttles():
            statuses.add(429)
        if self._get_request_body() is not None:
            statuses.update({411, 413, 415})
        if issubclass(view.content_negotiation_class, DefaultContentNegotiation):
            statuses.add(406)
        return statuses


def anonymous_security(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: where MOBILESD_ALLOW_ANONYMOUS lets requests in without a key,
    the document says so (`{}` among each authenticated operation's security); so it does
    for the operations a signed link opens (those taking its `sig` query parameter,
    core_app.signed_links), whatever the setting."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            security = operation.get("security")
            signed = any(
                parameter.get("in") == "query" and parameter.get("name") == SIGNATURE_PARAMETER
                for parameter in operation.get("parameters", [])
            )
            if (settings.MOBILESD_ALLOW_ANONYMOUS or signed) and security and {} not in security:
                security.append({})
    return result
