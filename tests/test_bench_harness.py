"""bench/engine_harness.py's CPU readings: through the sampler's open files (ProcStats) a
process's CPU reads as a fresh open of its /proc file does, is read anew each time, and
fails once the process has ended."""

import subprocess
import sys

import pytest

from bench.engine_harness import ProcStats, cpu_seconds

# Reads a line, then burns CPU until its own CPU time has grown by 0.2 s, says so, and
# waits for the next line; ends at the end of its input.
CHILD = """
import sys, time
print("ready", flush=True)
for _ in sys.stdin:
    start = time.process_time()
    while time.process_time() - start < 0.2:
        pass
    print("done", flush=True)
"""


@pytest.fixture
def child():
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdin is not None
    assert process.stdout.readline() == "ready\n"  # idle from here: blocked on its input
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_process_cpu_read_through_open_files_is_a_fresh_read_each_time(child):
    stats = ProcStats()
    try:
        idle = cpu_seconds(child.pid, stats=stats)
        assert idle == cpu_seconds(child.pid)  # as opening the file again reads it

        child.stdin.write("work\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"

        busy = cpu_seconds(child.pid, stats=stats)  # the same open file, read again
        assert busy >= idle + 0.15
        assert busy == cpu_seconds(child.pid)
    finally:
        stats.close()


def test_a_process_that_ended_fails_to_read_and_its_file_is_let_go(child):
    stats = ProcStats()
    try:
        cpu_seconds(child.pid, stats=stats)
        child.stdin.close()
        child.wait(timeout=10)
        with pytest.raises(OSError):
            cpu_seconds(child.pid, stats=stats)
        assert stats.open_files() == 0
    finally:
        stats.close()
