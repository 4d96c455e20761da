"""The engine benchmark's harness: one cluster run, measured from the outside.

What one `Bench.run` does: empties the queue and the servers of the bench database (the
invocation re-created it), starts one Forge simulator per server (each in a process of its
own, as a real server is), health-checks a `Server` row for each, starts a real Celery
worker subprocess (thread pool), queues every job at once with `job_submit` (one
transaction: the nudges go out on commit), waits until each job has ended, and returns the
simulators' event logs (`time.monotonic()`, the same clock in every process on Linux) with
the jobs' statuses, the CPU each program used and, when asked, the worker's RSS over time.
The scenarios (bench/engine_<name>.py) turn those into figures (bench/engine_figures.py).

The database and broker are the bench's own: `BENCH_DB_NAME` (default `mobilesd_bench`,
dropped and re-created by every invocation through `BENCH_PG_ADMIN_URL`) and
`BENCH_REDIS_URL` (default db 12, flushed).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
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


def bench_database_url(name: str = BENCH_DB) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def prepare_environment(
    workdir: Path, *, database: str = BENCH_DB, broker_url: str = REDIS_URL
) -> dict[str, str]:
    """Environment of this process and of the worker: the bench database, broker, media."""
    env = {
        "DJANGO_SETTINGS_MODULE": "mobilesd.settings",
        "DATABASE_URL": bench_database_url(database),
        "CELERY_BROKER_URL": broker_url,
        "MEDIA_ROOT": str(workdir / "media"),
        "MOBILESD_DATA_DIR": str(workdir / "data"),
        "DJANGO_SECRET_KEY": "mobilesd-bench-not-secret",
        "LOG_LEVEL": "WARNING",
    }
    for key in list(os.environ):
        if key.startswith(("MOBILESD_", "WORKER_DATABASE_")) and key not in env:
            del os.environ[key]  # the bench decides the engine's settings, not the shell
    os.environ.update(env)
    return env


def ensure_services() -> None:
    subprocess.run([str(REPO / "scripts" / "services")], check=True)  # noqa: S603


def recreate_database(db_settings: list[str], name: str = BENCH_DB) -> None:
    """Drop and create the bench database `name`; `db_settings` ("name=value") are set on it
    with ALTER DATABASE (diagnostics only, e.g. synchronous_commit=off)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        database = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
        for item in db_settings:
            key, value = item.split("=", 1)
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    database, sql.Identifier(key), sql.Literal(value)
                )
            )


def flush_redis(url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def setup_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def service_versions(redis_url: str = REDIS_URL) -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = str(cursor.fetchone()[0])
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("server")
    finally:
        client.close()
    return {"postgresql": pg, "redis": str(info.get("redis_version", "?"))}


def cpu_reference_ms() -> float:
    """The machine's speed this minute, to compare runs of different days: the CPU time
    of one fixed piece of pure Python (hashing, formatting, a dict), the best of 5, in ms.
    The VM's speed varies from day to day (the worker's CPU a job doubled between an
    afternoon and an evening); a figure is comparable with another taken at a similar
    reference."""
    import hashlib

    def work() -> None:
        seen: dict[str, int] = {}
        for i in range(20_000):
            key = hashlib.sha256(f"job-{i}".encode()).hexdigest()[:8]
            seen[key] = seen.get(key, 0) + i

    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        work()
        best = min(best, time.thread_time() - start)
    return round(best * 1000, 2)


def machine_info(redis_url: str = REDIS_URL) -> dict[str, Any]:
    """What a result records of the machine: date, CPUs, their speed now
    (`cpu_reference_ms`), Python, PostgreSQL, Redis."""
    import platform

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_reference_ms": cpu_reference_ms(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **service_versions(redis_url),
    }


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
    # --trace: the worker threads' CPU inside each probed step, label -> (calls, seconds).
    step_cpu: dict[str, tuple[int, float]] = field(default_factory=dict)
    # The first seconds after the commit, every 0.1 s: (monotonic, machine's busy ticks,
    # its total ticks, CPU seconds by program so far), for the start's figures.
    cpu_samples: list[tuple[float, int, int, dict[str, float]]] = field(default_factory=list)


