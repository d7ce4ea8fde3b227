"""Conformance: the kit's rules (``consensus.testing.rules``) on every installed plugin.

Theory of operation
-------------------
The rules live in the conformance kit, so that a plugin author runs exactly
these on their own plugin (``pytest --consensus-plugin=NAME``).  Here every
rule runs once per installed plugin: each name under the
``consensus.protocols`` entry-point group, so a plugin installed later is
picked up with no change here.  Plugins ``register()``ed at run time are not
installed; in this process they are other modules' test doubles (``probe``,
``stuck``), present or not depending on import order.

Two opt-outs, each with its reason:

* ``NOT_CONFORMANT`` (this file): installed on purpose but meant to fail (the
  broken variant that proves the checkers can fail).  Never run here.
* ``ProtocolSpec.lacks`` (the plugin's own declaration): a capability it does
  not have.  A rule that needs it is collected for that plugin and skipped
  with the reason, so the report shows it.  A plugin that declares nothing
  must pass every rule.

The randomized rule runs here under hypothesis (which shrinks a failing
schedule); the kit's ``random_faults`` draws its schedules from a seed
instead, so it needs no hypothesis.  Every failure names its seed.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from consensus.registry import CAPABILITIES, ENTRY_POINT_GROUP, get_protocol
from consensus.testing import rules
from consensus.testing.plugin import rule_params
from consensus.testing.rules import RULES, Rule

pytestmark = pytest.mark.filterwarnings("error")

#: Installed plugins that must not be held to the rules, and why.
NOT_CONFORMANT = {
    "raft-stale-reads": "broken on purpose (bench/broken.py): proves the checker can fail",
}

INSTALLED = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
CONFORMANT = [name for name in INSTALLED if name not in NOT_CONFORMANT]

#: The randomized rule runs below under hypothesis instead of the kit's seeded draw.
SEEDED = [rule for rule in RULES if rule is not rules.random_faults]
#: ... on the plugins it applies to (skipped, with the reason, for the others).
RANDOMIZED = rule_params(CONFORMANT, [rules.random_faults])


# -- the opt-outs themselves -------------------------------------------------------------


def test_every_opt_out_names_an_installed_plugin_and_a_known_capability() -> None:
    # A renamed plugin must not silently escape its opt-out, nor keep a stale one.
    assert set(NOT_CONFORMANT) <= set(INSTALLED)
    assert all(set(get_protocol(name).lacks) <= set(CAPABILITIES) for name in INSTALLED)
    assert CONFORMANT and all(get_protocol(name).name == name for name in CONFORMANT)
    # The baseline's declaration is what keeps it out of the failover rule.
    assert set(rules.lacks("sequencer")) == {"failover"}
    assert all(set(rule.needs) <= set(CAPABILITIES) for rule in RULES)


# -- every rule on every plugin ------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "rule"), rule_params(CONFORMANT, SEEDED))
def test_rule(protocol: str, rule: Rule) -> None:
    rule(protocol)


# -- randomized faults, safety checked after every event ------------------------------------


@pytest.mark.parametrize(("protocol", "rule"), RANDOMIZED)
@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    loss=st.sampled_from(rules.LOSSES),
    schedule=st.lists(
        st.tuples(st.sampled_from(rules.FAULTS), st.integers(0, 4), st.floats(0.02, 0.3)),
        max_size=8,
    ),
)
def test_random_crashes_and_partitions_keep_agreement(
    protocol: str, rule: Rule, seed: int, loss: float, schedule: list[tuple[str, int, float]]
) -> None:
    note(f"protocol={protocol!r} seed={seed} loss={loss} schedule={schedule}")
    rules.random_faults_once(protocol, seed, loss, schedule)
