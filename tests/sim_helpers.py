"""Simulator test helpers shared by the protocol suites.

``Agreement`` is a safety invariant for any plugin: used as a ``run_until``
predicate it checks, after every event, that no two nodes ever applied
different payloads at one index.
"""

from __future__ import annotations

from typing import Any

from consensus.commands import requests_in
from consensus.replica import StateSnapshot
from consensus.sim import Simulator


def log_of(sim: Simulator, node: int) -> dict[int, Any]:
    """index -> payload applied by the node's current incarnation (snapshots skipped)."""
    return {i: p for i, p in sim.applied(node) if not isinstance(p, StateSnapshot)}


def applied_requests(sim: Simulator, node: int) -> set[tuple[int, int]]:
    return {(r.client_id, r.seq) for p in log_of(sim, node).values() for r in requests_in(p)}


def finished(ops: list[Any], total: int) -> Any:
    """A predicate: all ``total`` operations were submitted and are done (cheap per call)."""
    first_pending = 0

    def check() -> bool:
        nonlocal first_pending
        while first_pending < len(ops) and ops[first_pending].done:
            first_pending += 1
        return first_pending == len(ops) == total

    return check


# -- cost ---------------------------------------------------------------------------


class Agreement:
    """A ``run_until`` predicate that checks, after every event, that no two nodes
    ever applied different payloads at one index (cheap: only new entries)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.merged: dict[int, Any] = {}
        self.cursor: dict[int, tuple[Any, int]] = {}

    def __call__(self) -> bool:
        for n in self.sim.up_nodes():
            host = self.sim.host(n)
            seen_host, pos = self.cursor.get(n, (None, 0))
            if seen_host is not host:
                pos = 0
            applied = host.applied
            for index, payload in applied[pos:]:
                if not isinstance(payload, StateSnapshot):
                    held = self.merged.setdefault(index, payload)
                    assert held == payload, f"node {n} applied {payload!r} at {index}, not {held!r}"
            self.cursor[n] = (host, len(applied))
        return False
