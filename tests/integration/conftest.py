"""Fixtures of the engine's integration tests: real Celery workers and beat (subprocesses)
on the test database (PostgreSQL) and a Redis broker, and Forge simulators in-process.

The `cluster` (beat and worker "w1") lives for the whole module; each test gets it through
`engine`, which makes sure w1 is running, points this process's MEDIA_ROOT at the workers'
one, and afterwards stops any extra worker. The database is flushed after every test (they
are `transaction=True`) while the workers keep running; the tests leave them idle, but a
worker may still be writing (a fan-out of the test's last events, a heartbeat, a periodic
task), so a flush that PostgreSQL's deadlock check picks as the victim is run again.
"""

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.test import TransactionTestCase
from psycopg.errors import DeadlockDetected

from core_app.models import WorkerHeartbeat
from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from tests.integration.procs import REPO, Process, clean_env, tail

CELERY = str(REPO / ".venv" / "bin" / "celery")
RUN_WITH_MAKE = (
    "The engine's integration tests need PostgreSQL and Redis: run them with `make test` "
    "(or `make pytest`), or set DATABASE_URL=postgres://postgres@127.0.0.1:5432/mobilesd and "
    "CELERY_BROKER_URL=redis://127.0.0.1:6379/9 after `scripts/services`."
)


def _deadlocked(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, DeadlockDetected):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_flush = TransactionTestCase._fixture_teardown  # type: ignore[attr-defined]


def _flush_again_after_a_deadlock(self: TransactionTestCase) -> None:
    """The test's flush (a TRUNCATE of every table, locking them one after another), run
    again when it deadlocked with a worker's transaction: the flush rolls back whole, and the
    worker's transaction ends meanwhile."""
    for attempt in range(4):
        try:
            _flush(self)
            return
        except Exception as exc:
            if attempt == 3 or not _deadlocked(exc):
                raise


