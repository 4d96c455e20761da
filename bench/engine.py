#!/usr/bin/env python
"""Benchmark of MobileSD's generation engine against in-process Forge simulators.

    .venv/bin/python bench/engine.py [--scenario gap|utilization|switching|memory|all] ...

What runs: a real Celery worker subprocess (thread pool) on a dedicated PostgreSQL database
(`mobilesd_bench`, dropped and re-created by every run) and a dedicated Redis database
(db 12, flushed), driving ForgeSimulator HTTP servers started in this process. Jobs are
queued with `queue_app.services.job_submit`, all of them up front (one transaction, so they
are queued at the same instant; the nudges are published on commit). Every figure is read
from the simulators' event logs (`time.monotonic()` of this process), never from MobileSD.

Scenarios (see bench/README.md):
  gap          a server's previous job finished -> its next request arrives (p50/p99)
  utilization  4 servers, 200 jobs of 0.5 s: ideal makespan / measured makespan
  switching    3 checkpoints interleaved (switch 2 s, jobs 0.2 s): model loads and makespan
               with the scheduler's look-ahead versus plain FIFO (MOBILESD_SCHEDULER_LOOKAHEAD=1)
  memory       worker RSS while it runs jobs of 8 images of 1024x1024

A JSON result is written to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shlex
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.procs import Process, wait_until  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BENCH_DB = os.environ.get("BENCH_DB_NAME", "mobilesd_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
RESULTS = REPO / "bench" / "results"
CELERY = str(Path(sys.executable).parent / "celery")

MiB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Environment: database, broker, Django
# --------------------------------------------------------------------------------------


def bench_database_url() -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{BENCH_DB}"


def prepare_environment(workdir: Path) -> dict[str, str]:
    """Environment of this process and of the worker: the bench database, broker, media."""
    env = {
        "DJANGO_SETTINGS_MODULE": "mobilesd.settings",
        "DATABASE_URL": bench_database_url(),
        "CELERY_BROKER_URL": REDIS_URL,
        "MEDIA_ROOT": str(workdir / "media"),
        "MOBILESD_DATA_DIR": str(workdir / "data"),
        "DJANGO_SECRET_KEY": "mobilesd-bench-not-secret",
        "LOG_LEVEL": "WARNING",
    }
    for key in list(os.environ):
        if key.startswith("MOBILESD_") and key not in env:
            del os.environ[key]  # the bench decides the engine's settings, not the shell
    os.environ.update(env)
    return env


def ensure_services() -> None:
    subprocess.run([str(REPO / "scripts" / "services")], check=True)  # noqa: S603


def recreate_database(db_settings: list[str]) -> None:
    """Drop and create the bench database; `db_settings` ("name=value") are set on it with
    ALTER DATABASE (diagnostics only, e.g. synchronous_commit=off)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        name = sql.Identifier(BENCH_DB)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        for item in db_settings:
            key, value = item.split("=", 1)
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    name, sql.Identifier(key), sql.Literal(value)
                )
            )


def flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def setup_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def service_versions() -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = str(cursor.fetchone()[0])
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        info = client.info("server")
    finally:
        client.close()
    return {"postgresql": pg, "redis": str(info.get("redis_version", "?"))}


# --------------------------------------------------------------------------------------
# Realistic PNGs for the memory scenario
# --------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class RealisticPngs:
    """PNGs the size of real Forge output (a 1024x1024 SDXL PNG is about 1.5-2 MB).

    The simulator's own renderer draws a gradient that compresses to ~7 KB, which would not
    exercise the worker's memory at all. The pixel data (low-entropy noise) is compressed
    once per size; each image gets its own `parameters` text chunk, as on a real server.
    """

    def __init__(self) -> None:
        self._idat: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    def _pixels(self, width: int, height: int) -> bytes:
        with self._lock:
            idat = self._idat.get((width, height))
            if idat is None:
                table = bytes((i & 0x0F) * 16 for i in range(256))  # 4 bits of noise/byte
                row = width * 3
                noise = os.urandom(row * height).translate(table)
                raw = b"".join(b"\x00" + noise[y * row : (y + 1) * row] for y in range(height))
                idat = _chunk(b"IDAT", zlib.compress(raw, 1))
                self._idat[(width, height)] = idat
            return idat

    def render(
        self, width: int, height: int, seed: int, infotext: str, *, partial: bool = False
    ) -> bytes:
        header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        try:
            text = _chunk(b"tEXt", b"parameters\x00" + infotext.encode("latin-1"))
        except UnicodeEncodeError:
            text = _chunk(b"iTXt", b"parameters\x00\x00\x00\x00\x00" + infotext.encode())
        return (
            b"\x89PNG\r\n\x1a\n"
            + header
            + text
            + self._pixels(width, height)
            + _chunk(b"IEND", b"")
        )


# --------------------------------------------------------------------------------------
# One run: simulators, servers, a worker, jobs
# --------------------------------------------------------------------------------------


@dataclass
class SimSpec:
    seconds_per_step: float = 0.0
    checkpoint_switch_seconds: float = 0.0
    models: tuple[str, ...] = ("bench/model_a.safetensors",)


