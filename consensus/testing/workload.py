"""Workloads and faults for conformance scenarios, through the simulator's public API.

Theory of operation
-------------------
Every helper here drives a ``Simulator`` the way a user would: simulated
clients (``closed_loop``), raw proposals (``retry_late``), crashes and
restarts (``random_crashes``).  None looks inside a plugin, so every rule
built from them runs on any plugin.  Randomness comes only from a
``random.Random`` the caller seeds, so a scenario replays from its seed.

Predicates (``finished``) are built to be cheap per call: ``run_until``
evaluates them after every event.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable

from consensus.checker.history import Operation
from consensus.commands import Append, Request
from consensus.sim.simulator import Simulator

__all__ = ["acked", "closed_loop", "finished", "random_crashes", "retry_late"]


def finished(ops: list[Any], total: int) -> Callable[[], bool]:
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


def retry_late(sim: Simulator, op: Operation, node: int) -> None:
    """Deliver to ``node`` a retry of ``op`` that crossed its answer on the way.

    The same ``(client, seq)`` and command are proposed again, as a client
    whose reply was delayed would; nobody listens for the answer (``op`` is
    done).
    """
    assert op.done
    sim.propose(node, Request(client_id=op.client, seq=op.seq, command=op.command))


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
