"""The order in which xdist's workers take the modules under `--dist loadfile`
(tests/xdist_scheduling.py): the longest left first."""

from types import SimpleNamespace
from typing import Any

from tests.xdist_scheduling import CACHE_KEY, LongestModulesFirst

UNIT = [f"tests/queue_app/test_many.py::test_{n}" for n in range(10)]  # 10 x 0.5 s
CLUSTER = [f"tests/integration/test_cluster.py::test_{n}" for n in range(2)]  # 2 x 15 s
TIMED = ["tests/core_app/test_timed.py::test_it"]  # 100 s in the last run


class FakeCache:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, key: str, default: Any) -> Any:
        return self.values.get(key, default)


class FakeNode:
    """A worker as the scheduler sees it: it is sent the indexes of the tests to run."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[list[int]] = []
        self.shutting_down = False

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.append(indexes)

    def shutdown(self) -> None:
        self.shutting_down = True


def handed_out(collection: list[str], cache: dict[str, Any]) -> list[str]:
    """The modules in the order the scheduler sent them to two workers."""
    config = SimpleNamespace(
        getvalue={"tx": ["popen", "popen"]}.__getitem__,
        option=SimpleNamespace(loadscopereorder=True),
        cache=FakeCache(cache),
    )
    scheduler = LongestModulesFirst(config)  # type: ignore[arg-type]
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        scheduler.add_node(node)
    for node in nodes:
        scheduler.add_node_collection(node, collection)
    scheduler.schedule()
    # Both got their first module before either got a second one.
    sends = [sent for turn in range(2) for node in nodes for sent in node.sent[turn : turn + 1]]
    return [collection[indexes[0]].split("::")[0] for indexes in sends]


def test_a_module_the_last_run_timed_goes_by_its_time_then_the_estimates():
    order = handed_out(UNIT + CLUSTER + TIMED, {CACHE_KEY: {TIMED[0].split("::")[0]: 100.0}})

    assert order == [
        "tests/core_app/test_timed.py",
        "tests/integration/test_cluster.py",
        "tests/queue_app/test_many.py",
    ]


def test_without_an_earlier_run_an_integration_module_goes_before_more_unit_tests():
    order = handed_out(UNIT + CLUSTER, {})

    assert order == ["tests/integration/test_cluster.py", "tests/queue_app/test_many.py"]
