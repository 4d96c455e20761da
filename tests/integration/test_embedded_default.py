"""`make run` from a clean checkout starts web, worker and beat on the embedded default
(SQLite and a broker file under data/, nothing else running), and the API answers over
HTTP with a key made by `create_api_key`."""

import pytest
import requests

from tests.integration.procs import embedded_mobilesd, sse_messages, wait_until
from tests.notifications_app.receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    # Webhooks may reach the receiver of the webhook test on this machine.
    with embedded_mobilesd(
        tmp_path_factory.mktemp("clean"), MOBILESD_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8"
    ) as app:
        yield {"root": app.root, "base": app.base, "key": app.key, "proc": app.proc}


def test_run_prints_where_everything_is(running):
    out = running["proc"].output()
    base = running["base"].replace("127.0.0.1", "localhost")

    assert f"{base}/api/v1/" in out
    assert f"{base}/api/v1/docs" in out
    assert f"{base}/admin/" in out
    assert "create_api_key --name" in out


def test_run_starts_one_web_process_so_that_its_limits_are_counted_in_one_place(running):
    # Without a shared cache each web process would keep its own failed sign-in counts.
    assert running["proc"].output().count("Booting worker with pid") == 1


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


def test_the_event_stream_works_on_the_embedded_default(running):
    base, headers = running["base"], {"Authorization": f"Bearer {running['key']}"}

    with requests.get(
        f"{base}/api/v1/events?types=server.", headers=headers, stream=True, timeout=(5, 30)
    ) as stream:
        messages = sse_messages(stream)
        assert next(m for m in messages if m.get("event") == "ready")
        created = requests.post(
            f"{base}/api/v1/servers",
            json={"alias": "Streamed", "apiUrl": "http://127.0.0.1:9"},
            headers=headers,
            timeout=5,
        )
        assert created.status_code == 201
        added = next(m for m in messages if m.get("event") == "server.added")

    assert added["data"]["server"]["alias"] == "Streamed"


def test_webhooks_leave_on_the_embedded_default_by_beats_poll(running):
    """SQLite has no LISTEN: beat's poll (MOBILESD_NOTIFY_POLL_SECONDS, 2 s) hands the event
    on, and the embedded broker carries the delivery to the worker."""
    base, headers = running["base"], {"Authorization": f"Bearer {running['key']}"}
    receiver = Receiver()
    try:
        made = requests.post(
            f"{base}/api/v1/webhooks",
            json={"url": receiver.url, "events": ["server.added"]},
            headers=headers,
            timeout=5,
        )
        assert made.status_code == 201, made.text
        created = requests.post(
            f"{base}/api/v1/servers",
            json={"alias": "Hooked", "apiUrl": "http://127.0.0.1:9"},
            headers=headers,
            timeout=5,
        )
        assert created.status_code == 201
        (got,) = wait_until(receiver.requests, timeout=30, what="the webhook")
        receiver.assert_all_signed(made.json()["secret"])
    finally:
        receiver.stop()
    assert got.json["type"] == "server.added"
    assert got.json["data"]["server"]["alias"] == "Hooked"
