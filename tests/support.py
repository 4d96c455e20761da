"""Helpers for tests: the documented shapes of SEED_API.md, database snapshots, and servers
checked against a simulator."""

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import requests
from django.apps import apps
from django.db import connection

from core_app.scopes import local_user
from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from queue_app.services import job_submit
from servers_app.models import Server
from servers_app.services import server_check_health

# The keys of a job exactly as SEED_API.md documents them, in the documented order.
DOCUMENTED_JOB_KEYS = [
    "mobilesd_job_id",
    "status",
    "creation_timestamp",
    "last_updated_timestamp",
    "completion_timestamp",
    "target_server_alias",
    "forge_session_hash",
    "generation_params",
    "result_details",
    "retry_count",
]
# 2025-05-14T02:34:48.985Z
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# The request example of POST /api/v1/generate in SEED_API.md.
DOCUMENTED_GENERATE_REQUEST: dict[str, Any] = {
    "target_server_alias": "Laptop",
    "generation_params": {
        "positive_prompt": "a beautiful landscape",
        "negative_prompt": "ugly, blurry",
        "checkpoint_name": "Pony/cyberrealisticPony_v8.safetensors",
        "width": 512,
        "height": 512,
        "steps": 20,
        "cfg_scale": 7,
        "sampler_name": "Euler",
        "restore_faces": False,
        "scheduler_or_quality_preset": "Balanced",
    },
}

# The generation_params of the documented status response (every documented key).
DOCUMENTED_STATUS_PARAMS: dict[str, Any] = {
    "positive_prompt": "a pretty girl",
    "negative_prompt": "ugly",
    "checkpoint_name": "Pony/cyberrealisticPony_v85.safetensors",
    "style_preset": "simple",
    "sampling_category": "Both",
    "enable_hires_fix": False,
    "upscaler_model": "None",
    "refiner_model": "None",
    "num_images": 1,
    "seed": "",
    "subseed": "",
    "width": 512,
    "height": 512,
    "steps": 20,
    "cfg_scale": 7,
    "sampler_name": "Euler",
    "restore_faces": False,
    "scheduler_or_quality_preset": "Balanced",
}


def assert_documented_job(body: dict[str, Any]) -> None:
    """A job object has every documented key with the documented type."""
    for key in DOCUMENTED_JOB_KEYS:
        assert key in body, f"missing documented key {key}"
    assert UUID_RE.match(body["mobilesd_job_id"])
    assert body["status"] in {"pending", "processing", "completed", "failed", "cancelled"}
    assert TIMESTAMP_RE.match(body["creation_timestamp"])
    assert TIMESTAMP_RE.match(body["last_updated_timestamp"])
    assert body["completion_timestamp"] is None or TIMESTAMP_RE.match(body["completion_timestamp"])
    assert isinstance(body["target_server_alias"], str)
    assert body["forge_session_hash"] is None or isinstance(body["forge_session_hash"], str)
    assert isinstance(body["generation_params"], dict)
    assert body["result_details"] is None or isinstance(body["result_details"], dict)
    assert isinstance(body["retry_count"], int)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the API's one error shape with this status and code (and `error`, the
    original MobileSD's key, saying the same as `message`)."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) <= {"message", "error", "code", "fields"}
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["error"] == body["message"]
    assert body["code"] == code
    return body


def db_snapshot(
    labels: tuple[str, ...] = ("core_app", "servers_app", "queue_app"),
) -> dict[str, list[tuple]]:
    """Every row of every table of the apps `labels`, to prove a rejected request changed
    nothing."""
    snapshot = {}
    for label in labels:
        for model in apps.get_app_config(label).get_models():
            # An authenticated request may note when its key was last used; nothing else.
            names = [f.attname for f in model._meta.concrete_fields if f.name != "last_used_at"]
            snapshot[model._meta.label] = sorted(
                tuple(str(v) for v in row) for row in model._default_manager.values_list(*names)
            )
    return snapshot


def run_queue_in_thread(server_id: int) -> threading.Thread:
    """Run a server's queue as a worker would (queue_app.engine.server_run), beside the
    test, with its own database connection."""

    from queue_app.engine import server_run

    def target() -> None:
        try:
            server_run(server_id)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def submit(**params: Any) -> Any:
    """Queue a small, quick job (64x64, 4 steps) on the server "Laptop"."""
    params.setdefault("positive_prompt", "a lighthouse")
    params.setdefault("steps", 4)
    params.setdefault("width", 64)
    params.setdefault("height", 64)
    job, _ = job_submit(owner=local_user(), target_server_alias="Laptop", generation_params=params)
    return job


