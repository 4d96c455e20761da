"""The stream token in the OpenAPI document: a query parameter that authenticates."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
