"""The simulated network's delay, loss, duplication, reordering and partition
semantics, observed through the probe plugin on the simulator's virtual time."""

from __future__ import annotations

import statistics

import pytest
from probe import ping

from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.sim.simulator import Simulator


def make(nodes: int = 3, seed: int = 1, **network) -> Simulator:
    return Simulator(
        ClusterConfig(protocol="probe", nodes=nodes, seed=seed, network=NetworkConfig(**network))
    )


def arrivals(sim: Simulator, node: int) -> list[tuple[float, int, int]]:
    return sim.replica(node).received


def test_constant_delay_delivers_exactly_after_the_delay():
    sim = make(delay=Delay.constant(0.005))
    sim.run_for(1.0)
    ping(sim, 0, 1)
    sim.run_for(1.0)
    assert arrivals(sim, 1) == [(pytest.approx(1.005), 0, 1)]


def test_uniform_delay_stays_within_bounds_and_centres_on_the_mean():
    # The draw itself: without FIFO, each of a burst of messages keeps its own delay.
    sim = make(delay=Delay.uniform(0.002, 0.004), fifo=False)
    for _ in range(2000):
        ping(sim, 0, 1)
    sim.run_for(1.0)
    delays = [t for t, _, _ in arrivals(sim, 1)]
    assert len(delays) == 2000
    assert min(delays) >= 0.002 and max(delays) <= 0.004
    assert statistics.mean(delays) == pytest.approx(0.003, abs=0.0001)


def test_normal_delay_is_clipped_at_its_lower_bound():
    sim = make(delay=Delay.normal(0.001, 0.002, low=0.0005), fifo=False)
    for _ in range(2000):
        ping(sim, 0, 1)
    sim.run_for(1.0)
    delays = [t for t, _, _ in arrivals(sim, 1)]
    assert min(delays) == pytest.approx(0.0005)
    assert max(delays) > 0.004  # the distribution's tail is really there


def test_fifo_links_deliver_a_burst_in_order_each_no_earlier_than_its_draw():
    fifo, free = (
        make(delay=Delay.uniform(0.002, 0.004)),
        make(delay=Delay.uniform(0.002, 0.004), fifo=False),
    )
    for sim in (fifo, free):
        for _ in range(500):
            ping(sim, 0, 1)
        sim.run_for(1.0)
    in_order = [n for _, _, n in arrivals(fifo, 1)]
    assert in_order == list(range(1, 501))
    overtaken = [n for _, _, n in arrivals(free, 1)]
    assert sorted(overtaken) == list(range(1, 501)) and overtaken != sorted(overtaken)
    # The same draws (one seeded generator each), so FIFO arrival = the running maximum.
    drawn = {n: t for t, _, n in arrivals(free, 1)}
    running = 0.0
    for t, _, n in arrivals(fifo, 1):
        running = max(running, drawn[n])
        assert t == running


def test_fifo_changes_nothing_for_messages_further_apart_than_the_largest_delay():
    sim = make(delay=Delay.uniform(0.002, 0.004))
    for _ in range(1000):
        ping(sim, 0, 1)
        sim.run_for(0.005)
    sim.run_for(1.0)
    sent = [i * 0.005 for i in range(1000)]
    delays = [t - s for (t, _, _), s in zip(arrivals(sim, 1), sent)]
    assert min(delays) >= 0.002 - 1e-12 and max(delays) <= 0.004 + 1e-12
    assert statistics.mean(delays) == pytest.approx(0.003, abs=0.0001)


def test_fifo_holds_per_directed_link_not_across_links():
    sim = make(
        delay=Delay.latency_matrix([[0, 0.010, 0.001], [0.010, 0, 0.001], [0.001, 0.001, 0]])
    )
    ping(sim, 0, 1)  # slow link
    ping(sim, 0, 2)  # fast link, sent after: not held back by 0 -> 1
    sim.run_for(1.0)
    assert arrivals(sim, 2)[0][0] == pytest.approx(0.001)
    assert arrivals(sim, 1)[0][0] == pytest.approx(0.010)


