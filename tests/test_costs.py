"""The cost model (``consensus.costs``, ``consensus.sim.servers``) against queueing
theory: a node that needs S seconds per command serves at most 1/S commands
per second and its queue grows beyond that; group commit lets a node write
faster than one fsync allows; a link of B bytes/s carries X bytes in X/B
seconds; and along a commit's critical path the latency is the network's
plus every service time on the way.  Virtual time only."""

from __future__ import annotations

from typing import Any

import pytest
from probe import Ping, ping

from bench.workload import Workload, WorkloadConfig
from consensus.checker.linearizability import check
from consensus.codec import Codec
from consensus.commands import Put
from consensus.config import (
    ClusterConfig,
    ConfigError,
    CostConfig,
    Delay,
    NetworkConfig,
    structure,
)
from consensus.sim.simulator import Simulator
from protocols.raft.messages import InstallSnapshot

D = 0.010


def simulator(protocol: str = "raft", **cluster: Any) -> Simulator:
    config = {"protocol": protocol, "nodes": 3, "seed": 1, "client": {"timeout": 100.0}}
    config.update(cluster)
    return Simulator(config, stats_interval=cluster.pop("stats_interval", 0.5))


def open_loop(sim: Simulator, rate: float, until: float, **workload: Any) -> Workload:
    """Poisson arrivals at ``rate`` from now until ``until`` (after the election)."""
    config = WorkloadConfig(mode="open", rate=rate, duration=until, warmup=0.0, **workload)
    load = Workload(sim, config)
    load.start()
    return load


def completed_per_second(sim: Simulator, start: float, end: float) -> float:
    done = [op for op in sim.history if op.ok and start <= op.complete < end]
    return len(done) / (end - start)


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "sequencer"])
def test_a_leader_needing_s_per_command_levels_off_at_one_over_s_and_its_queue_grows(protocol):
    s = 0.002  # the leader's CPU time per client request; everything else is free
    sim = simulator(protocol, costs={"request": s}, max_batch=64)
    sim.run_for(1.0)  # elect a leader before the load starts
    below = 0.5 / s  # half the capacity: served as offered, the leader half busy
    open_loop(sim, below, until=3.0, read_fraction=0.0)
    sim.run_for(2.0)
    assert completed_per_second(sim, 2.0, 3.0) == pytest.approx(below, rel=0.05)
    open_loop(sim, 2.0 / s, until=9.0, read_fraction=0.0)  # then twice the capacity
    sim.run_for(6.0)
    assert completed_per_second(sim, 4.0, 9.0) == pytest.approx(1 / s, rel=0.02)
    leader = sim.leaders()[0]
    (busy,) = [row for row in sim.node_stats() if row["node"] == leader]
    assert busy["cpu_s"] == pytest.approx(2 * 0.5 + 6 * 1.0, rel=0.02)
    # Arrivals at 2/s, departures at 1/s: the mean queue grows by 1/s per second.
    queue = {
        row["time"]: row["queue_area"] / 0.5
        for row in sim.node_intervals()
        if row["node"] == leader and 4.0 <= row["time"] < 9.0
    }
    lengths = list(queue.values())
    assert len(lengths) >= 9
    assert all(b > a for a, b in zip(lengths, lengths[1:]))
    per_interval = (lengths[-1] - lengths[0]) / (len(lengths) - 1)
    assert per_interval == pytest.approx(1 / s * 0.5, rel=0.1)


def test_group_commit_writes_faster_than_one_fsync_allows_and_without_it_cannot():
    f = 0.002  # fsync latency; at most 1/f = 500 fsyncs per second
    rates = {}
    for max_batch in (1024, 1):
        sim = simulator("raft", costs={"fsync": f}, max_batch=max_batch)
        sim.run_for(1.0)
        open_loop(sim, 1600, until=2.5, read_fraction=0.0)
        sim.run_for(1.5)
        leader = sim.leaders()[0]
        (stats,) = [row for row in sim.node_stats() if row["node"] == leader]
        assert stats["fsyncs"] / 2.5 <= 1 / f * 1.01
        rates[max_batch] = completed_per_second(sim, 1.5, 2.5)
    # Group commit: records persisted while an fsync runs go into the next one.
    assert rates[1024] == pytest.approx(1600, rel=0.07)
    assert rates[1024] > 3 / f
    # One input per batch: every request waits for its own fsync.
    assert rates[1] <= 1 / f * 1.01


