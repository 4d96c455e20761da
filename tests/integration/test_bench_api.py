"""bench/api.py, the API benchmark, at a tiny size: it fills a database of its own, serves
the API with gunicorn, measures every endpoint and writes its JSON; and its floor view is
not part of the product's URLs."""

import json
import os
import subprocess
import sys

import psycopg
import pytest
from django.db import connection
from django.urls import Resolver404, resolve

from tests.integration.conftest import _redis_broker_url, _worker_database_url
from tests.integration.procs import REPO

ENDPOINTS = {
    "status",
    "floor",
    "jobs",
    "jobs status=pending",
    "jobs status=processing",
    "jobs status=completed",
    "jobs status=failed",
    "jobs status=cancelled",
    "jobs order=asc",
    "jobs status=completed&order=asc",
    "jobs offset=165",  # at most half the jobs: (300 + 30) // 2
    "submit",
    "cancel",
    "servers",
    "downloads",
    # The same pages through a client key: its own user's jobs only.
    "client jobs",
    "client jobs status=completed",
    "client jobs status=completed&order=asc",
}


@pytest.mark.integration
@pytest.mark.django_db
def test_the_api_benchmark_measures_every_endpoint_and_leaves_its_history_as_filled(tmp_path):
    database = f"{connection.settings_dict['NAME']}_bench_api"
    admin_url = _worker_database_url().rsplit("/", 1)[0] + "/postgres"
    env = {
        **os.environ,
        "BENCH_DB_NAME": database,
        "BENCH_PG_ADMIN_URL": admin_url,
        # It flushes it: this session's broker database, which no cluster uses meanwhile
        # (each lives for its module), not bench/api.py's default, another xdist worker's
        # broker with some test broker URLs.
        "BENCH_REDIS_URL": os.environ.get("BENCH_REDIS_URL") or _redis_broker_url(),
    }
    command = [sys.executable, str(REPO / "bench" / "api.py"), "--jobs", "300", "--pending"]
    command += ["30", "--servers", "2", "--downloads", "5", "--samples", "5", "--warmup", "1"]
    try:
        run = subprocess.run(
            [*command, "--results", str(tmp_path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # 1 is a missed target: at this size and with 5 samples, noise may decide that.
        assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
        result = json.loads((tmp_path / "api-latest.json").read_text())
        with psycopg.connect(admin_url.rsplit("/", 1)[0] + f"/{database}") as bench_db:
            rows = bench_db.execute("SELECT status, count(*) FROM queue_app_job GROUP BY 1")
            statuses = dict(rows.fetchall())
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    assert set(result["endpoints"]) == ENDPOINTS
    assert all(row["samples"] == 5 and row["p50_ms"] > 0 for row in result["endpoints"].values())
    assert {check["figure"].split(" p50")[0] for check in result["checks"]} >= ENDPOINTS - {
        "status",
        "floor",
    }
    assert result["history"]["counts"] == {
        "finished": 300,
        "pending": 30,
        "processing": 2,
        "servers": 2,
        "downloads": 5,
    }
    # The 6 jobs it submitted (and cancelled) are gone: a --reuse run finds the same counts.
    assert sum(statuses.values()) == 332
    assert statuses["pending"] == 30


def test_the_benchmarks_floor_view_is_not_among_the_products_urls():
    with pytest.raises(Resolver404):
        resolve("/bench/floor/88615c9d-71ec-4803-88b0-14f5162f6c66")
    assert resolve(
        "/bench/floor/88615c9d-71ec-4803-88b0-14f5162f6c66", urlconf="bench.api_urls"
    ).url_name == ("bench-floor")


def test_each_round_requests_every_endpoint_once_in_an_order_of_its_own():
    """Rounds in one fixed order would put the web process's periodic costs (its garbage
    collections come every so many allocations) on the same endpoints every round."""
    import random

    from bench.api import Endpoint, round_order

    kinds = ["status", "floor", "page", "page", "offset", "submit", "cancel", "page"]
    points = [Endpoint(f"e{i}", "GET", lambda: "/", 200, kind) for i, kind in enumerate(kinds)]
    rng = random.Random(1)

    orders = [round_order(points, rng) for _ in range(20)]

    for order in orders:
        assert sorted(point.name for point in order) == sorted(point.name for point in points)
        names = [point.name for point in order]
        assert names.index("e6") == names.index("e5") + 1  # the cancel of the round's submit
    assert len({tuple(point.name for point in order) for order in orders}) > 10
    assert {order[0].name for order in orders} >= {"e0", "e1"}
