"""The stream in the OpenAPI document: the token, a query parameter that authenticates, and
each message's `data`, JSON inside a text line (OpenAPI 3.1's contentMediaType and
contentSchema, which event-stream aware tools read)."""

from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)

from events_app.serializers import (
    EventMessageSerializer,
    StreamClosingSerializer,
    StreamReadySerializer,
    StreamResetSerializer,
)


class EventTokenScheme(OpenApiAuthenticationExtension):
    target_class = "events_app.tokens.EventTokenAuthentication"
    name = "EventToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "A stream token from POST /api/v1/events/token (EventSource).",
        }


class EventDataScheme(OpenApiSerializerFieldExtension):
    target_class = "events_app.serializers.EventDataField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        kinds = (
            EventMessageSerializer,
            StreamReadySerializer,
            StreamResetSerializer,
            StreamClosingSerializer,
        )
        return {
            "type": "string",
            "description": "JSON: an EventMessage for an event; for ready, reset and "
            "closing, theirs.",
            "contentMediaType": "application/json",
            "contentSchema": {
                "anyOf": [auto_schema.resolve_serializer(kind, direction).ref for kind in kinds]
            },
        }
