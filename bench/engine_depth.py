"""Scenario `depth`: the dispatch gap does not grow with the number of waiting jobs.

One server, the same 100 jobs (`--jobs`) of 64x64, 1 step, at zero seconds per step, run
in the same invocation with 100 jobs pending in all (`--depth-shallow`) and with 20,000
(`--depth-deep`), each twice (`--depth-rounds`), in the order shallow, deep, deep,
shallow; the gaps of the runs at one depth are pooled. The jobs beyond the measured ones
are a backlog inserted directly (one `bulk_create`, then ANALYZE, as autovacuum would),
half pinned to the server and half for "any" server, all of a lower priority, so that they
stay behind the measured jobs in every claim's queue order; they are deleted once the
measured jobs have ended. The gap is the `gap` scenario's (next `txt2img_received` -
previous `txt2img_finished`), between measured jobs only. Target: p50 with the deep queue
<= 1.2 x p50 with the shallow one.
"""

from __future__ import annotations

import argparse
import functools

from bench.engine_figures import (
    Check,
    Outcome,
    dispatch_gaps,
    ms,
    p50_by_quarter,
    percentile,
    require_all_completed,
)
from bench.engine_harness import Bench, RunResult, SimSpec, params

NAME = "depth"

# How much slower the deep queue's median gap may be.
TOLERANCE = 1.2


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth-shallow", type=int, default=100)
    parser.add_argument("--depth-deep", type=int, default=20_000)
    parser.add_argument(
        "--depth-rounds",
        type=int,
        default=2,
        help="runs at each depth, in the order shallow, deep, deep, shallow, ... (default 2)",
    )


def insert_backlog(count: int, checkpoint: str) -> None:
    """`count` pending jobs behind every measured one: half for the bench's server, half
    for "any"."""
    from django.db import connection

    from core_app.scopes import local_user
    from queue_app.models import ANY_SERVER, Job
    from servers_app.checkpoints import checkpoint_key
    from servers_app.models import Server

    if count <= 0:
        return
    server = Server.objects.get()
    key = checkpoint_key(checkpoint)
    owner = local_user()
    Job.objects.bulk_create(
        (
            Job(
                server=server if i % 2 else None,
                target_server_alias=server.alias if i % 2 else ANY_SERVER,
                generation_params=params(checkpoint=checkpoint, seed=i),
                checkpoint_key=key,
                priority=-1,
                owner=owner,
            )
            for i in range(count)
        ),
        batch_size=2000,
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Job._meta.db_table)}")


def delete_backlog() -> None:
    """Delete the backlog still pending, so that the worker stops with nothing to do."""
    from queue_app.models import Job, JobStatus

    Job.objects.filter(status=JobStatus.PENDING, priority=-1).delete()


def measured_only(result: RunResult) -> RunResult:
    """`result` with only the measured jobs' simulator events (the backlog's first job may
    start once the last measured one finished)."""
    ids = set(result.job_ids)
    result.events = {
        alias: [e for e in events if e.get("task_id") in ids]
        for alias, events in result.events.items()
    }
    return result


def run(bench: Bench, args: argparse.Namespace) -> Outcome:
    measured = args.jobs or 100
    depths = {"shallow": args.depth_shallow, "deep": args.depth_deep}
    checkpoint = "bench/model_a.safetensors"
    notes: list[str] = []
    figures: dict[str, object] = {"measured_jobs": measured}
    p50: dict[str, float] = {}
    ok = True
    rounds = max(args.depth_rounds, 1)
    # ABBA: a run's place in the invocation (the first worker starts cold) favours neither.
    order = [
        label
        for i in range(rounds)
        for label in (("shallow", "deep") if i % 2 == 0 else ("deep", "shallow"))
    ]
    gaps: dict[str, list[float]] = {"shallow": [], "deep": []}
    quarters: dict[str, list[list[float]]] = {"shallow": [], "deep": []}
    for label in order:
        backlog = max(depths[label] - measured, 0)
        bench.log(f"depth: {measured} jobs measured with {measured + backlog} pending ({label})")
        result = bench.run(
            sims=[SimSpec()],
            jobs=[(0, params(checkpoint=checkpoint, seed=i)) for i in range(measured)],
            before_jobs=functools.partial(insert_backlog, backlog, checkpoint),
            after_jobs=delete_backlog,
        )
        measured_only(result)
        ok = require_all_completed(result, notes) and ok
        gaps[label] += dispatch_gaps(result)
        quarters[label].append(p50_by_quarter(result))
    for label, depth in depths.items():
        p50[label] = percentile(gaps[label], 50)
        figures[label] = {
            "pending": max(depth, measured),
            "runs": len(quarters[label]),
            "gaps_measured": len(gaps[label]),
            "gap_p50_ms": ms(p50[label]),
            "gap_p90_ms": ms(percentile(gaps[label], 90)),
            "gap_p99_ms": ms(percentile(gaps[label], 99)),
            "gap_max_ms": ms(max(gaps[label])),
            "gap_p50_by_quarter_ms_per_run": quarters[label],
        }
    ratio = p50["deep"] / p50["shallow"]
    figures["ratio_p50_deep_to_shallow"] = round(ratio, 2)
    checks = [
        Check(
            f"gap p50, {depths['shallow']} pending",
            f"{ms(p50['shallow'])} ms",
            "(reported)",
            ok,
        ),
        Check(f"gap p50, {depths['deep']} pending", f"{ms(p50['deep'])} ms", "(reported)", ok),
        Check(
            "deep p50 / shallow p50",
            f"{ratio:.2f}",
            f"<= {TOLERANCE}",
            ok and ratio <= TOLERANCE,
        ),
    ]
    settings = {"measured_jobs": measured, "rounds": rounds, **depths}
    return Outcome("depth", settings, figures, checks, notes)
