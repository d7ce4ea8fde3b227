"""Raft reads without the log: the read_mode options, leases (thesis 6.4.1) and
follower reads (ReadIndex forwarding, thesis 6.4).

Sans-I/O tests hand one replica hand-written messages and check one rule
each, with the feature off as the contrast; simulator tests show lease reads
staying linearizable with clock drift within ``max_clock_drift`` and the
checker catching the stale reads a drift beyond it allows, and followers
serving reads.  The ReadIndex rules themselves are in ``test_raft_core``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from core_helpers import outgoing, sent
from raft_helpers import ET_MIN, HB, ack, append, cluster, elect, elect_sim, getreq, make, raft

from consensus.checker.linearizability import check
from consensus.codec import Codec, CodecError
from consensus.commands import Get, Put
from consensus.config import ConfigError, Delay, NetworkConfig
from consensus.replica import ReadReady
from consensus.schema import structure
from protocols.raft import (
    PROTOCOL,
    AppendEntries,
    RaftOptions,
    RaftReplica,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Role,
    TransferLeadership,
)

pytestmark = pytest.mark.filterwarnings("error")

LEASE: dict[str, Any] = {"read_mode": "lease", "max_clock_drift": 0.01}


# -------------------------------------------------------------------- options


def test_read_mode_defaults_to_read_index_and_names_the_three_modes() -> None:
    assert RaftOptions().read_mode == "read_index"
    for mode in ("log", "read_index", "lease"):
        assert RaftOptions(read_mode=mode).read_mode == mode
    with pytest.raises(ConfigError, match="read_mode: must be one of 'log', 'read_index'"):
        RaftOptions(read_mode="stale")


def test_read_index_is_a_deprecated_alias_of_read_mode() -> None:
    with pytest.warns(DeprecationWarning, match="use read_mode = 'log'"):
        assert RaftOptions(read_index=False).read_mode == "log"
    with pytest.warns(DeprecationWarning):
        assert RaftOptions(read_index=True, read_mode="read_index").read_mode == "read_index"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigError, match="read_index = true means read_mode = 'read_index'"):
            RaftOptions(read_index=True, read_mode="lease")
        with pytest.raises(ConfigError, match=r"options\.read_index: .*read_mode = 'log'"):
            structure(RaftOptions, {"read_index": False, "read_mode": "lease"}, path="options")


def test_leases_need_check_quorum_and_follower_reads_need_a_read_index() -> None:
    with pytest.raises(ConfigError, match="'lease' needs check_quorum"):
        RaftOptions(read_mode="lease", check_quorum=False)
    with pytest.raises(ConfigError, match="follower_reads: .*read_mode = 'log'"):
        RaftOptions(follower_reads=True, read_mode="log")
    with pytest.raises(ConfigError, match="max_clock_drift"):
        RaftOptions(max_clock_drift=1.0)
    assert RaftOptions(follower_reads=True, read_mode="lease").follower_reads


def test_the_lease_lasts_the_minimum_election_timeout_shortened_by_the_drift_bound() -> None:
    options = RaftOptions(read_mode="lease", max_clock_drift=0.01)
    assert options.lease_duration == pytest.approx(0.15 * 0.99 / 1.01)
    assert RaftOptions(max_clock_drift=0.0).lease_duration == pytest.approx(0.15)


def test_reads_go_through_the_log_only_with_read_mode_log() -> None:
    assert not make(read_mode="log").supports_reads
    assert make(read_mode="lease").supports_reads and make().supports_reads


# ---------------------------------------------------------------------- leases


def lease_leader(**opts: Any) -> tuple[RaftReplica, float]:
    """A lease-mode leader whose first round (its Noop, sent at ``now``) a
    quorum answered, so it holds a lease from ``now``."""
    r = make(**LEASE, **opts)
    now, out = elect(r)
    (first,) = {m.read_round for m in sent(out, AppendEntries)}
    assert first == 1
    ack(r, now + 0.002, 1, 1, read_round=1)
    return r, now


def test_a_leader_serves_reads_at_once_while_its_lease_holds() -> None:
    r, now = lease_leader()
    out = r.read(now + 0.01, getreq(1))
    assert out.reads == [ReadReady(client_id=9, seq=1, index=1)] and not outgoing(out)
    assert r.counters["lease_reads"] == 1


def test_the_lease_counts_from_when_the_round_was_sent_not_when_it_was_answered() -> None:
    r, now = lease_leader()
    duration = RaftOptions(**LEASE).lease_duration
    assert r.read(now + duration - 1e-6, getreq(1)).reads
    # The answer came 2 ms after the round left; the lease does not stretch by them.
    out = r.read(now + duration + 1e-6, getreq(2))
    assert not out.reads and r.counters["lease_fallbacks"] == 1


def test_outside_its_lease_a_leader_falls_back_to_a_read_index_round() -> None:
    r = make(**LEASE)
    now, _ = elect(r)
    out = r.read(now, getreq(1))  # no round answered yet: no lease
    assert not out.reads
    out = r.tick(now)
    (round_,) = {m.read_round for m in sent(out, AppendEntries)}
    out = ack(r, now, 2, 1, read_round=round_)
    assert out.reads == [ReadReady(client_id=9, seq=1, index=1)]


def test_every_heartbeat_starts_a_round_whose_answers_renew_the_lease() -> None:
    r, now = lease_leader()
    t = now + HB
    out = r.tick(t)
    (round_,) = {m.read_round for m in sent(out, AppendEntries)}
    assert round_ == 2
    ack(r, t + 0.001, 2, 1, read_round=2)
    duration = RaftOptions(**LEASE).lease_duration
    assert r.read(t + duration - 1e-6, getreq(1)).reads


def test_without_the_lease_option_every_read_waits_for_a_round() -> None:
    r = make()  # read_index
    now, _ = elect(r)
    ack(r, now, 1, 1, read_round=0)
    assert not r.read(now + 0.01, getreq(1)).reads
    assert r.counters["lease_reads"] == 0


def test_a_leader_that_sent_timeout_now_serves_no_lease_read_for_the_rest_of_its_term() -> None:
    r, now = lease_leader()
    r.step(now + 0.01, 0, TransferLeadership(target=1))
    assert r._transfer_target == 1 and r.counters["timeout_now_sent"] == 1
    assert not r.read(now + 0.02, getreq(1)).reads
    r.tick(r._transfer_deadline)  # aborted: leads again
    t = r._now + 0.001
    ack(r, t, 1, 1, read_round=r._read_round)
    assert r.role is Role.LEADER and not r.read(t, getreq(2)).reads


def test_a_restarted_node_in_lease_mode_refuses_votes_for_an_election_timeout() -> None:
    vote = RequestVote(term=5, last_log_index=0, last_log_term=0)
    voter = make(node=1, now=10.0, **LEASE)
    out = voter.step(10.0 + ET_MIN / 2, 2, vote)
    assert not outgoing(out) and voter.term == 0
    assert voter.counters["votes_ignored_in_lease"] == 1
    out = voter.step(10.0 + ET_MIN, 2, vote)
    assert sent(out, RequestVoteResponse)[0].vote_granted
    # Without leases a restarted node votes at once.
    plain = make(node=1, now=10.0)
    assert sent(plain.step(10.0, 2, vote), RequestVoteResponse)[0].vote_granted


# -------------------------------------------------------------- follower reads


def follower(**opts: Any) -> RaftReplica:
    """Node 1 with follower reads, following leader 0 in term 1 (its log: the Noop)."""
    f = make(node=1, follower_reads=True, **opts)
    f.step(0.0, 0, append(1, 0, 0, 1))
    return f


def forward(f: RaftReplica, now: float, *reads: tuple[int, int], leader: int = 0) -> ReadIndex:
    """Client reads ``(client_id, seq)`` reach ``f`` in one batch of inputs; the
    flush right after them forwards them: the one ReadIndex it sends ``leader``."""
    for client, seq in reads:
        out = f.read(now, getreq(seq, client=client))
        assert not outgoing(out) and not out.reads and not out.rejected
    assert f.next_deadline() == now  # the flush, right after this batch of inputs
    (message,) = sent(f.tick(now), ReadIndex, dst=leader)
    deadline = f.next_deadline()
    assert deadline is not None and deadline > now  # the election timer again
    return message  # type: ignore[no-any-return]


def test_a_follower_asks_its_leader_for_a_read_index_and_serves_the_read() -> None:
    f = follower()
    assert forward(f, 0.01, (3, 4)) == ReadIndex(term=1, reads=((3, 4),))
    out = f.step(0.02, 0, ReadIndexResponse(term=1, reads=((3, 4),), index=1, success=True))
    assert out.reads == [ReadReady(client_id=3, seq=4, index=1)]


def test_reads_arriving_in_one_batch_of_inputs_share_one_read_index_and_one_answer() -> None:
    f = follower()
    pairs = ((3, 4), (5, 1), (3, 5))
    assert forward(f, 0.01, *pairs) == ReadIndex(term=1, reads=pairs)
    assert f.counters["follower_reads"] == 3 and f.counters["read_index_batches"] == 1
    # The leader confirms the batch as one read: one round, one answer.
    r = make()
    now, _ = elect(r)
    ack(r, now, 1, 1)  # the Noop commits
    rounds = r.counters["read_rounds"]
    assert not outgoing(r.step(now, 1, ReadIndex(term=1, reads=pairs)))
    out = r.tick(now)
    (round_,) = {m.read_round for m in sent(out, AppendEntries)}
    assert r.counters["read_rounds"] == rounds + 1
    out = ack(r, now, 2, 1, read_round=round_)
    answer = ReadIndexResponse(term=1, reads=pairs, index=1, success=True)
    assert sent(out, ReadIndexResponse) == [answer] and sent(out, dst=1) == [answer]
    assert r.counters["reads_for_followers"] == 3 and r.counters["read_index_received"] == 1
    out = f.step(0.02, 0, answer)
    assert out.reads == [ReadReady(client_id=c, seq=s, index=1) for c, s in pairs]


def test_a_read_retried_before_the_flush_is_forwarded_once() -> None:
    f = follower()
    assert forward(f, 0.01, (3, 4), (3, 4)).reads == ((3, 4),)


def test_a_late_response_serves_only_the_pending_reads_it_lists() -> None:
    f = follower()
    forward(f, 0.01, (3, 4), (3, 5))
    forward(f, 0.02, (7, 1))
    # An answer for (3, 4) alone (say, to an earlier attempt of that read) serves
    # (3, 4), and neither (3, 5) of the same batch nor (7, 1) of the next.
    out = f.step(0.03, 0, ReadIndexResponse(term=1, reads=((3, 4),), index=1, success=True))
    assert out.reads == [ReadReady(client_id=3, seq=4, index=1)]
    # Listing a read answered already and one never seen here serves nothing.
    again = ReadIndexResponse(term=1, reads=((3, 4), (8, 8)), index=1, success=True)
    stale = f.counters["stale_messages"]
    assert not f.step(0.03, 0, again).reads and f.counters["stale_messages"] == stale + 1
    out = f.step(0.04, 0, ReadIndexResponse(term=1, reads=((3, 5), (7, 1)), index=1, success=True))
    assert [(x.client_id, x.seq) for x in out.reads] == [(3, 5), (7, 1)]


def test_a_late_answer_from_an_earlier_term_still_serves_a_retry_of_the_same_read() -> None:
    f = follower()
    forward(f, 0.01, (3, 4))
    out = f.step(0.02, 2, append(2, 1, 1))  # a new leader: the read is rejected
    assert [(x.seq, x.reason, x.leader_hint) for x in out.rejected] == [(4, "not_leader", 2)]
    forward(f, 0.03, (3, 4), (3, 6), leader=2)  # the client retried; another read joins
    # The old leader's answer to the first attempt was confirmed after that attempt
    # was sent, hence after the read was first invoked: still valid for (3, 4).
    late = ReadIndexResponse(term=1, reads=((3, 4),), index=1, success=True)
    assert f.step(0.04, 0, late).reads == [ReadReady(client_id=3, seq=4, index=1)]
    assert (3, 6) in f._forwarded  # not listed: still waits for its own answer


def test_a_node_that_is_not_leader_refuses_and_the_follower_rejects_the_reads() -> None:
    r = make(node=2)
    out = r.step(0.0, 1, ReadIndex(term=0, reads=((3, 4), (3, 5))))
    assert sent(out, ReadIndexResponse) == [
        ReadIndexResponse(term=0, reads=((3, 4), (3, 5)), index=0, success=False)
    ]
    f = follower()
    forward(f, 0.0, (3, 4), (3, 5))
    refusal = ReadIndexResponse(term=1, reads=((3, 4), (3, 5)), index=0, success=False)
    out = f.step(0.0, 0, refusal)
    assert [(x.seq, x.reason) for x in out.rejected] == [(4, "not_leader"), (5, "not_leader")]


def test_a_follower_that_changes_term_rejects_every_read_forwarded_or_collected() -> None:
    f = follower()
    forward(f, 0.0, (3, 4), (3, 5))
    f.read(0.01, getreq(6, client=3))  # collected, not yet forwarded
    out = f.step(0.01, 2, append(2, 1, 1))
    assert sorted((x.seq, x.reason, x.leader_hint) for x in out.rejected) == [
        (4, "not_leader", 2),
        (5, "not_leader", 2),
        (6, "not_leader", 2),
    ]
    assert not sent(f.tick(0.01), ReadIndex)  # nothing left to forward
    # A late answer to them finds nothing to serve.
    late = ReadIndexResponse(term=1, reads=((3, 5), (3, 6)), index=1, success=True)
    assert not f.step(0.02, 0, late).reads


def test_a_follower_that_starts_an_election_rejects_every_read_it_forwarded() -> None:
    f = follower()
    forward(f, 0.0, (3, 4))
    f.read(0.0, getreq(5, client=3))
    deadline = f._election_deadline
    assert deadline is not None
    f._flush_at = deadline  # the election timer and the flush fall due together
    out = f.tick(deadline)
    assert f.role is Role.PRECANDIDATE and not sent(out, ReadIndex)
    assert sorted((x.seq, x.reason) for x in out.rejected) == [(4, "not_leader"), (5, "not_leader")]


def test_a_leader_that_steps_down_refuses_every_forwarded_batch_it_held() -> None:
    r = make()
    now, _ = elect(r)
    r.step(now, 1, ReadIndex(term=1, reads=((3, 4), (3, 5))))
    r.step(now, 2, ReadIndex(term=1, reads=((6, 1),)))
    r.read(now, getreq(7, client=9))
    out = r.step(now + 0.01, 2, append(2, 1, 1))  # a newer leader
    assert r.role is Role.FOLLOWER
    assert sent(out, ReadIndexResponse, dst=1) == [
        ReadIndexResponse(term=2, reads=((3, 4), (3, 5)), index=0, success=False)
    ]
    assert sent(out, ReadIndexResponse, dst=2) == [
        ReadIndexResponse(term=2, reads=((6, 1),), index=0, success=False)
    ]
    assert [(x.client_id, x.seq, x.leader_hint) for x in out.rejected] == [(9, 7, 2)]


def test_a_leader_confirms_a_forwarded_batch_at_once_within_its_lease() -> None:
    lease, t = lease_leader()
    out = lease.step(t + 0.01, 2, ReadIndex(term=1, reads=((3, 5), (4, 1))))
    assert sent(out, ReadIndexResponse, dst=2) == [
        ReadIndexResponse(term=1, reads=((3, 5), (4, 1)), index=1, success=True)
    ]
    assert lease.counters["lease_reads"] == 2 and lease.counters["reads_for_followers"] == 2


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "careful"])
def test_read_index_pairs_round_trip_through_both_codec_paths(fast: bool) -> None:
    codec = Codec(PROTOCOL.messages, fast=fast)
    careful = Codec(PROTOCOL.messages, fast=False)
    for message in [
        ReadIndex(term=2, reads=()),
        ReadIndex(term=2, reads=((3, 4), (2**40, 0))),
        ReadIndexResponse(term=2, reads=((3, 4), (5, 6)), index=9, success=True),
    ]:
        data = codec.encode(message)
        assert data == careful.encode(message)
        back = codec.decode(data)
        assert back == message and type(back.reads) is tuple
        assert all(type(pair) is tuple for pair in back.reads)
    for bad in [((3, 4, 5),), ((3, "4"),), [(3, 4)], ((3, True),)]:
        with pytest.raises(CodecError):
            codec.encode(ReadIndex(term=2, reads=bad))


def test_without_follower_reads_a_follower_rejects_reads_with_the_leader_hint() -> None:
    f = make(node=1)
    f.step(0.0, 0, append(1, 0, 0))
    out = f.read(0.0, getreq(1))
    assert not sent(out, ReadIndex)
    assert [(x.reason, x.leader_hint) for x in out.rejected] == [("not_leader", 0)]


# ----------------------------------------------------------------- simulation


def test_followers_serve_reads_in_a_simulated_cluster_and_stay_linearizable() -> None:
    sim = cluster(options={"follower_reads": True})
    leader = elect_sim(sim)
    sim.run_for(0.01)  # the followers hear from their leader
    follower = next(n for n in sim.node_ids if n != leader)
    ops = []
    for i in range(20):  # a write and a read at once, twenty times over
        pair = [
            sim.submit(Put(key="x", value=str(i)), node=leader),
            sim.submit(Get(key="x"), node=follower),
        ]
        assert sim.run_until(lambda: all(op.done for op in pair), timeout=1.0)  # noqa: B023
        ops.extend(pair)
    assert all(op.ok for op in ops)
    assert raft(sim, follower).counters["follower_reads"] == 20
    assert raft(sim, follower).counters["read_index_batches"] == 20  # one read at a time
    assert raft(sim, leader).counters["reads_for_followers"] == 20
    assert check(list(sim.history)).ok


def test_concurrent_follower_reads_share_read_index_messages_and_stay_linearizable() -> None:
    sim = cluster(options={"follower_reads": True})
    leader = elect_sim(sim)
    sim.run_for(0.01)
    follower = next(n for n in sim.node_ids if n != leader)
    for i in range(10):  # a write at the leader and eight reads at a follower, at once
        ops = [sim.submit(Put(key="x", value=str(i)), node=leader)]
        ops += [sim.submit(Get(key="x"), node=follower) for _ in range(8)]
        assert sim.run_until(lambda: all(op.done for op in ops), timeout=1.0)  # noqa: B023
        assert all(op.ok for op in ops)
    counters = raft(sim, follower).counters
    assert counters["follower_reads"] == 80
    assert counters["read_index_batches"] == 10  # the eight reads of each burst went together
    assert raft(sim, leader).counters["read_index_received"] == 10
    assert check(list(sim.history)).ok


def stale_read_scenario(leader_drift: float) -> list[object]:
    """Lease reads at a leader whose clock runs ``leader_drift`` against real time
    (the lease assumes 1%): the leader is cut off, the others elect a new leader
    and take a write, then a client reads at the old leader."""
    sim = cluster(
        options={**LEASE, "election_timeout_min": 0.15, "election_timeout_max": 0.3},
        clock_drift=(leader_drift, 0.0, 0.0),
        network=NetworkConfig(delay=Delay.constant(0.001)),
    )
    first = elect_sim(sim)
    if first != 0:
        sim.host(first).step(sim.now, first, TransferLeadership(target=0))
        assert sim.run_until(lambda: sim.leaders() == [0], timeout=2.0)
    write = sim.submit(Put(key="x", value="1"), node=0)
    assert sim.run_until(lambda: write.done, timeout=1.0)
    sim.run_for(0.2)  # a few heartbeats: the lease is renewed
    sim.partition([0], [1, 2])
    assert sim.run_until(lambda: bool(set(sim.leaders()) - {0}), timeout=2.0)
    newer = sim.submit(Put(key="x", value="2"), node=next(iter(set(sim.leaders()) - {0})))
    assert sim.run_until(lambda: newer.done, timeout=1.0) and newer.ok
    sim.run_for(0.001)  # the read starts strictly after the write returned
    read = sim.submit(Get(key="x"), node=0)
    sim.run_for(2.0)
    assert read.done
    return list(sim.history)


def test_lease_reads_with_drift_beyond_the_bound_go_stale_and_the_checker_sees_it() -> None:
    history = stale_read_scenario(leader_drift=-0.8)  # 5x slow: the lease lasts 5x longer
    stale = [op for op in history if op.command == Get(key="x")]
    assert [op.result for op in stale] == ["1"]
    assert check(history).ok is False


def test_lease_reads_with_drift_within_the_bound_stay_linearizable() -> None:
    history = stale_read_scenario(leader_drift=-0.01)
    (read,) = [op for op in history if op.command == Get(key="x")]
    assert read.result != "1"  # the old leader waited, lost its leadership; a retry read "2"
    assert check(history).ok