# The real A1111/Forge infotexts of REFERENCE.md D.3, by sample number.
INFOTEXT_SAMPLES: dict[int, str] = {
    sample["id"]: sample["text"]
    for sample in json.loads(
        (Path(__file__).resolve().parents[1] / "contracts" / "infotext-samples.json").read_text(
            encoding="utf-8"
        )
    )["samples"]
}


def checked_server(url: str, *, alias: str = "Laptop") -> Server:
    """A server at `url` after its first health check (flavour, models and loaded
    checkpoint read), as the engine finds it."""
    server = Server.objects.create(alias=alias, api_url=url)
    server_check_health(server=server)
    server.refresh_from_db()
    return server


ROOT = Path(__file__).resolve().parents[1]
# What a developer's shell may set that would change how a fresh MobileSD process starts.
_OWN_VARIABLES = (
    "DJANGO_",
    "MOBILESD_",
    "DATABASE_",
    "CELERY_",
    "CACHE_",
    "LOG_",
    "SENTRY_",
    "PROMETHEUS_",
    "WORKER_DATABASE_",
)


def start_python(
    tmp_path: Path, code: str, *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh Python process with MobileSD's settings, `env` beside an environment
    cleared of MobileSD's own variables, its data under `tmp_path` and no `.env` read."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_VARIABLES)}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "mobilesd.settings",
            "PYTHONPATH": str(ROOT),
            "MOBILESD_DATA_DIR": str(tmp_path),
            "MOBILESD_ENV_FILE": str(tmp_path / "absent.env"),
            **(env or {}),
        },
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def new_key(
    name: str = "phone", *, username: str = "owner", scope: str = "admin"
) -> tuple[Any, str]:
    """A new API key (row, raw key) of user `username` (created if missing), admin scope
    unless told."""
    from django.contrib.auth import get_user_model

    from core_app.services import api_key_create

    user, _ = get_user_model().objects.get_or_create(username=username)
    return api_key_create(name=name, user=user, scope=scope)


def database_backends(application_name: str) -> set[int]:
    """The process ids of the PostgreSQL connections to the test database that a process
    opened under `application_name` (`?application_name=` in its DATABASE_URL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [application_name],
        )
        return {row[0] for row in cursor.fetchall()}


def explained(sql: str, params: Any = None, *, analyze: bool = False) -> list[dict[str, Any]]:
    """The nodes of PostgreSQL's plan of `sql`, each with the nodes below it (`below`);
    with `analyze`, as run (each node's `Actual Rows` and `Actual Loops`)."""

    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN ({options}) {sql}", params)
        (document,) = cursor.fetchone()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
        below: list[dict[str, Any]] = []
        for child in node.get("Plans", []):
            below += [child, *walk(child)]
        nodes.append({**node, "below": below})
        return below

    walk(plan)
    return nodes


def assert_read_in_index_order(nodes: list[dict[str, Any]], table: str) -> None:
    """`table` is read only through indexes (nodes of `explained`), and no sort is done on
    its rows: the page comes in an index's order."""
    scans = [node for node in nodes if node.get("Relation Name") == table]
    assert {node["Node Type"] for node in scans} <= {"Index Scan", "Index Only Scan"}, nodes[-1]
    assert scans
    for sort in (node for node in nodes if "Sort" in node["Node Type"]):
        assert not [below for below in sort["below"] if below.get("Relation Name") == table]


def key_client(username: str, *, scope: str = "client") -> Any:
    """A DRF test client sending a new key of user `username` (created if missing), client
    scope unless told."""
    from rest_framework.test import APIClient

    _, raw_key = new_key(f"{username}'s {scope} key", username=username, scope=scope)
    api_client = APIClient()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return api_client


def fresh_cache(server: Server, *titles: str) -> None:
    """A model cache of the server listing these checkpoint titles, just refreshed."""
    from django.utils import timezone

    from servers_app.model_cache import checkpoint_rows
    from servers_app.models import CachedModel

    # As /sdapi/v1/sd-models lists them: the hash in the title is also the `hash` field.
    listing = [{"title": t, "hash": t.rsplit("[", 1)[1][:-1] if "[" in t else None} for t in titles]
    for row in checkpoint_rows(listing):
        CachedModel.objects.create(server=server, **row.fields())
    server.models_refreshed_at = timezone.now()
    server.save()


def previewing_simulator(**config: Any) -> ForgeSimulator:
    """A started simulator of 0.05 s steps that makes a live preview every 2 steps."""
    sim = ForgeSimulator(SimulatorConfig(seconds_per_step=0.05, **config)).start()
    requests.post(f"{sim.url}/sdapi/v1/options", json={"show_progress_every_n_steps": 2}, timeout=5)
    return sim