@dataclass
class RunResult:
    job_ids: list[str]
    queued_at: float  # monotonic: the commit that queued every job
    done_at: float
    events: dict[str, list[dict[str, Any]]]  # server alias -> simulator events
    statuses: dict[str, int]
    rss: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, bytes)
    worker_log: str = ""
    trace: list[tuple[str, int, float, float, str]] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # used while jobs ran


def rss_of(pid: int) -> int:
    """Resident set size of a process, in bytes (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_program(worker_pids: list[int]) -> dict[str, float]:
    """CPU seconds used so far by the workers, this process (simulators + bench), and every
    postgres / redis-server process (their backends come and go; gone ones are missed)."""
    totals = {
        "worker": sum(cpu_seconds(pid) for pid in worker_pids),
        "bench+simulators": cpu_seconds(os.getpid()),
    }
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            comm = (proc / "comm").read_text().strip()
            if comm in ("postgres", "redis-server"):
                totals[comm] = totals.get(comm, 0.0) + cpu_seconds(int(proc.name))
    return totals


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((time.monotonic(), rss_of(self.pid)))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _serve_simulator(config: Any, conn: Any) -> None:
    """Child process: one simulator, answering "events" and "stop" over a pipe."""
    from integrations.forge.simulator import ForgeSimulator

    code = 0
    try:
        sim = ForgeSimulator(config).start()
        conn.send(sim.url)
        while True:
            command = conn.recv()
            if command == "events":
                conn.send(sim.events.snapshot())
            elif command == "stop":
                sim.stop()
                conn.send("stopped")
                break
    except BaseException:
        code = 1
    finally:
        os._exit(code)


class SimulatorProcess:
    """A simulator in a process of its own, as a real server is: the bench process's GIL
    (job submission, polling, the other simulators' image rendering) does not sit in its
    request path. Its event times are comparable to this process's `time.monotonic()`
    (CLOCK_MONOTONIC is system-wide on Linux)."""

    def __init__(self, config: Any) -> None:
        import multiprocessing

        # Spawned, not forked: the bench has threads by then, and a fork copies their locks.
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_serve_simulator, args=(config, child), daemon=True)
        self.process.start()
        if not self._conn.poll(30):
            raise RuntimeError("the simulator process did not start")
        self.url: str = self._conn.recv()

    @property
    def events(self) -> _EventsView:
        self._conn.send("events")
        return _EventsView(self._conn.recv())

    def stop(self) -> None:
        if self.process.is_alive():
            self._conn.send("stop")
            self._conn.poll(30)
        self.process.join(30)


class _EventsView(list):
    """A fetched copy of a child simulator's event log, shaped like EventLog."""

    def snapshot(self) -> list[Any]:
        return list(self)


class Bench:
    """Shared state of one bench invocation."""

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        *,
        trace: bool,
        py_spy: str | None,
        nudge: str = "per-job",
    ) -> None:
        self.env = env
        self.workdir = workdir
        self.trace = trace
        self.py_spy = py_spy
        self.nudge = nudge
        self.worker_env: dict[str, str] = {}
        self.workers = 1
        self.sims_in_process = False
        self.worker_runs = 0
        self.profiles: list[Path] = []

    def log(self, message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def reset(self) -> None:
        """Empty queue and servers between runs (the schema stays)."""
        from django.db import connection

        from queue_app.models import Job, JobImage
        from servers_app.models import Server

        # TRUNCATE ... CASCADE empties whatever refers to these tables, as it is in the
        # database (the ORM's cascade would follow the models as they are in the tree).
        tables = ", ".join(
            connection.ops.quote_name(model._meta.db_table) for model in (JobImage, Job, Server)
        )
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {tables} CASCADE")
        flush_redis()

    @contextlib.contextmanager
    def worker(self, *, concurrency: int, extra_env: dict[str, str]) -> Iterator[list[Process]]:
        """`self.workers` Celery worker processes (thread pool), answering pings."""
        from mobilesd.celery import app

        self.worker_runs += 1
        procs: list[Process] = []
        try:
            for index in range(self.workers):
                env = {**os.environ, **self.env, **self.worker_env, **extra_env}
                name = f"{self.worker_runs}-{index + 1}"
                if self.trace:
                    command = [sys.executable, str(REPO / "bench" / "traced_worker.py")]
                    env["BENCH_TRACE_FILE"] = str(self.workdir / f"trace-{name}.json")
                else:
                    command = [CELERY, "--app", "mobilesd"]
                args = [
                    *command,
                    "worker",
                    "--pool",
                    "threads",
                    "--concurrency",
                    str(concurrency),
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel",
                    "WARNING",
                    "--hostname",
                    f"bench{name}@%h",
                ]
                log = self.workdir / f"worker-{name}.log"
                procs.append(Process(args, cwd=REPO, env=env, log=log))

            def ready() -> bool:
                for proc in procs:
                    if proc.popen.poll() is not None:
                        raise SystemExit(f"a worker exited:\n{proc.output()[-3000:]}")
                return len(app.control.ping(timeout=0.3) or []) >= len(procs)

            wait_until(ready, timeout=60, interval=0.2, what="the Celery workers to answer")
            yield procs
        finally:
            for proc in procs:
                proc.stop()

    def read_traces(self) -> list[tuple[str, int, float, float, str]]:
        trace: list[tuple[str, int, float, float, str]] = []
        for index in range(self.workers):
            path = self.workdir / f"trace-{self.worker_runs}-{index + 1}.json"
            # Thread idents are per process: keep them apart.
            trace.extend(
                (label, thread * 100 + index, start, end, tag)
                for label, thread, start, end, tag in json.loads(path.read_text())
            )
        return trace

    @contextlib.contextmanager
    def nudges_coalesced(self) -> Iterator[None]:
        """With --nudge once (a diagnostic): job_submit's per-job nudge is replaced by one
        nudge per server after the commit (what a coalescing nudge would send)."""
        if self.nudge == "per-job":
            yield
            return
        from queue_app import services

        original = services._nudge_for
        services._nudge_for = lambda job: None
        try:
            yield
        finally:
            services._nudge_for = original

    def start_py_spy(self, pid: int) -> Process | None:
        """`py-spy record` of the worker (all threads, CPU only) while the jobs run."""
        if not self.py_spy:
            return None
        out = RESULTS / f"py-spy-{len(self.profiles) + 1}.txt"
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.profiles.append(out)
        args = [self.py_spy, "record", "--pid", str(pid), "--rate", "250", "--threads"]
        args += ["--format", "raw", "--output", str(out)]
        spy = Process(args, cwd=REPO, env=dict(os.environ), log=out.with_suffix(".log"))
        time.sleep(0.5)  # attached before the first job
        return spy

    def run(
        self,
        *,
        sims: list[SimSpec],
        jobs: Sequence[tuple[int | None, dict[str, Any]]],
        extra_env: dict[str, str] | None = None,
        timeout: float = 300,
        sample_rss: bool = False,
        before_jobs: Callable[[], None] | None = None,
    ) -> RunResult:
        """Start simulators and a worker, queue `jobs` (server index or None for "any",
        generation_params) all at once, wait until every job has ended."""
        from django.db import transaction

        from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
        from queue_app.models import ANY_SERVER, Job, JobStatus
        from queue_app.services import job_submit
        from queue_app.tasks import nudge, servers_with_work
        from servers_app.models import Server
        from servers_app.services import server_check_health

        self.reset()
        simulators: list[Any] = []
        try:
            for spec in sims:
                config = SimulatorConfig(
                    seconds_per_step=spec.seconds_per_step,
                    checkpoint_switch_seconds=spec.checkpoint_switch_seconds,
                    models=[SimModel(name) for name in spec.models],
                )
                simulators.append(
                    ForgeSimulator(config).start()
                    if self.sims_in_process
                    else SimulatorProcess(config)
                )
            servers = []
            for index, sim in enumerate(simulators):
                server = Server.objects.create(alias=f"Bench{index + 1}", api_url=sim.url)
                health = server_check_health(server=server)
                if not health.online:
                    raise RuntimeError(f"simulator {sim.url} is not online: {health.error}")
                servers.append(server)
            concurrency = len(servers) + 2
            with self.worker(concurrency=concurrency, extra_env=extra_env or {}) as procs:
                proc = procs[0]
                sampler = RssSampler(proc.popen.pid) if sample_rss else None
                if sampler is not None:
                    sampler.start()
                    time.sleep(0.5)  # a baseline before the first job
                if before_jobs is not None:
                    before_jobs()
                since = {sim.url: len(sim.events) for sim in simulators}
                pids = [p.popen.pid for p in procs]
                cpu_before = cpu_by_program(pids)
                marks: list[float] = []
                ids: list[str] = []
                with self.nudges_coalesced(), transaction.atomic():
                    # Registered first, so it runs first on commit: the instant all are queued.
                    transaction.on_commit(lambda: marks.append(time.monotonic()))
                    if self.nudge == "once":
                        transaction.on_commit(lambda: nudge(servers_with_work()))
                    for server_index, params in jobs:
                        alias = ANY_SERVER if server_index is None else servers[server_index].alias
                        job, _ = job_submit(target_server_alias=alias, generation_params=params)
                        ids.append(str(job.pk))
                self.log(f"queued {len(ids)} jobs; worker pid(s) {pids}")
                spy = self.start_py_spy(proc.popen.pid)
                open_states = [JobStatus.PENDING, JobStatus.PROCESSING]
                wait_until(
                    lambda: not Job.objects.filter(pk__in=ids, status__in=open_states).exists(),
                    timeout=timeout,
                    interval=0.1,
                    what=f"{len(ids)} jobs to end",
                )
                done_at = time.monotonic()
                cpu_after = cpu_by_program(pids)
                if spy is not None:
                    spy.signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                    spy.popen.wait(60)
                    spy.stop()
                if sampler is not None:
                    time.sleep(1.0)  # let the worker settle after the last job
                    sampler.stop()
                statuses: dict[str, int] = {}
                for status in Job.objects.filter(pk__in=ids).values_list("status", flat=True):
                    statuses[status] = statuses.get(status, 0) + 1
            trace = self.read_traces() if self.trace else []
            return RunResult(
                job_ids=ids,
                queued_at=marks[0],
                done_at=done_at,
                events={
                    server.alias: sim.events.snapshot()[since[sim.url] :]
                    for server, sim in zip(servers, simulators, strict=True)
                },
                statuses=statuses,
                rss=sampler.samples if sampler is not None else [],
                worker_log=proc.output(),
                trace=trace,
                cpu_seconds={
                    name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2)
                    for name in cpu_after
                },
            )
        finally:
            for sim in simulators:
                sim.stop()


