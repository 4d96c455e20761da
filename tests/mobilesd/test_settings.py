"""Settings read from the environment: which Host headers MobileSD answers to."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _settings_in(tmp_path: Path, **env: str) -> dict:
    """ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS as a fresh process computes them from `env`."""
    code = (
        "import json, mobilesd.settings as s; "
        "print(json.dumps({'hosts': s.ALLOWED_HOSTS, 'csrf': s.CSRF_TRUSTED_ORIGINS}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MOBILESD_"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "MOBILESD_DATA_DIR": str(tmp_path), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
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
