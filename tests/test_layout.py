"""The package tree tells the architecture: no import circles, and every layer
stands above what it uses.

Every ``.py`` file under ``consensus/``, ``protocols/`` and ``bench/`` is parsed
with ``ast`` (never imported).  Every import counts, also one inside a
function (a lazy import hides a circle, it does not remove it); only imports
under ``if TYPE_CHECKING:`` are skipped, since they never run.

The layers, lowest first (a module may import its own layer and those below):

* ``core``: ``consensus/*.py``, the abstraction a plugin author needs;
* ``checker``: ``consensus/checker/``, histories and linearizability;
* ``sim``: ``consensus/sim/``, the deterministic simulator;
* ``protocols``: the plugins (core only, never a driver);
* ``runtime``: ``consensus/runtime/``, Trio, transports, real clusters;
* ``testing``: ``consensus/testing/``, the kit for plugin authors;
* ``bench``: the harness, above everything.

``consensus/__init__.py`` and ``consensus/__main__.py`` are the facade and
sit above every layer of ``consensus``; nothing inside the project imports the
facade.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("consensus", "protocols", "bench")

LAYERS = ("core", "checker", "sim", "protocols", "runtime", "testing", "bench", "facade")
# What each layer may import, besides itself.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "checker": {"core"},
    "sim": {"core", "checker"},
    "protocols": {"core"},
    "runtime": {"core", "checker", "sim"},
    "testing": {"core", "checker", "sim", "runtime", "protocols"},
    "bench": {"core", "checker", "sim", "runtime", "protocols", "testing", "facade"},
    "facade": {"core", "checker", "sim", "runtime", "testing"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("protocols", "bench"):
        return parts[0]
    if module in ("consensus", "consensus.__main__"):
        return "facade"
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in ("checker", "sim", "runtime", "testing")):
        return parts[1]
    return "core"


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules ``module`` imports (resolved, relative imports included)."""
    tree = ast.parse(source)
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in node.orelse:  # type: ignore[attr-defined]
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known and name != module}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {
        name: imports_of(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


# -- the checks check themselves -----------------------------------------------------------


def test_cycle_finder_reports_a_circle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_lazy_imports_count_and_type_checking_imports_do_not():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from consensus.sim import Simulator\n"
        "def f():\n    from consensus.config import structure\n"
        "from . import codec\n"
    )
    known = {"consensus.config", "consensus.sim", "consensus.codec", "consensus.replica"}
    assert imports_of(source, "consensus.replica", False, known) == {
        "consensus.config",
        "consensus.codec",
    }


def test_layers_are_assigned_by_folder():
    assert layer("consensus.replica") == "core"
    assert layer("consensus.sim") == "sim"
    assert layer("consensus.sim.simulator") == "sim"
    assert layer("consensus.checker.history") == "checker"
    assert layer("consensus.runtime.node") == "runtime"
    assert layer("consensus") == "facade"
    assert layer("protocols.paxos_common.acceptor") == "protocols"
    assert layer("bench.runner") == "bench"


# -- the real tree --------------------------------------------------------------------------


def test_no_import_circles_in_the_project():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_known_circles_are_broken():
    graph = import_graph()
    assert "consensus.config" not in graph["consensus.registry"]
    assert "consensus.config" not in graph["consensus.replica"]
    assert "bench.runner" not in graph["bench.metrics"]


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_every_module_imports_only_its_layer_and_below(module):
    graph = import_graph()
    mine = layer(module)
    bad = sorted(
        target
        for target in graph[module]
        if layer(target) != mine and layer(target) not in ALLOWED[mine]
    )
    assert not bad, f"{module} ({mine}) imports above its layer: {bad}"


def test_layers_cover_every_module():
    assert {layer(m) for m in import_graph()} <= set(LAYERS)
