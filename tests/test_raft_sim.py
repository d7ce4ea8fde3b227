"""Raft on the deterministic simulator: elections, faults, recovery, message costs.

Every test uses fixed seeds, so a failure reproduces exactly; the seed is in
the test's parameters or body.  Safety is checked after every scenario: all
nodes apply the same sequence (State Machine Safety), and, where a test
watches every event, at most one leader per term (Election Safety).
"""

from __future__ import annotations

from typing import Any

import pytest

from consensus.checker.linearizability import check
from consensus.commands import Append, Get, Noop, Put, Request
from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.sim.simulator import Simulator
from protocols.raft import RaftReplica, Role

pytestmark = pytest.mark.filterwarnings("error")


def cluster(nodes: int = 3, seed: int = 7, **kwargs: Any) -> Simulator:
    # These scenarios were written for a constant 1 ms link unless they say otherwise.
    kwargs.setdefault("network", NetworkConfig(delay=Delay.constant(0.001)))
    return Simulator(ClusterConfig(protocol="raft", nodes=nodes, seed=seed, **kwargs))


def raft(sim: Simulator, node: int) -> RaftReplica:
    replica = sim.replica(node)
    assert isinstance(replica, RaftReplica)
    return replica


def one_leader(sim: Simulator, among: list[int] | None = None) -> bool:
    nodes = sim.up_nodes() if among is None else among
    return len([n for n in sim.leaders() if n in nodes]) == 1


def elect(sim: Simulator, timeout: float = 5.0) -> int:
    assert sim.run_until(lambda: one_leader(sim), timeout=timeout)
    (leader,) = sim.leaders()
    return leader


def requests(sim: Simulator, node: int) -> list[tuple[int, int]]:
    return [(p.client_id, p.seq) for _, p in sim.applied(node) if isinstance(p, Request)]


def assert_same_applied_sequence(sim: Simulator, nodes: list[int] | None = None) -> None:
    """State Machine Safety: every node applied a prefix of one common sequence."""
    sequences = [sim.applied(n) for n in (nodes or sim.up_nodes())]
    longest = max(sequences, key=len)
    for seq in sequences:
        assert [i for i, _ in seq] == list(range(1, len(seq) + 1))
        assert seq == longest[: len(seq)]


def caught_up(sim: Simulator) -> bool:
    leader = sim.leaders()
    if len(leader) != 1:
        return False
    commit = raft(sim, leader[0]).commit_index
    return all(raft(sim, n).commit_index == commit for n in sim.up_nodes())


def submit_all(sim: Simulator, count: int, node: int | None = None) -> list[Any]:
    return [sim.submit(Put(key=f"k{i}", value=str(i)), node=node) for i in range(count)]


