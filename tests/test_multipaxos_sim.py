"""Multi-Paxos on the deterministic simulator: agreement, faults, recovery, cost.

The scenarios every plugin must pass (agreement with clients at every node,
a deaf minority, an unreliable network, randomized faults) are in
``test_conformance.py``; this file keeps what is particular to a
distinguished leader and its ballots.

Every test uses a fixed seed, so a failure reproduces exactly.  After each
scenario the safety check is that all nodes applied one common sequence (each
a prefix of the longest), every acknowledged request is in it, and, where the
workload allows, that the client history is linearizable.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from sim_helpers import applied_requests, finished, log_of, random_crashes

from consensus.checker.linearizability import check
from consensus.commands import Append, Put, Request, requests_in
from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.sim.simulator import Simulator
from protocols.multipaxos import MultiPaxos

pytestmark = pytest.mark.filterwarnings("error")


def cluster(nodes: int = 3, seed: int = 7, **kwargs: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol="multipaxos", nodes=nodes, seed=seed, **kwargs))


def mp(sim: Simulator, node: int) -> MultiPaxos:
    replica = sim.replica(node)
    assert isinstance(replica, MultiPaxos)
    return replica


def elect(sim: Simulator, among: list[int] | None = None, timeout: float = 5.0) -> int:
    nodes = sim.up_nodes() if among is None else among
    assert sim.run_until(lambda: len([n for n in sim.leaders() if n in nodes]) == 1, timeout)
    return [n for n in sim.leaders() if n in nodes][0]


def assert_one_sequence(sim: Simulator, nodes: list[int] | None = None) -> None:
    """Every node applied, slot by slot, the same payloads, without gaps."""
    logs = [log_of(sim, n) for n in (nodes or sim.up_nodes())]
    merged: dict[int, Any] = {}
    for log in logs:
        for index, payload in log.items():
            assert merged.setdefault(index, payload) == payload, f"slot {index} differs"
    for n in nodes or sim.up_nodes():
        indexes = [i for i, _ in sim.applied(n)]
        assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)


def caught_up(sim: Simulator) -> bool:
    commits = {mp(sim, n).log.commit_index for n in sim.up_nodes()}
    return len(commits) == 1


def closed_loop(
    sim: Simulator, clients: int, per_client: int, node: int | None = None, keys: int = 3
) -> list[Any]:
    """``clients`` clients, each submitting ``per_client`` appends one after another."""
    ops: list[Any] = []

    def start(c: int) -> None:
        client = sim.client()
        sent = 0

        def go(_prev: Any = None) -> None:
            nonlocal sent
            if sent < per_client:
                sent += 1
                command = Append(key=f"k{(c + sent) % keys}", value=f"{c}.{sent} ")
                ops.append(client.submit(command, node=node, on_done=go))

        go()

    for c in range(clients):
        start(c)
    return ops


@pytest.mark.parametrize("nodes", [3, 5])
def test_steady_state_commit_costs_one_round_trip_at_the_leader(nodes: int) -> None:
    d = 0.01
    sim = cluster(nodes, seed=3, network=NetworkConfig(delay=Delay.constant(d)))
    leader = elect(sim)
    sim.run_for(0.5)
    before = sim.message_counts()
    op = sim.submit(Put(key="x", value="1"), node=leader)
    assert sim.run_until(lambda: op.done, timeout=1.0)
    assert op.ok and op.complete - op.invoke == pytest.approx(2 * d)
    sim.run_for(0.001)
    cost = sim.message_counts() - before
    assert cost["Accept"] == nodes - 1 and cost["Prepare"] == 0


def test_phase1_runs_once_per_leader_not_per_command() -> None:
    sim = cluster(3, seed=5)
    leader = elect(sim)
    ops = closed_loop(sim, clients=3, per_client=20, node=leader)
    assert sim.run_until(finished(ops, 60), timeout=10.0)
    assert all(op.ok for op in ops)
    assert sum(mp(sim, n).counters["phase1_runs"] for n in range(3)) == 1
    assert sim.message_counts()["Prepare"] == 2


# -- agreement ----------------------------------------------------------------------


def test_leader_crash_elects_a_new_leader_and_loses_no_chosen_value() -> None:
    sim = cluster(5, seed=13)
    old = elect(sim)
    ops = closed_loop(sim, clients=4, per_client=10)
    assert sim.run_until(finished(ops, 40), timeout=10.0)
    chosen = {(op.client, op.seq) for op in ops if op.ok}
    sim.crash(old)
    new = elect(sim)
    assert new != old
    assert mp(sim, new).counters["phase1_runs"] >= 1
    more = closed_loop(sim, clients=4, per_client=10)
    assert sim.run_until(finished(more, 40), timeout=10.0)
    assert all(op.ok for op in more)
    sim.restart(old)
    assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    assert_one_sequence(sim)
    for n in range(5):
        assert chosen <= applied_requests(sim, n)  # nothing chosen was lost
    assert check(sim.history).ok is True


def test_preempted_leader_steps_down_when_another_node_wins_phase1() -> None:
    sim = cluster(3, seed=17)
    old = elect(sim)
    sim.isolate(old)
    rest = [n for n in range(3) if n != old]
    new = elect(sim, among=rest)
    # Cut off, the old leader stepped down (check quorum) and keeps retrying phase 1.
    assert sim.run_until(lambda: mp(sim, old).role != "leader", timeout=1.0)
    assert mp(sim, old).counters["quorum_lost"] == 1
    sim.heal()
    settled = lambda: sim.leaders() == [new] and all(mp(sim, n).leader() == new for n in range(3))  # noqa: E731
    assert sim.run_until(settled, timeout=2.0)
    sim.run_for(2.0)
    assert settled()  # the returning node's lower ballot was refused; no disruption


# -- faults -------------------------------------------------------------------------


def test_minority_partition_cannot_decide_while_the_majority_can() -> None:
    sim = cluster(5, seed=23)
    leader = elect(sim)
    minority = [leader, (leader + 1) % 5]
    majority = [n for n in range(5) if n not in minority]
    sim.partition(minority, majority)
    stuck = sim.submit(Put(key="m", value="minority"), node=leader)
    sim.run_for(0.1)
    assert not stuck.done and mp(sim, leader).log.commit_index == 0
    new = elect(sim, among=majority)
    ops = closed_loop(sim, clients=3, per_client=10, node=new)
    assert sim.run_until(finished(ops, 30), timeout=10.0)
    majority_commits = lambda: all(mp(sim, n).log.commit_index >= 30 for n in majority)  # noqa: E731
    assert sim.run_until(majority_commits, timeout=1.0)
    assert all(mp(sim, n).log.commit_index == 0 for n in minority)
    sim.heal()
    assert sim.run_until(lambda: caught_up(sim) and stuck.done, timeout=10.0)
    assert_one_sequence(sim)
    assert sim.leaders() == [new]
    assert check(sim.history).ok is True


def test_hundreds_of_slots_under_random_crashes_apply_one_sequence() -> None:
    sim = cluster(5, seed=31, network=NetworkConfig(delay=Delay.uniform(0.001, 0.004)))
    ops = closed_loop(sim, clients=8, per_client=40)
    random_crashes(sim, random.Random(31), 40, max_down=2)
    assert sim.run_until(finished(ops, 320), timeout=30.0)
    assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    assert_one_sequence(sim)
    acked = {(op.client, op.seq) for op in ops if op.ok}
    assert len(acked) >= 300
    for n in range(5):
        assert acked <= applied_requests(sim, n)
    assert sum(mp(sim, n).counters["leaders_seen"] for n in range(5)) > 5


def test_restarted_node_reemits_committed_entries_from_slot_1() -> None:
    sim = cluster(3, seed=37)
    leader = elect(sim)
    ops = closed_loop(sim, clients=2, per_client=10, node=leader)
    assert sim.run_until(finished(ops, 20), timeout=5.0)
    follower = (leader + 1) % 3
    sim.crash(follower)
    sim.restart(follower)
    assert sim.applied(follower) == []
    assert sim.run_until(lambda: caught_up(sim), timeout=2.0)
    assert [i for i, _ in sim.applied(follower)] == list(range(1, 21))
    assert_one_sequence(sim)


def test_snapshots_truncate_the_log_and_a_lagging_node_installs_one() -> None:
    sim = cluster(3, seed=41, snapshot_every=20)
    leader = elect(sim)
    lagging = (leader + 1) % 3
    sim.crash(lagging)
    ops = closed_loop(sim, clients=4, per_client=25, node=leader)
    assert sim.run_until(finished(ops, 100), timeout=10.0)
    assert mp(sim, leader).log.snapshot_index >= 80
    assert len(mp(sim, leader).log) < 30  # the prefix is gone from memory
    sim.restart(lagging)
    assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    assert mp(sim, lagging).counters["snapshots_installed"] >= 1
    assert sim.host(lagging).sm.data == sim.host(leader).sm.data  # type: ignore[attr-defined]
    # A leader that restarts from its own snapshot record serves the rest.
    sim.crash(leader)
    sim.restart(leader)
    more = closed_loop(sim, clients=2, per_client=5)
    assert sim.run_until(finished(more, 10), timeout=10.0)
    assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    assert all(sim.host(n).sm.data == sim.host(lagging).sm.data for n in range(3))  # type: ignore[attr-defined]


def test_requests_at_a_deposed_leader_are_retried_not_lost() -> None:
    sim = cluster(3, seed=43)
    leader = elect(sim)
    sim.isolate(leader)
    op = sim.submit(Put(key="x", value="v"), node=leader)
    sim.run_for(1.0)
    sim.heal()
    assert sim.run_until(lambda: op.done, timeout=10.0)
    assert op.ok
    assert sim.run_until(lambda: caught_up(sim), timeout=2.0)
    for n in range(3):
        values = [
            r for p in log_of(sim, n).values() for r in requests_in(p) if isinstance(r, Request)
        ]
        assert (op.client, op.seq) in {(r.client_id, r.seq) for r in values}
