"""Scenario `eta`: a waiting job's predicted start (queue_app.eta) against its real one.

Two servers (`--eta-servers`), each simulator at `--eta-step-seconds` per step (0.03)
with a checkpoint load costing `--eta-switch-seconds` (1.5), three checkpoints. A mixed
workload of `--jobs` jobs (40): shapes 512x512, 768x768 and 512x768 (MobileSD keeps a rate
per shape; the simulator's speed does not depend on size), 10/20/30 steps, 1 or 2 images,
a random checkpoint, one job in ten at priority 1, pinned alternately to the servers
(`--eta-any F`: that share of them for "any" server instead), drawn from a fixed seed.

1. Each server runs one 1-step job first: the simulator loads its first checkpoint at its
   first job (a real server, at start), which would pass for generation time.
2. The measurements are emptied, then a warm-up gives each server its measurements: every
   shape twice on the loaded checkpoint, then one job on each other checkpoint (a load).
3. The measured jobs are queued in one transaction; inside it, once all are queued (the
   worker cannot see them before the commit), each job's place is computed
   (`job_queue_place`): predicted wait = its `start_seconds` + (when it was computed - the
   commit). Actual wait = its `started_at` - the commit.

Figures: the relative error |predicted - actual| / actual of the jobs whose actual wait is
at least `--eta-min-wait` seconds (2; the first jobs start at once and any error relative to
~0 s is meaningless: their absolute errors are shown), its median and p90, and the absolute
errors. Target: median relative error <= 15 %. "Any" jobs, if any, are reported apart.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from bench.engine_figures import Check, Outcome, percentile, require_all_completed
from bench.engine_harness import Bench, SimSpec, params, wait_jobs_ended

NAME = "eta"

TARGET = 0.15
MODELS = (
    "bench/model_a.safetensors",
    "bench/model_b.safetensors",
    "bench/model_c.safetensors",
)
SHAPES = ((512, 512), (768, 768), (512, 768))


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eta-servers", type=int, default=2)
    parser.add_argument("--eta-step-seconds", type=float, default=0.03)
    parser.add_argument("--eta-switch-seconds", type=float, default=1.5)
    parser.add_argument("--eta-min-wait", type=float, default=2.0)
    parser.add_argument("--eta-any", type=float, default=0.0, help='share of "any" jobs')
    parser.add_argument("--eta-seed", type=int, default=13)


def _params(checkpoint: str, shape: tuple[int, int], steps: int, images: int) -> dict[str, Any]:
    job = params(checkpoint=checkpoint, steps=steps, images=images)
    job["width"], job["height"] = shape
    return job


def _workload(
    args: argparse.Namespace, servers: int
) -> list[tuple[int | None, dict[str, Any], int]]:
    rng = random.Random(args.eta_seed)  # noqa: S311 - a reproducible workload
    jobs = []
    for index in range(args.jobs or 40):
        target = None if rng.random() < args.eta_any else index % servers
        job = _params(
            rng.choice(MODELS), rng.choice(SHAPES), rng.choice((10, 20, 30)), rng.choice((1, 2))
        )
        jobs.append((target, job, 1 if rng.random() < 0.1 else 0))
    return jobs


def _submit(jobs: list[tuple[Any, dict[str, Any], int]]) -> list[str]:
    from core_app.scopes import local_user
    from queue_app.services import job_submit

    owner = local_user()
    return [
        str(
            job_submit(
                owner=owner, target_server_alias=alias, generation_params=job, priority=priority
            )[0].pk
        )
        for alias, job, priority in jobs
    ]


def run(bench: Bench, args: argparse.Namespace) -> Outcome:
    servers = args.eta_servers
    workload = _workload(args, servers)
    sims = [
        SimSpec(
            seconds_per_step=args.eta_step_seconds,
            checkpoint_switch_seconds=args.eta_switch_seconds,
            models=MODELS,
        )
        for _ in range(servers)
    ]
    measured: dict[str, Any] = {}

    def measure() -> None:
        from django.db import transaction
        from django.utils import timezone

        from queue_app.eta import job_queue_place
        from queue_app.models import ANY_SERVER, Job
        from servers_app.models import Server, ServerPerformance

        aliases = list(Server.objects.order_by("alias").values_list("alias", flat=True))
        ServerPerformance.objects.all().delete()
        warmup = []
        for alias in aliases:
            loaded = Server.objects.get(alias=alias).loaded_checkpoint.split(" [")[0]
            for shape in SHAPES:
                warmup += [(alias, _params(loaded, shape, 20, 1), 0)] * 2
            warmup += [(alias, _params(m, SHAPES[0], 20, 1), 0) for m in MODELS if m != loaded]
        bench.log(f"eta: warm-up of {len(warmup)} jobs")
        wait_jobs_ended(_submit(warmup), timeout=300)

        marks: list[tuple[float, Any]] = []
        predicted: dict[str, tuple[Any, Any]] = {}
        with transaction.atomic():
            transaction.on_commit(lambda: marks.append((time.monotonic(), timezone.now())))
            ids = _submit(
                [
                    (ANY_SERVER if target is None else aliases[target], job, priority)
                    for target, job, priority in workload
                ]
            )
            computing = time.perf_counter()
            for job in Job.objects.filter(pk__in=ids):
                predicted[str(job.pk)] = (timezone.now(), job_queue_place(job=job))
            compute_seconds = time.perf_counter() - computing
        bench.log(f"eta: queued {len(ids)} jobs; their places took {compute_seconds:.3f} s")
        wait_jobs_ended(ids, timeout=600)
        committed_mono, committed = marks[0]
        rows = Job.objects.filter(pk__in=ids).values_list("pk", "status", "started_at", "server_id")
        measured.update(
            committed=committed,
            committed_mono=committed_mono,
            ids=ids,
            predicted=predicted,
            rows=list(rows),
            compute_ms_per_job=1000 * compute_seconds / max(len(ids), 1),
            pinned={str(i) for i, (t, _, _) in zip(ids, workload, strict=True) if t is not None},
        )

    bench.log(f"eta: {servers} server(s), {len(workload)} mixed jobs")
    warm = [(index, params(checkpoint=MODELS[0], steps=1)) for index in range(servers)]
    result = bench.run(sims=sims, jobs=warm, after_jobs=measure, timeout=120)
    notes: list[str] = []
    ok = require_all_completed(result, notes)

    committed = measured["committed"]
    errors: dict[str, list[dict[str, float]]] = {"pinned": [], "any": []}
    statuses: dict[str, int] = {}
    unknown = 0
    for pk, status, started_at, _ in measured["rows"]:
        statuses[status] = statuses.get(status, 0) + 1
        computed_at, place = measured["predicted"][str(pk)]
        if place is None or place.start_seconds is None or started_at is None:
            unknown += 1
            continue
        predicted = place.start_seconds + (computed_at - committed).total_seconds()
        actual = (started_at - committed).total_seconds()
        group = "pinned" if str(pk) in measured["pinned"] else "any"
        errors[group].append({"predicted": predicted, "actual": actual, "position": place.position})
    if statuses.get("completed", 0) != len(measured["ids"]):
        ok = False
        notes.append(f"measured jobs ended as {statuses}")
    if unknown:
        notes.append(f"{unknown} job(s) had no ETA")

    figures: dict[str, Any] = {
        "servers": servers,
        "jobs": len(measured["ids"]),
        "step_seconds": args.eta_step_seconds,
        "switch_seconds": args.eta_switch_seconds,
        "min_wait_s": args.eta_min_wait,
        "place_ms_per_job": round(measured["compute_ms_per_job"], 2),
        # Checkpoint loads the measured jobs caused, per server (simulator events).
        "loads": {
            alias: sum(
                1
                for e in events
                if e["type"] == "model_loading" and e["t"] >= measured["committed_mono"]
            )
            for alias, events in result.events.items()
        },
        "statuses": statuses,
    }
    checks = []
    for group, samples in errors.items():
        if not samples:
            continue
        relative = [
            abs(s["predicted"] - s["actual"]) / s["actual"]
            for s in samples
            if s["actual"] >= args.eta_min_wait
        ]
        absolute = [abs(s["predicted"] - s["actual"]) for s in samples]
        figures[group] = {
            "jobs": len(samples),
            "jobs_rated": len(relative),
            "median_relative_error": round(statistics.median(relative), 4) if relative else None,
            "p90_relative_error": round(percentile(relative, 90), 4) if relative else None,
            "median_absolute_error_s": round(statistics.median(absolute), 3),
            "p90_absolute_error_s": round(percentile(absolute, 90), 3),
            "max_wait_s": round(max(s["actual"] for s in samples), 2),
            "samples": [
                {k: round(v, 2) for k, v in s.items()}
                for s in sorted(samples, key=lambda s: s["actual"])
            ],
        }
        if not relative:
            continue
        median, p90 = statistics.median(relative), percentile(relative, 90)
        value = (
            f"median {100 * median:.1f} %, p90 {100 * p90:.1f} % "
            f"({len(relative)} jobs waiting >= {args.eta_min_wait:g} s)"
        )
        if group == "pinned":
            checks.append(
                Check("ETA start error", value, "median <= 15 %", ok and median <= TARGET)
            )
        else:
            checks.append(Check('ETA start error ("any")', value, "(reported)", ok))
    return Outcome(
        "eta",
        {"servers": servers, "jobs": len(workload), "switch_seconds": args.eta_switch_seconds},
        figures,
        checks,
        notes,
    )
