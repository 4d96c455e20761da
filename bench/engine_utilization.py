"""Scenario `utilization`: how much of the servers' time goes to generating.

Four servers (`--util-servers`), 200 jobs (`--jobs`) of 0.5 s (`--job-seconds`: 10 steps),
50 pinned to each server (`--util-target any` for "any" jobs). Utilization is the ideal
makespan (200 x 0.5 s / 4 = 25 s) over the measured one (last `txt2img_finished` - first
`txt2img_received`); also shown: where each server's makespan went (time in jobs, gaps,
late start, early end). Target: >= 97 %.
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

NAME = "utilization"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--util-servers", type=int, default=4)
    parser.add_argument("--util-target", choices=["pinned", "any"], default="pinned")
    parser.add_argument("--job-seconds", type=float, default=0.5)


def run(bench: Bench, args: argparse.Namespace) -> Outcome:
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
    utilization, figures = utilization_figures(
        result, servers=servers, jobs=total, job_seconds=args.job_seconds
    )
    figures = {
        "servers": servers,
        "jobs": total,
        "job_seconds": args.job_seconds,
        "target": "any" if target_any else "pinned",
        "statuses": result.statuses,
        **figures,
    }
    checks = [utilization_check(utilization, figures, ok=ok)]
    return Outcome(
        "utilization",
        {"servers": servers, "jobs": total, "job_seconds": args.job_seconds},
        figures,
        checks,
        notes,
    )
