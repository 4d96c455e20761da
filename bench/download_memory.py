"""Memory of a Civitai download does not grow with the file's size.

For each size, in a fresh process: a sparse file of that size is offered by the Civitai
simulator (in another process, so its memory is not counted), and MobileSD downloads it
exactly as a worker does (claim, stream to the .part file, hash, verify, move into
models/Stable-diffusion), on a throw-away SQLite database. Reported per size: wall time,
throughput, the process's peak RSS before and after the download (ru_maxrss) and the peak
of Python allocations during it (tracemalloc).

    .venv/bin/python bench/download_memory.py                 # 64 MiB, 1 GiB, 4 GiB
    .venv/bin/python bench/download_memory.py --sizes 0.1,8   # GiB
    .venv/bin/python bench/download_memory.py --json out.json

Needs free disk space of about the largest size (the downloaded copy is real; the source
file is sparse).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


def _serve(path: str, queue: Any, stop: Any) -> None:
    """Child process: the Civitai simulator offering `path` as checkpoint version 100."""
    sys.path.insert(0, str(REPO))
    from integrations.civitai.simulator import (
        Catalog,
        CivitaiSimulator,
        SimFile,
        SimModel,
        SimulatorConfig,
        SimVersion,
    )

    sim_file = SimFile(1000, "big_model.safetensors", path=path, primary=True)
    catalog = Catalog([SimModel(10, "Big", "Checkpoint", [SimVersion(100, "v1", [sim_file])])], [])
    with CivitaiSimulator(SimulatorConfig(catalog=catalog)) as sim:
        queue.put(sim.url)
        stop.wait()


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_one(size_bytes: int, workdir: Path) -> dict[str, Any]:
    """One download of a `size_bytes` file, in this process (fresh: see `main`)."""
    source = workdir / "source.safetensors"
    with source.open("wb") as handle:
        handle.truncate(size_bytes)  # sparse: no disk used, reads as zeros
    context = multiprocessing.get_context("spawn")
    queue, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve, args=(str(source), queue, stop), daemon=True)
    server.start()
    url = queue.get(timeout=600)  # hashing the source first takes a while

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "mobilesd.settings",
            "MOBILESD_DATA_DIR": str(workdir / "data"),
            "DATABASE_URL": f"sqlite:///{workdir / 'data' / 'bench.sqlite3'}",
            "CELERY_BROKER_URL": "memory://",
            "CIVITAI_BASE_URL": url,
            "MOBILESD_DOWNLOAD_FREE_SPACE_MARGIN_BYTES": "0",
            "LOG_LEVEL": "WARNING",
        }
    )
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import tracemalloc

    from django.core.management import call_command
    from model_bakery import baker

    from civitai_app.download_requests import download_request
    from civitai_app.download_runs import download_run
    from civitai_app.download_states import download_claim_next
    from civitai_app.models import Download
    from core_app.scopes import local_user
    from servers_app.models import Server

    call_command("migrate", verbosity=0)
    models_dir = workdir / "models"
    models_dir.mkdir()
    baker.make(Server, alias="Bench", api_url="http://127.0.0.1:9", models_dir=str(models_dir))
    download, _, _ = download_request(
        owner=local_user(), server_aliases=["Bench"], model_version_id=100
    )
    claim = download_claim_next()
    assert claim is not None

    rss_before = _rss_peak_mib()
    tracemalloc.start()
    began = time.perf_counter()
    download_run(claim)
    seconds = time.perf_counter() - began
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = _rss_peak_mib()

    stop.set()
    server.join(timeout=10)
    done = Download.objects.get(pk=download.pk)
    final = models_dir / "Stable-diffusion" / "big_model.safetensors"
    result = {
        "size_bytes": size_bytes,
        "status": done.status,
        "verified_file_bytes": final.stat().st_size if final.exists() else None,
        "seconds": round(seconds, 2),
        "mib_per_second": round(size_bytes / 1024**2 / seconds, 1),
        "peak_rss_mib_before": round(rss_before, 1),
        "peak_rss_mib_after": round(rss_after, 1),
        "peak_rss_growth_mib": round(rss_after - rss_before, 1),
        "tracemalloc_peak_mib": round(traced_peak / 1024**2, 2),
        "chunk_bytes": int(os.environ.get("MOBILESD_DOWNLOAD_CHUNK_BYTES", 1024 * 1024)),
    }
    final.unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.0625,1,4", help="File sizes in GiB, comma-separated.")
    parser.add_argument("--json", help="Also write the results to this file.")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one is not None:
        with tempfile.TemporaryDirectory(prefix="msd-dl-bench-") as workdir:
            print(json.dumps(measure_one(int(args.one * GIB), Path(workdir))))
        return

    results = []
    for size in (float(s) for s in args.sizes.split(",")):
        # A fresh interpreter per size: ru_maxrss is a high-water mark of the process.
        output = subprocess.run(  # noqa: S603 (this script, fixed arguments)
            [sys.executable, __file__, "--one", str(size)],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        row = results[-1]
        print(
            f"{size:>7.3f} GiB  {row['status']:<9}  {row['seconds']:>7.1f} s  "
            f"{row['mib_per_second']:>7.1f} MiB/s  peak RSS {row['peak_rss_mib_before']:.1f} -> "
            f"{row['peak_rss_mib_after']:.1f} MiB (+{row['peak_rss_growth_mib']:.1f})  "
            f"tracemalloc peak {row['tracemalloc_peak_mib']:.2f} MiB",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