def test_a_message_of_x_bytes_takes_x_over_b_on_the_link():
    bandwidth = 125e6  # 1 Gbit/s
    sim = Simulator(
        ClusterConfig(
            protocol="probe",
            nodes=3,
            network=NetworkConfig(delay=Delay.constant(D)),
            costs=CostConfig(bandwidth=bandwidth),
        )
    )
    size = len(Codec.for_protocol(sim.spec).encode(Ping(n=1)))
    sim.run_for(1.0)
    for _ in range(3):
        ping(sim, 0, 1)  # back to back: each waits for the link to finish the last
    sim.run_for(1.0)
    arrivals = [t for t, _, _ in sim.replica(1).received]
    assert arrivals == pytest.approx([1.0 + D + k * size / bandwidth for k in (1, 2, 3)])


def test_a_snapshot_of_x_bytes_arrives_no_earlier_than_x_over_b_after_it_is_sent():
    bandwidth = 12.5e6  # 100 Mbit/s
    sim = simulator(
        "raft",
        network={"delay": {"kind": "constant", "value": 0.001}},
        costs={"bandwidth": bandwidth},
        snapshot_every=20,
    )
    sim.run_for(1.0)
    leader = sim.leaders()[0]
    follower = next(n for n in sim.node_ids if n != leader)
    sim.crash(follower)
    for i in range(100):  # about 1 MB of state the follower has never seen
        op = sim.submit(Put(key=f"k{i}", value="x" * 10_000), node=leader)
        assert sim.run_until(lambda op=op: op.done, timeout=5)
    sent: list[tuple[float, int]] = []
    host = sim.host(leader)
    encode = Codec.for_protocol(sim.spec).encode
    original = host._send

    def recording(dst: int, message: Any) -> None:
        if isinstance(message, InstallSnapshot):
            sent.append((sim.now, len(encode(message))))
        original(dst, message)

    host._send = recording
    sim.restart(follower)
    received: list[float] = []
    replica = sim.replica(follower)
    step = replica.step

    def arriving(now: float, src: int, message: Any) -> Any:
        if isinstance(message, InstallSnapshot):
            received.append(now)
        return step(now, src, message)

    replica.step = arriving
    sim.run_for(2.0)
    assert sent and received
    (sent_at, size), arrived = sent[0], received[0]
    assert size > 900_000
    assert arrived >= sent_at + size / bandwidth + 0.001
    assert arrived == pytest.approx(sent_at + size / bandwidth + 0.001, abs=0.001)


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "sequencer"])
def test_commit_latency_is_two_delays_plus_the_service_times_on_the_critical_path(protocol):
    c = dict(
        batch=1.3e-5,
        wakeup=2.1e-5,
        request=3e-4,
        message=2e-4,
        send=5e-5,
        apply=7e-5,
        reply=1.1e-4,
        fsync=1e-3,
        client=3.7e-5,
    )
    sim = simulator(protocol, network={"delay": {"kind": "constant", "value": D}}, costs=c, seed=2)
    sim.run_for(2.0123)  # off the heartbeats' beat: every node is idle when a request comes
    leader = sim.leaders()[0]
    # Each node is idle when its input arrives (it wakes up), then: the leader, the
    # request, two sends, its fsync; a follower, the message, a send, its fsync; the
    # leader again, the acknowledgement, apply, answer (the other follower's
    # acknowledgement waits behind it, is handled without a wake-up, changes nothing).
    # Raft and Multi-Paxos send their entries eagerly (Outputs.eager), before the
    # leader's own disk write, which then overlaps the round trip.  The client, on
    # a host of its own, pays its cost before its request reaches the leader.
    wake = c["batch"] + c["wakeup"]
    leader_fsync = 0.0 if protocol in ("raft", "multipaxos") else c["fsync"]
    expected = (
        2 * D
        + c["client"]
        + (
            (wake + c["request"] + 2 * c["send"] + leader_fsync)
            + (wake + c["message"] + c["send"] + c["fsync"])
            + (wake + c["message"] + c["apply"] + c["reply"])
        )
    )
    for i in range(5):
        op = sim.submit(Put(key="x", value=str(i)), node=leader)
        assert sim.run_until(lambda op=op: op.done, timeout=5)
        assert op.latency == pytest.approx(expected, abs=1e-12)
        sim.run_for(0.3)


