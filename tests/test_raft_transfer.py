"""Raft leadership transfer (thesis 3.10; etcd's MsgTimeoutNow).

Sans-I/O tests check each step on one replica: the leader refuses proposals,
brings the target up to date, sends ``TimeoutNow`` only once the target holds
its last entry, and aborts after an election timeout; the target campaigns at
once and its vote requests pass leader stickiness (without the transfer flag
they do not: the contrast).  Simulator tests hand leadership over in a
running cluster, within one election timeout and with the history
linearizable, and abort a transfer to an unreachable target.
"""

from __future__ import annotations

import pytest
from core_helpers import outgoing, sent
from raft_helpers import ET_MIN, ack, append, cluster, elect, elect_sim, make, putreq, raft

from consensus.checker.linearizability import check
from consensus.commands import Get, Put
from protocols.raft import (
    AppendEntries,
    RaftReplica,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
    TransferLeadership,
)

pytestmark = pytest.mark.filterwarnings("error")


def leader_with_noop_committed() -> tuple[RaftReplica, float]:
    r = make()
    now, _ = elect(r)
    ack(r, now, 1, 1)
    return r, now


def test_the_leader_sends_timeout_now_to_an_up_to_date_target_at_once() -> None:
    r, now = leader_with_noop_committed()
    out = r.step(now, 0, TransferLeadership(target=1))
    assert sent(out, TimeoutNow, dst=1) == [TimeoutNow(term=1)]
    assert r.status()["transfer_target"] == 1


def test_the_leader_refuses_proposals_while_it_transfers_leadership() -> None:
    r, now = leader_with_noop_committed()
    r.step(now, 0, TransferLeadership(target=2))
    out = r.propose(now, putreq(1))
    assert [(x.reason, x.leader_hint) for x in out.rejected] == [("transferring", None)]
    assert r.log.last_index == 1


def test_a_target_behind_the_leader_is_caught_up_before_timeout_now() -> None:
    r, now = leader_with_noop_committed()
    for seq in (1, 2):
        r.propose(now, putreq(seq))
    r.tick(now)
    out = r.step(now, 0, TransferLeadership(target=2))
    assert not sent(out, TimeoutNow)
    out = ack(r, now, 2, 2)
    assert not sent(out, TimeoutNow)  # index 3 is still missing there
    out = ack(r, now, 2, 3)
    assert sent(out, TimeoutNow, dst=2) == [TimeoutNow(term=1)]


def test_a_transfer_to_a_learner_a_stranger_or_itself_is_refused() -> None:
    r = make(members=(0, 1, 2))
    now, _ = elect(r)
    for target in (0, 7):
        out = r.step(now, 0, TransferLeadership(target=target))
        assert not sent(out, TimeoutNow) and r.status()["transfer_target"] is None
    assert r.counters["transfers_refused"] + r.counters["transfers_ignored"] == 2


def test_a_follower_forwards_its_operator_s_request_to_the_leader_once() -> None:
    f = make(node=1)
    f.step(0.0, 0, append(1, 0, 0))
    out = f.step(0.0, 1, TransferLeadership(target=2))
    assert outgoing(out) == [(0, TransferLeadership(target=2))]
    # A copy forwarded by another node is not forwarded again (no loops).
    assert not outgoing(f.step(0.0, 2, TransferLeadership(target=2)))


def test_timeout_now_makes_the_target_campaign_at_once_without_prevote() -> None:
    f = make(node=1)
    f.step(0.0, 0, append(1, 0, 0, 1))
    out = f.step(0.01, 0, TimeoutNow(term=1))
    assert f.role is Role.CANDIDATE and f.term == 2
    votes = sent(out, RequestVote)
    assert votes and all(v.transfer and not v.prevote and v.term == 2 for v in votes)
    # A stale one (an earlier term) is ignored.
    g = make(node=2)
    g.step(0.0, 0, append(3, 0, 0))
    g.step(0.0, 0, TimeoutNow(term=2))
    assert g.role is Role.FOLLOWER and g.term == 3


