"""The event stream for real: the web server the Procfile starts (gunicorn with uvicorn
workers, ASGI), a real Celery worker, Redis and PostgreSQL (LISTEN/NOTIFY), and a Forge
simulator. A phone-like client follows its job from queued to completed over the stream
alone, and fetches an image the completed event names."""

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from model_bakery import baker

from core_app.models import KeyScope
from servers_app.models import Server
from tests.integration.procs import (
    procfile_web,
    sse_messages,
)
from tests.openapi_check import check_stream_message
from tests.support import database_backends, new_key

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(engine, tmp_path) -> Iterator[str]:
    with procfile_web(
        {**engine.env, "MOBILESD_EVENTS_HEARTBEAT_SECONDS": "1"}, tmp_path, concurrency=2
    ) as server:
        yield server.base


def test_a_phone_follows_its_job_from_queued_to_completed_over_the_stream_alone(web, sims):
    sim = sims(seconds_per_step=0.05)
    baker.make(Server, alias="stream-laptop", api_url=sim.url)
    _, key = new_key("phone", username="anna", scope=KeyScope.CLIENT)
    headers = {"Authorization": f"Bearer {key}"}

    with requests.get(
        f"{web}/api/v1/events?types=job.", headers=headers, stream=True, timeout=(5, 30)
    ) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        messages = sse_messages(stream)
        assert next(m for m in messages if m.get("event") == "ready")
        submitted = requests.post(
            f"{web}/api/v1/generate",
            json={
                "target_server_alias": "stream-laptop",
                "generation_params": {
                    "positive_prompt": "a lighthouse",
                    "steps": 10,
                    "width": 64,
                    "height": 64,
                },
            },
            headers=headers,
            timeout=10,
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["mobilesd_job_id"]
        seen: list[dict[str, Any]] = []
        for message in messages:
            if "event" in message and message["data"]["job_id"] == job_id:
                seen.append(message)
                if message["event"] in ("job.completed", "job.failed"):
                    break

    for message in seen:  # as the OpenAPI document describes them
        check_stream_message(message["event"], message["data"])
    types = [m["event"] for m in seen]
    assert types[0] == "job.queued"
    assert "job.started" in types
    assert types[-1] == "job.completed", seen[-1]
    ids = [int(m["id"]) for m in seen]
    assert ids == sorted(set(ids))
    images = seen[-1]["data"]["job"]["result_details"]["images"]
    assert images
    image = requests.get(f"{web}/outputs/{images[0]}", headers=headers, timeout=10)
    assert image.status_code == 200
    assert image.content.startswith(b"\x89PNG")


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


# The web process's pool of database connections in the test below (the Procfile's is 8).
POOL = 4


def test_open_streams_hold_no_database_connection_and_no_thread(engine, tmp_path):
    _, key = new_key("phone", username="anna", scope=KeyScope.CLIENT)
    headers = {"Authorization": f"Bearer {key}"}
    # The web process's connections by their name (the cluster's come and go meanwhile).
    named = {**engine.env, "DATABASE_URL": f"{engine.env['DATABASE_URL']}?application_name=web"}
    # What the streams' opening steps may add at most however many open: the threads of the
    # event loop's default pool (asyncio's size), which their sync checks run on.
    pool = min(32, (os.cpu_count() or 1) + 4)
    many = pool + 30
    held: list[Iterator[dict[str, Any]]] = []  # a dropped reader closes its connection
    with (
        contextlib.ExitStack() as streams,
        procfile_web(
            {**named, "MOBILESD_EVENTS_HEARTBEAT_SECONDS": "1", "DATABASE_POOL_SIZE": str(POOL)},
            tmp_path,
        ) as server,
    ):

        def open_stream(_: int = 0) -> Iterator[dict[str, Any]]:
            stream = requests.get(
                f"{server.base}/api/v1/events", headers=headers, stream=True, timeout=30
            )
            messages = sse_messages(stream)
            streams.callback(stream.close)
            assert next(m for m in messages if m.get("event") == "ready")
            held.append(messages)
            return messages

        def open_at_once(count: int) -> None:
            with ThreadPoolExecutor(count) as clients:
                list(clients.map(open_stream, range(count)))

        open_stream()  # the hub is up: its connections, its threads
        (worker,) = server.workers()
        connections_before, threads_before = len(database_backends("web")), threads(worker)
        assert connections_before >= 2  # the hub's: its reads and its LISTEN
        open_at_once(many)

        # A connection an opening stream's checks used goes back to the web process's pool
        # once they are done: with every stream open, the web process has the hub's
        # connections and at most the pool's, however many streams there are.
        assert len(database_backends("web")) <= connections_before + POOL < many
        assert threads(worker) <= threads_before + pool < threads_before + many
        # Every one still open: each has its next heartbeat.
        assert all(next(messages) == {"": "keep-alive"} for messages in held)
