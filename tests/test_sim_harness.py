"""What a test harness needs from the simulator, beside simulated clients:
propose at one node and hear at once where the proposal went, subscribe to
what every node applies, reconnect one node, faults by message type and
direction, service-driven snapshots, and message sizes without the bytes wire.
"""

from __future__ import annotations

from typing import Any

import pytest
from probe import Ping, ping

from consensus.commands import Append, Put, Request, requests_in
from consensus.config import ClusterConfig, Delay, MessageRule, NetworkConfig, load_cluster_config
from consensus.host import ClientReply, ProposeResult
from consensus.replica import StateSnapshot
from consensus.sim.simulator import Simulator
from protocols.raft.messages import AppendEntries, AppendEntriesResponse

LEADERS = ["raft", "multipaxos", "sequencer"]  # the plugins that have a leader


def cluster(protocol: str, nodes: int = 3, seed: int = 3, **kwargs: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol=protocol, nodes=nodes, seed=seed, **kwargs))


def elected(sim: Simulator) -> int:
    """Commit one request through a client (electing a leader), then name the leader."""
    op = sim.submit(Put(key="warm", value="up"))
    assert sim.run_until(lambda: op.done and len(sim.leaders()) == 1, timeout=10.0)
    return sim.leaders()[0]


def applied_at(sim: Simulator, node: int, index: int) -> Any:
    return dict(sim.applied(node)).get(index)


# -- propose ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", LEADERS)
def test_propose_at_the_leader_is_accepted_at_once_with_the_index_it_gets_applied_at(
    protocol: str,
) -> None:
    sim = cluster(protocol)
    leader = elected(sim)
    result = sim.propose(leader, Put(key="x", value="1"))
    assert isinstance(result, ProposeResult)
    assert result.accepted and result.node == leader and result.index is not None
    assert sim.run_until(lambda: all(applied_at(sim, n, result.index) for n in range(3)), 5.0)
    for n in range(3):
        assert list(requests_in(applied_at(sim, n, result.index))) == [result.request]


@pytest.mark.parametrize("protocol", LEADERS)
def test_propose_at_a_follower_is_rejected_at_once_with_a_leader_hint(protocol: str) -> None:
    sim = cluster(protocol)
    leader = elected(sim)
    follower = next(n for n in range(3) if n != leader)
    result = sim.propose(follower, Put(key="x", value="1"))
    assert not result.accepted and result.index is None
    assert result.reason == "not_leader" and result.leader_hint == leader


def test_leaderless_paxos_takes_a_proposal_at_any_node_in_a_slot_of_its_own() -> None:
    sim = cluster("paxos")
    first = sim.propose(1, Append(key="k", value="a"))
    second = sim.propose(2, Append(key="k", value="b"))
    assert first.accepted and second.accepted
    assert first.index == 1 and second.index == 1  # each node's lowest free slot
    assert sim.run_until(lambda: len(sim.applied(0)) == 2, timeout=5.0)
    # Two proposers on one slot: one of them moved to the next.
    assert {p for _, p in sim.applied(0)} == {first.request, second.request}


def test_propose_arms_the_nodes_timers_so_the_proposal_leaves_at_once() -> None:
    # Raft appends, then flushes on a timer due now: proposing must schedule it.
    sim = cluster("raft")
    leader = elected(sim)
    sim.run_for(0.01)
    sim.propose(leader, Put(key="x", value="1"))
    assert sim.next_event_time() == sim.now


def test_a_retried_request_keeps_its_index_and_its_answer_reaches_on_reply() -> None:
    sim = cluster("raft")
    leader = elected(sim)
    replies: list[ClientReply] = []
    request = Request(client_id=99, seq=1, command=Append(key="k", value="once"))
    first = sim.propose(leader, request)
    again = sim.propose(leader, request, on_reply=replies.append)  # the latest waiter answers
    assert first.index == again.index is not None
    assert sim.run_until(lambda: bool(replies), timeout=5.0)
    assert replies[0].ok and replies[0].node == leader
    sim.run_for(0.2)
    assert sim.host(leader).sm.data["k"] == "once"  # type: ignore[attr-defined]
    assert len(sim.history) == 1  # raw proposals are not client operations


def test_propose_at_a_crashed_node_is_not_accepted_and_an_unknown_node_is_an_error() -> None:
    sim = cluster("sequencer")
    sim.crash(1)
    result = sim.propose(1, Put(key="x", value="1"))
    assert not result.accepted and result.reason == "down"
    with pytest.raises(ValueError, match="no node 7"):
        sim.propose(7, Put(key="x", value="1"))


