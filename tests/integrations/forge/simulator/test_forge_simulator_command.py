"""`manage.py forge_simulator` runs a simulator in the foreground until it is signalled."""

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.skipif(
    not (REPO / "manage.py").exists(), reason="the Django project is not there"
)


def test_command_serves_the_requested_server_until_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable, "manage.py", "forge_simulator", "--port", "0", "--os", "windows",
            "--models", "Pony/a.safetensors,sdxl/b.safetensors", "--auth", "user:pass",
            "--seconds-per-step", "0", "--switch-seconds", "0", "--flavour", "a1111-1.10",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            line = pool.submit(proc.stdout.readline).result(timeout=60)
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        url = match.group(1)

        models = requests.get(f"{url}/sdapi/v1/sd-models", auth=("user", "pass"), timeout=5)
        denied = requests.get(f"{url}/sdapi/v1/sd-models", timeout=5)
        generated = requests.post(
            f"{url}/sdapi/v1/txt2img", json={"steps": 1}, auth=("user", "pass"), timeout=10
        )

        assert [m["model_name"] for m in models.json()] == ["Pony_a", "sdxl_b"]
        assert models.json()[0]["filename"].startswith("C:\\sd\\models\\Stable-diffusion\\Pony\\")
        assert denied.status_code == 401
        assert "Version: v1.10.1" in generated.json()["info"]
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=15)
    assert returncode == 0, proc.stderr.read() if proc.stderr else ""
