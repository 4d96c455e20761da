"""Scenario `memory`: the worker's memory while it runs jobs with large images.

One server, 20 jobs (`--jobs`) of 8 images of 1024x1024. The simulator's own gradient PNGs
compress to 7 KB and would not load the worker at all, so they are replaced (in the bench
process: the simulator runs there in this scenario) by PNGs of the size a real server
returns, about 1.7 MB each (`--memory-images simulator` keeps the simulator's). The
worker's RSS is sampled every 20 ms; per job its floor (lowest RSS between its request and
the next job's) and peak. Target: growth over the second half of the run (floor after the
last job - floor after job 10, and the same for the peaks) < one job's images.
"""

from __future__ import annotations

import argparse
import os
import struct
import threading
import zlib

from bench.engine_figures import Check, Outcome, of_type, require_all_completed
from bench.engine_harness import Bench, MiB, SimSpec, params

NAME = "memory"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-images", choices=["realistic", "simulator"], default="realistic")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class RealisticPngs:
    """PNGs the size of real Forge output (a 1024x1024 SDXL PNG is about 1.5-2 MB).

    The simulator's own renderer draws a gradient that compresses to ~7 KB, which would not
    exercise the worker's memory at all. The pixel data (low-entropy noise) is compressed
    once per size; each image gets its own `parameters` text chunk, as on a real server.
    """

    def __init__(self) -> None:
        self._idat: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    def _pixels(self, width: int, height: int) -> bytes:
        with self._lock:
            idat = self._idat.get((width, height))
            if idat is None:
                table = bytes((i & 0x0F) * 16 for i in range(256))  # 4 bits of noise/byte
                row = width * 3
                noise = os.urandom(row * height).translate(table)
                raw = b"".join(b"\x00" + noise[y * row : (y + 1) * row] for y in range(height))
                idat = _chunk(b"IDAT", zlib.compress(raw, 1))
                self._idat[(width, height)] = idat
            return idat

    def render(
        self, width: int, height: int, seed: int, infotext: str, *, partial: bool = False
    ) -> bytes:
        header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        try:
            text = _chunk(b"tEXt", b"parameters\x00" + infotext.encode("latin-1"))
        except UnicodeEncodeError:
            text = _chunk(b"iTXt", b"parameters\x00\x00\x00\x00\x00" + infotext.encode())
        return (
            b"\x89PNG\r\n\x1a\n"
            + header
            + text
            + self._pixels(width, height)
            + _chunk(b"IEND", b"")
        )


def run(bench: Bench, args: argparse.Namespace) -> Outcome:
    from integrations.forge.simulator import generation

    total = args.jobs or 20
    images, size = 8, 1024
    realistic = args.memory_images == "realistic"
    bench.log(
        f"memory: 1 server, {total} jobs of {images} images of {size}x{size} "
        f"({'realistic ~1.7 MB' if realistic else 'simulator gradient ~7 KB'} PNGs)"
    )
    original = generation.render_png
    pngs = RealisticPngs()
    if realistic:
        generation.render_png = pngs.render
        pngs.render(size, size, 0, "warm-up")
    # The realistic PNGs are patched into this process's simulator module.
    in_process, bench.sims_in_process = bench.sims_in_process, True
    try:
        jobs = [(0, params(size=size, images=images, seed=i)) for i in range(total)]
        result = bench.run(sims=[SimSpec()], jobs=jobs, sample_rss=True, timeout=60 + total * 10)
    finally:
        generation.render_png = original
        bench.sims_in_process = in_process
    notes: list[str] = []
    ok = require_all_completed(result, notes)
    image_bytes = len(pngs.render(size, size, 0, "x" * 600)) if realistic else 7_500
    payload = images * image_bytes
    samples = result.rss
    events = next(iter(result.events.values()))
    received = [e["t"] for e in of_type(events, "txt2img_received")]
    # Job k's window: from its request to the next job's request (the last one: to the end
    # of sampling, a second after the queue was empty). Its floor (lowest RSS) is what the
    # worker kept; its peak what the job needed while it ran.
    bounds = [*received, float("inf")]
    floors: list[int] = []
    peaks: list[int] = []
    for k in range(total):
        window = [rss for t, rss in samples if bounds[k] <= t < bounds[k + 1]]
        if not window:  # a job faster than the sampling interval
            window = [rss for t, rss in samples if t < bounds[k + 1]][-1:]
        floors.append(min(window))
        peaks.append(max(window))
    start = [rss for t, rss in samples if t < result.queued_at]
    start_rss = start[-1] if start else samples[0][1]
    peak = max(rss for _, rss in samples)
    end_rss = samples[-1][1]
    half = total // 2
    growth_second_half = floors[-1] - floors[half - 1]
    peak_growth_second_half = max(peaks[half:]) - max(peaks[:half])
    figures = {
        "jobs": total,
        "images_per_job": images,
        "image_size": f"{size}x{size}",
        "png_bytes_each": image_bytes,
        "job_payload_mib": round(payload / MiB, 2),
        "statuses": result.statuses,
        "rss_start_mib": round(start_rss / MiB, 1),
        "rss_peak_mib": round(peak / MiB, 1),
        "rss_end_mib": round(end_rss / MiB, 1),
        "rss_floor_per_job_mib": [round(v / MiB, 1) for v in floors],
        "rss_peak_per_job_mib": [round(v / MiB, 1) for v in peaks],
        "growth_first_half_mib": round((floors[half - 1] - start_rss) / MiB, 1),
        "growth_second_half_mib": round(growth_second_half / MiB, 1),
        "peak_growth_second_half_mib": round(peak_growth_second_half / MiB, 1),
        "peak_over_start_per_payload": round((peak - start_rss) / payload, 2),
        "samples": len(samples),
    }
    limit = max(payload, 4 * MiB)
    checks = [
        Check(
            "RSS growth, 2nd half",
            f"{figures['growth_second_half_mib']} MiB (start {figures['rss_start_mib']}, "
            f"peak {figures['rss_peak_mib']}, end {figures['rss_end_mib']} MiB)",
            f"< one job's images ({limit / MiB:.1f} MiB)",
            ok and growth_second_half < limit,
        ),
        Check(
            "peak RSS growth, 2nd half",
            f"{figures['peak_growth_second_half_mib']} MiB",
            f"< one job's images ({limit / MiB:.1f} MiB)",
            ok and peak_growth_second_half < limit,
        ),
    ]
    return Outcome(
        "memory", {"jobs": total, "images": images, "size": size}, figures, checks, notes
    )
