"""LOG_FORMAT as a fresh process reads it (the settings and logging of a real start-up)."""

import json
import subprocess
from pathlib import Path

from tests.support import start_python

LOG_ONE_RECORD = (
    "import django, logging; django.setup(); "
    "from core_app.logs import log_context\n"
    "with log_context(job_id='j-1', server='Laptop'):\n"
    "    logging.getLogger('queue_app.engine').warning('hello %s', 'there')"
)


def _run(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return start_python(tmp_path, code, env=env)


def test_log_format_json_writes_each_record_as_a_json_object(tmp_path):
    result = _run(tmp_path, LOG_ONE_RECORD, LOG_FORMAT="json")

    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "hello there" in line]
    record = json.loads(line)
    assert record["message"] == "hello there"
    assert record["level"] == "WARNING"
    assert (record["job_id"], record["server"], record["request_id"]) == ("j-1", "Laptop", None)


def test_plain_log_format_is_the_default(tmp_path):
    result = _run(tmp_path, LOG_ONE_RECORD)

    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "hello there" in line]
    assert line.endswith("WARNING queue_app.engine hello there")


def test_an_unknown_log_format_stops_start_up_naming_it(tmp_path):
    result = _run(tmp_path, "import mobilesd.settings", LOG_FORMAT="jsno")

    assert result.returncode != 0
    assert "LOG_FORMAT must be 'plain' or 'json', not 'jsno'" in result.stderr


def test_a_sentry_dsn_without_the_extra_warns_at_start_up_and_runs_on(tmp_path):
    code = "import sys; sys.modules['sentry_sdk'] = None; import django; django.setup()"

    result = _run(tmp_path, code, SENTRY_DSN="https://key@sentry.example/1")

    assert result.returncode == 0, result.stderr
    assert "SENTRY_DSN is set but sentry-sdk is not installed" in result.stderr
