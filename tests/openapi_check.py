"""Every API answer the suite sees, checked against the OpenAPI document /api/v1/schema.

`check_response` is called by an autouse fixture (tests/conftest.py) for each answer of the
test clients to a path under /api/v1/ or /outputs/: its status must be listed for that
operation, a JSON body must validate against the schema listed for the status (and a
binary body's Content-Type must be one listed), and the headers it declares must match. A
request to a path or method the document does not have must be answered 404 or 405 in the
error shape. A mismatch raises `UndocumentedResponse`, which fails the test that made the
request.

The event stream's answer is text/event-stream, which openapi-core does not read: its
messages are checked one by one by `check_stream_message` (every message the stream tests'
reader, tests/events_app/sse.py, parses): each `data` must validate against the schema the
document gives its event, and carry no key the document does not declare.

Two answers are outside the operations and checked only for what they are: a request for a
host MobileSD does not serve (refused before any route, a 400 in the error shape), and the
browsable API's HTML, which a browser asking for `text/html` gets: a page showing the same
answer, not a media type of the API.
"""

import json
from functools import cache
from typing import Any

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from openapi_core import OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.schemas.exceptions import InvalidSchemaValue
from werkzeug.datastructures import Headers

CHECKED_PREFIXES = ("/api/v1/", "/outputs/")
# The document itself and its pages are not operations of the document.
UNCHECKED_PATHS = ("/api/v1/schema", "/api/v1/docs", "/api/v1/redoc")
JSON_MEDIA_TYPE = "application/json"
HTML_MEDIA_TYPE = "text/html"


class UndocumentedResponse(AssertionError):
    """An answer the OpenAPI document does not describe."""


@cache
def schema_document() -> dict[str, Any]:
    """The document /api/v1/schema serves, built once per test session."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.settings import spectacular_settings

    generator = SchemaGenerator(
        title=spectacular_settings.TITLE, version=spectacular_settings.VERSION
    )
    schema = generator.get_schema(request=None, public=True)
    # Through JSON, as a client reads it (lazy strings, tuples and enums become plain).
    return json.loads(json.dumps(schema, default=str))


@cache
def openapi() -> OpenAPI:
    return OpenAPI.from_dict(schema_document())


class _Request(DjangoOpenAPIRequest):
    """openapi-core's Django request, without the route when it is a regex (DRF's router):
    openapi-core then matches the path against the document's templates itself."""

    @property
    def path_pattern(self) -> str | None:
        match = self.request.resolver_match
        if match is None or "(?P<" in match.route or "^" in match.route:
            return None
        return super().path_pattern


class _Response:
    """An answer as openapi-core reads it; a streamed (file) body is read and put back."""

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response
        self.status_code = response.status_code
        self.headers = Headers(list(response.headers.items()))
        self.content_type = response.get("Content-Type", "")

    @property
    def data(self) -> bytes:
        response = self.response
        if isinstance(response, StreamingHttpResponse):
            body = b"".join(response.streaming_content)  # type: ignore[arg-type]
            response.streaming_content = [body]
            return body
        return getattr(response, "content", b"")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _operation(request: HttpRequest) -> tuple[str, dict[str, Any]] | None:
    """The document's path template and operation for the request, None if it has none."""
    try:
        validator: Any = openapi().response_validator
        found = validator._find_path(_Request(request))
    except (PathNotFound, OperationNotFound):
        return None
    template = str(found.path.parts[-1])
    return template, schema_document()["paths"][template][str(request.method).lower()]


def check_response(request: HttpRequest, response: HttpResponseBase) -> None:
    """Raise `UndocumentedResponse` unless the document describes `response` to `request`."""
    path = request.path
    if not path.startswith(CHECKED_PREFIXES) or path.startswith(UNCHECKED_PATHS):
        return
    where = f"{request.method} {request.get_full_path()} -> {response.status_code}"
    try:
        request.get_host()
    except DisallowedHost:
        if response.status_code != 400:
            raise UndocumentedResponse(f"{where}: a host not served must be a 400.") from None
        _check_error_shape(where, response)
        return
    found = _operation(request)
    if found is None:
        _check_undocumented_route(where, response)
        return
    template, operation = found
    declared = operation.get("responses", {}).get(str(response.status_code))
    if declared is None:
        listed = ", ".join(operation.get("responses", {}))
        raise UndocumentedResponse(
            f"{where}: status {response.status_code} is not listed for "
            f"{request.method} {template} (listed: {listed}). Body: {_body_text(response)}"
        )
    media_type = _media_type(response.get("Content-Type", ""))
    content = declared.get("content") or {}
    if not content:
        if _Response(response).data:
            raise UndocumentedResponse(f"{where}: declared without a body, but has one.")
        return
    if media_type == HTML_MEDIA_TYPE and _asked_for_html(request):
        return  # the browsable API's page of this answer
    if media_type != JSON_MEDIA_TYPE:
        if media_type not in content:
            raise UndocumentedResponse(
                f"{where}: Content-Type {media_type!r} is not listed ({', '.join(content)})."
            )
        return
    try:
        openapi().validate_response(_Request(request), _Response(response))
    except ResponseNotFound as exc:  # pragma: no cover - the status was found above
        raise UndocumentedResponse(f"{where}: {exc}") from exc
    except Exception as exc:
        raise UndocumentedResponse(
            f"{where}: {_explain(exc)}\nBody: {_body_text(response)}"
        ) from exc


