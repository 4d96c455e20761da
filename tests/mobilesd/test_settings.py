"""Settings read from the environment (and `.env`): hosts, malformed values, defaults."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, start_python


def _settings_in(tmp_path: Path, **env: str) -> dict:
    """ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS as a fresh process computes them from `env`."""
    code = (
        "import json, mobilesd.settings as s; "
        "print(json.dumps({'hosts': s.ALLOWED_HOSTS, 'csrf': s.CSRF_TRUSTED_ORIGINS}))"
    )
    result = start_python(tmp_path, code, env=env)
    result.check_returncode()
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_allowed_hosts_default_to_this_machine_only(tmp_path):
    hosts = _settings_in(tmp_path)["hosts"]

    assert {"localhost", "127.0.0.1", "[::1]"} <= set(hosts)
    assert "*" not in hosts


def test_the_public_url_and_configured_hosts_are_added(tmp_path):
    found = _settings_in(
        tmp_path,
        MOBILESD_PUBLIC_URL="https://sd.example.org:8443/",
        DJANGO_ALLOWED_HOSTS="gpu-box.lan, 192.168.1.5",
    )

    assert {"sd.example.org", "gpu-box.lan", "192.168.1.5", "localhost"} <= set(found["hosts"])
    assert "https://sd.example.org:8443" in found["csrf"]


def test_an_ipv6_public_url_is_allowed_in_brackets(tmp_path):
    assert (
        "[fd12::5]" in _settings_in(tmp_path, MOBILESD_PUBLIC_URL="http://[fd12::5]:8000")["hosts"]
    )


def test_a_public_url_that_is_not_http_stops_startup(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _settings_in(tmp_path, MOBILESD_PUBLIC_URL="sd.example.org")

    assert "MOBILESD_PUBLIC_URL" in failed.value.stderr


def test_a_request_for_another_host_is_refused(anon_client):
    response = anon_client.get("/api/v1/health", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


SETUP = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'anonymous': s.MOBILESD_ALLOW_ANONYMOUS, "
    "'lease': s.MOBILESD_LEASE_SECONDS, 'engine': s.DATABASES['default']['ENGINE'], "
    "'broker': s.CELERY_BROKER_URL}))"
)


def _start(
    tmp_path: Path, *, code: str = SETUP, cwd: Path = ROOT, **env: str
) -> subprocess.CompletedProcess:
    """`code` (by default `django.setup()`) in a fresh process with `env`."""
    return start_python(tmp_path, code, cwd=cwd, env=env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MOBILESD_ALLOW_ANONYMOUS", "ture"),
        ("DJANGO_DEBUG", "maybe"),
        ("MOBILESD_LEASE_SECONDS", "abc"),
        ("MOBILESD_MAX_RETRIES", "3.5"),
        ("DATABASE_URL", "nonsense"),
        ("CELERY_BROKER_URL", "nonsense"),
        ("CACHE_URL", "127.0.0.1:6379"),
        ("MOBILESD_WEBHOOK_ALLOWED_NETWORKS", "192.168.0.0/16,10.0.0.0/33"),
        ("MOBILESD_TRUSTED_PROXIES", "127.0.0.1, nginx"),
        ("MOBILESD_WEBHOOK_RETRY_SECONDS", "30,soon"),
        ("MOBILESD_WEBHOOK_RETRY_SECONDS", "30,-1"),
        ("MOBILESD_WEBHOOK_LEASE_SECONDS", "10"),  # not longer than 5 + 15 s of timeouts
        ("DATABASE_POOL_SIZE", "eight"),
        ("DATABASE_POOL_SIZE", "-1"),
        ("DATABASE_POOL_TIMEOUT", "soon"),
        ("DATABASE_POOL_TIMEOUT", "0"),
    ],
)
def test_a_malformed_value_stops_startup_naming_the_variable(tmp_path, name, value):
    result = _start(tmp_path, **{name: value})

    assert result.returncode != 0
    assert f'Environment variable "{name}" invalid' in result.stderr


def test_a_blank_value_means_the_default(tmp_path):
    result = _start(tmp_path, MOBILESD_LEASE_SECONDS=" ", MOBILESD_ALLOW_ANONYMOUS="")

    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert (values["lease"], values["anonymous"]) == (12.0, False)


def test_the_env_file_is_read_and_the_environment_wins_over_it(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text(
        "MOBILESD_ALLOW_ANONYMOUS=true\n"
        "MOBILESD_LEASE_SECONDS=7.5\n"
        "CELERY_BROKER_URL=redis://127.0.0.1:6379/3\n"
    )

    result = _start(tmp_path, MOBILESD_ENV_FILE=str(env_file), MOBILESD_LEASE_SECONDS="4")

    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["anonymous"] is True
    assert values["broker"] == "redis://127.0.0.1:6379/3"
    assert values["lease"] == 4.0  # the real environment wins


def test_the_project_roots_env_file_is_read_by_default(tmp_path):
    """A copy of the settings with a `.env` in its project root, read from elsewhere."""
    project = tmp_path / "project"
    (project / "mobilesd").mkdir(parents=True)
    shutil.copy(ROOT / "mobilesd" / "settings.py", project / "mobilesd" / "settings.py")
    (project / ".env").write_text("MOBILESD_LEASE_SECONDS=9\nDATABASE_URL=nonsense\n")
    code = (
        "import json, mobilesd.settings as s; "
        "print(json.dumps({'lease': s.MOBILESD_LEASE_SECONDS, 'file': s.__file__}))"
    )

    result = _start(
        tmp_path, code=code, cwd=tmp_path, PYTHONPATH=str(project), MOBILESD_ENV_FILE=""
    )

    assert result.returncode != 0
    assert 'Environment variable "DATABASE_URL" invalid' in result.stderr
    (project / ".env").write_text("MOBILESD_LEASE_SECONDS=9\n")
    result = _start(
        tmp_path, code=code, cwd=tmp_path, PYTHONPATH=str(project), MOBILESD_ENV_FILE=""
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["file"].startswith(str(project))
    assert values["lease"] == 9.0


def test_webhook_retry_delays_are_read_as_seconds_with_fractions(tmp_path):
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps(s.MOBILESD_WEBHOOK_RETRY_SECONDS))"
    )
    result = _start(tmp_path, code=code, MOBILESD_WEBHOOK_RETRY_SECONDS="0.5, 2,10")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [0.5, 2.0, 10.0]


POOL = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps(s.DATABASES['default'].get('OPTIONS', {}).get('pool')))"
)
POSTGRES = "postgres://postgres@127.0.0.1:5432/mobilesd"


def test_a_pool_size_gives_postgresql_a_pool_of_that_size(tmp_path):
    result = _start(tmp_path, code=POOL, DATABASE_URL=POSTGRES, DATABASE_POOL_SIZE="5")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"min_size": 1, "max_size": 5, "timeout": 10}


@pytest.mark.parametrize(
    "env",
    [{"DATABASE_URL": POSTGRES}, {"DATABASE_POOL_SIZE": "5"}],  # SQLite: never
    ids=["postgresql without a size", "sqlite with one"],
)
def test_without_a_pool_size_connections_are_not_pooled(tmp_path, env):
    result = _start(tmp_path, code=POOL, **env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is None


def test_a_pool_with_persistent_connections_stops_startup_naming_both(tmp_path):
    result = _start(
        tmp_path, DATABASE_URL=POSTGRES, DATABASE_POOL_SIZE="5", DATABASE_CONN_MAX_AGE="60"
    )

    assert result.returncode != 0
    assert "DATABASE_POOL_SIZE and DATABASE_CONN_MAX_AGE" in result.stderr


_WORKER_POOL = (
    "import django, json, types; django.setup(); from django.db import connections; "
    "import mobilesd.celery; "
    "options = connections['default'].settings_dict['OPTIONS']; "
    "before = options.get('pool', {}).get('max_size'); "
    "mobilesd.celery._worker_connections(sender=types.SimpleNamespace(concurrency=3)); "
    "after = options.get('pool'); "
    "print(json.dumps([before, after and after['max_size'], options.get('application_name')]))"
)


def test_a_worker_pools_its_connections_for_its_threads_not_the_webs(tmp_path):
    result = _start(tmp_path, code=_WORKER_POOL, DATABASE_URL=POSTGRES, DATABASE_POOL_SIZE="5")

    assert result.returncode == 0, result.stderr
    before, after, name = json.loads(result.stdout.strip().splitlines()[-1])
    assert before == 5  # as the web has it
    # Once a worker of 3 threads starts: four connections a thread, and eight more.
    assert after == 3 * 4 + 8
    assert name == "mobilesd worker"


@pytest.mark.parametrize(
    "setting", [{"WORKER_DATABASE_POOL": "false"}, {"DATABASE_CONN_MAX_AGE": "60"}]
)
def test_a_worker_opens_a_connection_per_thread_when_told_or_kept_by_django(tmp_path, setting):
    result = _start(tmp_path, code=_WORKER_POOL, DATABASE_URL=POSTGRES, **setting)

    assert result.returncode == 0, result.stderr
    _, after, name = json.loads(result.stdout.strip().splitlines()[-1])
    assert after is None
    assert name == "mobilesd worker"
