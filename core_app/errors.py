"""MobileSD's own errors: what a service raises when it refuses, each with its HTTP status,
a stable `code` and a message for people.

Services never raise DRF's exceptions (they are called from the admin, tasks and commands
too); the API's one exception handler (`core_app.exceptions`) turns these into the one error
body, and the admin shows their `message`.
"""

from typing import Any

__all__ = [
    "SPECIFIC_VALIDATION_CODES",
    "Conflict",
    "DatabaseUnavailable",
    "InvalidInput",
    "MobileSDError",
    "NotFound",
    "PayloadTooLarge",
    "ServerUnreachable",
    "error_body",
]

# Validation codes that name the problem better than `validation_error`: an error whose
# every field message carries one of them answers with it as its `code` (the `fields`
# still say where).
SPECIFIC_VALIDATION_CODES = frozenset({"invalid_url", "invalid_name", "models_dir_not_allowed"})


def error_body(message: str, code: str, fields: dict[str, list[str]] | None = None) -> dict:
    """The API's one error shape. `error` repeats `message` under the original MobileSD's
    key, which its clients read."""
    body: dict[str, Any] = {"message": message, "error": message, "code": code}
    if fields:
        body["fields"] = fields
    return body


class MobileSDError(Exception):
    """A refusal by a service: `message` for people, `code` stable for programs, the HTTP
    `status_code` the API answers with, and `fields` ({"a.b": ["..."]}) for bad input."""

    status_code = 400
    default_code = "bad_request"
    headers: dict[str, str] | None = None  # extra response headers (Retry-After)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        fields: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        if status_code is not None:
            self.status_code = status_code
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class InvalidInput(MobileSDError):
    """Input a service refuses, field by field (a 400 `validation_error`)."""

    default_code = "validation_error"

    def __init__(self, fields: dict[str, list[str]], message: str | None = None) -> None:
        path, messages = next(iter(fields.items()))
        where = "" if path == "non_field_errors" else f"{path}: "
        more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
        first = messages[0] if messages else "Invalid value."
        super().__init__(message or f"Invalid request. {where}{first}{more}", fields=fields)


class NotFound(MobileSDError):
    status_code = 404
    default_code = "not_found"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class Conflict(MobileSDError):
    status_code = 409
    default_code = "conflict"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


class PayloadTooLarge(MobileSDError):
    status_code = 413
    default_code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")


class ServerUnreachable(MobileSDError):
    """A generation server MobileSD had to ask live could not be reached or read."""

    status_code = 502
    default_code = "server_unreachable"

    def __init__(self, alias: str, detail: str) -> None:
        super().__init__(f"Server '{alias}' could not be reached: {detail}")


class DatabaseUnavailable(MobileSDError):
    """The database could not answer the request: it is down or restarting, or every pooled
    connection stayed busy (DATABASE_POOL_SIZE). Nothing was changed; the request may be
    sent again."""

    status_code = 503
    default_code = "database_unavailable"
    retry_after_seconds = 5

    def __init__(self) -> None:
        super().__init__(
            "MobileSD's database is unavailable for the moment; nothing was changed. "
            "Try again shortly."
        )
        self.headers = {"Retry-After": str(self.retry_after_seconds)}
