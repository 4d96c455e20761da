"""Log records: JSON with the request id, job id and server where known."""

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from core_app.logs import ContextFilter, JsonLogFormatter, RoutineTaskFilter, log_context
from tests.support import start_python


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes through LOG_FORMAT=json's formatter and filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.DEBUG
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_records_carry_the_context_fields(json_lines):
    with log_context(job_id="1234", server="Laptop"):
        logging.getLogger("queue_app.engine").warning("Job %s slow", "1234")

    (record,) = records(json_lines)
    assert record["message"] == "Job 1234 slow"
    assert record["level"] == "WARNING"
    assert record["logger"] == "queue_app.engine"
    assert record["time"]
    assert record["job_id"] == "1234"
    assert record["server"] == "Laptop"
    assert record["request_id"] is None


def test_json_records_outside_any_context_have_the_fields_empty(json_lines):
    with log_context(job_id="1"):
        pass
    logging.getLogger("x").info("hello")

    (record,) = records(json_lines)
    assert (record["job_id"], record["server"], record["request_id"]) == (None, None, None)


def test_json_records_include_the_traceback(json_lines):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")

    (record,) = records(json_lines)
    assert "ValueError: boom" in record["exc_info"]


def test_a_sane_request_id_is_echoed_and_in_the_requests_records(json_lines, monkeypatch):
    from core_app import views

    def logged_check() -> object:
        logging.getLogger("core_app.health").info("checking the database")
        return original()

    original = views.check_database
    monkeypatch.setattr(views, "check_database", logged_check)

    response = Client().get("/api/v1/health", HTTP_X_REQUEST_ID="phone-42.abc")

    assert response["X-Request-ID"] == "phone-42.abc"
    mine = [r for r in records(json_lines) if r["message"] == "checking the database"]
    assert [r["request_id"] for r in mine] == ["phone-42.abc"]


@pytest.mark.parametrize("given", ["", "has spaces", "x" * 200, "a\u00e9b", "<script>"])
def test_an_insane_request_id_is_replaced_by_a_new_one(given, db):
    response = Client().get("/api/v1/health", HTTP_X_REQUEST_ID=given)

    assert response["X-Request-ID"] != given
    assert len(response["X-Request-ID"]) == 32


def test_each_request_gets_its_own_id(db):
    first = Client().get("/api/v1/health")["X-Request-ID"]
    second = Client().get("/api/v1/health")["X-Request-ID"]

    assert first != second


def test_settings_log_format_json_uses_the_json_formatter(settings):
    from mobilesd import settings as mobilesd_settings

    console = mobilesd_settings.LOGGING["handlers"]["console"]
    assert console["filters"] == ["context", "routine_tasks"]
    assert console["formatter"] == mobilesd_settings.LOG_FORMAT
    assert mobilesd_settings.LOGGING["formatters"]["json"] == {
        "()": "core_app.logs.JsonLogFormatter"
    }


# --- Celery's routine lines of frequent periodic tasks ------------------------------------


def celery_record(logger: str, level: int, msg: str, args: Any) -> logging.LogRecord:
    """A record as Celery's loggers make it: `logger.info(msg, mapping)` or `(msg, *args)`."""
    args = args if isinstance(args, tuple) else (args,)
    return logging.getLogger(logger).makeRecord(logger, level, __file__, 1, msg, args, None)


def console_handler() -> logging.Handler:
    """The handler the settings' LOGGING gives the root logger."""
    (handler,) = [h for h in logging.getLogger().handlers if h.get_name() == "console"]
    return handler


def test_the_routine_filter_lists_the_tasks_beat_runs_more_than_once_a_minute():
    (routine,) = [f for f in console_handler().filters if isinstance(f, RoutineTaskFilter)]
    assert {
        "notifications_app.tasks.notifications_poll",
        "queue_app.tasks.recover_expired_leases",
        "queue_app.tasks.reconcile",
    } <= routine.tasks
    assert "events_app.tasks.prune_events" not in routine.tasks  # hourly: still logged
    assert "queue_app.tasks.run_server" not in routine.tasks


def test_a_frequent_tasks_received_succeeded_and_sending_lines_are_left_out_not_its_failure():
    from celery.app.trace import LOG_FAILURE, LOG_RECEIVED, LOG_SUCCESS

    handler = console_handler()
    poll = "notifications_app.tasks.notifications_poll"
    run = "queue_app.tasks.run_server"
    fields = {"id": "1", "return_value": "None", "runtime": 0.01, "args": "", "kwargs": ""}

    def shown(logger: str, level: int, msg: str, args: Any) -> bool:
        return bool(handler.filter(celery_record(logger, level, msg, args)))

    beat = "Scheduler: Sending due task %s (%s)"
    assert not shown("celery.beat", logging.INFO, beat, ("notifications-poll", poll))
    assert not shown("celery.worker.strategy", logging.INFO, LOG_RECEIVED, {"name": poll})
    assert not shown("celery.app.trace", logging.INFO, LOG_SUCCESS, {**fields, "name": poll})
    # Its failure, and any other task's lines, are kept.
    failed = {"name": poll, "id": "1", "description": "raised unexpected", "exc": "boom"}
    assert shown("celery.app.trace", logging.ERROR, LOG_FAILURE, failed)
    assert shown("celery.worker.strategy", logging.INFO, LOG_RECEIVED, {"name": run})
    assert shown("celery.app.trace", logging.INFO, LOG_SUCCESS, {**fields, "name": run})
    prune = ("prune-events", "events_app.tasks.prune_events")
    assert shown("celery.beat", logging.INFO, beat, prune)
    # Other loggers' lines naming the task are not Celery's routine ones.
    assert shown("queue_app.tasks", logging.INFO, "%s did nothing", (poll,))


def test_log_level_debug_keeps_every_routine_line(tmp_path):
    code = (
        "import json, mobilesd.settings as s; "
        "print(json.dumps(s.LOGGING['filters']['routine_tasks']['tasks']))"
    )
    tasks = {}
    for level in ("INFO", "DEBUG"):
        result = start_python(tmp_path, code, env={"LOG_LEVEL": level})
        result.check_returncode()
        tasks[level] = json.loads(result.stdout.strip().splitlines()[-1])

    assert "notifications_app.tasks.notifications_poll" in tasks["INFO"]
    assert tasks["DEBUG"] == []
