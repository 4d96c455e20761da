"""Real processes for integration tests: start, wait for readiness, stop."""

import contextlib
import fnmatch
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until[T](
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # the thing is not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout}s waiting for {what or probe}: {last_error}")


def http_ok(url: str, **kwargs: Any) -> Callable[[], bool]:
    return lambda: requests.get(url, timeout=2, **kwargs).status_code == 200


class Process:
    """A child process in its own process group, its output captured in a log file."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> None:
        wait_until(lambda: text in self.output(), timeout=timeout, what=f"{text!r} in output")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left."""
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout)
        self._log.close()


def procfile_command(name: str) -> str:
    """The command of process type `name` in the Procfile (run it with `bash -c`)."""
    for line in (REPO / "Procfile").read_text().splitlines():
        proc, _, command = line.partition(":")
        if proc.strip() == name:
            return command.strip()
    raise AssertionError(f"no {name!r} in the Procfile")


# The virtualenv this suite runs in (gunicorn is one of its scripts).
BIN = Path(sys.executable).parent


class WebServer:
    """The Procfile's web process, at `base`."""

    def __init__(self, base: str, proc: Process) -> None:
        self.base, self.proc = base, proc

    def workers(self) -> list[int]:
        """The pids of gunicorn's worker processes."""
        found: list[int] = []
        for task in Path(f"/proc/{self.proc.popen.pid}/task").iterdir():
            found += [int(pid) for pid in (task / "children").read_text().split()]
        return found


