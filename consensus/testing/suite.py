"""The conformance kit as pytest collects it: ``pytest --consensus-plugin=NAME``.

Not collected by a plain pytest run: ``consensus.testing.plugin`` adds this
file to the collected paths only when a plugin is named, and parametrizes its
tests over the named plugins (see that module).
"""

from __future__ import annotations

import pytest

from consensus.testing.chaos import check_chaos
from consensus.testing.plugin import rule_params
from consensus.testing.rules import Rule

pytestmark = pytest.mark.consensus_kit


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    protocols = metafunc.config.getoption("consensus_plugins", default=[])
    if "rule" in metafunc.fixturenames:
        metafunc.parametrize(("protocol", "rule"), rule_params(protocols))
    elif "protocol" in metafunc.fixturenames:
        metafunc.parametrize("protocol", protocols)


def test_rule(protocol: str, rule: Rule) -> None:
    rule(protocol)


def test_chaos(protocol: str, pytestconfig: pytest.Config) -> None:
    runs = pytestconfig.getoption("consensus_chaos_runs")
    if runs <= 0:
        pytest.skip("--consensus-chaos-runs 0")
    check_chaos(protocol, runs=runs, seed=pytestconfig.getoption("consensus_chaos_seed"))