def params(
    *,
    checkpoint: str = "bench/model_a.safetensors",
    steps: int = 1,
    size: int = 64,
    images: int = 1,
    seed: int = 1,
) -> dict[str, Any]:
    return {
        "positive_prompt": "a benchmark, of the generation engine",
        "negative_prompt": "",
        "checkpoint_name": checkpoint,
        "width": size,
        "height": size,
        "steps": steps,
        "num_images": images,
        "seed": seed,
        "sampler_name": "Euler a",
        "cfg_scale": 5,
    }


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return sorted((e for e in events if e["type"] == kind), key=lambda e: e["t"])


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def timed_gaps(result: RunResult) -> list[tuple[float, float]]:
    """Per server: (when, next txt2img_received - previous txt2img_finished) in seconds, for
    every consecutive pair whose next job was already queued when the previous one finished."""
    gaps = []
    for events in result.events.values():
        received = of_type(events, "txt2img_received")
        finished = of_type(events, "txt2img_finished")
        for previous, following in zip(finished, received[1:], strict=False):
            if result.queued_at <= previous["t"]:
                gaps.append((previous["t"], following["t"] - previous["t"]))
    return sorted(gaps)


def dispatch_gaps(result: RunResult) -> list[float]:
    return [gap for _, gap in timed_gaps(result)]