@contextlib.contextmanager
def procfile_web(
    env: dict[str, str], log_dir: Path, *, concurrency: int = 1
) -> Iterator[WebServer]:
    """The Procfile's `web` process with `env` (its database, broker, media), on a free port,
    once it answers; its log is web.log in `log_dir`, printed if the block fails."""
    port = free_port()
    env = {
        **env,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(concurrency),
    }
    proc = Process(
        ["bash", "-c", f"exec {procfile_command('web')}"],
        cwd=REPO,
        env=env,
        log=log_dir / "web.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Any answer of the database's check means "up" (with no worker, health is a 503).
        wait_until(
            lambda: requests.get(f"{base}/api/v1/health", timeout=2).json()["database"]["ok"],
            timeout=60,
            what="the web server",
        )
        yield WebServer(base, proc)
    except Exception:
        print(proc.output())
        raise
    finally:
        proc.stop()


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without MobileSD's settings: the embedded default."""
    prefixes = (
        *("DATABASE_", "CELERY_", "CACHE_", "MOBILESD_", "DJANGO_", "WORKER_DATABASE_"),
        *("MEDIA_ROOT", "PORT"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(overrides)
    return env


def _ignored(relative: str, *, is_dir: bool, patterns: list[str]) -> bool:
    """Whether .gitignore's `patterns` exclude this path (relative to REPO, with `/`): the
    forms the project's .gitignore uses (names, globs, `dir/`, `a/b/` anchored)."""
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        anchored = "/" in pattern
        if fnmatch.fnmatchcase(relative if anchored else name, pattern.lstrip("/")):
            return True
    return False


def source_files() -> list[str]:
    """The project's files as a checkout or a source tarball has them: every file under
    REPO but what .gitignore excludes (and git's own folder); no git needed."""
    gitignore = REPO / ".gitignore"
    patterns = [
        line.strip()
        for line in (gitignore.read_text().splitlines() if gitignore.exists() else [])
        if line.strip() and not line.startswith("#")
    ]
    found: list[str] = []
    for folder, dirs, files in os.walk(REPO):
        base = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if base == "." else f"{base}/"
        dirs[:] = sorted(
            d
            for d in dirs
            if d != ".git" and not _ignored(prefix + d, is_dir=True, patterns=patterns)
        )
        found += [
            prefix + f
            for f in sorted(files)
            if f != ".git" and not _ignored(prefix + f, is_dir=False, patterns=patterns)
        ]
    return found


def checkout(dest: Path) -> Path:
    """The working tree as a fresh checkout has it: tracked and new files, nothing ignored."""
    archive = dest.parent / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        for name in source_files():
            path = REPO / name
            if path.exists():
                tar.add(path, arcname=name)
    dest.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    # The virtualenv `make run` would create is the one this suite runs in; linking it
    # spares a second install of the same pyproject.toml.
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


@dataclass(frozen=True)
class Embedded:
    """MobileSD started by `make run` in a clean copy, on the embedded default."""

    root: Path
    base: str
    key: str
    proc: Process


@contextlib.contextmanager
def embedded_mobilesd(workdir: Path, **settings: str) -> Iterator[Embedded]:
    """`make run` in a clean copy under `workdir` with a clean environment (SQLite and the
    SQLAlchemy broker under data/) but for these `settings`: yields once web, worker and
    beat are up, with an API key made by `create_api_key`; stops every process of it
    afterwards."""
    root = checkout(workdir / "mobilesd")
    port = free_port()
    env = clean_env(**settings)
    proc = Process(["make", "run", f"PORT={port}"], cwd=root, env=env, log=workdir / "make-run.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{base}/api/v1/health"), timeout=90, what="MobileSD web")
        proc.wait_for_output("celery@", timeout=60)
        proc.wait_for_output(" ready.", timeout=60)
        proc.wait_for_output("beat: Starting", timeout=60)
        key = subprocess.run(
            [
                ".venv/bin/python",
                "manage.py",
                "create_api_key",
                "--name",
                "it",
                "--user",
                "it",
                "--scope",
                "admin",
                "--quiet",
            ],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        yield Embedded(root=root, base=base, key=key, proc=proc)
    except Exception:
        print(f"--- last lines of `make run` ({proc.log_path}) ---\n{tail(proc.output())}")
        raise
    finally:
        proc.stop()


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


class OwnRedis:
    """A redis-server of a test's own on a free port, without persistence, that can be
    restarted on its port (terminated and started again: it comes back empty)."""

    BINARY = shutil.which("redis-server")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Process | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.BINARY is not None, "needs the redis-server binary"
        self.starts += 1
        self.proc = Process(
            [
                *(self.BINARY, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            cwd=self.root,
            env=clean_env(),
            log=self.root / f"redis-{self.starts}.log",
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(client.ping, timeout=10, what="redis-server")
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _postgres_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None:
        candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        found = str(candidates[-1]) if candidates else None
    return found


class OwnPostgres:
    """A PostgreSQL cluster of a test's own: `initdb` in a temporary folder (trust auth,
    no fsync), served on a free port of 127.0.0.1 with its socket in that folder, that can
    be restarted as a crash would (`pg_ctl restart -m immediate`). Its database `postgres`
    is at `url`. As root, initdb and postgres run as the `postgres` user (they refuse root)."""

    INITDB = _postgres_binary("initdb")
    PG_CTL = _postgres_binary("pg_ctl")

    def __init__(self) -> None:
        # Not under pytest's tmp_path: that is private to its user, and postgres may be
        # another one.
        self.root = Path(tempfile.mkdtemp(prefix="mobilesd-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.log_path = self.root / "postgres.log"
        self.as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if self.as_postgres else [*args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env())
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        assert self.INITDB is not None, "needs initdb"
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        self._run(
            *(self.INITDB, "-D", str(self.data), "-A", "trust", "-U", "postgres"),
            *("-E", "UTF8", "--no-sync"),
        )
        self._run(*self._pg_ctl("start"), "-l", str(self.log_path))

    def _pg_ctl(self, action: str) -> tuple[str, ...]:
        assert self.PG_CTL is not None
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        return (self.PG_CTL, "-D", str(self.data), "-w", "-t", "60", "-o", options, action)

    def restart(self) -> None:
        """Stop at once, as a crash would (no checkpoint; clients are cut off), and start
        again on the same port; returns once it accepts connections."""
        self._run(*self._pg_ctl("restart"), "-m", "immediate", "-l", str(self.log_path))

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(*self._pg_ctl("stop"), "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def sse_messages(response: requests.Response) -> Iterator[dict[str, Any]]:
    """The Server-Sent Events messages of a streamed `requests` response, each as a dict of
    its fields (`data` parsed from JSON; a comment under ""), as they arrive."""
    import json

    message: dict[str, Any] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if message:
                yield message
            message = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        message[name] = json.loads(value) if name == "data" else value
