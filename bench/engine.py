#!/usr/bin/env python
"""Benchmark of MobileSD's generation engine against Forge simulators.

    .venv/bin/python bench/engine.py
        [--scenario gap|depth|utilization|many|switching|memory|eta|all]

What runs (bench/engine_harness.py): a real Celery worker subprocess (thread pool) on a
dedicated PostgreSQL database (BENCH_DB_NAME, default `mobilesd_bench`, dropped and
re-created by every run) and a dedicated Redis database (BENCH_REDIS_URL, default db 12,
flushed), driving ForgeSimulator HTTP servers, each in a process of its own. Jobs are
queued with `queue_app.services.job_submit`, all of them up front (one transaction, so they
are queued at the same instant; the nudges are published on commit). Every figure is read
from the simulators' event logs (`time.monotonic()`), never from MobileSD
(bench/engine_figures.py).

Scenarios, one module each (see bench/README.md):
  gap          bench/engine_gap.py: a server's previous job finished -> its next request
               arrives (p50/p99)
  depth        bench/engine_depth.py: the gap's p50 with 20,000 jobs pending versus 100
  utilization  bench/engine_utilization.py: 4 servers, 200 jobs of 0.5 s: ideal makespan /
               measured makespan
  many         bench/engine_many.py: the same with 32 servers, 128 jobs of 2 s, one worker
  switching    bench/engine_switching.py: 3 checkpoints interleaved (switch 2 s, jobs
               0.2 s): model loads and makespan with the scheduler's look-ahead versus plain
               FIFO (MOBILESD_SCHEDULER_LOOKAHEAD=1)
  memory       bench/engine_memory.py: worker RSS while it runs jobs of 8 images of
               1024x1024
  eta          bench/engine_eta.py: a waiting job's predicted start against its real one
               on a mixed workload (sizes, steps, 3 checkpoints, 2 servers)

This module is the command line: the options, the runs, the report (a PASS / MISS table)
and the JSON result in bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import (  # noqa: E402
    engine_depth,
    engine_eta,
    engine_gap,
    engine_many,
    engine_memory,
    engine_switching,
    engine_utilization,
)
from bench.engine_figures import Outcome  # noqa: E402
from bench.engine_harness import (  # noqa: E402
    RESULTS,
    Bench,
    ensure_services,
    flush_redis,
    loadavg,
    machine_info,
    prepare_environment,
    recreate_database,
    setup_django,
    write_results,
)


class Scenario(Protocol):
    """What a scenario module (bench/engine_<name>.py) offers."""

    NAME: str

    def add_options(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, bench: Bench, args: argparse.Namespace) -> Outcome: ...


SCENARIOS: dict[str, Scenario] = {
    scenario.NAME: scenario
    for scenario in (
        engine_gap,
        engine_depth,
        engine_utilization,
        engine_many,
        engine_switching,
        engine_memory,
        engine_eta,
    )
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
        f"MobileSD engine benchmark - {machine['date']} - {machine['cpus']} CPU(s) "
        f"(reference {machine['cpu_reference_ms']} ms), "
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
        "--jobs",
        type=int,
        default=0,
        help="jobs per scenario (default: 300/100/200/128/30/20/40)",
    )
    for scenario in SCENARIOS.values():
        scenario.add_options(parser)
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
        help="diagnostic: ALTER DATABASE <the bench database> SET NAME = VALUE",
    )
    parser.add_argument(
        "--nudge",
        choices=["per-job", "once"],
        default="per-job",
        help="diagnostic: 'once' replaces job_submit's nudges by one servers_with_work",
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
        "--py-spy-rate",
        type=int,
        default=250,
        help="py-spy's samples a second (it stops the worker for each: lower disturbs less)",
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
    machine = machine_info()
    bench = Bench(env, workdir, trace=args.trace, py_spy=args.py_spy, nudge=args.nudge)
    bench.worker_env = dict(item.split("=", 1) for item in args.worker_env)
    bench.workers = args.workers
    bench.py_spy_rate = args.py_spy_rate
    bench.sims_in_process = args.sims_in_process
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    outcomes = []
    started = time.monotonic()
    for name in names:
        load_before = loadavg()
        outcome = SCENARIOS[name].run(bench, args)
        outcome.load = f"{load_before} -> {loadavg()}"
        outcomes.append(outcome)
    elapsed = time.monotonic() - started

    print_report(outcomes, command, machine)
    print(f"\nwall time {elapsed:.0f} s")
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
    write_results(RESULTS, "engine", document)
    if not args.keep_workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"worker logs and media kept in {workdir}")
    missed = [c for o in outcomes for c in o.checks if not c.passed and c.target != "(reported)"]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
