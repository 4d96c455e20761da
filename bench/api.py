#!/usr/bin/env python
"""Benchmark of MobileSD's API on a big history (issue 17 point 3).

    .venv/bin/python bench/api.py [--jobs 1000000] [--pending 20000] [--samples 200] [--reuse]

What runs: a dedicated PostgreSQL database (BENCH_DB_NAME, default `mobilesd_bench_api`;
dropped, re-created, migrated and filled by bench/api_data.py unless `--reuse` finds it
filled with the same row counts), the web tier as the Procfile starts it (gunicorn
mobilesd.asgi with uvicorn workers, WEB_CONCURRENCY=1: one process) with `DJANGO_SETTINGS_MODULE=
bench.api_settings` (MobileSD's settings, plus the floor view of bench/api_urls.py), and a
Redis database as the broker (BENCH_REDIS_URL, default db 13, flushed; no worker runs, so
the submits' nudges just wait there).

It measures sequential requests over one kept-alive connection (`requests.Session`, an API
key of its own), after `--warmup` rounds, `--samples` rounds in which every endpoint is
requested once, in an order of its own (shuffled with `--seed`; the cancel right after
the submit), so that noise on the machine, and the web process's garbage collections, which
come every so many allocations and would otherwise fall on the same places of a fixed round,
hit every endpoint alike: the status read of a completed job with images, the floor (a bare Django
view reading the same row), the job list's first page without a filter, with each status,
with order=asc, with status=completed&order=asc, its page at `--offset`, a submit (POST
generate on a pinned server), a cancel (of the job that round's submit queued: a pending
job in a queue of `--pending`), and the first page of the server and download lists. The
jobs the bench submitted are deleted at the end (through queue_app.services.job_delete), so
that a `--reuse` run finds the same counts.

Targets: status p50 <= 1.5 x floor p50; every first page p50 <= 3 x status p50; submit p50
<= 3 x status p50. The offset page and the cancel are reported. It prints a PASS / MISS
table with the load average, writes the JSON to bench/results/api-<UTC>.json and
api-latest.json, and exits 1 on a MISS.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import api_data  # noqa: E402
from bench.engine_figures import percentile  # noqa: E402
from bench.engine_harness import (  # noqa: E402
    PG_ADMIN_URL,
    RESULTS,
    ensure_services,
    flush_redis,
    machine_info,
    prepare_environment,
    recreate_database,
    setup_django,
    write_results,
)
from tests.integration.procs import (  # noqa: E402
    Process,
    free_port,
    procfile_command,
    wait_until,
)

BENCH_DB = os.environ.get("BENCH_DB_NAME", "mobilesd_bench_api")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

STATUS_VS_FLOOR = 1.5
PAGE_VS_STATUS = 3.0
SUBMIT_VS_STATUS = 3.0
# Sequential requests far beyond the default 600/min: the throttle still runs, never bites.
THROTTLE_RATE = "100000000/min"
PINNED_SERVER = "gpu0"
RETRIES = 5


@dataclass
class Endpoint:
    """One measured request. `path` is called once per request (a cancel names the job the
    submit before it queued); `after` sees each response."""

    name: str
    method: str
    path: Callable[[], str]
    expect: int
    kind: str  # "status", "floor", "page", "offset", "submit", "cancel"
    body: dict[str, Any] | None = None
    after: Callable[[Any], None] | None = None
    key: str | None = None  # sent instead of the bench's admin key (a client's lists)
    times: list[float] = field(default_factory=list)  # seconds
    failures: int = 0  # 5xx answers tried again (see `measure`)


def endpoints(job_id: str, offset: int, submitted: deque[str], client_key: str) -> list[Endpoint]:
    from queue_app.models import JobStatus

    def const(path: str) -> Callable[[], str]:
        return lambda: path

    jobs = "/api/v1/queue/jobs"
    pages = [
        ("jobs", jobs),
        *((f"jobs status={s}", f"{jobs}?status={s}") for s in JobStatus.values),
        ("jobs order=asc", f"{jobs}?order=asc"),
        ("jobs status=completed&order=asc", f"{jobs}?status=completed&order=asc"),
        ("servers", "/api/v1/servers"),
        ("downloads", "/api/v1/civitai/downloads"),
    ]
    submit_body = {
        "target_server_alias": PINNED_SERVER,
        "generation_params": {
            "positive_prompt": api_data.PROMPTS[0],
            "negative_prompt": api_data.NEGATIVE,
            "checkpoint_name": api_data.CHECKPOINTS[0],
            "width": 1024,
            "height": 1024,
            "steps": 25,
            "cfg_scale": 7,
            "sampler_name": "DPM++ 2M",
            "seed": "",
        },
    }
    return [
        Endpoint("status", "GET", const(f"{jobs}/{job_id}/status"), 200, "status"),
        Endpoint("floor", "GET", const(f"/bench/floor/{job_id}"), 200, "floor"),
        *(Endpoint(name, "GET", const(path), 200, "page") for name, path in pages),
        # A client key sees only its own user's jobs: the owner-scoped first pages.
        *(
            Endpoint(f"client {name}", "GET", const(path), 200, "page", key=client_key)
            for name, path in pages
            if name in ("jobs", "jobs status=completed", "jobs status=completed&order=asc")
        ),
        Endpoint(f"jobs offset={offset}", "GET", const(f"{jobs}?offset={offset}"), 200, "offset"),
        Endpoint(
            "submit",
            "POST",
            const("/api/v1/generate"),
            202,
            "submit",
            body=submit_body,
            after=lambda response: submitted.append(response.json()["mobilesd_job_id"]),
        ),
        Endpoint(
            "cancel",
            "POST",
            lambda: f"{jobs}/{submitted.popleft()}/cancel",
            200,
            "cancel",
        ),
    ]


def round_order(points: list[Endpoint], rng: random.Random) -> list[Endpoint]:
    """The endpoints in a shuffled order, each cancel right after the submit that queued
    its job."""
    order = [point for point in points if point.kind != "cancel"]
    rng.shuffle(order)
    for cancel in (point for point in points if point.kind == "cancel"):
        submit = next(i for i, point in enumerate(order) if point.kind == "submit")
        order.insert(submit + 1, cancel)
    return order


def measure(
    base: str, key: str, points: list[Endpoint], *, warmup: int, samples: int, seed: int
) -> None:
    """`warmup` then `samples` rounds, each requesting every endpoint once, in an order of
    its own (`round_order`, from `seed`).

    A 5xx answer or a refused connection is tried again, up to `RETRIES` times a second
    apart, and counted in the endpoint's `failures`: the machine's PostgreSQL is shared,
    and a burst of other clients can exhaust its connections (`too many clients`) for a
    moment, while each request of the default settings opens one. Any other unexpected
    status stops the run."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    rng = random.Random(seed)  # noqa: S311 (an order to measure in, not a secret)
    for round_index in range(warmup + samples):
        for point in round_order(points, rng):
            url = base + point.path()
            for attempt in range(RETRIES + 1):
                started = time.perf_counter()
                try:
                    headers = {"Authorization": f"Bearer {point.key}"} if point.key else None
                    response = session.request(
                        point.method, url, json=point.body, headers=headers, timeout=120
                    )
                except requests.ConnectionError as error:
                    status, text = 0, str(error)
                else:
                    status, text = response.status_code, response.text
                elapsed = time.perf_counter() - started  # the body is read: no stream=True
                if status == point.expect:
                    break
                if (status and status < 500) or attempt == RETRIES:
                    raise SystemExit(
                        f"{point.method} {url} answered {status or text}, not "
                        f"{point.expect}: {text[:500]}"
                    )
                point.failures += 1
                time.sleep(1.0)
            if point.after is not None:
                point.after(response)
            if round_index >= warmup:
                point.times.append(elapsed)
    session.close()


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def figures_of(point: Endpoint) -> dict[str, Any]:
    return {
        "request": f"{point.method} {point.path() if point.kind != 'cancel' else '.../cancel'}",
        "kind": point.kind,
        "samples": len(point.times),
        "p50_ms": ms(percentile(point.times, 50)),
        "p90_ms": ms(percentile(point.times, 90)),
        "p99_ms": ms(percentile(point.times, 99)),
        "max_ms": ms(max(point.times)),
        "mean_ms": ms(sum(point.times) / len(point.times)),
        "failures_retried": point.failures,
    }