def test_a_plugin_that_reports_no_placement_gives_no_index() -> None:
    sim = Simulator(ClusterConfig(protocol="probe", nodes=2))  # rejects every proposal
    assert sim.propose(0, Put(key="x", value="1")).reason == "probe"


# -- on_apply -----------------------------------------------------------------------------


def test_on_apply_reports_every_entry_of_every_node_across_restarts() -> None:
    sim = cluster("sequencer")
    seen: list[tuple[int, int, Any]] = []
    unsubscribe = sim.on_apply(lambda node, index, payload: seen.append((node, index, payload)))
    for i in range(3):
        sim.propose(0, Put(key=f"k{i}", value=str(i)))
    sim.run_for(0.3)
    assert [(i, p) for n, i, p in seen if n == 1] == sim.applied(1)
    assert sorted({n for n, _, _ in seen}) == [0, 1, 2]
    before = len(seen)
    sim.crash(1)
    sim.restart(1)
    sim.run_for(0.3)
    # The new incarnation applies its log again, from index 1.
    assert [(n, i) for n, i, _ in seen[before:]] == [(1, 1), (1, 2), (1, 3)]
    assert sim.incarnation(1) == 1
    unsubscribe()
    sim.propose(0, Put(key="later", value="x"))
    sim.run_for(0.3)
    assert len(seen) == before + 3


def test_a_node_restarting_from_a_snapshot_reports_it_then_the_entries_after_it() -> None:
    sim = cluster("raft")
    leader = elected(sim)
    for i in range(5):
        sim.propose(leader, Put(key=f"k{i}", value=str(i)))
    sim.run_for(0.5)
    follower = next(n for n in range(3) if n != leader)
    covered = sim.snapshot(follower)
    assert covered == len(sim.applied(follower)) > 1
    seen: list[tuple[int, Any]] = []
    sim.on_apply(
        lambda node, index, payload: seen.append((index, payload)) if node == follower else None
    )
    sim.crash(follower)
    sim.restart(follower)
    sim.propose(leader, Put(key="after", value="x"))
    sim.run_for(0.5)
    index, payload = seen[0]
    assert index == covered and isinstance(payload, StateSnapshot)
    assert [i for i, _ in seen[1:]] == [covered + 1]


# -- snapshot -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "paxos"])
def test_a_service_driven_snapshot_compacts_the_nodes_storage(protocol: str) -> None:
    sim = cluster(protocol)
    for i in range(6):
        op = sim.submit(Put(key=f"k{i}", value=str(i)))
        assert sim.run_until(lambda op=op: op.done, timeout=10.0)
    sim.run_for(0.5)
    records = len(sim.storage(1).load())  # type: ignore[attr-defined]
    assert sim.snapshot(1) == sim.host(1).sm.applied_index
    assert len(sim.storage(1).load()) < records  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="only at its applied index"):
        sim.snapshot(1, index=1)


def test_a_snapshot_before_anything_is_applied_does_nothing() -> None:
    sim = cluster("raft")
    assert sim.snapshot(0) == 0


# -- reconnect ----------------------------------------------------------------------------


def test_reconnect_restores_one_nodes_links_and_leaves_the_other_cuts() -> None:
    sim = Simulator(ClusterConfig(protocol="probe", nodes=4))
    sim.partition([0, 1], [2, 3])
    sim.isolate(1)
    sim.cut(2, 3)
    sim.reconnect(1)
    net = sim.network
    assert all(net.reachable(1, n) and net.reachable(n, 1) for n in range(4))
    assert not net.reachable(2, 3) and not net.reachable(0, 2)


# -- faults by message type and direction --------------------------------------------------


def probe(nodes: int = 3, **network: Any) -> Simulator:
    return Simulator(
        ClusterConfig(
            protocol="probe",
            nodes=nodes,
            network=NetworkConfig(delay=Delay.constant(0.001), **network),
        )
    )


def test_a_delay_rule_holds_back_one_direction_only() -> None:
    sim = probe()
    sim.network.rule(types=[Ping], src=0, dst=1, delay=0.05)
    ping(sim, 0)
    ping(sim, 1, 0)
    sim.run_for(1.0)
    assert [t for t, _, _ in sim.replica(1).received] == [pytest.approx(0.051)]
    assert [t for t, _, _ in sim.replica(2).received] == [pytest.approx(0.001)]
    assert [t for t, _, _ in sim.replica(0).received] == [pytest.approx(0.001)]