class ElectionSafety:
    """Watches every event: at most one node ever leads a given term."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.leader_of: dict[int, int] = {}

    def __call__(self) -> bool:
        for node in self.sim.leaders():
            term = raft(self.sim, node).term
            assert self.leader_of.setdefault(term, node) == node, f"two leaders in term {term}"
        return False

    def run_for(self, seconds: float) -> None:
        self.sim.run_until(self, timeout=seconds)


# --------------------------------------------------------------------- elections


@pytest.mark.parametrize(("nodes", "seed"), [(3, 1), (3, 2), (5, 3), (5, 4), (7, 5)])
def test_leader_is_elected_within_five_seconds(nodes: int, seed: int) -> None:
    sim = cluster(nodes, seed)
    leader = elect(sim)
    sim.run_for(1.0)
    assert sim.leaders() == [leader]
    assert all(raft(sim, n).leader() == leader for n in range(nodes))


def test_new_leader_is_elected_after_the_leader_crashes() -> None:
    sim = cluster(5, seed=11)
    old = elect(sim)
    old_term = raft(sim, old).term
    sim.crash(old)
    new = elect(sim)
    assert new != old and raft(sim, new).term > old_term
    sim.restart(old)
    sim.run_for(1.0)
    assert sim.leaders() == [new] and raft(sim, old).leader() == new


def test_new_leader_is_elected_after_leader_isolation_and_old_leader_steps_down() -> None:
    sim = cluster(5, seed=12)
    safety = ElectionSafety(sim)
    old = elect(sim)
    sim.isolate(old)
    rest = [n for n in range(5) if n != old]
    assert sim.run_until(lambda: one_leader(sim, rest), timeout=5.0)
    # CheckQuorum: the isolated leader notices it lost its quorum and steps down.
    assert sim.run_until(lambda: raft(sim, old).role is not Role.LEADER, timeout=1.0)
    assert raft(sim, old).counters["check_quorum_step_downs"] == 1
    sim.heal()
    safety.run_for(2.0)
    assert len(sim.leaders()) == 1 and sim.leaders()[0] != old


def test_no_leader_in_a_minority_partition_and_prevote_keeps_its_terms_still() -> None:
    sim = cluster(5, seed=13)
    leader = elect(sim)
    minority = [n for n in range(5) if n != leader][:2]
    majority = [n for n in range(5) if n not in minority]
    sim.partition(minority, majority)
    sim.run_for(0.5)
    terms_before = [raft(sim, n).term for n in minority]
    sim.run_for(5.0)
    assert not [n for n in sim.leaders() if n in minority]
    assert [raft(sim, n).term for n in minority] == terms_before
    assert all(raft(sim, n).counters["prevotes_started"] > 5 for n in minority)
    assert all(raft(sim, n).counters["elections_started"] == 0 for n in minority)
    # The majority side kept its leader (PreVote + stickiness: no disruption on heal either).
    assert sim.leaders() == [leader]
    sim.heal()
    sim.run_for(1.0)
    assert sim.leaders() == [leader] and raft(sim, leader).term == terms_before[0]


def test_without_prevote_a_minority_partition_inflates_its_terms() -> None:
    sim = cluster(5, seed=13, options={"prevote": False})
    leader = elect(sim)
    minority = [n for n in range(5) if n != leader][:2]
    sim.partition(minority, [n for n in range(5) if n not in minority])
    sim.run_for(5.0)
    assert all(raft(sim, n).term > raft(sim, leader).term for n in minority)


# ------------------------------------------------------------------- replication


def test_agreement_with_one_follower_disconnected_then_it_catches_up() -> None:
    sim = cluster(3, seed=21)
    leader = elect(sim)
    follower = next(n for n in range(3) if n != leader)
    sim.isolate(follower)
    ops = submit_all(sim, 20, node=leader)
    assert sim.run_until(lambda: all(op.done for op in ops), timeout=5.0)
    assert all(op.ok for op in ops)
    assert raft(sim, follower).log.last_index <= 1  # at most the noop
    sim.heal()
    assert sim.run_until(lambda: caught_up(sim), timeout=2.0)
    assert len(requests(sim, follower)) == 20
    assert_same_applied_sequence(sim)


def test_stale_leader_rejoining_has_its_uncommitted_entries_discarded() -> None:
    sim = cluster(3, seed=22)
    old = elect(sim)
    old_term = raft(sim, old).term
    sim.isolate(old)
    doomed = submit_all(sim, 5, node=old)  # appended at the old leader, never committed
    sim.run_for(0.01)
    assert raft(sim, old).log.last_index >= 6
    rest = [n for n in range(3) if n != old]
    assert sim.run_until(lambda: one_leader(sim, rest), timeout=5.0)
    new = next(n for n in sim.leaders() if n != old)
    fresh = submit_all(sim, 3, node=new)
    assert sim.run_until(lambda: all(op.done for op in fresh), timeout=5.0)
    sim.heal()
    assert sim.run_until(lambda: caught_up(sim) and all(op.done for op in doomed), timeout=10.0)
    log = raft(sim, old).log
    assert [e.term for e in log.entries(1)] == [e.term for e in raft(sim, new).log.entries(1)]
    assert not [e for e in log.entries(2) if e.term == old_term]
    # The discarded proposals were retried by their clients and committed exactly once.
    assert all(op.ok for op in doomed)
    applied = requests(sim, old)
    assert len(applied) == len(set(applied)) == 8
    assert_same_applied_sequence(sim)


def test_fast_backup_over_many_divergent_entries_needs_few_rejections() -> None:
    sim = cluster(5, seed=23, client=_patient_clients())
    old = elect(sim)
    sim.isolate(old)
    submit_all(sim, 60, node=old)  # 60 divergent entries at the old leader
    sim.run_for(0.01)
    rest = [n for n in range(5) if n != old]
    assert sim.run_until(lambda: one_leader(sim, rest), timeout=5.0)
    first = next(n for n in sim.leaders() if n != old)
    ops = submit_all(sim, 80, node=first)  # and 80 different ones on the majority side
    assert sim.run_until(lambda: all(op.done for op in ops), timeout=5.0)
    # A fresh leader starts probing the old one at its own last index, far past
    # the point where their logs diverge (index 2).
    sim.crash(first)
    rest.remove(first)
    assert sim.run_until(lambda: one_leader(sim, rest), timeout=5.0)
    new = next(n for n in sim.leaders() if n != old)
    sim.restart(first)
    assert raft(sim, old).log.last_index > 60 and raft(sim, new).log.last_index > 80
    sim.heal()
    assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    rejections = raft(sim, new).counters["rejections_received"]
    assert 1 <= rejections <= 3, rejections
    assert raft(sim, old).counters["truncations"] == 1
    assert_same_applied_sequence(sim)


def _patient_clients() -> Any:
    from consensus.config import ClientConfig

    return ClientConfig(timeout=30.0)  # the old leader's clients must not retry meanwhile


def test_crash_and_restart_of_every_node_in_turn_keeps_every_committed_entry() -> None:
    sim = cluster(3, seed=24)
    elect(sim)
    done: list[Any] = []
    for round_, victim in enumerate([0, 1, 2, 0, 1, 2]):
        ops = submit_all(sim, 10)
        assert sim.run_until(lambda ops=ops: all(op.done for op in ops), timeout=10.0), round_
        assert all(op.ok for op in ops)
        done.extend(ops)
        sim.crash(victim)
        sim.run_for(0.5)
        sim.restart(victim)
        assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    expected = {(op.client, op.seq) for op in done}
    for node in range(3):
        assert set(requests(sim, node)) == expected  # rebuilt from the log after restarts
    assert_same_applied_sequence(sim)


def test_lossy_reordering_network_commits_every_proposal_with_one_applied_order() -> None:
    network = NetworkConfig(
        delay=Delay.uniform(0.001, 0.003), loss=0.05, duplicate=0.01, reorder=0.1
    )
    sim = cluster(5, seed=25, network=network)
    safety = ElectionSafety(sim)
    elect(sim)
    ops: list[Any] = []

    def start(client: Any, remaining: int) -> None:
        if remaining:
            value = f"{client.client_id}.{remaining},"
            ops.append(
                client.submit(
                    Append(key=f"c{client.client_id}", value=value),
                    on_done=lambda op: start(client, remaining - 1),
                )
            )

    clients = [sim.client() for _ in range(10)]
    for client in clients:
        start(client, 10)
    assert sim.run_until(lambda: len(ops) == 100 and all(op.done for op in ops), timeout=30.0)
    assert all(op.ok for op in ops)
    safety.run_for(1.0)
    assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    assert_same_applied_sequence(sim)
    for node in range(5):
        data = sim.host(node).sm.data  # exactly once per command, in client order
        for client in clients:
            cid = client.client_id
            assert data[f"c{cid}"] == "".join(f"{cid}.{k}," for k in range(10, 0, -1))


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_random_crashes_and_partitions_preserve_safety(seed: int) -> None:
    import random

    sim = cluster(5, seed=seed, network=NetworkConfig(delay=Delay.uniform(0.001, 0.005)))
    safety = ElectionSafety(sim)
    rng = random.Random(seed)
    ops: list[Any] = []
    for _ in range(12):
        ops.extend(submit_all(sim, 3))
        fault = rng.choice(["crash", "partition", "isolate", "none"])
        victim = rng.randrange(5)
        if fault == "crash":
            sim.crash(victim)
        elif fault == "partition":
            sim.partition(
                [victim, (victim + 1) % 5],
                [n for n in range(5) if n not in (victim, (victim + 1) % 5)],
            )
        elif fault == "isolate":
            sim.isolate(victim)
        safety.run_for(rng.uniform(0.1, 0.8))
        sim.heal()
        for node in range(5):
            sim.restart(node)
        safety.run_for(0.3)
    assert sim.run_until(lambda: all(op.done for op in ops) and caught_up(sim), timeout=20.0)
    assert all(op.ok for op in ops)
    assert_same_applied_sequence(sim)


# ----------------------------------------------------------------- message costs


def test_idle_leader_sends_only_a_bounded_number_of_heartbeats() -> None:
    sim = cluster(5, seed=41)
    leader = elect(sim)
    sim.run_for(0.5)
    before = sim.message_counts()
    sim.run_for(10.0)
    delta = sim.message_counts() - before
    interval = 0.05
    assert set(delta) == {"AppendEntries", "AppendEntriesResponse"}
    assert delta["AppendEntries"] <= 4 * (10.0 / interval + 1)
    assert delta["AppendEntriesResponse"] == delta["AppendEntries"]
    assert sim.host(leader).sent["AppendEntries"] >= 4 * 10.0 / interval


def test_one_command_costs_a_constant_number_of_messages_per_follower() -> None:
    sim = cluster(5, seed=42)
    leader = elect(sim)
    sim.run_for(0.5)
    # Sequential commands: one AppendEntries (+ response) per follower each,
    # beyond the heartbeats of the elapsed time.
    start, before = sim.now, sim.message_counts()["AppendEntries"]
    for i in range(50):
        op = sim.submit(Put(key="x", value=str(i)), node=leader)
        assert sim.run_until(lambda op=op: op.done, timeout=1.0) and op.ok
    elapsed = sim.now - start
    sent = sim.message_counts()["AppendEntries"] - before
    heartbeats = 4 * (elapsed / 0.05 + 1)
    assert (sent - heartbeats) / (50 * 4) <= 1.0


def test_batched_commands_share_append_entries() -> None:
    sim = cluster(5, seed=43)
    leader = elect(sim)
    sim.run_for(0.5)
    before = sim.message_counts()["AppendEntries"]
    ops = submit_all(sim, 200, node=leader)  # 200 clients in the same instant
    assert sim.run_until(lambda: all(op.done for op in ops), timeout=2.0)
    assert all(op.ok for op in ops)
    sent = sim.message_counts()["AppendEntries"] - before
    per_command_per_follower = sent / (200 * 4)
    assert per_command_per_follower < 0.05, sent


def test_leader_first_entry_is_a_noop_of_its_term() -> None:
    sim = cluster(3, seed=44)
    leader = elect(sim)
    assert sim.run_until(lambda: raft(sim, leader).commit_index >= 1, timeout=1.0)
    assert sim.applied(leader)[0] == (1, Noop())


# ------------------------------------------------------------ linearizable reads


def test_isolated_old_leader_never_serves_a_stale_read() -> None:
    sim = cluster(3, seed=51)
    old = elect(sim)
    first = sim.submit(Put(key="x", value="1"), node=old)
    assert sim.run_until(lambda: first.done, timeout=1.0) and first.ok
    sim.isolate(old)
    read = sim.submit(Get(key="x"), node=old)  # arrives at the isolated old leader
    rest = [n for n in range(3) if n != old]
    assert sim.run_until(lambda: one_leader(sim, rest), timeout=5.0)
    new = next(n for n in sim.leaders() if n != old)
    write = sim.submit(Put(key="x", value="2"), node=new)
    assert sim.run_until(lambda: write.done, timeout=2.0) and write.ok
    assert not read.done  # the old leader could not confirm its leadership
    assert sim.run_until(lambda: read.done, timeout=5.0)
    assert read.ok and read.result == "2" and read.retries >= 1
    assert raft(sim, old).counters["reads"] == 1


@pytest.mark.parametrize("snapshot_every", [0, 7])
def test_reads_and_writes_are_linearizable_under_loss_and_leader_changes(
    snapshot_every: int,
) -> None:
    import random

    network = NetworkConfig(delay=Delay.uniform(0.001, 0.004), loss=0.03, reorder=0.05)
    sim = cluster(3, seed=52, network=network, snapshot_every=snapshot_every)
    rng = random.Random(52)
    elect(sim)
    ops: list[Any] = []

    def start(client: Any, remaining: int) -> None:
        if not remaining:
            return
        key = rng.choice("ab")
        kind = rng.random()
        if kind < 0.5:
            command: Any = Get(key=key)
        elif kind < 0.8:
            command = Append(key=key, value=f"{client.client_id}.{remaining},")
        else:
            command = Put(key=key, value=str(remaining))
        ops.append(client.submit(command, on_done=lambda op: start(client, remaining - 1)))

    for client in [sim.client() for _ in range(6)]:
        start(client, 25)
    for _ in range(3):  # depose the leader three times while clients run
        sim.run_for(0.3)
        leaders = sim.leaders()
        if leaders:
            sim.isolate(leaders[0])
        sim.run_for(0.8)
        sim.heal()
    assert sim.run_until(lambda: len(ops) == 150 and all(op.done for op in ops), timeout=30.0)
    assert all(op.ok for op in ops)
    reads = sum(raft(sim, n).counters["reads"] for n in range(3))
    assert reads >= 50  # served by ReadIndex, not through the log
    result = check(sim.history)
    assert result.ok is True, result


# --------------------------------------------------------------------- snapshots


def test_lagging_follower_catches_up_through_install_snapshot() -> None:
    sim = cluster(3, seed=61, snapshot_every=10)
    leader = elect(sim)
    lagging = (leader + 1) % 3
    sim.crash(lagging)
    ops = submit_all(sim, 60, node=leader)
    assert sim.run_until(lambda: all(op.done for op in ops), timeout=5.0)
    assert raft(sim, leader).log.snapshot_index > 1  # its first entries are gone
    sim.restart(lagging)
    assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    assert raft(sim, leader).counters["snapshots_sent"] >= 1
    assert raft(sim, lagging).counters["snapshots_installed"] >= 1
    assert sim.host(lagging).sm.data == sim.host(leader).sm.data
    assert len(sim.host(lagging).sm.data) == 60
    # Restarting from the compacted storage restores the snapshot, then the tail.
    for node in range(3):
        sim.crash(node)
        sim.restart(node)
        assert sim.run_until(lambda: caught_up(sim), timeout=5.0)
    more = submit_all(sim, 5)
    assert sim.run_until(lambda: all(op.done for op in more) and caught_up(sim), timeout=5.0)
    assert all(sim.host(n).sm.data == sim.host(leader).sm.data for n in range(3))
    assert all(len(sim.storage(n).load()) < 20 for n in range(3))  # compacted