def checks_of(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    status = figures["status"]["p50_ms"]
    floor = figures["floor"]["p50_ms"]
    checks = [
        {
            "figure": "status p50 / floor p50",
            "measured": f"{status} / {floor} ms = {status / floor:.2f}",
            "target": f"<= {STATUS_VS_FLOOR}",
            "passed": status <= STATUS_VS_FLOOR * floor,
        }
    ]
    for name, row in figures.items():
        p50 = row["p50_ms"]
        if row["kind"] == "page":
            target, passed = f"<= {PAGE_VS_STATUS} x status", p50 <= PAGE_VS_STATUS * status
        elif row["kind"] == "submit":
            target, passed = f"<= {SUBMIT_VS_STATUS} x status", p50 <= SUBMIT_VS_STATUS * status
        elif row["kind"] in ("offset", "cancel"):
            target, passed = "(reported)", True
        else:
            continue
        checks.append(
            {
                "figure": f"{name} p50 (p99)",
                "measured": f"{p50} ms ({row['p99_ms']}) = {p50 / status:.2f} x status",
                "target": target,
                "passed": passed,
            }
        )
    return checks


def print_table(checks: list[dict[str, Any]], header: str, load: str) -> None:
    rows: list[tuple[str, ...]] = [("figure", "measured", "target", "result", "load avg")]
    for check in checks:
        verdict = "info" if check["target"] == "(reported)" else "PASS"
        if not check["passed"]:
            verdict = "MISS"
        rows.append((check["figure"], check["measured"], check["target"], verdict, load))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    line = "+".join("-" * (w + 2) for w in widths)
    print()
    print(header)
    print(line)
    for index, cells in enumerate(rows):
        print(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)))
        if index == 0:
            print(line)
    print(line)


