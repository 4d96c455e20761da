"""Scenario `switching`: checkpoint switches with the scheduler versus plain FIFO.

Two servers (`--switch-servers`), 30 jobs (`--jobs`) on three checkpoints interleaved
(A, B, C, A, ...; pinned alternately to the servers, or `--switch-target any`), a switch
costing 2 s (`--switch-seconds`), jobs of 0.2 s (`--switch-job-seconds`). Run twice: with
the scheduler's defaults, and as plain FIFO (MOBILESD_SCHEDULER_LOOKAHEAD=1 in the worker).
Switches are the `model_loading` events with a previous checkpoint. Target: the
scheduler's switches <= 1/3 of FIFO's; makespans and each server's order are shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.engine_figures import Check, Outcome, makespan, of_type, require_all_completed
from bench.engine_harness import Bench, SimSpec, params

NAME = "switching"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--switch-servers", type=int, default=2)
    parser.add_argument("--switch-target", choices=["pinned", "any"], default="pinned")
    parser.add_argument("--switch-seconds", type=float, default=2.0)
    parser.add_argument("--switch-job-seconds", type=float, default=0.2)


SWITCH_MODELS = (
    "bench/model_a.safetensors",
    "bench/model_b.safetensors",
    "bench/model_c.safetensors",
)


def _model_of(title: str | None) -> str:
    """`bench/model_b.safetensors [hash]` -> `bench/model_b.safetensors`."""
    name = (title or "").split(" [", 1)[0].replace("\\", "/")
    return name if name in SWITCH_MODELS else SWITCH_MODELS[0]


def run(bench: Bench, args: argparse.Namespace) -> Outcome:
    servers = args.switch_servers
    total = args.jobs or 30
    steps, sps = 10, args.switch_job_seconds / 10
    target_any = args.switch_target == "any"
    jobs = [
        (
            None if target_any else i % servers,
            params(checkpoint=SWITCH_MODELS[i % 3], steps=steps, seed=i),
        )
        for i in range(total)
    ]
    sims = [
        SimSpec(
            seconds_per_step=sps,
            checkpoint_switch_seconds=args.switch_seconds,
            models=SWITCH_MODELS,
        )
        for _ in range(servers)
    ]
    runs: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    ok = True
    for label, env in (("scheduler", {}), ("fifo", {"MOBILESD_SCHEDULER_LOOKAHEAD": "1"})):
        bench.log(
            f"switching [{label}]: {servers} server(s), {total} jobs on 3 interleaved "
            f"checkpoints (switch {args.switch_seconds} s, job {args.switch_job_seconds} s)"
        )
        result = bench.run(sims=sims, jobs=jobs, extra_env=env, timeout=600)
        ok = require_all_completed(result, notes) and ok
        loads = [e for ev in result.events.values() for e in of_type(ev, "model_loading")]
        _, _, span = makespan(result)
        runs[label] = {
            "env": env,
            "statuses": result.statuses,
            "model_loads": len(loads),
            "switches": sum(1 for e in loads if e.get("previous")),
            "first_loads": sum(1 for e in loads if not e.get("previous")),
            "makespan_s": round(span, 3),
            "jobs_per_server": {
                alias: len(of_type(ev, "txt2img_finished")) for alias, ev in result.events.items()
            },
            # The checkpoint of each job in the order the server ran them (A, B, C).
            "order": {
                alias: "".join(
                    "ABC"[SWITCH_MODELS.index(_model_of(e["checkpoint"]))]
                    for e in of_type(ev, "txt2img_received")
                )
                for alias, ev in result.events.items()
            },
        }
    sched, fifo = runs["scheduler"], runs["fifo"]
    figures = {
        "servers": servers,
        "jobs": total,
        "switch_seconds": args.switch_seconds,
        "job_seconds": args.switch_job_seconds,
        "target": "any" if target_any else "pinned",
        "scheduler": sched,
        "fifo": fifo,
        "switches_ratio": round(sched["switches"] / max(fifo["switches"], 1), 3),
        "loads_ratio": round(sched["model_loads"] / max(fifo["model_loads"], 1), 3),
        "makespan_ratio": round(sched["makespan_s"] / max(fifo["makespan_s"], 1e-9), 3),
    }
    checks = [
        Check(
            "checkpoint switches",
            f"{sched['switches']} vs FIFO {fifo['switches']} (loads incl. first: "
            f"{sched['model_loads']} vs {fifo['model_loads']})",
            "<= 1/3 of FIFO",
            ok and 3 * sched["switches"] <= fifo["switches"],
        ),
        Check(
            "makespan",
            f"{sched['makespan_s']} s vs FIFO {fifo['makespan_s']} s",
            "(reported)",
            ok and sched["makespan_s"] <= fifo["makespan_s"],
        ),
    ]
    return Outcome(
        "switching",
        {"servers": servers, "jobs": total, "switch_seconds": args.switch_seconds},
        figures,
        checks,
        notes,
    )
