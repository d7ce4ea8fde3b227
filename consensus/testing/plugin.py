"""The pytest plugin: ``pytest --consensus-plugin=NAME`` runs the kit on plugin NAME.

Theory of operation
-------------------
Installing ``consensus-compare`` registers this module with pytest (entry
point group ``pytest11``, named after the module, so ``-p
consensus.testing.plugin`` works as well, installed or not, and ``-p
no:consensus.testing.plugin`` turns it off).  It is inert unless asked: with
no ``--consensus-plugin`` option it adds an option group and a marker, and
nothing else.

Asked, it checks every name (an unknown plugin is a usage error that lists
the installed ones), then adds the kit's own test module
(``consensus/testing/suite.py``) to the paths pytest collects, next to the
project's tests.  That module's tests are parametrized over the named
plugins: one item per rule and plugin (``test_rule[NAME-RULE]``, skipped with
the plugin's reason when it declares it lacks a capability the rule needs),
and one chaos soak per plugin (``test_chaos[NAME]``: seeded runs under the
nemesis, each history checked for linearizability).  Every kit item carries
the ``consensus_kit`` marker, so ``-m consensus_kit`` runs the kit alone.

Options:

* ``--consensus-plugin NAME`` (repeatable): a plugin registered through the
  ``consensus.protocols`` entry point, or by ``register()`` in a module
  named with ``--consensus-import``;
* ``--consensus-import MODULE`` (repeatable): import it first;
* ``--consensus-chaos-runs N`` (default 10; 0 skips the soak) and
  ``--consensus-chaos-seed S`` (default 0): the soak's seeds ``S .. S+N-1``.

``rule_params(protocols)`` is the parametrization the suite uses, for a
project that would rather write its own test module around the rules.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterable

import pytest

from consensus.registry import UnknownProtocolError, get_protocol
from consensus.testing.rules import RULES, Rule

__all__ = ["SUITE", "rule_params"]

#: The kit's test module, added to the collected paths when a plugin is named.
SUITE = Path(__file__).with_name("suite.py")


def rule_params(protocols: Iterable[str], rules: Iterable[Rule] | None = None) -> list[Any]:
    """``pytest.param(protocol, rule)`` for every plugin and rule, id ``NAME-RULE``.

    A rule needing a capability the plugin lacks is marked skip, with the
    plugin's reason, so the report shows what was not checked and why.
    """
    params = []
    for protocol in protocols:
        for rule in RULES if rules is None else rules:
            missing = rule.missing(protocol)
            marks = [pytest.mark.skip(reason=f"{protocol} lacks {missing[0]}")] if missing else []
            params.append(pytest.param(protocol, rule, id=f"{protocol}-{rule.name}", marks=marks))
    return params


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("consensus", "consensus-compare conformance kit")
    group.addoption(
        "--consensus-plugin",
        action="append",
        default=[],
        dest="consensus_plugins",
        metavar="NAME",
        help="run every conformance rule and a chaos soak on protocol plugin NAME (repeatable)",
    )
    group.addoption(
        "--consensus-import",
        action="append",
        default=[],
        dest="consensus_imports",
        metavar="MODULE",
        help="import MODULE first (one that register()s a plugin without packaging it)",
    )
    group.addoption(
        "--consensus-chaos-runs",
        type=int,
        default=10,
        metavar="N",
        help="seeded chaos runs per plugin (default 10; 0: no soak)",
    )
    group.addoption(
        "--consensus-chaos-seed",
        type=int,
        default=0,
        metavar="S",
        help="the first chaos seed (default 0)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "consensus_kit: a consensus-compare conformance kit test (--consensus-plugin)"
    )
    protocols = config.getoption("consensus_plugins")
    if not protocols:
        return
    for module in config.getoption("consensus_imports"):
        importlib.import_module(module)
    for name in protocols:
        try:
            get_protocol(name)
        except UnknownProtocolError as exc:
            raise pytest.UsageError(f"--consensus-plugin: {exc}") from None
    if str(SUITE) not in config.args:
        config.args.append(str(SUITE))