def database_exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return row is not None


def prepare_history(args: argparse.Namespace) -> dict[str, Any]:
    """The filled database: reused when asked and its counts match, else made anew."""
    expected = api_data.expected_counts(
        jobs=args.jobs, pending=args.pending, servers=args.servers, downloads=args.downloads
    )
    if args.reuse and database_exists(BENCH_DB):
        setup_django()
        # Migrations made since it was filled: the code measured expects their schema.
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        found = api_data.counts()
        if found == expected:
            print(f"  reusing {BENCH_DB}: {found}", flush=True)
            return {"reused": True, "counts": found}
        print(f"  {BENCH_DB} has {found}, not {expected}: filling it again", flush=True)
        from django.db import connections

        connections.close_all()
    recreate_database([], BENCH_DB)
    setup_django()
    seconds = api_data.fill(
        jobs=args.jobs,
        pending=args.pending,
        servers=args.servers,
        owners=args.owners,
        downloads=args.downloads,
    )
    return {"reused": False, "counts": api_data.counts(), "fill_seconds": seconds}


def database_size() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return str(cursor.fetchone()[0])


def start_web(env: dict[str, str], workdir: Path, extra: dict[str, str]) -> tuple[Process, str]:
    """The Procfile's `web` line, one gunicorn process, with the bench's URLconf."""
    import requests

    port = free_port()
    web_env = {
        key: value
        for key, value in {**os.environ, **env}.items()
        if not key.startswith(("CACHE_", "DATABASE_CONN"))
    }
    web_env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "DJANGO_SETTINGS_MODULE": "bench.api_settings",
            "MOBILESD_THROTTLE_RATE": THROTTLE_RATE,
            **extra,
        }
    )
    proc = Process(
        ["bash", "-c", f"exec {procfile_command('web')}"],
        cwd=REPO,
        env=web_env,
        log=workdir / "web.log",
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.popen.poll() is not None:
            raise SystemExit(f"gunicorn exited:\n{proc.output()[-3000:]}")
        return requests.get(f"{base}/api/v1/health", timeout=2).json()["database"]["ok"]

    wait_until(up, timeout=60, interval=0.2, what="gunicorn")
    return proc, base


def delete_submitted(api_key_id: int) -> int:
    """Delete the jobs this run submitted (all cancelled), and its key."""
    from core_app.models import ApiKey
    from queue_app.models import Job
    from queue_app.services import job_delete

    ids = list(Job.objects.filter(api_key_id=api_key_id).values_list("pk", flat=True))
    for job_id in ids:
        job_delete(job_id=job_id, owner=None)
    ApiKey.objects.filter(pk=api_key_id).delete()
    return len(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="finished jobs (1,000,000)")
    parser.add_argument("--pending", type=int, default=20_000, help="pending jobs (20,000)")
    parser.add_argument("--servers", type=int, default=8, help="servers (8)")
    parser.add_argument("--owners", type=int, default=4, help="API keys owning the jobs (4)")
    parser.add_argument("--downloads", type=int, default=200, help="Civitai downloads (200)")
    parser.add_argument("--samples", type=int, default=200, help="measured rounds (200)")
    parser.add_argument("--warmup", type=int, default=10, help="rounds not measured (10)")
    parser.add_argument(
        "--seed", type=int, default=1, help="of each round's order of the endpoints (1)"
    )
    parser.add_argument(
        "--offset",
        type=int,
        default=100_000,
        help="the deep page's offset (100,000; at most half the jobs)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the bench database when its row counts are those asked for",
    )
    parser.add_argument(
        "--web-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnostic: extra environment of the web process (e.g. DATABASE_POOL_SIZE=0)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the web log")
    args = parser.parse_args(argv)
    if args.servers < 1 or args.samples < 1:
        parser.error("--servers and --samples must be at least 1")
    command = ".venv/bin/python bench/api.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    workdir = Path(tempfile.mkdtemp(prefix="mobilesd-bench-api-"))
    env = prepare_environment(workdir, database=BENCH_DB, broker_url=REDIS_URL)
    print(f"MobileSD API benchmark; database {BENCH_DB}; work dir {workdir}", flush=True)
    ensure_services()
    flush_redis(REDIS_URL)
    history = prepare_history(args)
    history["database_size"] = database_size()
    machine = machine_info(REDIS_URL)
    from django.contrib.auth import get_user_model

    from core_app.models import KeyScope
    from core_app.services import api_key_create

    bench_user, _ = get_user_model().objects.get_or_create(username="bench")
    api_key, raw_key = api_key_create(name="bench api", user=bench_user, scope=KeyScope.ADMIN)
    owner = get_user_model().objects.get(username="bench-owner-0")
    client_key = api_key_create(name="bench client", user=owner)[1]
    job_id = api_data.completed_job_with_images()
    offset = min(args.offset, (args.jobs + args.pending) // 2)
    submitted: deque[str] = deque()
    points = endpoints(job_id, offset, submitted, client_key)
    web_extra = dict(item.split("=", 1) for item in args.web_env)
    proc, base = start_web(env, workdir, web_extra)
    try:
        print(
            f"  [{time.strftime('%H:%M:%S')}] measuring {len(points)} endpoints, "
            f"{args.warmup} + {args.samples} rounds",
            flush=True,
        )
        load_before = os.getloadavg()
        started = time.monotonic()
        measure(base, raw_key, points, warmup=args.warmup, samples=args.samples, seed=args.seed)
        measure_seconds = time.monotonic() - started
        load_after = os.getloadavg()
    finally:
        proc.stop()
        deleted = delete_submitted(api_key.pk)
    load = f"{load_before[0]:.2f} -> {load_after[0]:.2f}"
    figures = {point.name: figures_of(point) for point in points}
    checks = checks_of(figures)
    counts = history["counts"]
    header = (
        f"MobileSD API benchmark - {machine['date']} - {machine['cpus']} CPU(s) (reference "
        f"{machine['cpu_reference_ms']} ms), Python "
        f"{machine['python']}, PostgreSQL {machine['postgresql']}, Redis {machine['redis']}\n"
        f"history: {counts['finished']:,} finished jobs, {counts['pending']:,} pending, "
        f"{counts['processing']} processing, {counts['servers']} servers "
        f"({history['database_size']}; "
        + ("reused" if history["reused"] else f"filled in {history['fill_seconds']['total']:.0f} s")
        + f"); {args.samples} samples per endpoint, 1 gunicorn process\n"
        f"command: {command}"
    )
    print_table(checks, header, load)
    print("\nper endpoint (ms):")
    for name, row in figures.items():
        print(
            f"  {name:<36} p50 {row['p50_ms']:>8}  p90 {row['p90_ms']:>8}  "
            f"p99 {row['p99_ms']:>8}  max {row['max_ms']:>8}"
            + (f"  ({row['failures_retried']} 5xx retried)" if row["failures_retried"] else "")
        )
    print(
        f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}; "
        f"measured for {measure_seconds:.0f} s; {deleted} submitted jobs deleted"
    )
    document = {
        "command": command,
        "machine": machine,
        "settings": {
            "jobs": args.jobs,
            "pending": args.pending,
            "servers": args.servers,
            "owners": args.owners,
            "downloads": args.downloads,
            "samples": args.samples,
            "warmup": args.warmup,
            "offset": offset,
            "web_env": web_extra,
            "database": BENCH_DB,
        },
        "history": history,
        "job_id": job_id,
        "load_average": {"before": load_before, "after": load_after},
        "measure_seconds": round(measure_seconds, 1),
        "endpoints": figures,
        "checks": checks,
    }
    write_results(args.results, "api", document)
    if args.keep_workdir:
        print(f"web log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(not check["passed"] for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
