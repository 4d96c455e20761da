"""Figures of the engine benchmark, read from the simulators' event logs of a run.

Every time here is a simulator's `time.monotonic()`: `txt2img_received` (the request
reached the server), `txt2img_finished` (the generation ended; the response is then
written) and `model_loading` (a checkpoint load). A scenario's result is an `Outcome`: its
figures, and the `Check`s of its targets.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.engine_harness import RunResult


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return sorted((e for e in events if e["type"] == kind), key=lambda e: e["t"])


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def timed_gaps(result: RunResult) -> list[tuple[float, float]]:
    """Per server: (when, next txt2img_received - previous txt2img_finished) in seconds, for
    every consecutive pair whose next job was already queued when the previous one finished."""
    gaps = []
    for events in result.events.values():
        received = of_type(events, "txt2img_received")
        finished = of_type(events, "txt2img_finished")
        for previous, following in zip(finished, received[1:], strict=False):
            if result.queued_at <= previous["t"]:
                gaps.append((previous["t"], following["t"] - previous["t"]))
    return sorted(gaps)


def dispatch_gaps(result: RunResult) -> list[float]:
    return [gap for _, gap in timed_gaps(result)]


def gap_breakdown(result: RunResult) -> dict[str, Any]:
    """Where the worker thread of each server spent each dispatch gap: the innermost probe
    (bench/traced_worker.py) active at each instant, summed over the gaps, in ms per gap."""
    trace = result.trace
    thread_of = {tag: thread for label, thread, _, _, tag in trace if label == "txt2img"}
    by_thread: dict[int, list[tuple[str, float, float]]] = {}
    for label, thread, start, end, _ in trace:
        if not label.startswith("task "):
            by_thread.setdefault(thread, []).append((label, start, end))
    totals: dict[str, float] = {}
    count = 0
    for events in result.events.values():
        received = of_type(events, "txt2img_received")
        finished = of_type(events, "txt2img_finished")
        for previous, following in zip(finished, received[1:], strict=False):
            if previous["t"] < result.queued_at or previous["task_id"] not in thread_of:
                continue
            lo, hi = previous["t"], following["t"]
            spans = [
                (label, max(start, lo), min(end, hi), start)
                for label, start, end in by_thread.get(thread_of[previous["task_id"]], [])
                if start < hi and end > lo
            ]
            cuts = sorted({lo, hi, *(a for _, a, _, _ in spans), *(b for _, _, b, _ in spans)})
            for a, b in itertools.pairwise(cuts):
                active = [span for span in spans if span[1] <= a and span[2] >= b]
                label = max(active, key=lambda span: span[3])[0] if active else "(no probe)"
                totals[label] = totals.get(label, 0.0) + (b - a)
            count += 1
    per_gap = {label: ms(total / count) for label, total in totals.items()} if count else {}
    tasks: dict[str, list[float]] = {}
    for label, _, start, end, _ in trace:
        if label.startswith("task "):
            tasks.setdefault(label[5:], []).append(end - start)
    loop_threads = set(thread_of.values())
    sql = [
        (label, tag)
        for label, thread, _, _, tag in trace
        if thread in loop_threads and label in ("sql", "sql commit")
    ]
    jobs = len(thread_of) or 1
    verbs: dict[str, int] = {}
    for label, tag in sql:
        key = "COMMIT" if label == "sql commit" else tag or "?"
        verbs[key] = verbs.get(key, 0) + 1
    return {
        "gaps": count,
        "db_round_trips_per_job": round(len(sql) / jobs, 2),
        "statements_per_job": {k: round(v / jobs, 2) for k, v in sorted(verbs.items())},
        "ms_per_gap_by_innermost_probe": dict(sorted(per_gap.items(), key=lambda kv: -kv[1])),
        "probe_mean_ms": {
            label: ms(statistics.fmean(durations))
            for label, durations in sorted(_durations(trace).items())
        },
        "celery_tasks": {
            name: {"count": len(d), "mean_ms": ms(statistics.fmean(d)), "total_s": round(sum(d), 2)}
            for name, d in tasks.items()
        },
    }


def _durations(trace: list[tuple[str, int, float, float, str]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for label, _, start, end, _ in trace:
        if not label.startswith("task "):
            out.setdefault(label, []).append(end - start)
    return out


def gap_overlap(result: RunResult) -> float:
    """How many other servers were in a gap, on average, during a server's gap (0: the
    servers' job boundaries never meet; 3 of 4: all four switch jobs at the same time)."""
    spans = []
    for alias, events in result.events.items():
        received = of_type(events, "txt2img_received")
        finished = of_type(events, "txt2img_finished")
        for previous, following in zip(finished, received[1:], strict=False):
            spans.append((alias, previous["t"], following["t"]))
    if not spans:
        return 0.0
    overlaps = 0
    for alias, start, end in spans:
        overlaps += sum(1 for a, s, e in spans if a != alias and s < end and e > start)
    return round(overlaps / len(spans), 2)


