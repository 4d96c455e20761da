"""The one design of the errors the clients of outside systems raise.

Every failure of a call to Forge/A1111 or Civitai is an `IntegrationError` subclass, never a
`requests` exception. Each subclass says, as class attributes, its stable `code` (for
programs: logs, stored job and download errors, the API's error body) and whether it is
`transient` (the same call may succeed later, so the caller may retry with backoff) or not
(sending it again cannot help). Each instance carries `message` (for people), the HTTP
`status_code` the outside system answered with (None when no answer arrived) and the
`retry_after` seconds it asked for (None when it did not say).

Invariants: no imports beyond the standard library (this sits below both clients); every
error survives pickling with all its attributes (Celery's worker pools pickle exceptions).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["IntegrationError"]


class IntegrationError(Exception):
    """A call to an outside system failed; see the module docstring for the attributes."""

    code: ClassVar[str] = "integration_error"
    transient: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the message, then every attribute restored: a subclass's extra
        # keyword-only fields come back without each one writing its own __reduce__.
        return (self.__class__, (self.message,), self.__dict__.copy())
