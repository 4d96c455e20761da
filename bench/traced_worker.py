#!/usr/bin/env python
"""A Celery worker with timing probes around the engine's steps (bench only).

    BENCH_TRACE_FILE=/tmp/trace.json python bench/traced_worker.py worker --pool threads ...

Takes the arguments of the `celery --app mobilesd` command. Wraps functions of
queue_app.engine / queue_app.dispatch / integrations.forge.client (in this process only; no engine
code is changed) and records `(label, thread, start, end, tag)` with `time.monotonic()`,
which on Linux is the same clock as the simulator's events in the bench process. The records
are written to BENCH_TRACE_FILE when the worker shuts down. `bench/engine.py --trace` uses
this to split each dispatch gap into its steps.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilesd.settings")

TRACE: list[tuple[str, int, float, float, str]] = []
# CPU time of the calling thread inside each probed function: label -> [calls, seconds].
CPU: dict[str, list[float]] = {}


def shape(sql: str) -> str:
    """`VERB table` of a statement, e.g. `SELECT queue_app_job`."""
    words = sql.replace('"', "").split()
    verb = words[0].upper() if words else "?"
    table = ""
    for keyword in ("FROM", "UPDATE", "INTO"):
        if keyword in words:
            index = words.index(keyword) + 1
            if index < len(words):
                table = words[index]
                break
    return f"{verb} {table}".strip()


def probe(owner: Any, name: str, label: str, tag: Callable[..., str] | None = None) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        cpu = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            used = CPU.setdefault(label, [0, 0.0])
            used[0] += 1
            used[1] += time.thread_time() - cpu
            TRACE.append(
                (
                    label,
                    threading.get_ident(),
                    start,
                    time.monotonic(),
                    tag(*args, **kwargs) if tag else "",
                )
            )

    setattr(owner, name, wrapper)


def install() -> None:
    import django

    django.setup()
    from celery.signals import task_postrun, task_prerun, worker_shutdown

    from integrations.forge import client
    from queue_app import dispatch, engine, tasks

    def task_of(_self: Any, payload: dict[str, Any], **_kw: Any) -> str:
        return str(payload.get("force_task_id", ""))

    probe(dispatch, "job_claim_next", "claim")
    probe(dispatch, "job_reserve_next", "reserve next")
    probe(dispatch, "job_start_reserved", "start reserved")
    probe(dispatch, "job_unreserve", "unreserve")
    probe(engine, "job_prepare", "prepare")
    probe(engine, "job_generate", "generate")
    probe(engine, "make_client", "make client")
    probe(engine, "_resolve_checkpoint", "resolve checkpoint")
    probe(engine, "build_txt2img_payload", "build payload")
    probe(engine.Monitor, "start", "monitor start")
    probe(engine.Monitor, "stop", "monitor stop")
    probe(client.ForgeClient, "txt2img", "txt2img", tag=task_of)
    probe(client.ForgeClient, "_request", "http request")
    probe(client.ForgeClient, "close", "client close")
    probe(engine, "server_note_loaded_checkpoint", "note loaded checkpoint")
    probe(engine, "_store_results", "store results")
    probe(engine, "save_image_file", "save image")
    probe(dispatch, "job_complete", "job complete")
    probe(tasks, "servers_with_work", "servers_with_work")
    probe(engine.Monitor, "run", "monitor thread")
    probe(engine._ProgressProbe, "run", "progress probe thread")
    probe(engine, "_store_after", "storing thread")
    probe(engine, "_reserve_guarded", "reserving thread")
    probe(tasks, "server_run", "server loop")
    probe(engine, "_record_performance", "record performance")
    from notifications_app import fanout

    probe(fanout, "notifications_fanout", "notifications fan-out")

    # Every SQL statement and commit, so the gap splits into database waits and Python.
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.signals import connection_created

    def sql_probe(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        start = time.monotonic()
        try:
            return execute(sql, params, many, context)
        finally:
            TRACE.append(("sql", threading.get_ident(), start, time.monotonic(), shape(sql)))

    def _wrap(connection: Any, **_kw: Any) -> None:
        # The wrapper object outlives its connections: wrap it once.
        if sql_probe not in connection.execute_wrappers:
            connection.execute_wrappers.append(sql_probe)

    connection_created.connect(_wrap, weak=False)

    probe(BaseDatabaseWrapper, "_commit", "sql commit")
    probe(BaseDatabaseWrapper, "connect", "db connect")

    started: dict[str, float] = {}

    @task_prerun.connect(weak=False)
    def _pre(task_id: str, task: Any, **_kw: Any) -> None:
        started[task_id] = time.monotonic()

    @task_postrun.connect(weak=False)
    def _post(task_id: str, task: Any, **_kw: Any) -> None:
        start = started.pop(task_id, None)
        if start is not None:
            TRACE.append((f"task {task.name}", threading.get_ident(), start, time.monotonic(), ""))

    @worker_shutdown.connect(weak=False)
    def _dump(**_kw: Any) -> None:
        path = os.environ.get("BENCH_TRACE_FILE")
        if path:
            Path(path).write_text(json.dumps(TRACE))
            Path(path).with_suffix(".cpu.json").write_text(json.dumps(CPU))


def main() -> None:
    install()
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "--app", "mobilesd", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()