TransactionTestCase._fixture_teardown = _flush_again_after_a_deadlock  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _worker_database_url() -> str:
    """The URL of the database this test session uses (pytest-django's test database)."""
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail(f"The test database is {db['ENGINE']}, not PostgreSQL. {RUN_WITH_MAKE}")
    user = quote(str(db.get("USER") or ""), safe="")
    password = quote(str(db.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}{db.get('HOST') or '127.0.0.1'}{port}/{quote(db['NAME'])}"


def _redis_broker_url() -> str:
    url = str(django_settings.CELERY_BROKER_URL)
    if not url.startswith("redis://"):
        pytest.fail(f"The Celery broker is {url.split(':', 1)[0]}, not Redis. {RUN_WITH_MAKE}")
    return url


class Cluster:
    """Celery workers and one beat on the test database and broker, as subprocesses."""

    def __init__(self, root: Path, env: dict[str, str], media_root: Path) -> None:
        self.root = root
        self.env = env
        self.media_root = media_root
        self.workers: dict[str, Process] = {}
        self.beat: Process | None = None
        self._starts = 0

    def start_beat(self) -> None:
        self.beat = Process(
            [
                *(CELERY, "--app", "mobilesd", "beat", "--loglevel", "INFO"),
                *("--schedule", str(self.root / "beat-schedule")),
            ],
            cwd=REPO,
            env=self.env,
            log=self.root / "beat.log",
        )
        self.beat.wait_for_output("beat: Starting", timeout=30)

    def start_worker(self, name: str) -> Process:
        """Start worker `name` (a fresh log each time) and wait until it is ready."""
        assert not self.alive(name), f"worker {name} is already running"
        self.stop_worker(name)  # a dead one: close its log
        self._starts += 1
        worker = Process(
            [
                *(CELERY, "--app", "mobilesd", "worker", "--pool", "threads", "--concurrency", "8"),
                *("--loglevel", "INFO", "--hostname", f"{name}@%h"),
                *("--without-mingle", "--without-gossip"),
                # The default queue, and one of its own, so that a test can hand a message to
                # this worker in particular.
                *("--queues", f"celery,{name}"),
            ],
            cwd=REPO,
            env=self.env,
            log=self.root / f"{self._starts:02d}-{name}.log",
        )
        self.workers[name] = worker
        worker.wait_for_output(" ready.", timeout=45)
        return worker

    def alive(self, name: str) -> bool:
        worker = self.workers.get(name)
        return worker is not None and worker.popen.poll() is None

    def kill_worker(self, name: str) -> int:
        """`kill -9` the worker's whole process group; returns its exit status."""
        worker = self.workers[name]
        worker.signal(signal.SIGKILL)
        return worker.popen.wait(10)

    def stop_worker(self, name: str) -> None:
        worker = self.workers.pop(name, None)
        if worker is not None:
            worker.stop()

    def stop(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        if self.beat is not None:
            self.beat.stop()

    def logs(self) -> str:
        """The last lines of every worker's log and of beat's."""
        procs = [*self.workers.items(), *([("beat", self.beat)] if self.beat else [])]
        return f"All logs are in {self.root}\n" + "\n".join(
            f"--- {name} ({proc.log_path.name}) ---\n{tail(proc.output())}" for name, proc in procs
        )


@contextlib.contextmanager
def running_cluster(
    root: Path, *, database_url: str = "", broker_url: str = "", **settings: str
) -> Iterator[Cluster]:
    """Beat and worker "w1" on the test database and broker (or these), with these
    MOBILESD_* settings (the others at their defaults), files under `root`; stopped
    afterwards."""
    database_url = database_url or _worker_database_url()
    broker_url = broker_url or _redis_broker_url()
    # Messages left by earlier runs (nudges, interrupts) must not reach these workers.
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()
    broker.close()
    media_root = root / "media"
    env = clean_env(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        MEDIA_ROOT=str(media_root),
        MOBILESD_DATA_DIR=str(root / "data"),
        PYTHONUNBUFFERED="1",
        **settings,
    )
    engine_cluster = Cluster(root, env, media_root)
    try:
        engine_cluster.start_beat()
        engine_cluster.start_worker("w1")
        yield engine_cluster
    finally:
        engine_cluster.stop()
        _forget_heartbeats(database_url)


def _forget_heartbeats(database_url: str) -> None:
    """Remove the heartbeats the stopped processes noted. A module's cluster stops after its
    last test's flush, and its workers' "stopped" rows would otherwise meet the next tests
    of this database."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DELETE FROM {WorkerHeartbeat._meta.db_table}")
    except psycopg.Error:  # a fault test's own database, stopped: nothing to meet there
        pass


# Short leases and periods, so that faults are noticed in moments.
SHORT_PERIODS = {
    "MOBILESD_LEASE_SECONDS": "3",
    "MOBILESD_HEARTBEAT_SECONDS": "0.2",
    "MOBILESD_RECONCILE_SECONDS": "1",
    "MOBILESD_HEALTH_CHECK_SECONDS": "1",
    "MOBILESD_RETRY_BACKOFF_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory) -> Iterator[Cluster]:
    """A cluster with SHORT_PERIODS."""
    with running_cluster(tmp_path_factory.mktemp("engine"), **SHORT_PERIODS) as engine_cluster:
        yield engine_cluster


@pytest.fixture
def engine(cluster: Cluster, settings, request) -> Iterator[Cluster]:
    """The running cluster with worker w1 up; this process reads the workers' media."""
    settings.MEDIA_ROOT = cluster.media_root
    if not cluster.alive("w1"):  # an earlier test stopped it and failed before restarting
        cluster.start_worker("w1")
    yield cluster
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(cluster.logs())
    for name in list(cluster.workers):
        if name != "w1":
            cluster.stop_worker(name)


@pytest.fixture
def sims() -> Iterator[Callable[..., ForgeSimulator]]:
    """Start Forge simulators (fast by default); all are stopped after the test."""
    started: list[ForgeSimulator] = []

    def start(**config: Any) -> ForgeSimulator:
        config.setdefault("seconds_per_step", 0.01)
        simulator = ForgeSimulator(SimulatorConfig(**config)).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()