def gap_breakdown(result: RunResult) -> dict[str, Any]:
    """Where the worker thread of each server spent each dispatch gap: the innermost probe
    (bench/traced_worker.py) active at each instant, summed over the gaps, in ms per gap."""
    trace = result.trace
    thread_of = {tag: thread for label, thread, _, _, tag in trace if label == "txt2img"}
    by_thread: dict[int, list[tuple[str, float, float]]] = {}
    for label, thread, start, end, _ in trace:
        if not label.startswith("task "):
            by_thread.setdefault(thread, []).append((label, start, end))
    totals: dict[str, float] = {}
    count = 0
    for events in result.events.values():
        received = of_type(events, "txt2img_received")
        finished = of_type(events, "txt2img_finished")
        for previous, following in zip(finished, received[1:], strict=False):
            if previous["t"] < result.queued_at or previous["task_id"] not in thread_of:
                continue
            lo, hi = previous["t"], following["t"]
            spans = [
                (label, max(start, lo), min(end, hi), start)
                for label, start, end in by_thread.get(thread_of[previous["task_id"]], [])
                if start < hi and end > lo
            ]
            cuts = sorted({lo, hi, *(a for _, a, _, _ in spans), *(b for _, _, b, _ in spans)})
            for a, b in itertools.pairwise(cuts):
                active = [span for span in spans if span[1] <= a and span[2] >= b]
                label = max(active, key=lambda span: span[3])[0] if active else "(no probe)"
                totals[label] = totals.get(label, 0.0) + (b - a)
            count += 1
    per_gap = {label: ms(total / count) for label, total in totals.items()} if count else {}
    tasks: dict[str, list[float]] = {}
    for label, _, start, end, _ in trace:
        if label.startswith("task "):
            tasks.setdefault(label[5:], []).append(end - start)
    loop_threads = set(thread_of.values())
    sql = [
        (label, tag)
        for label, thread, _, _, tag in trace
        if thread in loop_threads and label in ("sql", "sql commit")
    ]
    jobs = len(thread_of) or 1
    verbs: dict[str, int] = {}
    for label, tag in sql:
        key = "COMMIT" if label == "sql commit" else tag or "?"
        verbs[key] = verbs.get(key, 0) + 1
    return {
        "gaps": count,
        "db_round_trips_per_job": round(len(sql) / jobs, 2),
        "statements_per_job": {k: round(v / jobs, 2) for k, v in sorted(verbs.items())},
        "ms_per_gap_by_innermost_probe": dict(sorted(per_gap.items(), key=lambda kv: -kv[1])),
        "probe_mean_ms": {
            label: ms(statistics.fmean(durations))
            for label, durations in sorted(_durations(trace).items())
        },
        "celery_tasks": {
            name: {"count": len(d), "mean_ms": ms(statistics.fmean(d)), "total_s": round(sum(d), 2)}
            for name, d in tasks.items()
        },
    }


