"""Single-decree Paxos instances on the deterministic simulator.

In the spirit of the classic Paxos lab suites: what is particular to
leaderless instances (message costs, duels between concurrent proposers,
filling holes, forgetting, snapshots).  The lab scenarios every plugin must
pass (crashed and partitioned minorities, an unreliable network, many slots
under random crashes, randomized faults) are in ``test_conformance.py``.
Every test uses a fixed seed; after each scenario all nodes must have applied
one common sequence and every acknowledged request must be in it.
"""

from __future__ import annotations

from typing import Any

import pytest
from sim_helpers import applied_requests, closed_loop, finished, log_of

from consensus.checker.linearizability import check
from consensus.commands import Put
from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.replica import StateSnapshot
from consensus.sim.simulator import Simulator
from protocols.paxos import Paxos

pytestmark = pytest.mark.filterwarnings("error")


def cluster(nodes: int = 3, seed: int = 7, **kwargs: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol="paxos", nodes=nodes, seed=seed, **kwargs))


def px(sim: Simulator, node: int) -> Paxos:
    replica = sim.replica(node)
    assert isinstance(replica, Paxos)
    return replica


def assert_one_sequence(sim: Simulator, nodes: list[int] | None = None) -> None:
    merged: dict[int, Any] = {}
    for n in nodes or sim.up_nodes():
        for index, payload in log_of(sim, n).items():
            assert merged.setdefault(index, payload) == payload, f"slot {index} differs"
        indexes = [i for i, _ in sim.applied(n)]
        assert indexes == sorted(set(indexes))


def same_applied(sim: Simulator, nodes: list[int] | None = None) -> bool:
    return len({px(sim, n).applied for n in (nodes or sim.up_nodes())}) == 1


@pytest.mark.parametrize("nodes", [3, 5])
def test_one_instance_costs_prepare_and_accept_round_trips(nodes: int) -> None:
    d = 0.01
    sim = cluster(nodes, seed=3, network=NetworkConfig(delay=Delay.constant(d)))
    sim.run_for(0.2)
    before = sim.message_counts()
    op = sim.submit(Put(key="x", value="1"), node=1)
    assert sim.run_until(lambda: op.done, timeout=1.0)
    assert op.ok and op.complete - op.invoke == pytest.approx(4 * d)
    sim.run_for(0.001)
    cost = sim.message_counts() - before
    assert cost["Prepare"] == cost["Accept"] == cost["Decided"] == nodes - 1


def test_hole_filling_leaves_the_slot_its_proposer_is_still_deciding() -> None:
    # One-way 20 ms: the others see slot 1 in use for 80 ms before its Decided,
    # longer than hole_delay.  Only a slot below a decided one is a hole.
    sim = cluster(3, seed=8, network=NetworkConfig(delay=Delay.constant(0.02)))
    op = sim.submit(Put(key="x", value="1"), node=0)
    assert sim.run_until(lambda: op.done and same_applied(sim), timeout=2.0)
    assert sim.message_counts()["Prepare"] == 2
    assert sum(px(sim, n).counters["hole_fills"] for n in range(3)) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_command_costs_the_same_on_a_slow_network(seed: int) -> None:
    sim = cluster(5, seed=seed, network=NetworkConfig(delay=Delay.uniform(0.015, 0.02)))
    op = sim.submit(Put(key="x", value="1"), node=0)
    assert sim.run_until(lambda: op.done and same_applied(sim), timeout=2.0)
    cost = sim.message_counts()
    del cost["Done"]  # idle gossip, not the command's
    assert sum(cost.values()) == 5 * 4  # Prepare, Promise, Accept, Accepted, Decided


@pytest.mark.parametrize("adapt", [True, False])
def test_timers_adapt_to_a_round_trip_longer_than_the_defaults(adapt: bool) -> None:
    # 100 ms round trips against a 0.1 s retry and a 0.05 s hole delay.
    network = NetworkConfig(delay=Delay.constant(0.05))
    sim = cluster(5, seed=1, network=network, options={"adapt_timers": adapt})
    ops = closed_loop(sim, clients=8, per_client=5, nodes=[0, 1, 2, 3, 4])
    assert sim.run_until(finished(ops, 40), timeout=120.0)
    assert all(op.ok for op in ops)
    mean = sum(op.complete - op.invoke for op in ops) / len(ops)
    per_op = sum(sim.message_counts().values()) / len(ops)
    if adapt:
        assert mean < 0.75 and per_op < 100
    else:  # the contrast: retries and hole fills preempt rounds still in flight
        assert mean > 2.0 and per_op > 500
    assert_one_sequence(sim)


def test_no_node_is_leader_and_every_node_takes_requests() -> None:
    sim = cluster(3, seed=4)
    ops = [sim.submit(Put(key=f"k{n}", value="v"), node=n) for n in range(3)]
    assert sim.run_until(finished(ops, 3), timeout=2.0)
    assert sim.leaders() == [] and all(op.ok and op.retries == 0 for op in ops)