@pytest.mark.parametrize("protocol", ["raft", "multipaxos"])
def test_nodes_sharing_a_disk_wait_for_its_serial_part_of_each_others_fsyncs(protocol):
    # Only fsyncs cost anything.  The leader sends its entry before its own fsync
    # (eagerly), so with disks of their own a commit takes D there, the follower's
    # fsync F, D back.  On one shared disk the follower's fsync, asked for at D, finds
    # the device serving the leader's (its serial part s, from F - s to F) and ends at
    # F + s: the commit takes F + s + D.
    d, f, s = 1e-4, 1e-3, 6e-4
    latencies = {}
    for disks, serial in ((0, s), (1, s), (1, 0.0)):
        costs = {"fsync": f, "fsync_serial": serial, "disks": disks}
        network = {"delay": {"kind": "constant", "value": d}}
        sim = simulator(protocol, network=network, costs=costs, seed=2)
        sim.run_for(2.0123)  # off the heartbeats' beat: nothing else is syncing
        leader = sim.leaders()[0]
        seen = []
        for i in range(3):
            op = sim.submit(Put(key="x", value=str(i)), node=leader)
            assert sim.run_until(lambda op=op: op.done, timeout=5)
            seen.append(op.latency)
            sim.run_for(0.3)
        latencies[disks, serial] = seen
    assert latencies[0, s] == [pytest.approx(2 * d + f, abs=1e-12)] * 3
    assert latencies[1, s] == [pytest.approx(f + s + d, abs=1e-12)] * 3
    # fsync_serial 0: the whole fsync is the device's.
    assert latencies[1, 0.0] == [pytest.approx(2 * f + d, abs=1e-12)] * 3


def test_an_fsyncs_serial_part_is_no_more_than_the_fsync():
    with pytest.raises(ConfigError, match="fsync_serial"):
        structure(ClusterConfig, {"costs": {"fsync": 1e-4, "fsync_serial": 2e-4, "disks": 1}})
    assert CostConfig(fsync=1e-4, fsync_serial=1e-4, disks=1).enabled


def test_costs_on_same_seed_same_history_and_still_linearizable():
    def history(seed: int) -> Any:
        sim = simulator(
            "raft",
            seed=seed,
            costs={"request": 2e-5, "message": 1e-5, "send": 3e-6, "fsync": 1e-4},
            pack_proposals=16,
        )
        load = Workload(
            sim,
            WorkloadConfig(clients=8, duration=1.0, warmup=0.0, keys=5, cas_fraction=0.1),
        )
        load.start()
        sim.at(0.6, sim.crash, 0)
        sim.at(0.8, sim.restart, 0)
        sim.run_for(2.5)
        sim.finish_pending()
        return sim.history

    first = history(3)
    assert first.fingerprint() == history(3).fingerprint()
    assert sum(op.ok for op in first) > 300
    assert check(first).ok


def test_packing_puts_a_busy_leaders_requests_into_few_log_entries():
    def ops_and_entries(pack: int) -> tuple[int, int]:
        sim = simulator("raft", costs={"request": 1e-5, "fsync": 5e-4}, pack_proposals=pack)
        load = Workload(sim, WorkloadConfig(clients=32, duration=1.0, warmup=0.0, read_fraction=0))
        load.start()
        sim.run_for(1.2)
        leader = sim.leaders()[0]
        return sum(op.ok for op in sim.history), sim.host(leader).sm.applied_index

    ops, entries = ops_and_entries(0)
    assert entries >= ops  # an entry per request (and the leader's no-op)
    ops, entries = ops_and_entries(64)
    assert ops > 5 * entries


def test_all_zero_costs_are_off_and_a_bad_cost_names_its_key():
    assert not CostConfig().enabled
    assert CostConfig(inputs={"raft.AppendEntries": {"base": 0.0}}).enabled is False
    assert CostConfig(inputs={"raft.AppendEntries": 1e-6}).enabled
    with pytest.raises(ConfigError, match=r'costs\.inputs\."x"\.entries'):
        structure(ClusterConfig, {"costs": {"inputs": {"x": {"per_entry": 1e-6}}}})
    with pytest.raises(ConfigError, match="costs.fsync"):
        structure(ClusterConfig, {"costs": {"fsync": -1.0}})


def test_clients_sharing_one_host_complete_at_most_one_operation_per_client_cost():
    c = 0.001  # a load generator's CPU per operation; the nodes cost nothing
    for hosts, expected in ((1, 1 / c), (2, 2 / c)):
        sim = simulator(
            "raft",
            network={"delay": {"kind": "constant", "value": 0.0001}},
            costs={"client": c, "client_hosts": hosts},
        )
        sim.run_for(1.0)
        Workload(sim, WorkloadConfig(clients=32, duration=3.0, warmup=0.0)).start()
        sim.run_for(2.0)
        assert completed_per_second(sim, 2.0, 3.0) == pytest.approx(expected, rel=0.02)