# The schema of each stream message's `data`, by its `event:` (an event type: EventMessage).
STREAM_MESSAGE_SCHEMAS = {
    "ready": "StreamReady",
    "reset": "StreamReset",
    "closing": "StreamClosing",
}


@cache
def _message_validator(component: str) -> Any:
    from openapi_schema_validator import OAS31Validator

    document = schema_document()
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return OAS31Validator(schema, format_checker=OAS31Validator.FORMAT_CHECKER)


def check_stream_message(event: str, data: Any) -> None:
    """Raise `UndocumentedResponse` unless `data` is what the document says a message of
    this `event` carries (an event type's: an EventMessage)."""
    component = STREAM_MESSAGE_SCHEMAS.get(event, "EventMessage")
    where = f"GET /api/v1/events, event {event!r}"
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<data>'}: {error.message[:200]}"
        for error in _message_validator(component).iter_errors(data)
    ]
    errors += _undeclared_keys(_component(component), data, "<data>")
    if errors:
        raise UndocumentedResponse(f"{where}: {'; '.join(errors)}\nData: {data}")


def _component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = schema_document()["components"]["schemas"][name]
    return schema


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a $ref (or a one-item allOf of one, drf-spectacular's way to add a
    description) followed."""
    if "allOf" in schema and len(schema["allOf"]) == 1:
        schema = schema["allOf"][0]
    if "$ref" in schema:
        return _component(schema["$ref"].rsplit("/", 1)[-1])
    return schema


def _undeclared_keys(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    """The keys of `value`'s objects that `schema` does not declare, where it declares its
    keys (an open object, additionalProperties, may carry others)."""
    schema = _resolved(schema)
    if not isinstance(value, dict) or "properties" not in schema:
        return []
    properties = schema["properties"]
    found = []
    if not schema.get("additionalProperties"):
        found += [f"{where}.{key}: not in the document" for key in value if key not in properties]
    for key, item in value.items():
        if key in properties:
            found += _undeclared_keys(properties[key], item, f"{where}.{key}")
    return found


def _check_undocumented_route(where: str, response: HttpResponseBase) -> None:
    """A path or method the document does not have: 404 / 405 in the error shape only."""
    if response.status_code not in (404, 405):
        raise UndocumentedResponse(f"{where}: the document has no such operation.")
    _check_error_shape(where, response)


def _asked_for_html(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return _media_type(accept.split(",", 1)[0]) == HTML_MEDIA_TYPE


def _check_error_shape(where: str, response: HttpResponseBase) -> None:
    error = schema_document()["components"]["schemas"]["Error"]
    try:
        body = json.loads(_Response(response).data)
    except ValueError as exc:
        raise UndocumentedResponse(f"{where}: not the error shape: {exc}") from exc
    missing = [key for key in error.get("required", []) if key not in body]
    if missing or body.get("code") not in _error_codes():
        raise UndocumentedResponse(f"{where}: not the error shape: {body}")


def _error_codes() -> list[str]:
    schemas = schema_document()["components"]["schemas"]
    code = schemas["Error"]["properties"]["code"]
    ref = code.get("$ref") or code["allOf"][0]["$ref"]
    return list(schemas[ref.rsplit("/", 1)[-1]]["enum"])


def _explain(exc: BaseException) -> str:
    """openapi-core's error, or the schema errors it wraps (where in the body, and why)."""
    errors: list[str] = []
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, InvalidSchemaValue):
            errors.extend(_schema_errors(cause.schema_errors))
        cause = cause.__cause__ or cause.__context__
    return "; ".join(errors) if errors else f"{type(exc).__name__}: {exc}"


def _schema_errors(errors: Any) -> list[str]:
    found = []
    for error in errors:
        if error.context:
            found.extend(_schema_errors(error.context))
        else:
            path = ".".join(str(part) for part in error.absolute_path) or "<body>"
            found.append(f"{path}: {error.message[:200]}")
    return found


def _body_text(response: HttpResponseBase) -> str:
    if _media_type(response.get("Content-Type", "")) != JSON_MEDIA_TYPE:
        return f"<{response.get('Content-Type', 'no Content-Type')}>"
    return _Response(response).data.decode(errors="replace")[:2000]
