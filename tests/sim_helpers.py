"""Simulator test helpers shared by the protocol suites.

``Agreement`` is a safety invariant for any plugin: used as a ``run_until``
predicate it checks, after every event, that no two nodes ever applied
different payloads at one index.  The workload, convergence and final-state
helpers below use only the simulator and the host's state machine, never a
plugin's internals, so the conformance suite can run them on every plugin.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable

from consensus.checker.history import Operation
from consensus.commands import Append, Request, requests_in
from consensus.replica import StateSnapshot
from consensus.sim.clients import Attempt
from consensus.sim.simulator import Simulator


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


def closed_loop(
    sim: Simulator,
    clients: int,
    per_client: int,
    nodes: list[int] | None = None,
    keys: int = 3,
    own_key: bool = False,
) -> list[Operation]:
    """``clients`` clients, each submitting ``per_client`` appends one after another.

    Client ``c`` submits to ``nodes[c % len(nodes)]`` (default: the simulator's
    rotation, then the node that answered it last).  Values are ``"<c>.<n> "``;
    keys are shared round robin among ``keys`` keys, or with ``own_key`` each
    client appends to ``c<client_id>`` only, so the final value spells out
    how often and in which order that client's appends took effect.
    """
    ops: list[Operation] = []

    def start(c: int) -> None:
        client = sim.client()
        node = None if nodes is None else nodes[c % len(nodes)]
        count = 0

        def go(_prev: Any = None) -> None:
            nonlocal count
            if count < per_client:
                count += 1
                key = f"c{client.client_id}" if own_key else f"k{(c + count) % keys}"
                ops.append(client.submit(Append(key=key, value=f"{c}.{count} "), node, go))

        go()

    for c in range(clients):
        start(c)
    return ops


def acked(ops: Iterable[Operation]) -> set[tuple[int, int]]:
    """(client, seq) of every operation answered ``ok``."""
    return {(op.client, op.seq) for op in ops if op.ok}


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


def retry_late(sim: Simulator, op: Operation, node: int) -> None:
    """Deliver to ``node`` a retry of ``op`` that crossed its answer on the way.

    The same ``(client, seq)`` and command are proposed again, as a client
    whose reply was delayed would; its answer is ignored (``op`` is done).
    """
    assert op.done
    request = Request(client_id=op.client, seq=op.seq, command=op.command)
    # The waiter names an attempt generation that never existed, so the simulator
    # drops its answer.  The replica's timers are picked up at its next event.
    sim.host(node).submit(sim.now, request, (None, Attempt(op=op, node=node), -1))


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


def random_crashes(
    sim: Simulator,
    rng: random.Random,
    rounds: int,
    *,
    step: float = 0.15,
    max_down: int = 2,
    watch: Callable[[], bool] | None = None,
) -> None:
    """``rounds`` times: run ``step`` virtual seconds, then restart the node down
    longest (even odds) or crash a random live one (at most ``max_down`` down at
    once); every node is restarted at the end.  With ``watch``, each step stops
    early once ``watch()`` holds (a safety check after every event)."""
    down: list[int] = []
    for _ in range(rounds):
        if watch is None:
            sim.run_for(step)
        else:
            sim.run_until(watch, timeout=step)
        if down and rng.random() < 0.5:
            sim.restart(down.pop(0))
        elif len(down) < max_down:
            victim = rng.choice([n for n in sim.node_ids if n not in down])
            sim.crash(victim)
            down.append(victim)
    for node in down:
        sim.restart(node)
