#!/usr/bin/env python
"""Profile the engine's per-job path (start or claim -> request -> response) with cProfile.

    .venv/bin/python bench/profile_engine.py [--jobs 300] [--top 30]

Runs `queue_app.engine.server_run` in this process's main thread against one simulator
(zero generation time) in a child process, so that the profile holds the engine's code only,
on the bench database of bench/engine.py (re-created; see bench/engine_harness.py). No
Celery worker: this is the cost of the code between two jobs, without the broker, the
thread pool or other servers competing for the GIL. Prints wall and CPU time per job, SQL
statements per job, the engine's steps and the hottest functions; writes the raw profile
to bench/results/profile-engine.pstats.

cProfile and the statement count follow the loop's own thread: storing images, completing
jobs and reserving the next one run in the loop's helper threads and are not in the
profile (the CPU time per job, from `time.process_time()`, includes every thread).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.engine_harness import (  # noqa: E402
    RESULTS,
    ensure_services,
    flush_redis,
    params,
    prepare_environment,
    recreate_database,
    setup_django,
)

SIMULATOR = """
import time
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
sim = ForgeSimulator(SimulatorConfig(models=[SimModel("bench/model_a.safetensors")])).start()
print(sim.url, flush=True)
while True:
    time.sleep(3600)
"""

STEPS = [
    ("queue_app/engine.py", "server_run"),
    ("queue_app/dispatch.py", "job_claim_next"),
    ("queue_app/dispatch.py", "job_start_reserved"),
    ("queue_app/engine.py", "job_generate"),
    ("queue_app/engine.py", "_resolve_checkpoint"),
    ("queue_app/engine.py", "make_client"),
    ("integrations/forge/client.py", "txt2img"),
    ("queue_app/engine.py", "start"),
    ("queue_app/engine.py", "stop"),
    ("servers_app/services.py", "server_note_loaded_checkpoint"),
    ("queue_app/engine.py", "_store_results"),
    ("queue_app/images.py", "save_image_file"),
    ("queue_app/dispatch.py", "job_complete"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--plain", action="store_true", help="no cProfile: clean wall and CPU time per job"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mobilesd-profile-"))
    prepare_environment(workdir)
    ensure_services()
    recreate_database([])
    flush_redis()
    setup_django()

    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from core_app.scopes import local_user
    from queue_app import services
    from queue_app.engine import server_run
    from queue_app.services import job_submit
    from servers_app.models import Server
    from servers_app.services import server_check_health

    sim = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", SIMULATOR],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        server = Server.objects.create(alias="Profile1", api_url=url)
        if not server_check_health(server=server).online:
            raise SystemExit("the simulator is not online")
        services.job_nudge_on_commit = lambda *, job: None  # no worker here: nothing to nudge

        def submit(count: int) -> None:
            with transaction.atomic():
                for i in range(count):
                    job_submit(
                        owner=local_user(),
                        target_server_alias=server.alias,
                        generation_params=params(seed=i),
                    )

        submit(20)
        server_run(server.pk)  # warm-up: imports, connections, caches
        submit(args.jobs)
        profile = cProfile.Profile()
        wall, cpu = time.perf_counter(), time.process_time()
        with CaptureQueriesContext(connection) as queries:
            if not args.plain:
                profile.enable()
            done = server_run(server.pk)
            profile.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        sim.terminate()
        sim.wait(10)

    print(f"\n{done} jobs in {wall:.2f} s: {1000 * wall / done:.2f} ms wall per job")
    print(f"CPU of the engine's code: {1000 * cpu / done:.2f} ms per job")
    if args.plain:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "profile-engine.pstats"
    profile.dump_stats(out)
    stats = pstats.Stats(profile)
    print("(under cProfile, which inflates Python time)")
    verbs: dict[str, int] = {}
    for query in queries.captured_queries:
        verb = query["sql"].split(None, 1)[0].upper()
        verbs[verb] = verbs.get(verb, 0) + 1
    print(
        f"SQL statements per job: {len(queries.captured_queries) / done:.2f} "
        + str({verb: round(n / done, 2) for verb, n in sorted(verbs.items())})
    )
    print("\nEngine steps (cumulative, ms per job, under cProfile):")
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for suffix, name in STEPS:
        for (filename, _line, function), (_cc, _nc, _tt, cumulative, _callers) in raw.items():
            if function == name and filename.endswith(suffix):
                print(f"  {1000 * cumulative / done:8.2f}  {suffix}:{name}")
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
    print("\nHottest functions (own time):")
    print(text.getvalue().split("\n", 6)[-1])
    print(f"raw profile: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
