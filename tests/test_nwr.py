"""nwr: the store and the coordinator by hand, then quorums on simulated clusters.

The quorum-overlap rule is tested directly: with N = 3, W = 2, R = 2 every
read quorum overlaps the last acknowledged write's quorum (every pair of
replicas is tried as the read quorum), and with W = R = 1 one does not.
What each configuration loses under the nemesis is in
test_baselines_chaos.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from codec_helpers import roundtrip_table_check
from core_helpers import build, sent

from consensus.checker.lost import lost_writes
from consensus.codec import Codec
from consensus.commands import CompareAndSet, Get, Put, Request
from consensus.config import ClusterConfig
from consensus.replica import Answer
from consensus.sim.simulator import Simulator
from protocols.nwr import PROTOCOL, NwrOptions, Store, preference_list, unsafe
from protocols.nwr.messages import (
    Handoff,
    HandoffAck,
    HintDone,
    Hinted,
    ReadReply,
    ReadRequest,
    Stored,
    WriteAck,
    WriteRequest,
)

# -- the store ---------------------------------------------------------------------------------


def test_the_store_keeps_the_newest_version_and_rebuilds_from_its_records() -> None:
    store = Store()
    assert store.write("k", "a", (2.0, 1, 1))
    assert not store.write("k", "old", (1.0, 9, 9))  # last writer wins: dropped silently
    assert store.hint(3, "k", "b", (3.0, 1, 2)) and store.read("k") == ("b", (3.0, 1, 2))
    assert store.handed_off(3, "k", (3.0, 1, 2)) and not store.hints
    records = [
        Stored(key="k", value="a", version=(2.0, 1, 1)),
        Hinted(target=3, key="k", value="b", version=(3.0, 1, 2)),
        HintDone(target=3, key="k", version=(3.0, 1, 2)),
    ]
    again = Store(records)
    assert again.data == store.data and again.hints == {}


def test_preference_lists_are_the_ring_from_a_hashed_start_the_same_everywhere() -> None:
    members = (0, 1, 2, 3, 4)
    lists = {key: preference_list(key, members) for key in "abcdefgh"}
    assert all(sorted(order) == list(members) for order in lists.values())
    assert len({order[0] for order in lists.values()}) > 1  # keys spread over the ring
    assert preference_list("a", members) == lists["a"]


# -- the coordinator by hand --------------------------------------------------------------------


def request(command: Any, seq: int = 1) -> Request:
    return Request(client_id=7, seq=seq, command=command)


def coordinator(**options: Any) -> Any:
    # Node 0 of three: a replica of every key (n = 3), so it answers itself at once.
    replica = build(PROTOCOL, node=0, options=NwrOptions(**options))
    replica.start(0.0)
    return replica


def test_a_timestamped_put_is_answered_after_w_acknowledgements() -> None:
    node = coordinator(w=2, clock_skew=0.0)
    out = node.propose(1.0, request(Put(key="k", value="v")))
    writes = sent(out, WriteRequest)
    assert [w.version for w in writes] == [(1.0, 7, 1)] * 2 and not out.answers  # 1 of 2 acks
    out = node.step(1.0, 1, WriteAck(op=writes[0].op))
    assert out.answers == [Answer(client_id=7, seq=1, result=None)]


def test_a_get_returns_the_newest_of_r_replies_and_blocking_repair_writes_it_back() -> None:
    members = (0, 1, 2, 3, 4)
    key = next(k for k in "abcdefgh" if 0 not in preference_list(k, members)[:3])
    a, b, c = preference_list(key, members)[:3]
    node = build(PROTOCOL, node=0, members=members, options=NwrOptions(read_repair="blocking"))
    out = node.propose(1.0, request(Get(key=key)))
    op = sent(out, ReadRequest)[0].op
    node.step(1.0, a, ReadReply(op=op, key=key, value="v", version=(5.0, 3, 1)))
    out = node.step(1.0, b, ReadReply(op=op, key=key, value="old", version=(4.0, 3, 1)))
    # The newest value is on one replica of the two that replied: write it back first.
    assert not out.answers
    assert [(w.value, w.version) for w in sent(out, WriteRequest, dst=b)] == [("v", (5.0, 3, 1))]
    assert not node.step(1.0, a, WriteAck(op=op)).answers  # not asked in this phase
    assert node.step(1.0, b, WriteAck(op=op)).answers == [Answer(client_id=7, seq=1, result="v")]


def test_compare_and_set_is_a_read_then_a_separate_write() -> None:
    node = coordinator(clock="version")
    out = node.propose(1.0, request(CompareAndSet(key="k", expected=None, new="x")))
    op = sent(out, ReadRequest)[0].op
    out = node.step(1.0, 1, ReadReply(op=op, key="k", value=None, version=None))
    writes = sent(out, WriteRequest)
    assert [(w.value, w.version) for w in writes] == [("x", (1.0, 7, 1))] * 2
    assert node.step(1.0, 1, WriteAck(op=op)).answers == [Answer(client_id=7, seq=1, result=True)]


def test_without_a_quorum_in_time_the_request_is_rejected() -> None:
    node = coordinator(timeout=0.2)
    node.propose(0.0, request(Put(key="k", value="v")))
    out = node.tick(0.2)
    assert [(r.seq, r.reason) for r in out.rejected] == [(1, "unavailable")]
    assert node.next_deadline() is None


def test_a_fallback_holds_a_hinted_write_and_hands_it_off() -> None:
    fallback = build(PROTOCOL, node=0)
    fallback.start(0.0)
    write = WriteRequest(op=4, key="k", value="v", version=(1.0, 7, 1), hint=2)
    out = fallback.step(0.0, 1, write)
    assert sent(out, WriteAck) == [WriteAck(op=4)] and not out.committed
    assert fallback.store.hints == {2: {"k": ("v", (1.0, 7, 1))}}
    assert sent(fallback.tick(fallback.next_deadline()), Handoff) == [
        Handoff(key="k", value="v", version=(1.0, 7, 1))
    ]
    out = fallback.step(0.5, 2, HandoffAck(key="k", version=(1.0, 7, 1)))
    assert out.persist == [HintDone(target=2, key="k", version=(1.0, 7, 1))]


# -- clusters --------------------------------------------------------------------------------


def cluster(seed: int = 1, nodes: int = 3, **options: Any) -> Simulator:
    options.setdefault("clock_skew", 0.0)
    return Simulator(ClusterConfig(protocol="nwr", nodes=nodes, seed=seed, options=options))


def submit(sim: Simulator, command: Any, node: int) -> Any:
    op = sim.submit(command, node=node)
    assert sim.run_until(lambda: op.done, timeout=1.0)
    return op


def written_to(sim: Simulator, replicas: tuple[int, ...], w: int, value: str) -> None:
    """A write of ``value`` that reaches ``replicas`` only (the others never get it)."""
    others = [n for n in sim.node_ids if n not in replicas]
    for n in others:
        sim.network.rule(types=["WriteRequest"], dst=n, loss=1.0)
    assert submit(sim, Put(key="k", value=value), node=replicas[0]).ok
    sim.network.clear_rules()


def read_from(sim: Simulator, replicas: tuple[int, ...]) -> Any:
    """A read whose quorum is ``replicas``: the others' replies are lost."""
    others = [n for n in sim.node_ids if n not in replicas]
    for n in others:
        sim.network.rule(types=["ReadReply"], src=n, loss=1.0)
    op = submit(sim, Get(key="k"), node=replicas[0])
    sim.network.clear_rules()
    return op


