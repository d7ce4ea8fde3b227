"""consensus.testing: the conformance kit a plugin author runs on their own plugin.

Theory of operation
-------------------
A protocol plugin is correct as a replicated log when it follows the rules
every plugin in this repository is held to: agreement, exactly-once
application of retried requests, safety and progress under partitions,
message loss, duplication and reordering, recovery from the write-ahead log,
leader failover, determinism from the seed, and linearizable histories,
plus a chaos soak (a nemesis of crashes, partitions and network faults, each
history checked for linearizability).  The kit runs them on the
deterministic simulator through the plugin-neutral surface only, so any
plugin registered by name can be checked, installed (entry point group
``consensus.protocols``) or ``register()``\\ ed at run time.

Three ways to run it:

* ``pytest --consensus-plugin=NAME`` in any project with this package
  installed (``consensus.testing.plugin``, registered with pytest through
  the ``pytest11`` entry point): every rule and the soak become test items;
* from Python or unittest: every rule is a plain function
  ``rule(protocol, **options)`` (``consensus.testing.rules``, all of them in
  ``RULES``) raising ``AssertionError`` with the seed and a replay line;
  ``check_chaos(protocol, runs)`` is the soak;
* piece by piece, for scenarios of one's own: the workload and invariant
  helpers below, and the simulator's harness API (``Simulator.propose``,
  ``on_apply``, ``reconnect``, ``network.rule``, ``snapshot``).

What a plugin cannot do, it declares in its ``ProtocolSpec.lacks``
(capability -> why, capabilities in ``consensus.registry.CAPABILITIES``); the
rules that need it are skipped with that reason.  docs/writing-a-plugin.md
walks through a plugin from the contract to passing the kit.

This package is the top layer of ``consensus``: it may import everything in
it, and nothing in ``consensus`` imports it.  pytest is needed only by
``consensus.testing.plugin`` and ``suite``; nothing here imports them.
"""

from consensus.registry import CAPABILITIES
from consensus.testing.chaos import ChaosResult, chaos_config, chaos_run, chaos_runs, check_chaos
from consensus.testing.invariants import (
    Agreement,
    applied_index,
    applied_requests,
    assert_every_acked_request_applied_everywhere,
    assert_linearizable,
    assert_prefix_agreement,
    converged,
    log_of,
)
from consensus.testing.nemesis import Nemesis, admin_request, step_admin
from consensus.testing.rules import RULES, Rule, has, lacks, random_faults_once
from consensus.testing.workload import acked, closed_loop, finished, random_crashes, retry_late

__all__ = [
    "Agreement",
    "CAPABILITIES",
    "ChaosResult",
    "Nemesis",
    "RULES",
    "Rule",
    "acked",
    "admin_request",
    "applied_index",
    "applied_requests",
    "assert_every_acked_request_applied_everywhere",
    "assert_linearizable",
    "assert_prefix_agreement",
    "chaos_config",
    "chaos_run",
    "chaos_runs",
    "check_chaos",
    "closed_loop",
    "converged",
    "finished",
    "has",
    "lacks",
    "log_of",
    "random_crashes",
    "random_faults_once",
    "retry_late",
    "step_admin",
]