def rss_of(pid: int) -> int:
    """Resident set size of a process, in bytes (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int, *, thread: int | None = None, stats: ProcStats | None = None) -> float:
    """utime + stime of a process (all its threads), or of one of its threads, in seconds
    (read through `stats`' open files, when given)."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    data = stats.read(path) if stats is not None else Path(path).read_bytes()
    fields = data.rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcStats:
    """Files of /proc read again and again through descriptors kept open: a read is one
    `pread`, without the path's lookup and the file's opening. The CPU sampler reads some
    250 processes' `stat` every 0.1 s in a run's first seconds, when the machine is
    busiest; opening each one every time cost the bench 10 ms of CPU a sample, taken from
    what it measures (bench/README.md, "Many servers")."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def read(self, path: str) -> bytes:
        """The file's contents now; OSError once its process has ended."""
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, 4096, 0)
            if not data:
                raise ProcessLookupError(path)
        except OSError:
            del self._fds[path]
            os.close(fd)
            raise
        return data

    def open_files(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def settle_cpu(*, below: float = 0.15, window: float = 0.3, timeout: float = 15.0) -> float:
    """Wait until the machine's CPUs are busy less than `below` of a `window` (at most
    `timeout` seconds): a run starts on a quiet machine, not in the tail of its own
    set-up. Returns the busy share of the last window."""
    deadline = time.monotonic() + timeout
    while True:
        busy0, total0 = _cpu_ticks()
        time.sleep(window)
        busy1, total1 = _cpu_ticks()
        share = (busy1 - busy0) / max(total1 - total0, 1)
        if share < below or time.monotonic() > deadline:
            return share


def cpu_by_program(
    worker_pids: list[int],
    simulator_pids: list[int],
    *,
    names: dict[str, str] | None = None,
    stats: ProcStats | None = None,
) -> dict[str, float]:
    """CPU seconds used so far by the workers, this process (the bench, and the simulators
    when they run in it), the simulator processes, and every postgres / redis-server
    process (their backends come and go; gone ones are missed). `names`: the processes'
    names read before, by pid, kept from one call to the next (a call then reads only the
    new processes' names). `stats`: read through its open files (`ProcStats`)."""
    cpu = functools.partial(cpu_seconds, stats=stats)
    totals = {
        "worker": sum(cpu(pid) for pid in worker_pids),
        # Celery's consumer: receiving the messages, handing them to the pool.
        "worker main thread": sum(cpu(pid, thread=pid) for pid in worker_pids),
        "bench" if simulator_pids else "bench+simulators": cpu(os.getpid()),
    }
    if simulator_pids:
        totals["simulators"] = sum(cpu(pid) for pid in simulator_pids)
    names = {} if names is None else names
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if pid not in names:
                names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            comm = names[pid]
            if comm in ("postgres", "redis-server"):
                totals[comm] = totals.get(comm, 0.0) + cpu(int(pid))
    return totals


class _Sampler[T](threading.Thread):
    """A thread that appends `sample()` to `samples` every `interval` until stopped (or
    for its first `seconds`, if given); a sample that fails to read is skipped."""

    def __init__(self, name: str, *, interval: float, seconds: float | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.seconds = seconds
        self.samples: list[T] = []
        self._stop_event = threading.Event()

    def sample(self) -> T:
        raise NotImplementedError

    def run(self) -> None:
        end = None if self.seconds is None else time.monotonic() + self.seconds
        while not self._stop_event.is_set() and (end is None or time.monotonic() < end):
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append(self.sample())
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class RssSampler(_Sampler[tuple[float, int]]):
    """(monotonic, RSS bytes) of a process."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__("rss-sampler", interval=interval)
        self.pid = pid

    def sample(self) -> tuple[float, int]:
        return (time.monotonic(), rss_of(self.pid))


class CpuSampler(_Sampler[tuple[float, int, int, dict[str, float]]]):
    """(monotonic, the machine's busy and total CPU ticks, `cpu_by_program`) for the first
    `seconds`."""

    def __init__(
        self,
        worker_pids: list[int],
        simulator_pids: list[int],
        *,
        seconds: float = 2.0,
        interval: float = 0.1,
    ) -> None:
        super().__init__("cpu-sampler", interval=interval, seconds=seconds)
        self.pids = (worker_pids, simulator_pids)
        self.names: dict[str, str] = {}  # cpu_by_program's, kept between samples
        self.stats = ProcStats()

    def sample(self) -> tuple[float, int, int, dict[str, float]]:
        programs = cpu_by_program(*self.pids, names=self.names, stats=self.stats)
        return (time.monotonic(), *_cpu_ticks(), programs)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.stats.close()


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
        self.settled_busy = 0.0  # the CPUs' busy share just before the last run's jobs
        self.py_spy_rate = 250  # samples a second
        self.worker_runs = 0
        self.profiles: list[Path] = []

    def log(self, message: str) -> None:
        log(message)

    def reset(self) -> None:
        """Empty queue and servers between runs (the schema stays), and the database's dirty
        pages written out."""
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
            # The pages the run before this one dirtied (the depth scenario's 20,000 jobs,
            # written and deleted) are written out now, not by the checkpointer while this
            # run's commits wait for the disk (utilization ran 0.5-1 point lower right
            # after depth than alone).
            cursor.execute("CHECKPOINT")
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

    def read_step_cpu(self) -> dict[str, tuple[int, float]]:
        """The traced workers' CPU per probed step (bench/traced_worker.py), summed."""
        steps: dict[str, tuple[int, float]] = {}
        for index in range(self.workers):
            path = self.workdir / f"trace-{self.worker_runs}-{index + 1}.cpu.json"
            for label, (calls, seconds) in json.loads(path.read_text()).items():
                before = steps.get(label, (0, 0.0))
                steps[label] = (before[0] + int(calls), before[1] + seconds)
        return steps

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
        """With --nudge once (a diagnostic): job_submit's nudges (coalesced per transaction:
        one per server) are replaced by one `servers_with_work` after the commit."""
        if self.nudge == "per-job":
            yield
            return
        from queue_app import services

        original = services.job_nudge_on_commit
        services.job_nudge_on_commit = lambda *, job: None
        try:
            yield
        finally:
            services.job_nudge_on_commit = original

    def start_py_spy(self, pid: int) -> Process | None:
        """`py-spy record` of the worker (all threads, CPU only) while the jobs run."""
        if not self.py_spy:
            return None
        out = RESULTS / f"py-spy-{len(self.profiles) + 1}.txt"
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.profiles.append(out)
        rate = str(self.py_spy_rate)
        args = [self.py_spy, "record", "--pid", str(pid), "--rate", rate, "--threads"]
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
        after_jobs: Callable[[], None] | None = None,
    ) -> RunResult:
        """Start simulators and a worker, queue `jobs` (server index or None for "any",
        generation_params) all at once, wait until every job has ended. `before_jobs` runs
        once the worker is up, before the jobs are queued; `after_jobs` once they ended,
        before the worker stops."""
        from django.db import transaction

        from core_app.scopes import local_user
        from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
        from queue_app.models import ANY_SERVER, Job
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
                sim_pids = [
                    sim.process.pid
                    for sim in simulators
                    if isinstance(sim, SimulatorProcess) and sim.process.pid is not None
                ]
                # The worker's own start (its reconcile, the listener's first fan-out) and
                # the simulators' imports are over before the jobs come.
                self.settled_busy = settle_cpu()
                spy = self.start_py_spy(proc.popen.pid)  # attached before the jobs come
                cpu_before = cpu_by_program(pids, sim_pids)
                marks: list[float] = []
                ids: list[str] = []
                cpu_sampler = CpuSampler(pids, sim_pids)
                with self.nudges_coalesced(), transaction.atomic():
                    # Registered first, so it runs first on commit: the instant all are queued.
                    transaction.on_commit(lambda: marks.append(time.monotonic()))
                    transaction.on_commit(cpu_sampler.start)
                    if self.nudge == "once":
                        transaction.on_commit(lambda: nudge(servers_with_work()))
                    owner = local_user()
                    for server_index, params in jobs:
                        alias = ANY_SERVER if server_index is None else servers[server_index].alias
                        job, _ = job_submit(
                            owner=owner, target_server_alias=alias, generation_params=params
                        )
                        ids.append(str(job.pk))
                self.log(
                    f"queued {len(ids)} jobs; worker pid(s) {pids}; CPUs "
                    f"{100 * self.settled_busy:.0f} % busy just before"
                )
                wait_jobs_ended(ids, timeout=timeout)
                done_at = time.monotonic()
                cpu_sampler.stop()
                cpu_after = cpu_by_program(pids, sim_pids)
                if after_jobs is not None:
                    after_jobs()
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
                step_cpu=self.read_step_cpu() if self.trace else {},
                cpu_samples=cpu_sampler.samples,
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


def log(message: str) -> None:
    """A progress line, with the time."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_results(results: Path, name: str, document: dict[str, Any]) -> Path:
    """Write the run's JSON as <results>/<name>-<UTC>.json and <name>-latest.json, and say
    where; the dated file's path."""
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dated = results / f"{name}-{stamp}.json"
    for path in (dated, results / f"{name}-latest.json"):
        path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"result: {dated}")
    return dated


def loadavg() -> str:
    """The 1-minute load average (other work on the machine skews every figure)."""
    return Path("/proc/loadavg").read_text().split()[0]


def wait_jobs_ended(ids: Sequence[str], *, timeout: float) -> None:
    """Wait until none of the jobs `ids` is pending or processing."""
    from queue_app.models import Job, JobStatus

    open_states = [JobStatus.PENDING, JobStatus.PROCESSING]
    wait_until(
        lambda: not Job.objects.filter(pk__in=ids, status__in=open_states).exists(),
        timeout=timeout,
        interval=0.1,
        what=f"{len(ids)} jobs to end",
    )