@pytest.mark.parametrize(("w", "r"), [(2, 2), (3, 1), (1, 3)])
def test_with_w_plus_r_over_n_every_read_quorum_overlaps_the_last_write_quorum(
    w: int, r: int
) -> None:
    for writers in itertools.combinations(range(3), w):
        for readers in itertools.combinations(range(3), r):
            sim = cluster(w=w, r=r)
            written_to(sim, writers, w, "old")
            sim.run_for(0.1)  # the old value everywhere
            written_to(sim, writers, w, "new")
            assert set(writers) & set(readers), "quorums must overlap"
            assert read_from(sim, readers).result == "new", (writers, readers)


def test_with_w_plus_r_at_most_n_a_read_quorum_can_miss_the_last_write() -> None:
    sim = cluster(w=1, r=1)
    written_to(sim, (0, 1, 2), 1, "old")
    sim.run_for(0.1)
    written_to(sim, (0,), 1, "new")
    assert read_from(sim, (1,)).result == "old"  # acknowledged, and not seen


def test_a_later_write_with_a_slower_clock_is_lost() -> None:
    sim = cluster(clock_skew=0.05, seed=3)
    offsets = {n: sim.replica(n).coordinator.offset for n in sim.node_ids}
    fast, slow = max(offsets, key=offsets.get), min(offsets, key=offsets.get)
    ahead = offsets[fast] - offsets[slow]
    assert ahead > 0.01
    assert submit(sim, Put(key="k", value="first"), node=fast).ok
    sim.run_for(ahead / 2)  # later, but by less than the clocks disagree
    assert submit(sim, Put(key="k", value="second"), node=slow).ok
    sim.run_for(0.5)
    states = {n: sim.host(n).sm.data for n in sim.node_ids}
    assert all(data == {"k": "first"} for data in states.values())
    assert [op.command.value for op in lost_writes(sim.history, states)] == ["second"]