def test_loss_and_duplication_rules_match_by_type_name_and_can_be_removed() -> None:
    sim = probe()
    lost = sim.network.rule(types="Ping", dst=2, loss=1.0)
    twice = sim.network.rule(types=["Ping"], src=0, dst=1, duplicate=1.0)
    sim.network.rule(types=["SomethingElse"], loss=1.0)  # matches no probe message
    ping(sim, 0)
    sim.run_for(1.0)
    assert len(sim.replica(1).received) == 2 and sim.replica(2).received == []
    assert sim.network.rules[:2] == (lost, twice)
    sim.network.remove_rule(lost)
    ping(sim, 0, 2)
    sim.run_for(1.0)
    assert len(sim.replica(2).received) == 1


def test_the_network_is_clean_again_once_its_rules_are_cleared() -> None:
    sim = probe()
    assert sim.network.clean
    sim.network.rule(types=[Ping], delay=Delay.uniform(0.01, 0.02))
    assert not sim.network.clean
    sim.network.clear_rules()
    assert sim.network.clean and sim.network.rules == ()
    with pytest.raises(ValueError, match="unknown nodes"):
        sim.network.rule(src=9)


def test_losing_only_the_replies_stops_raft_from_committing_until_the_rule_goes() -> None:
    sim = cluster("raft")
    leader = elected(sim)
    replies = sim.network.rule(types=[AppendEntriesResponse], dst=leader, loss=1.0)
    result = sim.propose(leader, Put(key="x", value="1"))
    sim.run_for(0.3)
    assert applied_at(sim, leader, result.index) is None  # no follower's ack arrives
    assert sim.message_counts()[AppendEntries.__name__] > 0
    sim.network.remove_rule(replies)
    assert sim.run_until(lambda: applied_at(sim, leader, result.index) is not None, 2.0)


def test_message_rules_come_from_config_files_too_and_replay_from_the_seed() -> None:
    config = {
        "protocol": "probe",
        "nodes": 3,
        "seed": 5,
        "network": {
            "rules": [
                {
                    "types": ["Ping"],
                    "src": [0],
                    "delay": {"kind": "uniform", "low": 0.01, "high": 0.02},
                }
            ]
        },
    }
    loaded = load_cluster_config(config)
    assert loaded.network.rules == (
        MessageRule(types=("Ping",), src=(0,), delay=Delay.uniform(0.01, 0.02)),
    )

    def arrivals() -> list:
        sim = Simulator(loaded)
        for _ in range(20):
            ping(sim, 0)
        sim.run_for(1.0)
        return sim.replica(1).received

    assert arrivals() == arrivals()
    assert all(0.01 <= t - 0.0005 for t, _, _ in arrivals())


# -- message sizes -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "paxos", "sequencer"])
def test_count_bytes_measures_objects_exactly_as_the_bytes_wire_does(protocol: str) -> None:
    def sizes(**kwargs: Any) -> Any:
        sim = cluster(protocol, seed=9, **kwargs)
        for i in range(10):
            sim.submit(Put(key=f"k{i % 3}", value=str(i)))
        sim.run_for(1.0)
        sim.crash(2)  # a retired incarnation's bytes still count
        sim.run_for(0.2)
        return sim.message_bytes(), sim.history.fingerprint()

    measured, history = sizes(count_bytes=True)
    assert measured and sizes(wire="bytes") == (measured, history)
    plain, plain_history = sizes()
    assert not plain and plain_history == history


def test_the_host_wakes_its_driver_after_every_input_it_is_given() -> None:
    from core_helpers import lone_host

    woken: list[int] = []
    host = lone_host(seed=1, wake=lambda: woken.append(1))
    host.start(0.0)
    result = host.propose(0.0, Request(client_id=1, seq=1, command=Put(key="k", value="v")), None)
    assert result.accepted and result.index == 1  # a cluster of one commits at once
    host.submit(0.5, Request(client_id=1, seq=2, command=Put(key="k", value="w")), None)
    host.tick(1.0)
    assert host.snapshot(1.0) == 2
    assert len(woken) == 5


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "paxos"])
def test_with_costs_on_objects_and_bytes_give_the_same_run(protocol: str) -> None:
    # Per-byte costs need each message's size: objects mode takes it from the codec,
    # so the wire mode changes the simulator's speed, never what it simulates.
    from bench.config import cost_preset
    from consensus.config import CostConfig, structure

    def run(wire: str) -> Any:
        costs = structure(CostConfig, cost_preset("default"), path="costs")
        sim = cluster(protocol, seed=4, wire=wire, costs=costs)
        for i in range(40):
            sim.submit(Put(key=f"k{i % 5}", value="v" * (i * 37)))
        sim.run_for(0.5)
        sim.crash(1)
        sim.run_for(0.3)
        return sim.history.fingerprint(), sim.messages_delivered, sim.node_stats()

    objects = run("objects")
    assert objects[1] > 0 and any(row["cpu_s"] for row in objects[2])
    assert run("bytes") == objects
