"""Scenario `gap`: how long a server waits between two jobs.

One server (`--gap-servers`), 300 jobs (`--jobs`) of 64x64, 1 step, at zero seconds per
step: the server's time goes to nothing but MobileSD's own work between two jobs. The
dispatch gap, per server, is the next `txt2img_received` minus the previous
`txt2img_finished`, for every pair whose next job was queued before the previous one
finished (here all are). Targets: p50 <= 20 ms, p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench.engine_figures import (
    Check,
    Outcome,
    dispatch_gaps,
    gap_breakdown,
    gaps_ok,
    makespan,
    ms,
    p50_by_quarter,
    percentile,
    require_all_completed,
)
from bench.engine_harness import Bench, SimSpec, params

NAME = "gap"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gap-servers", type=int, default=1)


def run(bench: Bench, args: argparse.Namespace) -> Outcome:
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
