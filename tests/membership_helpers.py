"""Helpers shared by the membership suites of Raft and Multi-Paxos.

``cluster`` builds a simulated cluster of ``nodes`` servers whose initial
voters are ``members`` (the rest are spares), ``change_members`` asks for a
new membership and waits for it, and
``assert_linearizable_through_changes`` runs the common scenario: four
clients reading and writing two keys while the membership changes five
times and a leader crashes once, then checks the history and that every node
applied the same sequence.
"""

from __future__ import annotations

import random
from typing import Any

from consensus.checker.linearizability import check
from consensus.commands import ChangeMembership, Get, Put
from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.replica import StateSnapshot
from consensus.sim.simulator import Simulator

OLD = (0, 1, 2)


def cluster(
    protocol: str, nodes: int = 5, members: tuple[int, ...] = OLD, seed: int = 7, **kw: Any
) -> Simulator:
    kw.setdefault("network", NetworkConfig(delay=Delay.uniform(0.001, 0.003)))
    config = ClusterConfig(protocol=protocol, nodes=nodes, members=members, seed=seed, **kw)
    return Simulator(config)


def one_leader(sim: Simulator, among: tuple[int, ...]) -> bool:
    return len([n for n in sim.leaders() if n in among]) == 1


def members(sim: Simulator, node: int) -> tuple[int, ...]:
    return tuple(sim.replica(node).status()["members"])


def change_members(sim: Simulator, new: tuple[int, ...], timeout: float = 10.0) -> None:
    op = sim.submit(ChangeMembership(members=new))
    assert sim.run_until(lambda: op.done, timeout=timeout), f"change to {new} did not finish"
    assert op.ok and op.result == new


def write(sim: Simulator, count: int, prefix: str = "k", timeout: float = 10.0) -> None:
    ops = [sim.submit(Put(key=f"{prefix}{i}", value=str(i))) for i in range(count)]
    assert sim.run_until(lambda: all(op.done for op in ops), timeout=timeout)
    assert all(op.ok for op in ops)


def serve_without(sim: Simulator, crashed: Any, voters: tuple[int, ...], prefix: str) -> None:
    """Crash ``crashed``: the ``voters`` still elect one leader among them and
    commit writes, and every node left applied one sequence."""
    for n in crashed:
        sim.crash(n)
    assert sim.run_until(lambda: one_leader(sim, voters), timeout=5)
    write(sim, 5, prefix=prefix)
    assert_same_applied_sequence(sim)


def assert_same_applied_sequence(sim: Simulator) -> None:
    """State Machine Safety: no two nodes applied different payloads at one index
    (a node that installed a snapshot applied only the entries after it)."""
    seen: dict[int, Any] = {}
    for n in sim.up_nodes():
        for index, payload in sim.applied(n):
            if not isinstance(payload, StateSnapshot):
                assert seen.setdefault(index, payload) == payload, f"node {n} at {index}"


def assert_linearizable_through_changes(sim: Simulator, seed: int) -> None:
    """Client traffic through five membership changes and a leader crash."""
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    rng = random.Random(seed)
    clients = [sim.client() for _ in range(4)]
    stop = False

    def issue(client: Any) -> None:
        if stop:
            return
        key = rng.choice("ab")
        command: Any = Get(key=key)
        if rng.random() < 0.5:
            command = Put(key=key, value=f"c{client.client_id}.{client.seq + 1}")
        sim.after(
            rng.uniform(0, 0.01), lambda: client.submit(command, on_done=lambda op: issue(client))
        )

    for client in clients:
        issue(client)
    for new in [(0, 1, 2, 3, 4), (1, 3, 4), (0, 1, 2), (2, 3, 4), (0, 2, 4)]:
        sim.run_for(0.2)
        change_members(sim, new, timeout=20)
        if new == (1, 3, 4):
            assert sim.run_until(lambda new=new: one_leader(sim, new), timeout=5)
            (lead,) = sim.leaders()
            sim.crash(lead)
            sim.run_for(0.3)
            sim.restart(lead)
    stop = True
    assert sim.run_until(lambda: all(op.done for op in sim.history), timeout=20)
    kv = [op for op in sim.history if op.is_kv]
    assert len(kv) > 100
    result = check(kv, timeout=10)
    assert result.ok is True, [v.describe() for v in result.violations]
    assert_same_applied_sequence(sim)