def p50_by_quarter(result: RunResult) -> list[float]:
    """The gap's p50 in each quarter of the run (in time order), in ms."""
    gaps = timed_gaps(result)
    size = max(len(gaps) // 4, 1)
    quarters = [gaps[i * size : (i + 1) * size] for i in range(4)]
    return [ms(percentile([g for _, g in q], 50)) for q in quarters if q]


def makespan(result: RunResult) -> tuple[float, float, float]:
    """(first request received, last generation finished, span) over all servers."""
    received = [e["t"] for ev in result.events.values() for e in of_type(ev, "txt2img_received")]
    finished = [e["t"] for ev in result.events.values() for e in of_type(ev, "txt2img_finished")]
    first, last = min(received), max(finished)
    return first, last, last - first


def makespan_use(result: RunResult) -> tuple[float, dict[str, float]]:
    """Where the servers' makespan went: (seconds in jobs on the servers, summed over the
    servers; the same split into time in jobs, gaps between them, late start and early end,
    averaged over the servers)."""
    first, last, _ = makespan(result)
    parts = {"jobs_on_server": 0.0, "gaps": 0.0, "late_start": 0.0, "early_end": 0.0}
    for events in result.events.values():
        received = of_type(events, "txt2img_received")
        finished = of_type(events, "txt2img_finished")
        parts["jobs_on_server"] += sum(
            f["t"] - r["t"] for r, f in zip(received, finished, strict=True)
        )
        following = zip(finished, received[1:], strict=False)
        parts["gaps"] += sum(r["t"] - f["t"] for f, r in following)
        parts["late_start"] += received[0]["t"] - first
        parts["early_end"] += last - finished[-1]["t"]
    servers = max(len(result.events), 1)
    return parts["jobs_on_server"], {k: v / servers for k, v in parts.items()}


def _first_requests(result: RunResult) -> list[float]:
    """When each server's first request arrived (monotonic), earliest first."""
    return sorted(
        received[0]["t"]
        for received in (of_type(ev, "txt2img_received") for ev in result.events.values())
        if received
    )


def first_requests(result: RunResult) -> dict[str, float]:
    """How long after the jobs were queued each server's first request arrived, in ms: the
    median server's and the last one's (the start's spread; the first one's is
    `queued_to_first_request_ms`)."""
    firsts = [t - result.queued_at for t in _first_requests(result)]
    if not firsts:
        return {}
    return {"p50": ms(percentile(firsts, 50)), "last": ms(firsts[-1])}


def start_cpu(result: RunResult) -> dict[str, Any]:
    """How busy the machine was while the servers' first requests went out: from the
    commit to the last server's first request (to the sample nearest it), the machine's
    CPUs busy (in % of all of them) and each program's CPU in % of one core."""
    firsts = _first_requests(result)
    samples = result.cpu_samples
    if not firsts or len(samples) < 2:
        return {}
    last = firsts[-1]
    end = min(samples[1:], key=lambda sample: abs(sample[0] - last))
    start = samples[0]
    seconds = end[0] - start[0]
    return {
        "window_ms": ms(seconds),
        "machine_busy_pct": round(100 * (end[1] - start[1]) / max(end[2] - start[2], 1), 1),
        "pct_of_one_core": {
            name: round(100 * (end[3][name] - start[3].get(name, 0.0)) / seconds, 1)
            for name in end[3]
        },
    }


def job_split(result: RunResult) -> dict[str, float]:
    """Where a job's time on its server went, mean in ms: from the request's arrival to
    the generation's start (`txt2img_started`: waiting for the server's queue lock), and
    from the start to the end of the generation (the steps' schedule, then the images)."""
    queued: list[float] = []
    generating: list[float] = []
    for events in result.events.values():
        received = of_type(events, "txt2img_received")
        started = of_type(events, "txt2img_started")
        finished = of_type(events, "txt2img_finished")
        for r, s, f in zip(received, started, finished, strict=False):
            queued.append(s["t"] - r["t"])
            generating.append(f["t"] - s["t"])
    if not queued:
        return {}
    return {
        "received_to_started": ms(sum(queued) / len(queued)),
        "started_to_finished": ms(sum(generating) / len(generating)),
    }


def utilization_figures(
    result: RunResult, *, servers: int, jobs: int, job_seconds: float
) -> tuple[float, dict[str, Any]]:
    """The utilization of a run: ideal makespan (jobs x job_seconds / servers) over the
    measured one (first `txt2img_received` to last `txt2img_finished`); and its figures:
    where each server's makespan went, the gaps, the CPU each program used."""
    first, _, span = makespan(result)
    ideal = jobs * job_seconds / servers
    busy, per_server = makespan_use(result)
    gaps = dispatch_gaps(result)
    figures: dict[str, Any] = {
        "ideal_makespan_s": round(ideal, 3),
        "makespan_s": round(span, 3),
        "utilization_pct": round(100 * ideal / span, 2),
        "busy_pct": round(100 * busy / (servers * span), 2),
        "makespan_per_server_s": {k: round(v, 3) for k, v in per_server.items()},
        "mean_job_seconds_on_server": round(busy / max(jobs, 1), 4),
        "job_on_server_split_ms": job_split(result),
        "jobs_per_server": {
            alias: len(of_type(ev, "txt2img_finished")) for alias, ev in result.events.items()
        },
        "gap_p50_ms": ms(percentile(gaps, 50)) if gaps else None,
        "gap_p99_ms": ms(percentile(gaps, 99)) if gaps else None,
        "gap_max_ms": ms(max(gaps)) if gaps else None,
        "other_servers_in_a_gap_during_a_gap": gap_overlap(result),
        "queued_to_first_request_ms": ms(first - result.queued_at),
        "servers_first_request_after_queued_ms": first_requests(result),
        "cpu_until_last_first_request": start_cpu(result),
        "cpu_ms_per_job": {k: ms(max(v, 0) / jobs) for k, v in result.cpu_seconds.items()},
        "cpu_pct_of_one_core": {
            k: round(100 * max(v, 0) / span, 1) for k, v in result.cpu_seconds.items()
        },
    }
    if result.trace:
        figures["breakdown"] = gap_breakdown(result)
    if result.step_cpu:
        # Steps nest (a loop's claim is inside the loop): each line is its own total.
        figures["traced_worker_cpu_ms_per_job"] = {
            label: ms(seconds / max(jobs, 1))
            for label, (_, seconds) in sorted(result.step_cpu.items(), key=lambda i: -i[1][1])
        }
    return ideal / span, figures


def utilization_check(utilization: float, figures: dict[str, Any], *, ok: bool) -> Check:
    """The target of every utilization figure: >= 97 % (and every job completed)."""
    return Check(
        "utilization",
        f"{figures['utilization_pct']} % ({figures['makespan_s']} s vs ideal "
        f"{figures['ideal_makespan_s']:g} s)",
        ">= 97 %",
        ok and utilization >= 0.97,
    )


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@dataclass
class Check:
    figure: str
    value: str
    target: str
    passed: bool


@dataclass
class Outcome:
    scenario: str
    settings: dict[str, Any]
    figures: dict[str, Any]
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    load: str = ""


def require_all_completed(result: RunResult, outcome_notes: list[str]) -> bool:
    completed = result.statuses.get("completed", 0)
    if completed != len(result.job_ids):
        outcome_notes.append(f"not every job completed: {result.statuses}")
        return False
    return True


def gaps_ok(gaps: list[float], q: float, limit: float) -> bool:
    return bool(gaps) and percentile(gaps, q) <= limit
