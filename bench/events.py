#!/usr/bin/env python
"""Benchmark of the event stream (issue 14 point 5): many stream clients on one web process
while jobs run, beside the same clients polling a job's status.

    .venv/bin/python bench/events.py [--clients 1000] [--stream-seconds 30] [--poll-seconds 30]

What runs: a dedicated PostgreSQL database (BENCH_DB_NAME, default `mobilesd_bench_events`;
dropped, re-created and migrated) and Redis database (BENCH_REDIS_URL, default db 11,
flushed); the web tier as the Procfile starts it (its `web` line: the ASGI server,
WEB_CONCURRENCY=1, one worker process); a real Celery worker; `--servers` Forge simulators
(each in a process of its own) running jobs continuously: a feeder thread of the bench keeps
`--pending` jobs waiting for each server, so each server always has its next job; the
clients in `--client-processes` processes of their own (bench/events_clients.py: asyncio,
raw sockets), with a client key of the user who owns the jobs.

One run, in this order:
1. idle: the web worker's RSS with no stream open (after a few streams were opened and
   closed, so that the listener and the code are loaded), then `--clients` streams opened
   (GET /api/v1/events, no cursor: live from now) and held idle (no job runs) for
   `--idle-seconds`: (RSS after - RSS before) / clients, and the web process's CPU.
2. stream: the feeder starts; for `--stream-seconds` every client follows the stream: each
   event's latency from its `created_at` (PostgreSQL's `now()` in the transaction that made
   the change) to the read that gave it to the client (`time.time()`: the same clock), over
   every event and every client; also from the commit of each job the feeder submitted to
   its `job.queued` at each client. Every client must receive every event of the window
   once, in order (missing / duplicated / out-of-order counts). The web process's CPU
   seconds per second.
3. poll: the streams closed, the same clients poll GET /api/v1/queue/jobs/<id>/status once a
   second (`--poll-interval`) each, one of the latest jobs each, for `--poll-seconds`, the
   jobs still running as before: answered requests per second, their latency, and the web
   process's CPU seconds per second.

Targets: stream latency p99 <= 250 ms; memory per idle stream <= 100 KB. The polling figures
are reported beside the stream's. It prints a PASS / MISS table with the load average,
writes the JSON to bench/results/events-<UTC>.json and events-latest.json, and exits 1 on a
MISS.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import resource
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import events_clients  # noqa: E402
from bench.engine_figures import percentile  # noqa: E402
from bench.engine_harness import (  # noqa: E402
    RESULTS,
    Bench,
    SimulatorProcess,
    cpu_seconds,
    ensure_services,
    flush_redis,
    log,
    machine_info,
    params,
    prepare_environment,
    recreate_database,
    rss_of,
    setup_django,
    write_results,
)
from tests.integration.procs import Process, free_port, procfile_command, wait_until  # noqa: E402

BENCH_DB = os.environ.get("BENCH_DB_NAME", "mobilesd_bench_events")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")

LATENCY_P99_MS = 250.0
IDLE_KB_PER_STREAM = 100.0
# A thousand polls a second from one key: the throttle still runs, never refuses.
THROTTLE_RATE = "100000000/min"
MODEL = "bench/model_a.safetensors"
EVENTS_PATH = "/api/v1/events"
KiB = 1024


# --------------------------------------------------------------------------------------
# Processes: the web tier, the clients, the feeder
# --------------------------------------------------------------------------------------


def raise_fd_limit(needed: int) -> int:
    """The soft limit on open files up to the hard one (children inherit it): the web
    process and the clients each hold one socket per client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def descendants(pid: int) -> list[int]:
    """`pid`'s child processes, their children, ... (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    stack.append(int(child))
    return found


class Web:
    """The Procfile's `web` line with one worker process."""

    def __init__(self, env: dict[str, str], workdir: Path, extra: dict[str, str]) -> None:
        import requests

        self.port = free_port()
        web_env = {
            key: value
            for key, value in {**os.environ, **env}.items()
            if not key.startswith(("CACHE_", "DATABASE_CONN"))
        }
        web_env.update(
            {
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                "PORT": str(self.port),
                "WEB_CONCURRENCY": "1",
                "MOBILESD_THROTTLE_RATE": THROTTLE_RATE,
                **extra,
            }
        )
        self.proc = Process(
            ["bash", "-c", f"exec {procfile_command('web')}"],
            cwd=REPO,
            env=web_env,
            log=workdir / "web.log",
        )
        self.base = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            if self.proc.popen.poll() is not None:
                raise SystemExit(f"the web server exited:\n{self.proc.output()[-3000:]}")
            answer = requests.get(f"{self.base}/api/v1/health", timeout=2).json()
            return bool(answer["database"]["ok"])

        wait_until(up, timeout=60, interval=0.2, what="the web server")
        workers = wait_until(
            lambda: descendants(self.proc.popen.pid), timeout=10, what="the web worker"
        )
        self.worker_pid = workers[-1]

    def pids(self) -> list[int]:
        return [self.proc.popen.pid, *descendants(self.proc.popen.pid)]

    def cpu(self) -> float:
        """CPU seconds used so far by the web processes (the master and its worker)."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def rss(self, samples: int = 5) -> int:
        """The worker's RSS, the median of a few readings 0.1 s apart."""
        readings = []
        for _ in range(samples):
            readings.append(rss_of(self.worker_pid))
            time.sleep(0.1)
        return sorted(readings)[len(readings) // 2]

    def threads(self) -> int:
        """The worker's threads now."""
        for line in Path(f"/proc/{self.worker_pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.stop()


class Clients:
    """The client processes (bench/events_clients.py), the clients split evenly."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns = []
        self.procs = []
        for _ in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=events_clients.main, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def split(self, count: int) -> list[int]:
        n = len(self.conns)
        return [count // n + (1 if i < count % n else 0) for i in range(n)]

    def ask(self, commands: list[tuple[Any, ...]], timeout: float) -> list[tuple[Any, ...]]:
        """Send each process its command; their answers, in order."""
        for conn, command in zip(self.conns, commands, strict=True):
            conn.send(command)
        answers = []
        for conn in self.conns:
            if not conn.poll(timeout):
                raise SystemExit(f"a client process did not answer {commands[0][0]!r}")
            answers.append(conn.recv())
        return answers

    def cpu(self) -> float:
        total = 0.0
        for proc in self.procs:
            if proc.pid is not None:
                with contextlib.suppress(OSError):
                    total += cpu_seconds(proc.pid)
        return total

    def stop(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("stop",))
                conn.poll(10)
            proc.join(10)
            if proc.is_alive():
                proc.kill()


@dataclass
class Feeder:
    """A thread keeping `pending` jobs waiting for each server; when each job's submit
    committed (`time.time()`)."""

    owner: Any
    aliases: list[str]
    pending: int
    steps: int
    committed: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._seed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        from django.db import connection, transaction
        from django.db.models import Count

        from queue_app.models import Job, JobStatus
        from queue_app.services import job_submit

        try:
            while not self._stop.is_set():
                waiting = dict(
                    Job.objects.filter(status=JobStatus.PENDING)
                    .values_list("target_server_alias")
                    .annotate(n=Count("pk"))
                    .values_list("target_server_alias", "n")
                )
                for alias in self.aliases:
                    for _ in range(self.pending - waiting.get(alias, 0)):
                        self._seed += 1
                        with transaction.atomic():
                            job, _ = job_submit(
                                owner=self.owner,
                                target_server_alias=alias,
                                generation_params=params(
                                    checkpoint=MODEL, steps=self.steps, seed=self._seed
                                ),
                            )
                        self.committed[str(job.pk)] = time.time()
                self._stop.wait(0.05)
        except Exception as exc:  # reported with the figures
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0}
    return {
        "samples": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values)),
    }


def stream_figures(
    received: list[list[tuple[int, float]]],
    meta: dict[int, tuple[str, str | None, float | None]],
    expected: list[int],
    committed: dict[str, float],
) -> dict[str, Any]:
    """Latencies and completeness of the stream phase: `expected` are the ids of the
    events of the window (as the database has them), which every client must have
    received once, in order."""
    window = set(expected)
    latencies: list[float] = []
    queued: list[float] = []
    arrivals: dict[int, list[float]] = {seq: [] for seq in expected}
    missing = duplicated = disordered = 0
    for stream in received:
        seen = [(seq, at) for seq, at in stream if seq in window]
        ids = [seq for seq, _ in seen]
        missing += len(window - set(ids))
        duplicated += len(ids) - len(set(ids))
        disordered += sum(1 for a, b in itertools.pairwise(ids) if b < a)
        for seq, at in seen:
            arrivals[seq].append(at)
            kind, job_id, created = meta.get(seq, ("", None, None))
            if created is not None:
                latencies.append(at - created)
            if kind == "job.queued" and job_id in committed:
                queued.append(at - committed[job_id])
    # Where the time goes: until the first client has an event (its commit, the notification,
    # the hub's sequencing and read), then until the last one has it (the fan-out).
    first: list[float] = []
    fan_out: list[float] = []
    for seq, times in arrivals.items():
        created = meta.get(seq, ("", None, None))[2]
        if times and created is not None:
            first.append(min(times) - created)
            fan_out.append(max(times) - min(times))
    return {
        "events": len(expected),
        "messages": sum(len(stream) for stream in received),
        "latency": spread(latencies),
        "first_client": spread(first),
        "fan_out": spread(fan_out),
        "queued_after_commit": spread(queued),
        "missing": missing,
        "duplicated": duplicated,
        "out_of_order": disordered,
    }


def poll_figures(
    requests: list[tuple[float, float, int]], start: float, seconds: float
) -> dict[str, Any]:
    """The requests answered (200) within the window [start, start + seconds] (wall clock);
    those still waiting at its end are `unanswered_at_end`."""
    end = start + seconds
    answered = [r for r in requests if r[2] == 200 and r[0] + r[1] <= end]
    late = [r for r in requests if r[2] == 200 and r[0] + r[1] > end]
    return {
        "requests": len(requests),
        "answered_200": len(answered),
        "unanswered_at_end": len(late) + sum(1 for r in requests if r[2] == -1),
        "errors": sum(1 for r in requests if r[2] not in (200, -1)),
        "requests_per_second": round(len(answered) / seconds, 1),
        "latency": spread([duration for _, duration, _ in answered]),
    }


def print_table(checks: list[dict[str, Any]], header: str) -> None:
    rows: list[tuple[str, ...]] = [("figure", "measured", "target", "result", "load avg")]
    for check in checks:
        verdict = "PASS" if check["passed"] else "MISS"
        if check["target"] == "(reported)":
            verdict = "info"
        rows.append((check["figure"], check["measured"], check["target"], verdict, check["load"]))
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


def load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def window_events(after: int, created_from: float, created_to: float) -> list[int]:
    """The ids of the sequenced events after `after` created in [from, to] (wall clock)."""
    from events_app.models import Event

    start = datetime.fromtimestamp(created_from, UTC)
    end = datetime.fromtimestamp(created_to, UTC)
    ids = (
        Event.objects.filter(seq__gt=after, created_at__gte=start, created_at__lte=end)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    return [seq for seq in ids if seq is not None]


def database_connections() -> int:
    """Connections to the bench database now, every program's (this one's included)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def events_head() -> int:
    from events_app.selectors import events_head as head

    return head()


def run(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from core_app.services import api_key_create
    from integrations.forge.simulator import SimModel, SimulatorConfig
    from queue_app.models import Job
    from servers_app.models import Server
    from servers_app.services import server_check_health

    user = get_user_model().objects.create(username="bench-phone")
    _, key = api_key_create(name="bench phones", user=user)
    headers = {"Authorization": f"Bearer {key}"}
    figures: dict[str, Any] = {}
    sims: list[SimulatorProcess] = []
    web: Web | None = None
    clients: Clients | None = None
    feeder: Feeder | None = None
    try:
        config = SimulatorConfig(seconds_per_step=args.seconds_per_step, models=[SimModel(MODEL)])
        aliases = []
        for index in range(args.servers):
            sim = SimulatorProcess(config)
            sims.append(sim)
            server = Server.objects.create(alias=f"Bench{index + 1}", api_url=sim.url)
            if not server_check_health(server=server).online:
                raise SystemExit(f"simulator {sim.url} is not online")
            aliases.append(server.alias)
        web = Web(env, workdir, dict(item.split("=", 1) for item in args.web_env))
        clients = Clients(args.client_processes)
        bench = Bench(env, workdir, trace=False, py_spy=None)
        with bench.worker(concurrency=args.servers + 2, extra_env={}):
            host, port = "127.0.0.1", web.port
            split = clients.split(args.clients)

            # 1. idle streams
            warm = clients.ask(
                [("open", host, port, EVENTS_PATH, headers, 5, 5, 30)]
                + [("open", host, port, EVENTS_PATH, headers, 0, 1, 30)] * (len(split) - 1),
                timeout=60,
            )
            if warm[0][1] != 5:
                raise SystemExit(f"the stream did not open: {warm[0][2][:3]}")
            time.sleep(1.0)
            clients.ask([("close",)] * len(split), timeout=30)
            time.sleep(1.0)
            rss_before = web.rss()
            connections_before = database_connections()
            log(f"opening {args.clients} streams (web worker pid {web.worker_pid})")
            load_idle = load()
            opened = clients.ask(
                [
                    ("open", host, port, EVENTS_PATH, headers, n, args.open_concurrency, 60)
                    for n in split
                ],
                timeout=300,
            )
            ok = sum(answer[1] for answer in opened)
            errors = [error for answer in opened for error in answer[2]]
            if ok < args.clients:
                raise SystemExit(f"{args.clients - ok} streams failed to open: {errors[:5]}")
            cpu_idle_0, t_idle_0 = web.cpu(), time.monotonic()
            time.sleep(args.idle_seconds)
            cpu_idle = (web.cpu() - cpu_idle_0) / (time.monotonic() - t_idle_0)
            rss_after = web.rss()
            connections_after = database_connections()
            figures["idle"] = {
                "streams": ok,
                # A stream holds no database connection: the count does not grow with them.
                "database_connections": [connections_before, connections_after],
                "web_threads": web.threads(),
                "rss_before_mib": round(rss_before / KiB / KiB, 1),
                "rss_after_mib": round(rss_after / KiB / KiB, 1),
                "kib_per_stream": round((rss_after - rss_before) / ok / KiB, 1),
                "web_cpu_seconds_per_second": round(cpu_idle, 3),
                "load": f"{load_idle:.2f} -> {load():.2f}",
            }
            log(f"idle: {figures['idle']}")

            # 2. the stream while jobs run
            head = events_head()
            feeder = Feeder(owner=user, aliases=aliases, pending=args.pending, steps=args.steps)
            load_stream = load()
            wall_0 = time.time()
            feeder.start()
            cpu_0, cpu_clients_0, t_0 = web.cpu(), clients.cpu(), time.monotonic()
            time.sleep(args.stream_seconds)
            stream_seconds = time.monotonic() - t_0
            cpu_stream = (web.cpu() - cpu_0) / stream_seconds
            cpu_clients = (clients.cpu() - cpu_clients_0) / stream_seconds
            wall_1 = time.time()
            time.sleep(args.settle_seconds)  # the window's last events reach the clients
            snapshots = clients.ask([("streams",)] * len(split), timeout=120)
            received = [stream for answer in snapshots for stream in answer[1]]
            meta: dict[int, Any] = {}
            for answer in snapshots:
                meta.update(answer[2])
            closed = sum(answer[3] for answer in snapshots)
            expected = window_events(head, wall_0, wall_1)
            stream = stream_figures(received, meta, expected, feeder.committed)
            stream.update(
                {
                    "seconds": round(stream_seconds, 1),
                    "events_per_second": round(len(expected) / stream_seconds, 1),
                    "messages_per_second": round(len(expected) * ok / stream_seconds),
                    "closed_by_server": closed,
                    "web_cpu_seconds_per_second": round(cpu_stream, 3),
                    "web_cpu_us_per_message": round(
                        cpu_stream * 1e6 / max(len(expected) * ok / stream_seconds, 1e-9), 1
                    ),
                    "clients_cpu_seconds_per_second": round(cpu_clients, 3),
                    "load": f"{load_stream:.2f} -> {load():.2f}",
                }
            )
            figures["stream"] = stream
            log(f"stream: {json.dumps(stream)}")
            clients.ask([("close",)] * len(split), timeout=60)
            time.sleep(2.0)

            # 3. the same clients polling, the same jobs running
            latest = [
                str(pk)
                for pk in Job.objects.filter(owner=user)
                .order_by("-created_at")
                .values_list("pk", flat=True)[: max(args.servers * (args.pending + 1), 1)]
            ]
            targets = [
                (f"/api/v1/queue/jobs/{latest[i % len(latest)]}/status", headers)
                for i in range(args.clients)
            ]
            chunks, start = [], 0
            for n in split:
                chunks.append(targets[start : start + n])
                start += n
            log(f"polling: {args.clients} clients, one request per {args.poll_interval} s each")
            load_poll = load()
            cpu_0, wall_0 = web.cpu(), time.time()
            # The web process's CPU over exactly the window, read by a timer meanwhile.
            cpu_end: list[float] = []
            threads: list[int] = []

            def at_end() -> None:
                cpu_end.append(web.cpu())
                threads.append(web.threads())

            timer = threading.Timer(args.poll_seconds, at_end)
            timer.start()
            polled = clients.ask(
                [
                    ("poll", host, port, chunk, args.poll_seconds, args.poll_interval, 5)
                    for chunk in chunks
                ],
                timeout=args.poll_seconds + 120,
            )
            timer.join()
            cpu_poll = (cpu_end[0] - cpu_0) / args.poll_seconds
            requests_made = [r for answer in polled for r in answer[1]]
            poll = poll_figures(requests_made, wall_0, args.poll_seconds)
            poll.update(
                {
                    "clients": args.clients,
                    "interval_seconds": args.poll_interval,
                    "offered_per_second": round(args.clients / args.poll_interval, 1),
                    "seconds": args.poll_seconds,
                    "web_cpu_seconds_per_second": round(cpu_poll, 3),
                    "web_threads_at_end": threads[0],
                    "web_cpu_ms_per_request": round(
                        cpu_poll * 1000 / max(poll["requests_per_second"], 1e-9), 2
                    ),
                    # What one second of every client's poll would take of the CPU.
                    "web_cpu_seconds_for_offered": round(
                        cpu_poll
                        / max(poll["requests_per_second"], 1e-9)
                        * args.clients
                        / args.poll_interval,
                        2,
                    ),
                    "load": f"{load_poll:.2f} -> {load():.2f}",
                }
            )
            figures["poll"] = poll
            log(f"poll: {json.dumps(poll)}")
            feeder.stop()
            figures["jobs_submitted"] = len(feeder.committed)
            figures["feeder_errors"] = feeder.errors
    finally:
        if feeder is not None:
            feeder.stop()
        if clients is not None:
            clients.stop()
        if web is not None:
            web.stop()
        for sim in sims:
            sim.stop()
    return figures


def checks_of(figures: dict[str, Any]) -> list[dict[str, Any]]:
    stream, idle, poll = figures["stream"], figures["idle"], figures["poll"]
    latency = stream["latency"]
    complete = stream["missing"] == 0 and stream["duplicated"] == 0
    complete = complete and stream["out_of_order"] == 0 and stream["closed_by_server"] == 0
    return [
        {
            "figure": "stream latency p99 (p50), created_at -> client",
            "measured": f"{latency.get('p99_ms')} ms ({latency.get('p50_ms')} ms), "
            f"{stream['events']} events x {idle['streams']} clients",
            "target": f"<= {LATENCY_P99_MS:g} ms",
            "passed": latency.get("p99_ms") is not None and latency["p99_ms"] <= LATENCY_P99_MS,
            "load": stream["load"],
        },
        {
            "figure": "of which: to the first client (p50 / p99), then to the last",
            "measured": f"{stream['first_client'].get('p50_ms')} / "
            f"{stream['first_client'].get('p99_ms')} ms, then +"
            f"{stream['fan_out'].get('p50_ms')} / {stream['fan_out'].get('p99_ms')} ms",
            "target": "(reported)",
            "passed": True,
            "load": stream["load"],
        },
        {
            "figure": "every event to every client, once, in order",
            "measured": f"missing {stream['missing']}, duplicated {stream['duplicated']}, "
            f"out of order {stream['out_of_order']}, closed {stream['closed_by_server']}",
            "target": "all 0",
            "passed": complete and stream["events"] > 0,
            "load": stream["load"],
        },
        {
            "figure": "memory per idle stream (web worker RSS)",
            "measured": f"{idle['kib_per_stream']} KiB ({idle['rss_before_mib']} -> "
            f"{idle['rss_after_mib']} MiB; database connections "
            f"{idle['database_connections'][0]} -> {idle['database_connections'][1]})",
            "target": f"<= {IDLE_KB_PER_STREAM:g} KiB",
            "passed": idle["kib_per_stream"] <= IDLE_KB_PER_STREAM,
            "load": idle["load"],
        },
        {
            "figure": "web CPU s/s: idle streams / streaming",
            "measured": f"{idle['web_cpu_seconds_per_second']} / "
            f"{stream['web_cpu_seconds_per_second']} "
            f"({stream['messages_per_second']} messages/s)",
            "target": "(reported)",
            "passed": True,
            "load": stream["load"],
        },
        {
            "figure": "polling: answered requests/s (offered), p50 / p99",
            "measured": f"{poll['requests_per_second']} ({poll['offered_per_second']}), "
            f"{poll['latency'].get('p50_ms')} / {poll['latency'].get('p99_ms')} ms, "
            f"{poll['unanswered_at_end']} waiting at the end, {poll['errors']} errors",
            "target": "(reported)",
            "passed": True,
            "load": poll["load"],
        },
        {
            "figure": "web CPU s/s: polling (needed for all polls) vs streaming",
            "measured": f"{poll['web_cpu_seconds_per_second']} "
            f"({poll['web_cpu_seconds_for_offered']}: {poll['web_cpu_ms_per_request']} ms a "
            f"request) vs {stream['web_cpu_seconds_per_second']} "
            f"({stream['web_cpu_us_per_message']} us a message)",
            "target": "(reported)",
            "passed": True,
            "load": poll["load"],
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000, help="stream / polling clients")
    parser.add_argument("--servers", type=int, default=2, help="Forge simulators (2)")
    parser.add_argument("--steps", type=int, default=20, help="steps per job (20)")
    parser.add_argument(
        "--seconds-per-step", type=float, default=0.1, help="the simulators' pace (0.1)"
    )
    parser.add_argument("--pending", type=int, default=2, help="jobs kept waiting per server")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle streams held")
    parser.add_argument("--stream-seconds", type=float, default=30.0, help="the stream phase")
    parser.add_argument(
        "--settle-seconds", type=float, default=3.0, help="after the stream window, for its tail"
    )
    parser.add_argument("--poll-seconds", type=float, default=30.0, help="the polling phase")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between a client's polls"
    )
    parser.add_argument(
        "--client-processes", type=int, default=2, help="processes the clients run in (2)"
    )
    parser.add_argument(
        "--open-concurrency", type=int, default=50, help="streams opening at once per process"
    )
    parser.add_argument(
        "--web-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnostic: extra environment of the web process (e.g. DATABASE_POOL_SIZE=0)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the logs")
    args = parser.parse_args(argv)
    if args.clients < args.client_processes or args.servers < 1:
        parser.error("--clients must be at least --client-processes; --servers at least 1")
    command = ".venv/bin/python bench/events.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    fd_limit = raise_fd_limit(args.clients * 2 + 200)
    if fd_limit < args.clients + 100:
        raise SystemExit(f"open files limited to {fd_limit}: too few for {args.clients} clients")

    workdir = Path(tempfile.mkdtemp(prefix="mobilesd-bench-events-"))
    env = prepare_environment(workdir, database=BENCH_DB, broker_url=REDIS_URL)
    print(f"MobileSD event stream benchmark; database {BENCH_DB}; work dir {workdir}", flush=True)
    ensure_services()
    flush_redis(REDIS_URL)
    recreate_database([], BENCH_DB)
    setup_django()
    machine = machine_info(REDIS_URL)
    load_before = os.getloadavg()
    started = time.monotonic()
    figures = run(args, env, workdir)
    load_after = os.getloadavg()
    checks = checks_of(figures)
    header = (
        f"MobileSD event stream benchmark - {machine['date']} - {machine['cpus']} CPU(s) "
        f"(reference {machine['cpu_reference_ms']} ms), "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, Redis "
        f"{machine['redis']}\n{args.clients} clients on 1 web worker process; {args.servers} "
        f"servers, jobs of {args.steps} x {args.seconds_per_step} s; open files {fd_limit}\n"
        f"command: {command}"
    )
    print_table(checks, header)
    print(
        f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}; "
        f"{time.monotonic() - started:.0f} s; {figures['jobs_submitted']} jobs submitted"
        + (f"; feeder errors: {figures['feeder_errors']}" if figures["feeder_errors"] else "")
    )
    document = {
        "command": command,
        "machine": machine,
        "settings": {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()},
        "database": BENCH_DB,
        "open_files_limit": fd_limit,
        "load_average": {"before": load_before, "after": load_after},
        **figures,
        "checks": checks,
    }
    write_results(args.results, "events", document)
    if args.keep_workdir:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(not check["passed"] for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
