"""Raft learners, single-server changes and leaving a joint configuration
(thesis 4.1-4.3; etcd's learners and ConfChangeV2).

Sans-I/O tests on a leader of voters {0, 1, 2} with spare nodes 3 and 4:
a server a change adds first joins as a learner, is replicated to at once,
never counts in a quorum, and is promoted only once caught up; one voter
added or removed skips the joint configuration; ``ChangeLearners`` adds,
removes and demotes; with ``auto_leave_joint`` off the client leaves the
joint configuration.  Each has the option switched off as the contrast.
Simulator tests: the issue's ``{0,1,2} -> {1,2,3}`` change completes only
once server 3 holds the log (without learners it completes with server 3
empty), and a demotion under load.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_helpers import sent
from raft_helpers import ack, append, cluster, elect, elect_sim, make, raft

from consensus.checker.linearizability import check
from consensus.commands import ChangeMembership, Get, Put, Request
from consensus.config import Delay, MessageRule, NetworkConfig
from consensus.quorum import JointQuorum, Majority
from protocols.raft import (
    PROTOCOL,
    AppendEntries,
    ChangeLearners,
    Configuration,
    RaftReplica,
    Role,
)
from protocols.raft.records import HardState, LogAppend, replay

pytestmark = pytest.mark.filterwarnings("error")

OLD = (0, 1, 2)


def change(members: tuple[int, ...], seq: int = 1, client: int = 7) -> Request:
    return Request(client_id=client, seq=seq, command=ChangeMembership(members=members))


def leader(**opts: Any) -> tuple[RaftReplica, float]:
    """Node 0 leading {0, 1, 2}, its Noop (index 1) committed."""
    opts.setdefault("members", OLD)
    r = make(**opts)
    now, _ = elect(r)
    acks(r, now, 1, *r.peers[: len(r.peers) // 2])
    assert r.commit_index == 1
    return r, now


def acks(r: RaftReplica, now: float, index: int, *peers: int) -> None:
    for peer in peers:
        ack(r, now, peer, index)


# ------------------------------------------------------------------- learners


def test_a_server_a_change_adds_joins_as_a_learner_and_is_replicated_to_at_once() -> None:
    r, now = leader()
    r.propose(now, change((0, 1, 2, 3)))
    phase = r.log[2].payload
    assert phase == Configuration(new=OLD, learners=(3,), request=change((0, 1, 2, 3)))
    assert r.quorum == Majority(OLD) and r.status()["learners"] == [3]
    # The same flush that sends the entry to the voters probes the learner.
    out = r.tick(now)
    assert sent(out, AppendEntries, dst=3) and sent(out, AppendEntries, dst=1)


def test_a_learner_never_counts_for_commitment() -> None:
    r, now = leader()
    r.propose(now, change((0, 1, 2, 3)))
    ack(r, now, 3, 2)
    assert r.commit_index == 1  # the leader and a learner are no majority of {0, 1, 2}
    ack(r, now, 1, 2)
    assert r.commit_index == 2


def test_a_learner_is_promoted_only_once_its_log_is_close_to_the_leader_s() -> None:
    r, now = leader(promote_lag=2)
    r.propose(now, change((0, 1, 2, 3)))
    for seq in range(1, 6):
        r.propose(now, Request(client_id=1, seq=seq, command=Put(key="k", value="v")))
    assert r.log.last_index == 7
    acks(r, now, 7, 1, 2)  # the learner phase (index 2) committed; 3 holds nothing yet
    ack(r, now, 3, 1)  # it does not even hold the learner phase: not yet
    ack(r, now, 3, 4)  # 3 entries behind: not yet
    assert r.quorum == Majority(OLD) and r.counters["learners_promoted"] == 0
    ack(r, now, 3, 5)  # within promote_lag = 2 of index 7
    assert r.counters["learners_promoted"] == 1
    # One voter added: a single-server change, the client's request is C_new.
    assert r.log[8].payload == change((0, 1, 2, 3))
    assert r.quorum == Majority((0, 1, 2, 3)) and r.status()["learners"] == []


def test_without_the_learner_phase_the_new_server_votes_at_once() -> None:
    r, now = leader(learner_phase=False)
    r.propose(now, change((0, 1, 2, 3)))
    assert r.log[2].payload == change((0, 1, 2, 3))
    assert r.quorum == Majority((0, 1, 2, 3))


def test_a_new_leader_carries_a_committed_learner_phase_on() -> None:
    phase = Configuration(new=OLD, learners=(3,), request=change((0, 1, 2, 3)))
    f = make(node=1, members=OLD)
    f.step(0.0, 0, append(1, 0, 0, 1, commit=0))
    f.step(0.0, 0, _with_payload(append(1, 1, 1, 1, commit=2), phase))
    assert f.status()["learners"] == [3]
    now, _ = elect(f)
    ack(f, now, 0, 3)  # its Noop (index 3) commits; 3 is caught up: promote
    ack(f, now, 3, 3)
    assert f.quorum == Majority((0, 1, 2, 3))


def _with_payload(message: AppendEntries, payload: Any) -> AppendEntries:
    (entry,) = message.entries
    return AppendEntries(
        term=message.term,
        prev_log_index=message.prev_log_index,
        prev_log_term=message.prev_log_term,
        entries=(type(entry)(term=entry.term, payload=payload),),
        leader_commit=message.leader_commit,
    )


def test_a_learner_never_campaigns() -> None:
    learner = make(node=3, members=OLD)
    deadline = learner.next_deadline()
    assert deadline is not None
    learner.tick(deadline)
    assert learner.role is Role.FOLLOWER and learner.counters["elections_skipped_not_member"]


# ------------------------------------------------------- single-server changes


def test_removing_one_voter_skips_the_joint_configuration() -> None:
    r, now = leader()
    r.propose(now, change((0, 1)))
    assert r.log[2].payload == change((0, 1)) and r.quorum == Majority((0, 1))
    assert r.counters["single_server_changes"] == 1


def test_with_single_server_changes_off_every_change_is_joint() -> None:
    r, now = leader(single_server_changes=False)
    r.propose(now, change((0, 1)))
    assert r.log[2].payload == Configuration(new=(0, 1), old=OLD, request=change((0, 1)))
    assert r.quorum == JointQuorum.of(OLD, (0, 1))


def test_replacing_servers_goes_through_learners_then_a_joint_configuration() -> None:
    r, now = leader()
    r.propose(now, change((0, 3, 4)))
    assert r.log[2].payload.learners == (3, 4)
    acks(r, now, 2, 1, 3, 4)  # the learner phase committed, both learners caught up
    assert r.log[3].payload == Configuration(new=(0, 3, 4), old=OLD, request=change((0, 3, 4)))
    acks(r, now, 3, 1, 3)  # joint committed: C_new, the client's request
    assert r.log[4].payload == change((0, 3, 4)) and r.quorum == Majority((0, 3, 4))


# ------------------------------------------------------------ ChangeLearners


def test_change_learners_adds_and_removes_learners_without_touching_the_voters() -> None:
    r, now = leader()
    r.step(now, 0, ChangeLearners(learners=(3, 4)))
    assert r.log[2].payload == Configuration(new=OLD, learners=(3, 4))
    assert r.quorum == Majority(OLD)
    ack(r, now, 1, 2)
    r.step(now, 0, ChangeLearners(learners=(4,)))
    assert r.log[3].payload == Configuration(new=OLD, learners=(4,))


def test_change_learners_demotes_a_voter_with_a_single_server_change() -> None:
    r, now = leader()
    r.step(now, 0, ChangeLearners(learners=(2,)))
    assert r.log[2].payload == Configuration(new=(0, 1), learners=(2,))
    assert r.quorum == Majority((0, 1)) and 2 in r._progress  # still replicated to


def test_demoting_two_voters_is_joint_and_they_stay_learners_after_it() -> None:
    r, now = leader(members=(0, 1, 2, 3, 4))
    r.step(now, 0, ChangeLearners(learners=(3, 4)))
    assert r.log[2].payload == Configuration(new=OLD, old=(0, 1, 2, 3, 4), learners=(3, 4))
    acks(r, now, 2, 1, 2)
    assert r.log[3].payload == Configuration(new=OLD, learners=(3, 4))


def test_a_demoted_leader_steps_down_and_stays_a_learner() -> None:
    r, now = leader()
    r.step(now, 0, ChangeLearners(learners=(0,)))
    acks(r, now, 2, 1, 2)
    assert r.role is Role.FOLLOWER and r.status()["learners"] == [0]
    deadline = r.next_deadline()
    if deadline is not None:
        r.tick(deadline)
    assert r.role is Role.FOLLOWER  # it never campaigns


def test_a_configuration_with_learners_survives_a_restart() -> None:
    r, now = leader()
    out = r.step(now, 0, ChangeLearners(learners=(3,)))
    records = [*_all_records(r, now), *out.persist]
    again = RaftReplica(r.ctx, records)
    assert again.status()["learners"] == [3] and replay(records).log.last_index == 2


def _all_records(r: RaftReplica, now: float) -> list[Any]:
    # Everything a replica persisted so far, rebuilt from its log (a test shortcut).
    entries = tuple(r.log.entries(1, 2))
    return [HardState(term=r.term, voted_for=r.voted_for), LogAppend(index=1, entries=entries)]


# ------------------------------------------------------------- joint: leaving


def test_with_auto_leave_off_the_leader_stays_joint_until_asked_to_leave() -> None:
    r, now = leader(single_server_changes=False, learner_phase=False, auto_leave_joint=False)
    r.propose(now, change((0, 1)))
    out = ack(r, now, 1, 2)  # joint committed: answered, still joint
    assert [(a.seq, a.result) for a in out.answers or ()] == [(1, (0, 1))]
    assert r.quorum == JointQuorum.of(OLD, (0, 1)) and r.log.last_index == 2
    assert [x.reason for x in r.propose(now, change((0, 2), seq=2)).rejected] == ["busy"]
    leave = change((0, 1), seq=2)
    r.propose(now, leave)
    assert r.log[3].payload == leave and r.quorum == Majority((0, 1))


# ----------------------------------------------------------------- simulation


def issue_change(learner_phase: bool) -> tuple[Any, int]:
    """{0,1,2} -> {1,2,3} on a cluster whose links to node 3 take 100 ms more:
    returns the simulator when the change completed, and node 3's last index then."""
    slow_to_3 = MessageRule(dst=(3,), delay=Delay.constant(0.1))
    sim = cluster(
        nodes=4,
        members=OLD,
        options={"learner_phase": learner_phase, "single_server_changes": False},
        network=NetworkConfig(delay=Delay.constant(0.001), rules=(slow_to_3,)),
    )
    elect_sim(sim)
    writes = [sim.submit(Put(key=f"k{i}", value="v")) for i in range(20)]
    assert sim.run_until(lambda: all(op.done for op in writes), timeout=5.0)
    op = sim.submit(ChangeMembership(members=(1, 2, 3)))
    assert sim.run_until(lambda: op.done, timeout=5.0) and op.ok
    return sim, raft(sim, 3).log.last_index