def test_voters_within_a_leader_lease_answer_a_transfer_candidate_only() -> None:
    voter = make(node=2)
    voter.step(1.0, 0, append(1, 0, 0))
    plain = RequestVote(term=2, last_log_index=0, last_log_term=0)
    assert not outgoing(voter.step(1.01, 1, plain))  # leader stickiness
    handover = RequestVote(term=2, last_log_index=0, last_log_term=0, transfer=True)
    out = voter.step(1.01, 1, handover)
    assert sent(out, RequestVoteResponse)[0].vote_granted and voter.voted_for == 1


def test_the_old_leader_steps_down_and_votes_for_the_target() -> None:
    r, now = leader_with_noop_committed()
    r.step(now, 0, TransferLeadership(target=1))
    request = RequestVote(term=2, last_log_index=1, last_log_term=1, transfer=True)
    out = r.step(now + 0.002, 1, request)
    assert r.role is Role.FOLLOWER and r.status()["transfer_target"] is None
    assert sent(out, RequestVoteResponse)[0].vote_granted


def test_a_transfer_not_done_within_an_election_timeout_is_aborted() -> None:
    r = make()
    now, _ = elect(r)  # node 2 never answers: it is not up to date
    r.step(now, 0, TransferLeadership(target=2))
    assert r._transfer_deadline == pytest.approx(now + ET_MIN)
    t = now
    while t < now + ET_MIN:
        t = r.next_deadline() or t
        for m in sent(r.tick(t), AppendEntries, dst=1):  # node 1 keeps the leader in office
            ack(r, t, 1, m.prev_log_index + len(m.entries))
    assert r.role is Role.LEADER and r.counters["transfers_aborted"] == 1
    assert not r.propose(t, putreq(1)).rejected


def test_a_learner_ignores_timeout_now() -> None:
    learner = make(node=3, members=(0, 1, 2))
    learner.step(0.0, 0, append(1, 0, 0))
    learner.step(0.0, 0, TimeoutNow(term=1))
    assert learner.role is Role.FOLLOWER and learner.counters["timeout_now_ignored"] == 1


# ----------------------------------------------------------------- simulation


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_leadership_moves_to_the_target_within_one_election_timeout_under_load(seed) -> None:
    sim = cluster(nodes=5, seed=seed)
    leader = elect_sim(sim)
    target = (leader + 2) % 5
    clients = [sim.client() for _ in range(4)]
    ops = []

    def work(client, i=0) -> None:
        if i < 40:
            command = Put(key="k", value=f"{client.client_id}.{i}") if i % 2 else Get(key="k")
            ops.append(client.submit(command, on_done=lambda op: work(client, i + 1)))

    for client in clients:
        work(client)
    sim.run_for(0.1)
    started = sim.now
    sim.host(leader).step(sim.now, leader, TransferLeadership(target=target))
    assert sim.run_until(lambda: sim.leaders() == [target], timeout=ET_MIN)
    assert sim.now - started < ET_MIN
    assert raft(sim, target).counters["transfer_elections"] == 1
    assert raft(sim, leader).counters["transfers_aborted"] == 0
    assert sim.run_until(lambda: len(ops) == 160 and all(op.done for op in ops), timeout=10.0)
    assert all(op.ok for op in ops)
    assert check(list(sim.history)).ok


def test_a_transfer_to_an_unreachable_target_aborts_and_the_old_leader_serves_again() -> None:
    sim = cluster(nodes=3)
    leader = elect_sim(sim)
    target = (leader + 1) % 3
    sim.isolate(target)
    sim.host(leader).step(sim.now, leader, TransferLeadership(target=target))
    write = sim.submit(Put(key="k", value="1"), node=leader)
    sim.run_for(ET_MIN + 0.01)
    assert sim.leaders() == [leader] and raft(sim, leader).counters["transfers_aborted"] == 1
    assert sim.run_until(lambda: write.done, timeout=2.0) and write.ok