def _durations(trace: list[tuple[str, int, float, float, str]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for label, _, start, end, _ in trace:
        if not label.startswith("task "):
            out.setdefault(label, []).append(end - start)
    return out


def gap_overlap(result: RunResult) -> float:
    """How many other servers were in a gap, on average, during a server's gap (0: the
    servers' job boundaries never meet; 3 of 4: all four switch jobs at the same time)."""
    spans = []
    for alias, events in result.events.items():
        received = of_type(events, "txt2img_received")
        finished = of_type(events, "txt2img_finished")
        for previous, following in zip(finished, received[1:], strict=False):
            spans.append((alias, previous["t"], following["t"]))
    if not spans:
        return 0.0
    overlaps = 0
    for alias, start, end in spans:
        overlaps += sum(1 for a, s, e in spans if a != alias and s < end and e > start)
    return round(overlaps / len(spans), 2)


def p50_by_quarter(result: RunResult) -> list[float]:
    """The gap's p50 in each quarter of the run (in time order), in ms."""
    gaps = timed_gaps(result)
    size = max(len(gaps) // 4, 1)
    quarters = [gaps[i * size : (i + 1) * size] for i in range(4)]
    return [ms(percentile([g for _, g in q], 50)) for q in quarters if q]


def makespan(result: RunResult) -> tuple[float, float, float]:
    """(first request received, last generation finished, span) over all servers."""
    received = [e["t"] for ev in result.events.values() for e in of_type(ev, "txt2img_received")]
    finished = [e["t"] for ev in result.events.values() for e in of_type(ev, "txt2img_finished")]
    first, last = min(received), max(finished)
    return first, last, last - first


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@dataclass
class Check:
    figure: str
    value: str
    target: str
    passed: bool


@dataclass
class Outcome:
    scenario: str
    settings: dict[str, Any]
    figures: dict[str, Any]
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    load: str = ""


def loadavg() -> str:
    """The 1-minute load average (other work on the machine skews every figure)."""
    return Path("/proc/loadavg").read_text().split()[0]


def require_all_completed(result: RunResult, outcome_notes: list[str]) -> bool:
    completed = result.statuses.get("completed", 0)
    if completed != len(result.job_ids):
        outcome_notes.append(f"not every job completed: {result.statuses}")
        return False
    return True


# --------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------


def scenario_gap(bench: Bench, args: argparse.Namespace) -> Outcome:
    servers = args.gap_servers
    total = args.jobs or 300
    bench.log(f"gap: {servers} server(s), {total} jobs of ~0 s (64x64, 1 step, 0 s/step)")
    jobs = [(i % servers, params(seed=i)) for i in range(total)]
    result = bench.run(sims=[SimSpec() for _ in range(servers)], jobs=jobs)
    notes: list[str] = []
    ok = require_all_completed(result, notes)
    gaps = dispatch_gaps(result)
    first, _, span = makespan(result)
    figures = {
        "servers": servers,
        "jobs": total,
        "statuses": result.statuses,
        "gaps_measured": len(gaps),
        "gap_p50_ms": ms(percentile(gaps, 50)),
        "gap_p90_ms": ms(percentile(gaps, 90)),
        "gap_p99_ms": ms(percentile(gaps, 99)),
        "gap_max_ms": ms(max(gaps)),
        "gap_mean_ms": ms(statistics.fmean(gaps)),
        "gap_p50_by_quarter_ms": p50_by_quarter(result),
        "queued_to_first_request_ms": ms(first - result.queued_at),
        "jobs_per_second": round(total / span, 1),
        "cpu_ms_per_job": {k: ms(max(v, 0) / total) for k, v in result.cpu_seconds.items()},
        "cpu_busy_pct_of_machine": round(
            100 * sum(result.cpu_seconds.values()) / ((os.cpu_count() or 1) * span), 1
        ),
    }
    if result.trace:
        figures["breakdown"] = gap_breakdown(result)
    checks = [
        Check(
            "gap p50", f"{figures['gap_p50_ms']} ms", "<= 20 ms", ok and gaps_ok(gaps, 50, 0.020)
        ),
        Check("gap p99", f"{figures['gap_p99_ms']} ms", "<= 100 ms", ok and gaps_ok(gaps, 99, 0.1)),
    ]
    return Outcome("gap", {"servers": servers, "jobs": total}, figures, checks, notes)


def gaps_ok(gaps: list[float], q: float, limit: float) -> bool:
    return bool(gaps) and percentile(gaps, q) <= limit


def scenario_utilization(bench: Bench, args: argparse.Namespace) -> Outcome:
    servers = args.util_servers
    total = args.jobs or 200
    steps, sps = 10, args.job_seconds / 10
    target_any = args.util_target == "any"
    bench.log(
        f"utilization: {servers} servers, {total} jobs of {args.job_seconds} s "
        f"({steps} steps x {sps} s), target {'any' if target_any else 'pinned round-robin'}"
    )
    jobs = [
        (None if target_any else i % servers, params(steps=steps, seed=i)) for i in range(total)
    ]
    sims = [SimSpec(seconds_per_step=sps) for _ in range(servers)]
    result = bench.run(sims=sims, jobs=jobs, timeout=total * args.job_seconds + 120)
    notes: list[str] = []
    ok = require_all_completed(result, notes)
    first, _, span = makespan(result)
    ideal = total * args.job_seconds / servers
    busy = sum(
        f["t"] - r["t"]
        for ev in result.events.values()
        for r, f in zip(
            of_type(ev, "txt2img_received"), of_type(ev, "txt2img_finished"), strict=False
        )
    )
    gaps = dispatch_gaps(result)
    utilization = ideal / span
    # Where each server's part of the makespan went, averaged over the servers (seconds).
    parts = {"jobs_on_server": 0.0, "gaps": 0.0, "late_start": 0.0, "early_end": 0.0}
    last = max(e["t"] for ev in result.events.values() for e in of_type(ev, "txt2img_finished"))
    for ev in result.events.values():
        received, finished = of_type(ev, "txt2img_received"), of_type(ev, "txt2img_finished")
        pairs = zip(received, finished, strict=True)
        parts["jobs_on_server"] += sum(f["t"] - r["t"] for r, f in pairs)
        following = zip(finished, received[1:], strict=False)
        parts["gaps"] += sum(r["t"] - f["t"] for f, r in following)
        parts["late_start"] += received[0]["t"] - first
        parts["early_end"] += last - finished[-1]["t"]
    figures = {
        "servers": servers,
        "jobs": total,
        "job_seconds": args.job_seconds,
        "target": "any" if target_any else "pinned",
        "statuses": result.statuses,
        "ideal_makespan_s": round(ideal, 3),
        "makespan_s": round(span, 3),
        "utilization_pct": round(100 * utilization, 2),
        "busy_pct": round(100 * busy / (servers * span), 2),
        "makespan_per_server_s": {k: round(v / servers, 3) for k, v in parts.items()},
        "mean_job_seconds_on_server": round(busy / max(total, 1), 4),
        "jobs_per_server": {
            alias: len(of_type(ev, "txt2img_finished")) for alias, ev in result.events.items()
        },
        "gap_p50_ms": ms(percentile(gaps, 50)) if gaps else None,
        "gap_p99_ms": ms(percentile(gaps, 99)) if gaps else None,
        "other_servers_in_a_gap_during_a_gap": gap_overlap(result),
        "queued_to_first_request_ms": ms(first - result.queued_at),
        "cpu_ms_per_job": {k: ms(max(v, 0) / total) for k, v in result.cpu_seconds.items()},
    }
    if result.trace:
        figures["breakdown"] = gap_breakdown(result)
    checks = [
        Check(
            "utilization",
            f"{figures['utilization_pct']} % ({figures['makespan_s']} s vs ideal {ideal:g} s)",
            ">= 97 %",
            ok and utilization >= 0.97,
        )
    ]
    return Outcome(
        "utilization",
        {"servers": servers, "jobs": total, "job_seconds": args.job_seconds},
        figures,
        checks,
        notes,
    )


SWITCH_MODELS = (
    "bench/model_a.safetensors",
    "bench/model_b.safetensors",
    "bench/model_c.safetensors",
)


def _model_of(title: str | None) -> str:
    """`bench/model_b.safetensors [hash]` -> `bench/model_b.safetensors`."""
    name = (title or "").split(" [", 1)[0].replace("\\", "/")
    return name if name in SWITCH_MODELS else SWITCH_MODELS[0]


def scenario_switching(bench: Bench, args: argparse.Namespace) -> Outcome:
    servers = args.switch_servers
    total = args.jobs or 30
    steps, sps = 10, args.switch_job_seconds / 10
    target_any = args.switch_target == "any"
    jobs = [
        (
            None if target_any else i % servers,
            params(checkpoint=SWITCH_MODELS[i % 3], steps=steps, seed=i),
        )
        for i in range(total)
    ]
    sims = [
        SimSpec(
            seconds_per_step=sps,
            checkpoint_switch_seconds=args.switch_seconds,
            models=SWITCH_MODELS,
        )
        for _ in range(servers)
    ]
    runs: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    ok = True
    for label, env in (("scheduler", {}), ("fifo", {"MOBILESD_SCHEDULER_LOOKAHEAD": "1"})):
        bench.log(
            f"switching [{label}]: {servers} server(s), {total} jobs on 3 interleaved "
            f"checkpoints (switch {args.switch_seconds} s, job {args.switch_job_seconds} s)"
        )
        result = bench.run(sims=sims, jobs=jobs, extra_env=env, timeout=600)
        ok = require_all_completed(result, notes) and ok
        loads = [e for ev in result.events.values() for e in of_type(ev, "model_loading")]
        _, _, span = makespan(result)
        runs[label] = {
            "env": env,
            "statuses": result.statuses,
            "model_loads": len(loads),
            "switches": sum(1 for e in loads if e.get("previous")),
            "first_loads": sum(1 for e in loads if not e.get("previous")),
            "makespan_s": round(span, 3),
            "jobs_per_server": {
                alias: len(of_type(ev, "txt2img_finished")) for alias, ev in result.events.items()
            },
            # The checkpoint of each job in the order the server ran them (A, B, C).
            "order": {
                alias: "".join(
                    "ABC"[SWITCH_MODELS.index(_model_of(e["checkpoint"]))]
                    for e in of_type(ev, "txt2img_received")
                )
                for alias, ev in result.events.items()
            },
        }
    sched, fifo = runs["scheduler"], runs["fifo"]
    figures = {
        "servers": servers,
        "jobs": total,
        "switch_seconds": args.switch_seconds,
        "job_seconds": args.switch_job_seconds,
        "target": "any" if target_any else "pinned",
        "scheduler": sched,
        "fifo": fifo,
        "switches_ratio": round(sched["switches"] / max(fifo["switches"], 1), 3),
        "loads_ratio": round(sched["model_loads"] / max(fifo["model_loads"], 1), 3),
        "makespan_ratio": round(sched["makespan_s"] / max(fifo["makespan_s"], 1e-9), 3),
    }
    checks = [
        Check(
            "checkpoint switches",
            f"{sched['switches']} vs FIFO {fifo['switches']} (loads incl. first: "
            f"{sched['model_loads']} vs {fifo['model_loads']})",
            "<= 1/3 of FIFO",
            ok and 3 * sched["switches"] <= fifo["switches"],
        ),
        Check(
            "makespan",
            f"{sched['makespan_s']} s vs FIFO {fifo['makespan_s']} s",
            "(reported)",
            ok and sched["makespan_s"] <= fifo["makespan_s"],
        ),
    ]
    return Outcome(
        "switching",
        {"servers": servers, "jobs": total, "switch_seconds": args.switch_seconds},
        figures,
        checks,
        notes,
    )


def scenario_memory(bench: Bench, args: argparse.Namespace) -> Outcome:
    from integrations.forge.simulator import generation

    total = args.jobs or 20
    images, size = 8, 1024
    realistic = args.memory_images == "realistic"
    bench.log(
        f"memory: 1 server, {total} jobs of {images} images of {size}x{size} "
        f"({'realistic ~1.7 MB' if realistic else 'simulator gradient ~7 KB'} PNGs)"
    )
    original = generation.render_png
    pngs = RealisticPngs()
    if realistic:
        generation.render_png = pngs.render
        pngs.render(size, size, 0, "warm-up")
    # The realistic PNGs are patched into this process's simulator module.
    in_process, bench.sims_in_process = bench.sims_in_process, True
    try:
        jobs = [(0, params(size=size, images=images, seed=i)) for i in range(total)]
        result = bench.run(sims=[SimSpec()], jobs=jobs, sample_rss=True, timeout=60 + total * 10)
    finally:
        generation.render_png = original
        bench.sims_in_process = in_process
    notes: list[str] = []
    ok = require_all_completed(result, notes)
    image_bytes = len(pngs.render(size, size, 0, "x" * 600)) if realistic else 7_500
    payload = images * image_bytes
    samples = result.rss
    events = next(iter(result.events.values()))
    received = [e["t"] for e in of_type(events, "txt2img_received")]
    # Job k's window: from its request to the next job's request (the last one: to the end
    # of sampling, a second after the queue was empty). Its floor (lowest RSS) is what the
    # worker kept; its peak what the job needed while it ran.
    bounds = [*received, float("inf")]
    floors: list[int] = []
    peaks: list[int] = []
    for k in range(total):
        window = [rss for t, rss in samples if bounds[k] <= t < bounds[k + 1]]
        if not window:  # a job faster than the sampling interval
            window = [rss for t, rss in samples if t < bounds[k + 1]][-1:]
        floors.append(min(window))
        peaks.append(max(window))
    start = [rss for t, rss in samples if t < result.queued_at]
    start_rss = start[-1] if start else samples[0][1]
    peak = max(rss for _, rss in samples)
    end_rss = samples[-1][1]
    half = total // 2
    growth_second_half = floors[-1] - floors[half - 1]
    peak_growth_second_half = max(peaks[half:]) - max(peaks[:half])
    figures = {
        "jobs": total,
        "images_per_job": images,
        "image_size": f"{size}x{size}",
        "png_bytes_each": image_bytes,
        "job_payload_mib": round(payload / MiB, 2),
        "statuses": result.statuses,
        "rss_start_mib": round(start_rss / MiB, 1),
        "rss_peak_mib": round(peak / MiB, 1),
        "rss_end_mib": round(end_rss / MiB, 1),
        "rss_floor_per_job_mib": [round(v / MiB, 1) for v in floors],
        "rss_peak_per_job_mib": [round(v / MiB, 1) for v in peaks],
        "growth_first_half_mib": round((floors[half - 1] - start_rss) / MiB, 1),
        "growth_second_half_mib": round(growth_second_half / MiB, 1),
        "peak_growth_second_half_mib": round(peak_growth_second_half / MiB, 1),
        "peak_over_start_per_payload": round((peak - start_rss) / payload, 2),
        "samples": len(samples),
    }
    limit = max(payload, 4 * MiB)
    checks = [
        Check(
            "RSS growth, 2nd half",
            f"{figures['growth_second_half_mib']} MiB (start {figures['rss_start_mib']}, "
            f"peak {figures['rss_peak_mib']}, end {figures['rss_end_mib']} MiB)",
            f"< one job's images ({limit / MiB:.1f} MiB)",
            ok and growth_second_half < limit,
        ),
        Check(
            "peak RSS growth, 2nd half",
            f"{figures['peak_growth_second_half_mib']} MiB",
            f"< one job's images ({limit / MiB:.1f} MiB)",
            ok and peak_growth_second_half < limit,
        ),
    ]
    return Outcome(
        "memory", {"jobs": total, "images": images, "size": size}, figures, checks, notes
    )


SCENARIOS: dict[str, Callable[[Bench, argparse.Namespace], Outcome]] = {
    "gap": scenario_gap,
    "utilization": scenario_utilization,
    "switching": scenario_switching,
    "memory": scenario_memory,
}


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def print_report(outcomes: list[Outcome], command: str, machine: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = [
        ("scenario", "figure", "measured", "target", "result", "load avg")
    ]
    for outcome in outcomes:
        for check in outcome.checks:
            verdict = "PASS" if check.passed else "MISS"
            if check.target == "(reported)":
                verdict = "info" if check.passed else "WORSE"
            rows.append(
                (outcome.scenario, check.figure, check.value, check.target, verdict, outcome.load)
            )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    line = "+".join("-" * (w + 2) for w in widths)
    print()
    print(
        f"MobileSD engine benchmark - {machine['date']} - {machine['cpus']} CPU(s), "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
        f"Redis {machine['redis']}"
    )
    print(f"command: {command}")
    print(line)
    for index, cells in enumerate(rows):
        print(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)))
        if index == 0:
            print(line)
    print(line)
    for outcome in outcomes:
        print(f"\n[{outcome.scenario}]")
        for key, value in outcome.figures.items():
            print(f"  {key}: {json.dumps(value)}")
        for note in outcome.notes:
            print(f"  NOTE: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument(
        "--jobs", type=int, default=0, help="jobs per scenario (default: 300/200/30/20)"
    )
    parser.add_argument("--gap-servers", type=int, default=1)
    parser.add_argument("--util-servers", type=int, default=4)
    parser.add_argument("--util-target", choices=["pinned", "any"], default="pinned")
    parser.add_argument("--job-seconds", type=float, default=0.5)
    parser.add_argument("--switch-servers", type=int, default=2)
    parser.add_argument("--switch-target", choices=["pinned", "any"], default="pinned")
    parser.add_argument("--switch-seconds", type=float, default=2.0)
    parser.add_argument("--switch-job-seconds", type=float, default=0.2)
    parser.add_argument("--memory-images", choices=["realistic", "simulator"], default="realistic")
    parser.add_argument("--keep-workdir", action="store_true", help="keep worker logs and media")
    parser.add_argument(
        "--workers", type=int, default=1, help="Celery worker processes (default 1)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnostic: extra environment of the worker (e.g. DATABASE_CONN_MAX_AGE=60)",
    )
    parser.add_argument(
        "--db-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="diagnostic: ALTER DATABASE mobilesd_bench SET NAME = VALUE",
    )
    parser.add_argument(
        "--nudge",
        choices=["per-job", "once"],
        default="per-job",
        help="diagnostic: 'once' replaces job_submit's nudge per job by one per server",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run the worker with timing probes (bench/traced_worker.py) and split the gap",
    )
    parser.add_argument(
        "--py-spy", metavar="PATH", help="py-spy binary: profile the worker while jobs run"
    )
    parser.add_argument(
        "--sims-in-process",
        action="store_true",
        help="run the simulators in the bench process (default: one process each)",
    )
    args = parser.parse_args(argv)
    command = ".venv/bin/python bench/engine.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    workdir = Path(tempfile.mkdtemp(prefix="mobilesd-bench-"))
    env = prepare_environment(workdir)
    print(f"MobileSD engine benchmark; work dir {workdir}", flush=True)
    ensure_services()
    recreate_database(args.db_set)
    flush_redis()
    setup_django()
    machine = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **service_versions(),
    }
    bench = Bench(env, workdir, trace=args.trace, py_spy=args.py_spy, nudge=args.nudge)
    bench.worker_env = dict(item.split("=", 1) for item in args.worker_env)
    bench.workers = args.workers
    bench.sims_in_process = args.sims_in_process
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    outcomes = []
    started = time.monotonic()
    for name in names:
        load_before = loadavg()
        outcome = SCENARIOS[name](bench, args)
        outcome.load = f"{load_before} -> {loadavg()}"
        outcomes.append(outcome)
    elapsed = time.monotonic() - started

    print_report(outcomes, command, machine)
    print(f"\nwall time {elapsed:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "command": command,
        "machine": machine,
        "wall_seconds": round(elapsed, 1),
        "scenarios": {
            o.scenario: {
                "settings": o.settings,
                "figures": o.figures,
                "checks": [c.__dict__ for c in o.checks],
                "notes": o.notes,
                "load_average_1min": o.load,
            }
            for o in outcomes
        },
    }
    for path in (RESULTS / f"engine-{stamp}.json", RESULTS / "engine-latest.json"):
        path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"result: {RESULTS / f'engine-{stamp}.json'}")
    if not args.keep_workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"worker logs and media kept in {workdir}")
    missed = [c for o in outcomes for c in o.checks if not c.passed and c.target != "(reported)"]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
