"""The order in which pytest-xdist's workers take the suite's modules under `--dist loadfile`
(`make test`): the longest first.

A module's tests stay on one worker (an integration module's cluster lives for the module).
xdist hands the modules out by their number of tests, most first, which puts the integration
modules last: a few tests each, but the longest (test_faults.py's one test runs over a
minute), so one worker was still running them long after the other had finished. Here each
worker takes the longest module left: the last modules to start are short, and the workers
finish together. A module's length is what it took in the last run (pytest's cache, written
by `ModuleSeconds`), else an estimate from its folder and number of tests.
"""

from collections import defaultdict

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadFileScheduling
from xdist.workermanage import WorkerController

CACHE_KEY = "mobilesd/module-seconds"

# Seconds per test where no earlier run says: the modules that start real processes take
# seconds per test, the others a fraction of one.
SECONDS_PER_TEST = {"tests/integration/": 15.0, "tests/browser/": 7.0}
UNIT_SECONDS_PER_TEST = 0.5
# Modules far longer than their folder's estimate (seconds on a 2-core machine), for a run
# without a cache (a fresh clone, CI).
KNOWN_SECONDS = {
    "tests/integration/test_faults.py": 100.0,
    "tests/queue_app/test_counts.py": 200.0,
    # One test under xdist: the fuzzing in a pytest process of its own (test_fuzz.py).
    "tests/test_fuzz.py": 110.0,
}


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class LongestModulesFirst(LoadFileScheduling):
    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        cache = getattr(config, "cache", None)
        self.known: dict[str, float] = {
            **KNOWN_SECONDS,
            **((cache.get(CACHE_KEY, {}) or {}) if cache is not None else {}),
        }

    def _assign_work_unit(self, node: WorkerController) -> None:
        # The parent hands out the first module of its queue: put the longest one there.
        longest = max(self.workqueue, key=self.expected_seconds)
        self.workqueue.move_to_end(longest, last=False)
        super()._assign_work_unit(node)

    def expected_seconds(self, module: str) -> float:
        if module in self.known:
            return float(self.known[module])
        per_test = next(
            (s for folder, s in SECONDS_PER_TEST.items() if module.startswith(folder)),
            UNIT_SECONDS_PER_TEST,
        )
        return per_test * len(self.workqueue[module])


class ModuleSeconds:
    """Adds up the seconds of each module's tests (setup, call and teardown) in this run and
    keeps them in pytest's cache for the next run's `LongestModulesFirst`; modules this run
    did not run keep their earlier figure."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[module_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        cache = getattr(session.config, "cache", None)
        if cache is None or not self.seconds:
            return
        known = cache.get(CACHE_KEY, {}) or {}
        known.update({module: round(s, 1) for module, s in self.seconds.items()})
        cache.set(CACHE_KEY, known)
