"""What a log record says about where it came from: the request, job and server it was
written for, carried in context variables and added to every record by `ContextFilter`.

The request-id middleware sets `request_id` around a request; the generation engine sets
`job_id` and `server` around the work on one job (`log_context`). Context variables follow
a thread, not its helpers: each thread that works on a job sets them itself.
"""

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any

from pythonjsonlogger.json import JsonFormatter

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)
server: ContextVar[str | None] = ContextVar("server", default=None)

_FIELDS: dict[str, ContextVar[str | None]] = {
    "request_id": request_id,
    "job_id": job_id,
    "server": server,
}


@contextlib.contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Records logged inside carry these fields (`request_id`, `job_id`, `server`); the
    values outside are restored on the way out. A None value leaves a field as it was."""
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []
    for name, value in values.items():
        if value is None:
            continue
        var = _FIELDS[name]
        tokens.append((var, var.set(str(value))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Adds `request_id`, `job_id` and `server` to every record (None when unknown), unless
    the call set them itself (`extra=`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _FIELDS.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


# Where Celery writes a task's routine lines: beat's "Sending due task", the worker's
# "received" and "succeeded".
_CELERY_ROUTINE_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


class RoutineTaskFilter(logging.Filter):
    """Leaves out the INFO lines Celery writes for each run of the given tasks (the
    frequent periodic ones: a poll every 2 s would be most of the log), and nothing else:
    their warnings and errors, and every other task's lines, are kept."""

    def __init__(self, tasks: Iterable[str] = ()) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith(_CELERY_ROUTINE_LOGGERS):
            return True
        args = record.args
        # The worker's lines format a mapping (the task's `name`, ...); beat's a tuple
        # (the entry's name, then its task's).
        names = [args.get("name")] if isinstance(args, Mapping) else list(args or ())
        return not any(isinstance(name, str) and name in self.tasks for name in names)


class JsonLogFormatter(JsonFormatter):
    """One JSON object per record: time, level, logger, message, the context fields, and
    the traceback of an exception."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "fmt",
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(job_id)s %(server)s",
        )
        kwargs.setdefault(
            "rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"}
        )
        super().__init__(*args, **kwargs)
