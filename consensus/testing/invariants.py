"""Safety and progress checks on a simulated cluster, for any plugin.

Theory of operation
-------------------
A replicated log is correct when every node applies the same entries in the
same order (agreement, checked as prefix agreement between nodes), every
acknowledged request takes effect everywhere (durability), and the clients'
history is linearizable.  Each check here reads only what the simulator
exposes for every plugin: what each host applied (``Simulator.applied``),
its state machine's applied index, the recorded history.  None looks at a
plugin's internals.

``Agreement`` is the invariant checked after every event: used as a
``run_until`` predicate it never stops the run, it raises ``AssertionError``
the moment two nodes applied different payloads at one index.  It reads only
entries it has not seen yet, so it stays cheap over long runs.

Snapshots: a node restored from a snapshot reports a ``StateSnapshot`` where
its entries were; ``log_of`` and the checks skip those, and
``assert_prefix_agreement`` is meant for runs without snapshots.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from consensus.checker.history import Operation
from consensus.checker.linearizability import check
from consensus.commands import requests_in
from consensus.replica import StateSnapshot
from consensus.sim.simulator import Simulator
from consensus.testing.workload import acked

__all__ = [
    "Agreement",
    "applied_index",
    "applied_requests",
    "assert_every_acked_request_applied_everywhere",
    "assert_linearizable",
    "assert_prefix_agreement",
    "converged",
    "log_of",
]


def log_of(sim: Simulator, node: int) -> dict[int, Any]:
    """index -> payload applied by the node's current incarnation (snapshots skipped)."""
    return {i: p for i, p in sim.applied(node) if not isinstance(p, StateSnapshot)}


def applied_requests(sim: Simulator, node: int) -> set[tuple[int, int]]:
    """(client, seq) of every request in the entries the node applied."""
    return {(r.client_id, r.seq) for p in log_of(sim, node).values() for r in requests_in(p)}


def applied_index(sim: Simulator, node: int) -> int:
    return sim.host(node).sm.applied_index


def converged(sim: Simulator) -> Callable[[], bool]:
    """A cheap predicate: every live node has applied up to the same index (> 0).

    With prefix agreement this means every live node applied the same entries.
    """

    def check() -> bool:
        indexes = {sim.host(n).sm.applied_index for n in sim.up_nodes()}
        return len(indexes) == 1 and indexes != {0}

    return check


def assert_prefix_agreement(sim: Simulator, nodes: Iterable[int] | None = None) -> None:
    """Every node applied indexes ``1..k`` without gaps or repeats, and every
    node's sequence is a prefix of the longest one (runs without snapshots)."""
    sequences = {n: sim.applied(n) for n in (sim.up_nodes() if nodes is None else nodes)}
    longest = max(sequences.values(), key=len)
    for n, seq in sequences.items():
        assert [i for i, _ in seq] == list(range(1, len(seq) + 1)), f"node {n}: gaps or repeats"
        assert seq == longest[: len(seq)], f"node {n} applied a different sequence"


def assert_every_acked_request_applied_everywhere(sim: Simulator, ops: list[Operation]) -> None:
    """Every live node applied every request a client was told succeeded."""
    done = acked(ops)
    for n in sim.up_nodes():
        missing = done - applied_requests(sim, n)
        assert not missing, f"node {n} never applied acknowledged requests {sorted(missing)[:5]}"


def assert_linearizable(sim: Simulator, timeout: float = 20.0) -> None:
    """The recorded client history is linearizable (minimal witnesses on failure)."""
    result = check(sim.history, timeout=timeout)
    if result.ok is None:
        raise AssertionError(
            f"linearizability check inconclusive: the checker ran out of its {timeout} s"
            f" on keys {result.unknown_keys} ({result.operations} operations)"
        )
    assert result.ok is True, "\n".join(v.describe() for v in result.violations)


class Agreement:
    """No two nodes ever apply different payloads at one index, checked as they apply.

    Subscribes to ``Simulator.on_apply``: every entry any node applies from
    now on (restarted nodes included) is compared with what any node applied
    at its index before, and a difference raises ``AssertionError`` at once,
    from inside the run.  Entries the live nodes applied before it was built
    are checked too.  Calling it returns False, so ``run_until(safety)`` or
    ``run_until(lambda: safety() or done())`` reads as before; ``close()``
    unsubscribes.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.merged: dict[int, Any] = {}
        for n in sim.up_nodes():
            for index, payload in sim.applied(n):
                self._check(n, index, payload)
        self.close = sim.on_apply(self._check)

    def _check(self, node: int, index: int, payload: Any) -> None:
        if isinstance(payload, StateSnapshot):
            return
        held = self.merged.setdefault(index, payload)
        assert held == payload, f"node {node} applied {payload!r} at {index}, not {held!r}"

    def __call__(self) -> bool:
        return False