def test_an_idle_client_host_pays_the_wakeup_and_a_busy_one_does_not():
    c = 0.001

    def host_cpu(clients: int, w: float) -> tuple[float, int]:
        sim = simulator(
            "raft",
            network={"delay": {"kind": "constant", "value": 0.0001}},
            costs={"client": c, "client_hosts": 1, "wakeup": w},
        )
        sim.run_for(1.0)
        Workload(sim, WorkloadConfig(clients=clients, duration=3.0, warmup=0.0)).start()
        sim.run_for(2.0)
        answered = sum(1 for op in sim.history if op.complete is not None)
        assert answered > 100
        return sim._servers.clients.cpu, answered

    # One client: every answer finds its host idle and pays c + w.
    cpu, answered = host_cpu(1, 0.004)
    assert cpu == pytest.approx(answered * (c + 0.004), rel=1e-6)
    # Thirty-two: the host handles answers in batches, most while it is still busy.
    cpu, answered = host_cpu(32, 0.0005)
    assert 0 < cpu - answered * c < answered * 0.0005 / 2  # fewer than half woke it


def test_per_entry_costs_count_the_client_requests_a_message_carries():
    from consensus.commands import Batch, Noop, PackedBatch, Request
    from consensus.sim.costrows import entry_counter, requests_carried
    from protocols.multipaxos.messages import Accept as SlotsAccept
    from protocols.paxos.messages import Accept, Promise
    from protocols.paxos_common.acceptor import PValue
    from protocols.raft.messages import AppendEntries, Entry

    r = Request(client_id=1, seq=1, command=Put(key="a", value="b"))
    packed = Request(client_id=2, seq=1, command=PackedBatch(data=b"...", count=100))
    entries = (Entry(term=1, payload=r), Entry(term=1, payload=Noop()))
    entries += (Entry(term=1, payload=Batch(requests=(r, r))), Entry(term=1, payload=packed))
    append = AppendEntries(term=1, prev_log_index=0, prev_log_term=0, entries=entries)
    assert requests_carried(append) == 4  # a packed entry is opaque bytes: one
    assert entry_counter(AppendEntries, "entries")(append) == 4  # a field's length
    ballot = sim_ballot()
    assert (
        requests_carried(Accept(slot=1, ballot=ballot, payload=Batch(requests=(r,) * 3), done=0))
        == 3
    )
    slots = SlotsAccept(ballot=ballot, slot=1, payloads=(r, Noop(), r), commit_index=0)
    assert requests_carried(slots) == 2
    promise = Promise(
        slot=1, ballot=ballot, accepted=PValue(slot=1, ballot=ballot, payload=r), done=0
    )
    assert requests_carried(promise) == 1
    assert requests_carried(Promise(slot=1, ballot=ballot, accepted=None, done=0)) == 0
    with pytest.raises(ConfigError, match="no field 'nope'"):
        entry_counter(AppendEntries, "nope")


def sim_ballot():
    from protocols.paxos_common.ballot import ZERO

    return ZERO


@pytest.mark.parametrize("pack", [0, 16])
def test_a_leader_pays_propose_once_per_proposal_and_request_once_per_request(pack):
    """With only ``propose`` = P set, a leader's CPU is P times the proposals its
    host made: one per request without packing, one per pack with it; ``request``
    = R adds R per request whatever the packing."""
    p, r = 1e-4, 3e-5

    def leader_cpu(costs: dict[str, float]) -> tuple[float, int, int]:
        sim = simulator("raft", costs=costs, pack_proposals=pack, max_batch=64)
        sim.run_for(0.5)
        load = Workload(sim, WorkloadConfig(clients=32, duration=1.5, warmup=0.0, read_fraction=0))
        load.start()
        sim.run_for(1.5)
        leader = sim.leaders()[0]
        (row,) = [row for row in sim.node_stats() if row["node"] == leader]
        host = sim.host(leader)
        return row["cpu_s"], host.proposals, sum(1 for op in sim.history)

    cpu, proposals, _ = leader_cpu({"propose": p})
    assert proposals > 100 and cpu == pytest.approx(p * proposals, rel=1e-6)
    cpu, proposals, requests = leader_cpu({"propose": p, "request": r})
    assert cpu == pytest.approx(p * proposals + r * requests, rel=0.01)
    if pack:
        assert requests > 3 * proposals
    else:
        assert proposals >= requests - 32  # the last requests may still be queued
    rows = structure(CostConfig, {"inputs": {"raft.propose": {"base": p}}}, path="costs")
    assert rows.enabled and rows.input_row("raft", "propose").base == p
