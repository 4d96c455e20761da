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
    Check,
    Outcome,
    dispatch_gaps,
    gap_breakdown,
    gap_overlap,
    makespan,
    ms,
    of_type,
    percentile,
    require_all_completed,
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
