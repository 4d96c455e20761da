"""Error bodies in each flavour's shape (REFERENCE A.2).

Forge 2: HTTPException -> FastAPI default `{"detail": ...}` with the exception's headers;
uncaught exception -> 500 `{"error", "detail": "", "body": "", "message"}`.
A1111 1.10: both go through `api_middleware`: `{"error", "detail", "body": "", "errors"}`
and the exception's headers (e.g. `WWW-Authenticate`) are not forwarded.
422 validation errors are FastAPI's `{"detail": [...]}` in both (pydantic 2 vs 1 items).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An HTTP error response, ready to be written."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def http_error(
    is_forge: bool, status: int, detail: Any, headers: Mapping[str, str] | None = None
) -> ApiError:
    """A raised `HTTPException(status, detail, headers)`."""
    if is_forge:
        return ApiError(status, {"detail": detail}, headers)
    body = {"error": "HTTPException", "detail": detail, "body": "", "errors": f"{status}: {detail}"}
    return ApiError(status, body)


def server_error(is_forge: bool, exc_name: str, message: str) -> ApiError:
    """An uncaught exception (`RuntimeError`, `KeyError`, CUDA OOM, ...) -> 500."""
    key = "message" if is_forge else "errors"
    return ApiError(500, {"error": exc_name, "detail": "", "body": "", key: message})


def validation_error(items: list[dict[str, Any]]) -> ApiError:
    """FastAPI's `RequestValidationError` -> 422."""
    return ApiError(422, {"detail": items})


def not_found() -> ApiError:
    """No route matched (Starlette's 404, same body in both flavours)."""
    return ApiError(404, {"detail": "Not Found"})


def method_not_allowed() -> ApiError:
    return ApiError(405, {"detail": "Method Not Allowed"})