# -- agreement ----------------------------------------------------------------------


def test_agreement_on_many_slots_with_concurrent_proposers() -> None:
    sim = cluster(5, seed=11)
    ops = closed_loop(sim, clients=10, per_client=15, nodes=[0, 1, 2, 3, 4])
    assert sim.run_until(finished(ops, 150), timeout=20.0)
    assert all(op.ok for op in ops)
    assert sim.run_until(lambda: same_applied(sim), timeout=2.0)
    assert_one_sequence(sim)
    assert len(applied_requests(sim, 0)) == 150
    assert sum(px(sim, n).counters["duels"] for n in range(5)) > 0
    assert check(sim.history).ok is True


def test_deaf_minority_cannot_stop_the_others() -> None:
    sim = cluster(5, seed=13)
    deaf = [3, 4]
    for dst in deaf:
        for src in range(5):
            if src != dst:
                sim.cut(src, dst)
    ops = closed_loop(sim, clients=6, per_client=10, nodes=[0, 1, 2])
    assert sim.run_until(finished(ops, 60), timeout=10.0)
    assert all(op.ok for op in ops)
    assert all(px(sim, n).applied == 0 for n in deaf)
    sim.heal()
    # The deaf nodes hear a later slot (a peer's done) and fill their holes by Paxos.
    assert sim.run_until(lambda: same_applied(sim), timeout=5.0)
    assert_one_sequence(sim)
    assert all(px(sim, n).counters["hole_fills"] > 0 for n in deaf)


# -- forgetting and recovery -----------------------------------------------------------


def test_forgetting_frees_per_slot_state_once_every_node_is_done() -> None:
    sim = cluster(3, seed=31)
    ops = closed_loop(sim, clients=6, per_client=20)
    peak = 0

    def watch() -> bool:
        nonlocal peak
        peak = max(peak, *(px(sim, n).slot_state_count() for n in range(3)))
        return len(ops) == 120 and all(op.done for op in ops)

    assert sim.run_until(watch, timeout=20.0)
    assert peak >= 10
    sim.run_for(0.5)  # done reports reach everyone
    assert px(sim, 0).applied >= 100
    assert all(px(sim, n).slot_state_count() == 0 for n in range(3))
    assert all(px(sim, n).acceptor.floor == px(sim, n).applied + 1 for n in range(3))


def test_a_crashed_node_holds_forgetting_back_until_it_returns() -> None:
    sim = cluster(3, seed=37)
    first = closed_loop(sim, clients=2, per_client=5)
    assert sim.run_until(finished(first, 10), timeout=5.0)
    sim.run_for(0.5)
    sim.crash(2)
    ops = closed_loop(sim, clients=4, per_client=10, nodes=[0, 1])
    assert sim.run_until(finished(ops, 40), timeout=10.0)
    sim.run_for(0.5)
    kept = px(sim, 0).slot_state_count()
    assert kept >= 40  # node 2 may still need every slot after its last done
    sim.restart(2)
    assert sim.run_until(lambda: same_applied(sim), timeout=5.0)
    sim.run_for(1.5)
    assert all(px(sim, n).slot_state_count() == 0 for n in range(3))
    assert_one_sequence(sim)


def test_restarted_node_reapplies_slots_its_peers_have_forgotten() -> None:
    sim = cluster(3, seed=41)
    ops = closed_loop(sim, clients=3, per_client=10)
    assert sim.run_until(finished(ops, 30), timeout=5.0)
    sim.run_for(0.5)
    assert px(sim, 0).acceptor.floor > 30  # everyone forgot slots 1..30
    sim.crash(1)
    sim.restart(1)
    assert [i for i, _ in sim.applied(1)] == list(range(1, px(sim, 0).applied + 1))
    assert_one_sequence(sim)


def test_snapshots_replace_persisted_decisions() -> None:
    sim = cluster(3, seed=43, snapshot_every=10)
    ops = closed_loop(sim, clients=3, per_client=15)
    assert sim.run_until(finished(ops, 45), timeout=10.0)
    sim.run_for(0.5)
    records = sim.storage(2).load()  # type: ignore[attr-defined]
    assert sum(type(r).__name__ == "DecisionRecord" for r in records) < 15
    sim.crash(2)
    sim.restart(2)
    assert isinstance(sim.applied(2)[0][1], StateSnapshot)
    more = closed_loop(sim, clients=2, per_client=5)
    assert sim.run_until(finished(more, 10), timeout=5.0)
    assert sim.run_until(lambda: same_applied(sim), timeout=5.0)
    assert all(sim.host(n).sm.data == sim.host(0).sm.data for n in range(3))  # type: ignore[attr-defined]