def test_a_change_completes_only_once_the_added_server_holds_the_log() -> None:
    sim, held = issue_change(learner_phase=True)
    (leader,) = sim.leaders()
    assert held >= 22  # the Noop, 20 writes and the learner phase, at least
    assert raft(sim, leader).counters["learners_promoted"] == 1


def test_without_learners_the_change_completes_before_the_new_server_holds_anything() -> None:
    _, held = issue_change(learner_phase=False)
    assert held == 0


def test_a_voter_demoted_under_load_keeps_receiving_the_log() -> None:
    sim = cluster(nodes=3, options={"follower_reads": True})
    leader = elect_sim(sim)
    demoted = (leader + 1) % 3
    clients = [sim.client() for _ in range(3)]
    ops: list[Any] = []

    def work(client: Any, i: int = 0) -> None:
        if i < 30:
            command = Put(key="k", value=f"{client.client_id}.{i}") if i % 2 else Get(key="k")
            ops.append(client.submit(command, on_done=lambda op: work(client, i + 1)))

    for client in clients:
        work(client)
    sim.run_for(0.05)
    sim.host(demoted).step(sim.now, demoted, ChangeLearners(learners=(demoted,)))
    assert sim.run_until(lambda: len(ops) == 90 and all(op.done for op in ops), timeout=10.0)
    assert all(op.ok for op in ops) and check(list(sim.history)).ok
    sim.run_for(0.2)
    assert raft(sim, leader).quorum == Majority(tuple(n for n in range(3) if n != demoted))
    assert raft(sim, demoted).commit_index == raft(sim, leader).commit_index
    assert PROTOCOL.membership


def test_a_learner_phase_that_cannot_finish_is_replaced_by_the_next_change() -> None:
    r, now = leader()
    r.propose(now, change((0, 1, 2, 3)))
    assert [x.reason for x in r.propose(now, change((0, 1, 2, 4), seq=2)).rejected] == ["busy"]
    ack(r, now, 1, 2)  # the phase committed; 3 is down and never answers
    r.propose(now, change((0, 1, 2, 4), seq=2))
    assert r.log[3].payload.learners == (3, 4) and r.log[3].payload.request.seq == 2
    assert r.counters["learner_phases_superseded"] == 1
