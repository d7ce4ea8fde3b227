"""Protocol cores are pure: no I/O, clock, threads or global RNG (STYLE.md rule 1).

Every ``.py`` file under ``protocols/`` is parsed with ``ast`` (never imported),
so a violation is reported as ``file:line`` even when the module would not
import.  Under ``consensus/`` only the Trio runtime package
(``consensus/runtime/``: the Trio-driven cluster, node runners and
transports) may import trio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ROOT / "protocols"
CONSENSUS = ROOT / "consensus"

FORBIDDEN_IN_PROTOCOLS = frozenset({"trio", "socket", "asyncio", "time", "threading"})
# Names from the random module a protocol may use: the type, for annotations and
# isinstance checks on ``ctx.rng``.  Calling any ``random.<fn>(...)`` is forbidden.
RANDOM_TYPE_NAMES = frozenset({"Random"})


def trio_allowed(path: Path) -> bool:
    """consensus/ modules that may import trio: the runtime package and its transports."""
    return path.relative_to(CONSENSUS).parts[0] == "runtime"


def violations(
    source: str, filename: str, forbidden: frozenset[str], check_random: bool
) -> list[str]:
    """``file:line: reason`` for each forbidden import (and use of the global RNG)."""
    tree = ast.parse(source, filename=filename)
    found: list[str] = []
    random_aliases: set[str] = set()

    def report(node: ast.AST, reason: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {reason}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in forbidden:
                    report(node, f"imports {alias.name}")
                if check_random and alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in forbidden:
                report(node, f"imports from {node.module}")
            if check_random and node.module == "random":
                for alias in node.names:
                    if alias.name not in RANDOM_TYPE_NAMES:
                        report(node, f"imports random.{alias.name} (use ctx.rng)")
    if check_random:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in random_aliases
            ):
                fn = node.func.attr
                if fn not in RANDOM_TYPE_NAMES:
                    report(node, f"calls module-level random.{fn}() (use ctx.rng)")
                elif not node.args and not node.keywords:
                    report(node, "creates an unseeded random.Random() (use ctx.rng)")
    return found


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- the checker itself catches what it should ---------------------------------------------

BAD_SOURCE = """\
import trio
import time as clock
from socket import socket
import asyncio.events
from threading import Lock
import random
import random as rnd
from random import randint
x = random.random()
y = rnd.choice([1, 2])
z = random.Random()
"""

GOOD_SOURCE = """\
import random
from random import Random
from typing import Any
import timeit_is_not_time
def f(rng: random.Random, ctx: Any) -> float:
    assert isinstance(rng, random.Random)
    child = random.Random(ctx.seed)
    return ctx.rng.random() + rng.uniform(0, 1) + child.random()
"""


def test_checker_reports_every_forbidden_import_and_random_call_with_its_line() -> None:
    found = violations(BAD_SOURCE, "bad.py", FORBIDDEN_IN_PROTOCOLS, check_random=True)
    assert found == [
        "bad.py:1: imports trio",
        "bad.py:2: imports time",
        "bad.py:3: imports from socket",
        "bad.py:4: imports asyncio.events",
        "bad.py:5: imports from threading",
        "bad.py:8: imports random.randint (use ctx.rng)",
        "bad.py:9: calls module-level random.random() (use ctx.rng)",
        "bad.py:10: calls module-level random.choice() (use ctx.rng)",
        "bad.py:11: creates an unseeded random.Random() (use ctx.rng)",
    ]


def test_checker_allows_the_random_type_and_injected_rngs() -> None:
    assert violations(GOOD_SOURCE, "good.py", FORBIDDEN_IN_PROTOCOLS, check_random=True) == []


def test_there_are_protocol_files_to_check() -> None:
    names = {relative(p) for p in python_files(PROTOCOLS)}
    assert "protocols/sequencer/core.py" in names


# -- the real tree ---------------------------------------------------------------------


@pytest.mark.parametrize("path", python_files(PROTOCOLS), ids=relative)
def test_protocol_cores_import_no_io_clock_threads_or_global_random(path: Path) -> None:
    found = violations(path.read_text(), relative(path), FORBIDDEN_IN_PROTOCOLS, check_random=True)
    assert not found, "protocol cores must stay pure:\n" + "\n".join(found)


def test_only_the_runtime_imports_trio_under_consensus() -> None:
    found: list[str] = []
    for path in python_files(CONSENSUS):
        if not trio_allowed(path):
            found += violations(
                path.read_text(), relative(path), frozenset({"trio"}), check_random=False
            )
    assert not found, "only consensus/runtime/ may import trio:\n" + "\n".join(found)