def test_latency_matrix_gives_each_directed_link_its_own_delay():
    matrix = [[0, 0.010, 0.020], [0.011, 0, 0.030], [0.021, 0.031, 0]]
    sim = make(delay=Delay.latency_matrix(matrix))
    for src in range(3):
        ping(sim, src)
    sim.run_for(1.0)
    for dst in range(3):
        for t, src, _ in arrivals(sim, dst):
            assert t == pytest.approx(matrix[src][dst])


def test_total_loss_delivers_nothing_and_partial_loss_drops_its_share():
    sim = make(loss=1.0)
    ping(sim, 0)
    sim.run_for(1.0)
    assert arrivals(sim, 1) == [] and arrivals(sim, 2) == []

    sim = make(loss=0.3)
    for _ in range(3000):
        ping(sim, 0, 1)
    sim.run_for(1.0)
    assert len(arrivals(sim, 1)) == pytest.approx(2100, rel=0.05)
    assert sim.network.dropped == 3000 - len(arrivals(sim, 1))


def test_duplication_delivers_copies():
    sim = make(duplicate=1.0)
    for _ in range(10):
        ping(sim, 0, 1)
    sim.run_for(1.0)
    numbers = sorted(n for _, _, n in arrivals(sim, 1))
    assert numbers == sorted(list(range(1, 11)) * 2)


def test_reordering_lets_later_messages_overtake_and_none_without_it():
    ordered = make(delay=Delay.constant(0.001))
    shuffled = make(delay=Delay.constant(0.001), reorder=0.5, reorder_delay=0.01)
    for sim in (ordered, shuffled):
        for _ in range(200):
            ping(sim, 0, 1)
            sim.run_for(0.0001)
        sim.run_for(1.0)
    in_order = [n for _, _, n in arrivals(ordered, 1)]
    assert in_order == sorted(in_order)
    out_of_order = [n for _, _, n in arrivals(shuffled, 1)]
    assert sorted(out_of_order) == list(range(1, 201))
    assert out_of_order != sorted(out_of_order)


def test_partition_drops_messages_between_groups_only():
    sim = make(nodes=5)
    sim.partition([0, 1], [2, 3])  # node 4 forms a third group
    for src in range(5):
        ping(sim, src)
    sim.run_for(1.0)
    senders = {dst: sorted({src for _, src, _ in arrivals(sim, dst)}) for dst in range(5)}
    assert senders == {0: [1], 1: [0], 2: [3], 3: [2], 4: []}


def test_heal_restores_every_link():
    sim = make()
    sim.partition([0], [1, 2])
    sim.heal()
    ping(sim, 0)
    sim.run_for(1.0)
    assert len(arrivals(sim, 1)) == 1 and len(arrivals(sim, 2)) == 1


def test_one_way_cut_blocks_one_direction_only():
    sim = make()
    sim.cut(0, 1)
    ping(sim, 0, 1)
    ping(sim, 1, 0)
    sim.run_for(1.0)
    assert arrivals(sim, 1) == []
    assert [src for _, src, _ in arrivals(sim, 0)] == [1]


def test_messages_in_flight_are_lost_when_their_link_is_cut():
    sim = make(delay=Delay.constant(0.010))
    ping(sim, 0, 1)
    sim.run_for(0.005)
    sim.isolate(1)
    sim.run_for(1.0)
    assert arrivals(sim, 1) == []


def test_crashed_node_receives_nothing_and_restarts_fresh():
    sim = make()
    sim.crash(1)
    ping(sim, 0, 1)
    sim.run_for(1.0)
    assert sim.replica(1) is None
    sim.restart(1)
    assert arrivals(sim, 1) == []
    ping(sim, 0, 1)
    sim.run_for(1.0)
    assert len(arrivals(sim, 1)) == 1


def test_same_seed_same_deliveries_and_another_seed_differs():
    def trace(seed: int) -> list:
        sim = make(
            seed=seed, delay=Delay.uniform(0.001, 0.005), loss=0.2, duplicate=0.1, reorder=0.2
        )
        for _ in range(300):
            ping(sim, 0)
            sim.run_for(0.0005)
        sim.run_for(1.0)
        return [arrivals(sim, n) for n in range(3)]

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_partition_rejects_unknown_nodes():
    sim = make()
    with pytest.raises(ValueError, match="unknown nodes"):
        sim.partition([0], [9])
