"""The layering of DESIGN.md ("Layers"), read from the source: every import of every module
(function-level and TYPE_CHECKING imports included) is found with `ast`; the suite fails on
an import circle or on a lower layer importing a higher one.

    core_app ← integrations ← servers_app ← queue_app ← civitai_app, debug_app
             ← dashboard_app, events_app ← notifications_app ← mobilesd

Apps of the same layer (civitai_app, debug_app) do not import each other either.
"""

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    "core_app": 0,
    "integrations": 1,
    "servers_app": 2,
    "queue_app": 3,
    "civitai_app": 4,
    "debug_app": 4,
    "dashboard_app": 5,
    "events_app": 5,
    "notifications_app": 6,
    "mobilesd": 7,
}


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of these top-level packages (their
    migrations left out: Django writes them, and they name apps by label)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports explicitly. `from p import x` is an import of the
    module p.x when there is one, else of p; the parents Python imports implicitly on the
    way to a module are not counted (they are not a module's own choice)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                add(submodule if submodule in modules else origin)
    return found


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other round a circle (Tarjan's strongly
    connected components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Imports of a module of another app that is not in a lower layer."""
    wrong = []
    for source, targets in sorted(graph.items()):
        source_app = source.split(".")[0]
        for target in sorted(targets):
            target_app = target.split(".")[0]
            if target_app != source_app and layers[target_app] >= layers[source_app]:
                wrong.append(f"{source} imports {target}")
    return wrong


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(REPO, LAYERS)


def test_every_top_level_package_has_a_layer():
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}

    assert packages - set(LAYERS) == set()


def test_no_module_imports_another_round_a_circle(graph):
    assert import_circles(graph) == []


def test_no_app_imports_one_of_its_own_layer_or_above(graph):
    assert upward_imports(graph, LAYERS) == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones(graph):
    """The checks above see what they are meant to (else they would pass on nothing)."""
    assert "servers_app.receivers" in graph["servers_app.apps"]  # inside ready()
    assert "queue_app.models" in graph["queue_app.receivers"]
    assert len(graph) > 100


# The checker on a tree made for it: it finds what it is meant to find.


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_a_circle_through_a_function_level_import(tmp_path):
    write(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/a.py": "from low.b import thing\n",
            "low/b.py": "def thing():\n    from . import c\n",
            "low/c.py": "import low.a\n",
            "low/d.py": "from low import a\n",
        },
    )

    circles = import_circles(import_graph(tmp_path, ["low"]))

    assert circles == [["low.a", "low.b", "low.c"]]


def test_the_checker_finds_a_lower_layer_importing_a_higher_one(tmp_path):
    write(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/models.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from high.models import Thing\n",
            "high/__init__.py": "",
            "high/models.py": "from low.models import *\n",
            "peer/__init__.py": "from high import models\n",
            "other/__init__.py": "import peer\n",
        },
    )
    graph = import_graph(tmp_path, ["low", "high", "peer", "other"])

    wrong = upward_imports(graph, {"low": 0, "high": 1, "peer": 2, "other": 2})

    assert wrong == ["low.models imports high.models", "other imports peer"]
