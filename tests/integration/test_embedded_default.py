"""`make run` from a clean checkout starts web, worker and beat on the embedded default
(SQLite and a broker file under data/, nothing else running), and the API answers over
HTTP with a key made by `create_api_key`."""

import subprocess
import tarfile
from pathlib import Path

import pytest
import requests

from tests.integration.procs import REPO, Process, clean_env, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration


def checkout(dest: Path) -> Path:
    """The working tree as a fresh checkout has it: tracked and new files, nothing ignored."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    archive = dest.parent / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        for name in filter(None, files):
            path = REPO / name.decode()
            if path.exists():
                tar.add(path, arcname=name.decode())
    dest.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    # The virtualenv `make run` would create is the one this suite runs in; linking it
    # spares a second install of the same pyproject.toml.
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    root = checkout(tmp_path_factory.mktemp("clean") / "mobilesd")
    port = free_port()
    env = clean_env()
    proc = Process(
        ["make", "run", f"PORT={port}"], cwd=root, env=env, log=root.parent / "make-run.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{base}/api/v1/health"), timeout=90, what="MobileSD web")
        proc.wait_for_output("celery@", timeout=60)
        proc.wait_for_output(" ready.", timeout=60)
        proc.wait_for_output("beat: Starting", timeout=60)
        key = subprocess.run(
            [".venv/bin/python", "manage.py", "create_api_key", "--name", "it", "--quiet"],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        yield {"root": root, "base": base, "key": key, "proc": proc}
    finally:
        proc.stop()


def test_run_prints_where_everything_is(running):
    out = running["proc"].output()
    base = running["base"].replace("127.0.0.1", "localhost")

    assert f"{base}/api/v1/" in out
    assert f"{base}/api/v1/docs" in out
    assert f"{base}/admin/" in out
    assert "create_api_key --name" in out


def test_everything_lives_under_data(running):
    data = running["root"] / "data"

    assert (data / "mobilesd.sqlite3").exists()
    assert (data / "broker.sqlite3").exists()


def test_health_reports_the_embedded_database_and_broker(running):
    body = requests.get(f"{running['base']}/api/v1/health", timeout=5).json()

    assert body["status"] == "ok"
    assert body["database"]["detail"] == "sqlite"
    assert body["broker"]["detail"].startswith("sqla+sqlite:")


def test_the_api_works_over_http_with_a_key(running):
    base, session = running["base"], requests.Session()
    session.headers["Authorization"] = f"Bearer {running['key']}"

    assert requests.get(f"{base}/api/v1/queue/jobs", timeout=5).status_code == 401
    created = session.post(
        f"{base}/api/v1/servers",
        json={"alias": "Laptop", "apiUrl": "http://127.0.0.1:9"},
        timeout=5,
    )
    assert created.status_code == 201
    submitted = session.post(
        f"{base}/api/v1/generate",
        json={"target_server_alias": "Laptop", "generation_params": {"positive_prompt": "x"}},
        timeout=5,
    )
    assert submitted.status_code == 202
    job_id = submitted.json()["mobilesd_job_id"]

    status = session.get(f"{base}/api/v1/queue/jobs/{job_id}/status", timeout=5).json()
    assert status["mobilesd_job_id"] == job_id
    assert status["target_server_alias"] == "Laptop"
    listed = session.get(f"{base}/api/v1/queue/jobs", timeout=5).json()
    assert listed["total"] == 1
    cancelled = session.post(f"{base}/api/v1/queue/jobs/{job_id}/cancel", timeout=5)
    assert cancelled.json()["job"]["status"] == "cancelled"
    deleted = session.delete(f"{base}/api/v1/queue/jobs/{job_id}", timeout=5)
    assert deleted.json() == {"message": f"Job {job_id} deleted successfully."}


def test_admin_and_docs_are_served_with_their_assets(running):
    base = running["base"]

    login = requests.get(f"{base}/admin/login/", timeout=5)
    assert login.status_code == 200
    assert requests.get(f"{base}/static/admin/css/base.css", timeout=5).status_code == 200
    assert requests.get(f"{base}/api/v1/docs", timeout=5).status_code == 200
