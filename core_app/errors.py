"""Errors raised by services, each with its HTTP status and a stable code.

They are turned into the API's one error body by core_app.exceptions.
"""

from typing import Any

from rest_framework import exceptions, status


def error_body(message: str, code: str, fields: dict[str, list[str]] | None = None) -> dict:
    body: dict[str, Any] = {"message": message, "code": code}
    if fields:
        body["fields"] = fields
    return body


class ApiError(exceptions.APIException):
    """An error raised by a service, with its HTTP status and stable code."""

    def __init__(self, message: str, *, code: str, status_code: int) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code


class NotFound(ApiError):
    def __init__(self, message: str, *, code: str = "not_found") -> None:
        super().__init__(message, code=code, status_code=status.HTTP_404_NOT_FOUND)


class Conflict(ApiError):
    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, status_code=status.HTTP_409_CONFLICT)


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than the limit of {limit} bytes.",
            code="payload_too_large",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )


class ServerUnreachable(ApiError):
    """A generation server MobileSD had to ask live could not be reached or read."""

    def __init__(self, alias: str, detail: str) -> None:
        super().__init__(
            f"Server '{alias}' could not be reached: {detail}",
            code="server_unreachable",
            status_code=status.HTTP_502_BAD_GATEWAY,
        )
