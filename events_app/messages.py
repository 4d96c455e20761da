"""What a reader receives for an event: its id, type, time, subject ids and the subject as
it was after the change, in the API's own names (a job's are those of the job object, so a
phone can merge them into the job it shows)."""

import uuid
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core_app.fields import format_timestamp
from events_app.models import Event


def _time(value: Any) -> str | None:
    """A trigger's timestamp (PostgreSQL's ISO text, or SQLite's naive UTC text) as the API
    writes timestamps."""
    if not value:
        return None
    if isinstance(value, datetime):
        parsed: datetime | None = value
    else:
        parsed = parse_datetime(str(value))
    if parsed is None:
        return None
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return format_timestamp(parsed)


def _uuid(value: Any) -> str | None:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))) if value else None


def _progress_percent(status: str, progress: Any) -> int:
    if status == "completed":
        return 100
    try:
        fraction = float((progress or {}).get("fraction") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0
    if fraction != fraction or fraction in (float("inf"), float("-inf")):
        return 0
    return int(round(min(max(fraction, 0.0), 1.0) * 100, 6) // 1)


def _job(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    status = data.get("status")
    processing = status == "processing"
    result = data.get("result_details")
    if processing:
        result = {
            **(result or {}),
            "progress_percentage": _progress_percent("processing", data.get("progress")),
        }
    return {
        "mobilesd_job_id": _uuid(event.job_id),
        "status": status,
        "creation_timestamp": _time(data.get("created_at")),
        "last_updated_timestamp": _time(data.get("updated_at")),
        "completion_timestamp": _time(data.get("completed_at")),
        "target_server_alias": data.get("target_server_alias"),
        "forge_session_hash": data.get("forge_session_hash"),
        "result_details": result,
        "retry_count": data.get("retry_count"),
        "priority": data.get("priority"),
        "progress": data.get("progress") if processing else None,
        "not_before": _time(data.get("not_before")),
        "expires_at": _time(data.get("expires_at")),
        "batch_id": _uuid(event.batch_id),
    }


def _batch(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    batch = {
        "batch_id": _uuid(event.batch_id),
        "name": data.get("name"),
        "target_server_alias": data.get("target_server_alias"),
        "priority": data.get("priority"),
        "job_count": data.get("job_count"),
        "creation_timestamp": _time(data.get("created_at")),
    }
    if isinstance(counts := data.get("counts"), dict):
        # batch.finished: how its jobs ended, as they were when the last one finished.
        batch["counts"] = {
            key: int(counts.get(key) or 0) for key in ("completed", "failed", "cancelled", "total")
        }
    return batch


def _server(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "alias": data.get("alias"),
        "enabled": data.get("enabled"),
        "is_online": data.get("is_online"),
        "slots": data.get("slots"),
        "paused_at": _time(data.get("paused_at")),
        "quarantined_at": _time(data.get("quarantined_at")),
        "quarantine_reason": data.get("quarantine_reason") or "",
        "last_error": data.get("last_error") or "",
    }


def _queue(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    paused_at = _time(data.get("paused_at"))
    return {"paused": paused_at is not None, "paused_at": paused_at}


def _download(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    size, done = data.get("size_bytes"), data.get("bytes_done") or 0
    status = data.get("status")
    if status == "completed":
        percent: int | None = 100
    elif size:
        percent = min(round(done * 100 / size), 100)
    else:
        percent = None
    return {
        "download_id": _uuid(event.download_id),
        "status": status,
        "file_name": data.get("file_name"),
        "model_name": data.get("model_name"),
        "version_name": data.get("version_name"),
        "model_type": data.get("model_type"),
        "model_version_id": data.get("model_version_id"),
        "size_bytes": size,
        "bytes_done": done,
        "progress_percentage": percent,
        "speed_bytes_per_second": data.get("speed_bytes_per_second"),
        "error": data.get("error") or "",
        "error_code": data.get("error_code") or "",
        "attempts": data.get("attempts"),
        "creation_timestamp": _time(data.get("created_at")),
        "last_updated_timestamp": _time(data.get("updated_at")),
        "finished_timestamp": _time(data.get("finished_at")),
    }


_SUBJECTS = {
    "job": ("job", _job),
    "batch": ("batch", _batch),
    "server": ("server", _server),
    "queue": ("queue", _queue),
    "download": ("download", _download),
}


def event_message(event: Event) -> dict[str, Any]:
    """The event as readers receive it: {"id", "type", "created_at", "job_id", "batch_id",
    "server_alias", "download_id", and the subject under its kind's name ("job", "batch",
    "server", "queue", "download")}."""
    message = event_envelope(event)
    data = event.data if isinstance(event.data, dict) else {}
    kind = event.type.partition(".")[0]
    if kind in _SUBJECTS:
        key, render = _SUBJECTS[kind]
        message[key] = render(event, data)
    return message


def event_envelope(event: Event) -> dict[str, Any]:
    """The message without its subject (what a reader gets for an event whose snapshot
    cannot be rendered): the event's own columns."""
    data = event.data if isinstance(event.data, dict) else {}
    kind = event.type.partition(".")[0]
    return {
        "id": event.seq,
        "type": event.type,
        "created_at": _time(event.created_at),
        "job_id": _uuid(event.job_id),
        "batch_id": _uuid(event.batch_id),
        "download_id": _uuid(event.download_id),
        "server_alias": data.get("alias") if kind == "server" else data.get("target_server_alias"),
    }