def test_a_sloppy_quorum_writes_to_a_fallback_that_hands_off_after_the_replica_returns() -> None:
    sim = cluster(nodes=5, sloppy=True)
    key = "k"
    replicas = preference_list(key, sim.node_ids)[:3]
    sim.crash(replicas[1])
    sim.crash(replicas[2])
    assert submit(sim, Put(key=key, value="v"), node=replicas[0]).ok  # W = 2 with a fallback
    fallback = preference_list(key, sim.node_ids)[3]
    assert sim.replica(fallback).store.hints
    sim.restart(replicas[1])
    sim.restart(replicas[2])
    sim.run_for(0.5)
    assert not sim.replica(fallback).store.hints
    assert sum(sim.host(n).sm.data.get(key) == "v" for n in replicas) >= 2


def test_every_node_reports_its_own_replica_data_to_its_state_machine() -> None:
    sim = cluster(nodes=5)
    assert submit(sim, Put(key="k", value="v"), node=0).ok
    sim.run_for(0.1)
    holders = {n for n in sim.node_ids if sim.host(n).sm.data.get("k") == "v"}
    assert holders == set(preference_list("k", sim.node_ids)[:3])


def test_every_message_and_record_round_trips() -> None:
    version = (1.5, 7, 2)
    roundtrip_table_check(
        Codec.for_protocol(PROTOCOL),
        [
            ReadRequest(op=1, key="k"),
            ReadReply(op=1, key="k", value=None, version=None),
            ReadReply(op=1, key="k", value="v", version=version),
            WriteRequest(op=2, key="k", value="v", version=version, hint=None),
            WriteRequest(op=2, key="k", value=None, version=version, hint=3),
            WriteAck(op=2),
            Handoff(key="k", value="v", version=version),
            HandoffAck(key="k", version=version),
            Stored(key="k", value="v", version=version),
            Hinted(target=3, key="k", value="v", version=version),
            HintDone(target=3, key="k", version=version),
        ],
    )


def test_unsafe_names_a_reason_for_every_configuration() -> None:
    best = NwrOptions(clock="version", read_repair="blocking")
    assert unsafe(best) == ("read-modify-writes (compare-and-set, append) are not atomic",)
    assert len(unsafe(NwrOptions(w=1, r=1, sloppy=True))) == 5
    with pytest.raises(ValueError):
        NwrOptions(n=3, w=4)
