"""Scenario `many`: many servers behind one worker host.

32 servers (`--many-servers`), each a simulator in a process of its own, jobs of 2 s
(`--many-job-seconds`: 10 steps), 4 per server (`--many-jobs-per-server`, or `--jobs` in
all), pinned round-robin (`--many-target any` for "any" jobs), one Celery worker process
whose thread pool has a thread per server and two more (the harness's `--concurrency`).
Utilization as `utilization`'s: the ideal makespan (128 x 2 s / 32 = 8 s) over the measured
one (first `txt2img_received` to last `txt2img_finished`), with where each server's makespan
went. Target (issue 17): >= 97 %.
"""

from __future__ import annotations

import argparse

from bench.engine_figures import (
    Outcome,
    require_all_completed,
    utilization_check,
    utilization_figures,
)
from bench.engine_harness import Bench, SimSpec, params

NAME = "many"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--many-servers", type=int, default=32)
    parser.add_argument("--many-jobs-per-server", type=int, default=4)
    parser.add_argument("--many-target", choices=["pinned", "any"], default="pinned")
    parser.add_argument("--many-job-seconds", type=float, default=2.0)


def run(bench: Bench, args: argparse.Namespace) -> Outcome:
    servers = args.many_servers
    total = args.jobs or servers * args.many_jobs_per_server
    steps, sps = 10, args.many_job_seconds / 10
    target_any = args.many_target == "any"
    bench.log(
        f"many: {servers} servers, {total} jobs of {args.many_job_seconds} s "
        f"({steps} steps x {sps:g} s), target {'any' if target_any else 'pinned round-robin'}"
    )
    jobs = [
        (None if target_any else i % servers, params(steps=steps, seed=i)) for i in range(total)
    ]
    sims = [SimSpec(seconds_per_step=sps) for _ in range(servers)]
    result = bench.run(sims=sims, jobs=jobs, timeout=total * args.many_job_seconds / servers + 120)
    notes: list[str] = []
    ok = require_all_completed(result, notes)
    utilization, figures = utilization_figures(
        result, servers=servers, jobs=total, job_seconds=args.many_job_seconds
    )
    figures = {
        "servers": servers,
        "jobs": total,
        "job_seconds": args.many_job_seconds,
        "target": args.many_target,
        "statuses": result.statuses,
        **figures,
    }
    return Outcome(
        NAME,
        {"servers": servers, "jobs": total, "job_seconds": args.many_job_seconds},
        figures,
        [utilization_check(utilization, figures, ok=ok)],
        notes,
    )
