"""Raft membership changes by joint consensus (paper section 6, thesis chapter 4).

Two layers.  Sans-I/O tests hand replicas messages written by hand and check
one rule each: the joint configuration is used as soon as it is appended, its
entry commits only with majorities of both configurations, C_new follows
only a committed joint entry, a leader outside C_new steps down once C_new
commits, truncation reverts a configuration, recovery restores it.  Then
seeded simulator runs on a 5- or 6-node cluster whose initial configuration
is a subset: adding, removing and replacing members, under message loss, and
with client traffic checked for linearizability.
"""

from __future__ import annotations

from typing import Any

import membership_helpers
import pytest
from core_helpers import build, outgoing, sent
from membership_helpers import (
    OLD,
    assert_linearizable_through_changes,
    assert_same_applied_sequence,
    change_members,
    members,
    one_leader,
    serve_without,
    write,
)

from consensus.commands import ChangeMembership, Noop, Put, Request
from consensus.config import Delay, NetworkConfig
from consensus.quorum import JointQuorum, Majority
from consensus.replica import Outputs
from consensus.sim.simulator import Simulator
from protocols.raft import (
    PROTOCOL,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    HardState,
    InstallSnapshot,
    LogAppend,
    RaftOptions,
    RaftReplica,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotTaken,
)

pytestmark = pytest.mark.filterwarnings("error")


#: The joint-consensus rules below are checked on their own: servers a change adds
#: vote at once (no learner phase), and every change is joint (test_raft_learners
#: covers learners and single-server changes).
JOINT_ONLY = RaftOptions(learner_phase=False, single_server_changes=False)


def make(
    node: int = 0,
    members: tuple[int, ...] = OLD,
    records: Any = (),
    options: RaftOptions = JOINT_ONLY,
) -> RaftReplica:
    replica = build(PROTOCOL, node, members, options, records, seed=node)
    replica.start(0.0)
    return replica  # type: ignore[no-any-return]


def change(members: tuple[int, ...], seq: int = 1, client: int = 7) -> Request:
    return Request(client_id=client, seq=seq, command=ChangeMembership(members=members))


def put(seq: int, client: int = 1) -> Request:
    return Request(client_id=client, seq=seq, command=Put(key="k", value=str(seq)))


def ack(r: RaftReplica, peer: int, index: int, now: float = 1.0) -> Outputs:
    return r.step(now, peer, AppendEntriesResponse(term=r.term, success=True, index=index))


def leader(members: tuple[int, ...] = OLD, node: int = 0) -> RaftReplica:
    """``node`` elected by every peer, its Noop (index 1) committed."""
    r = make(node, members)
    now = r.next_deadline()
    assert now is not None
    r.tick(now)
    for peer in r.peers:
        r.step(now, peer, RequestVoteResponse(term=r.term + 1, vote_granted=True, prevote=True))
        if r.role is Role.CANDIDATE:
            break
    for peer in r.peers:
        r.step(now, peer, RequestVoteResponse(term=r.term, vote_granted=True))
        if r.role is Role.LEADER:
            break
    assert r.role is Role.LEADER
    ack(r, r.peers[0], 1)
    assert r.commit_index == 1
    return r


def joint_leader(new: tuple[int, ...]) -> tuple[RaftReplica, Outputs]:
    r = leader()
    out = r.propose(1.0, change(new))
    assert r.log.last_index == 2 and isinstance(r.log[2].payload, Configuration)
    return r, out


# ------------------------------------------------------------- joint consensus


def test_joint_configuration_is_used_as_soon_as_the_leader_appends_it() -> None:
    r, out = joint_leader((0, 1, 2, 3, 4))
    assert r.log[2].payload == Configuration(
        new=(0, 1, 2, 3, 4), old=OLD, request=change((0, 1, 2, 3, 4))
    )
    assert r.quorum == JointQuorum.of(OLD, (0, 1, 2, 3, 4))
    assert r.commit_index == 1  # not committed, yet in force
    # Every server of old | new gets replication progress: new servers catch up.
    assert set(r._progress) == {1, 2, 3, 4}
    out = r.tick(1.0)
    assert sent(out, AppendEntries, dst=3) and sent(out, AppendEntries, dst=4)


def test_joint_configuration_is_used_as_soon_as_a_follower_appends_it() -> None:
    r = make(node=1)
    joint = Configuration(new=(0, 3, 4), old=OLD, request=change((0, 3, 4)))
    entries = (Entry(term=1, payload=Noop()), Entry(term=1, payload=joint))
    r.step(0.1, 0, AppendEntries(term=1, prev_log_index=0, prev_log_term=0, entries=entries))
    assert r.commit_index == 0
    assert r.quorum == JointQuorum.of(OLD, (0, 3, 4))
    assert set(r.peers) == {0, 2, 3, 4}
    assert r.status()["members"] == [0, 3, 4] and r.status()["members_old"] == list(OLD)


def test_joint_entry_commits_only_with_majorities_of_both_old_and_new() -> None:
    r, _ = joint_leader((0, 3, 4))
    ack(r, 1, 2)  # {0, 1}: a majority of old only
    assert r.commit_index == 1
    r2, _ = joint_leader((0, 3, 4))
    ack(r2, 3, 2)
    ack(r2, 4, 2)  # {0, 3, 4}: a majority of new only
    assert r2.commit_index == 1
    ack(r2, 1, 2)  # now both
    assert r2.commit_index == 2


def test_c_new_is_appended_only_after_the_joint_entry_commits() -> None:
    r, _ = joint_leader((0, 3, 4))
    ack(r, 1, 2)
    ack(r, 2, 2)
    assert r.log.last_index == 2  # old majority is not enough: still joint
    out = ack(r, 3, 2)
    assert r.commit_index == 2
    assert r.log.last_index == 3 and r.log[3].payload == change((0, 3, 4))
    assert LogAppend(index=3, entries=(r.log[3],)) in out.persist
    assert r.quorum == Majority((0, 3, 4))
    assert r.counters["membership_changes"] == 1
    ack(r, 1, 3)
    assert r.commit_index == 2  # 1 is out of C_new: its copy does not count
    ack(r, 3, 3)
    assert r.commit_index == 3
    # The client is answered when C_new (its own request) is applied.
    assert [c.payload for c in out.committed] == [r.log[2].payload]


def test_a_change_while_another_is_in_progress_is_rejected_busy() -> None:
    r, _ = joint_leader((0, 3, 4))
    out = r.propose(1.0, change((0, 1, 3), seq=1, client=8))
    assert [x.reason for x in out.rejected] == ["busy"]
    # A retry of the change in progress is not rejected: its C_new will answer it.
    assert not r.propose(1.0, change((0, 3, 4))).rejected
    ack(r, 1, 2)
    ack(r, 3, 2)  # joint committed, C_new uncommitted: still in progress
    assert r.log.last_index == 3
    out = r.propose(1.0, change((0, 1, 3), seq=1, client=8))
    assert [x.reason for x in out.rejected] == ["busy"]
    assert r.log.last_index == 3


def test_a_change_before_the_leader_committed_an_entry_of_its_term_is_rejected_busy() -> None:
    r = make(0)
    now = r.next_deadline() or 0.0
    r.tick(now)
    r.step(now, 1, RequestVoteResponse(term=r.term + 1, vote_granted=True, prevote=True))
    r.step(now, 1, RequestVoteResponse(term=r.term, vote_granted=True))
    assert r.role is Role.LEADER and r.commit_index == 0
    out = r.propose(now, change((0, 1, 2, 3)))
    assert [x.reason for x in out.rejected] == ["busy"]
    ack(r, 1, 1)
    assert not r.propose(now, change((0, 1, 2, 3))).rejected


def test_a_change_at_a_follower_is_rejected_not_leader() -> None:
    r = make(1)
    assert [x.reason for x in r.propose(0.0, change((0, 1))).rejected] == ["not_leader"]


def test_a_change_to_the_current_configuration_commits_as_an_ordinary_entry() -> None:
    r = leader()
    r.propose(1.0, change((2, 1, 0)))
    assert r.log[2].payload == change((2, 1, 0)) and r.quorum == Majority(OLD)
    out = ack(r, 1, 2)
    assert r.commit_index == 2 and r.log.last_index == 2
    assert [c.payload for c in out.committed] == [change((2, 1, 0))]
    assert r.counters["membership_changes"] == 0


def test_leader_not_in_c_new_manages_without_counting_itself_then_steps_down() -> None:
    r, _ = joint_leader((1, 2, 3))
    ack(r, 1, 2)
    ack(r, 2, 2)
    assert r.log.last_index == 3 and r.quorum == Majority((1, 2, 3))
    assert r.role is Role.LEADER  # thesis 4.2.2: it keeps managing the cluster
    ack(r, 1, 3)
    assert r.commit_index == 2  # its own copy of C_new does not count
    out = ack(r, 3, 3)
    assert r.commit_index == 3
    assert r.role is Role.FOLLOWER and r.counters["removed_step_downs"] == 1
    # It told the others the commit index before stepping down.
    for peer in (1, 2, 3):
        (hb,) = sent(out, AppendEntries, dst=peer)
        assert hb.leader_commit == 3
    # And, outside its configuration, it never campaigns again.
    deadline = r.next_deadline()
    assert deadline is not None
    out = r.tick(deadline)
    assert not outgoing(out) and r.next_deadline() is None and r.role is Role.FOLLOWER


def test_new_leader_completes_a_joint_change_once_its_noop_commits() -> None:
    r = make(node=1)
    joint = Configuration(new=(1, 2, 3), old=OLD, request=change((1, 2, 3)))
    entries = (Entry(term=1, payload=Noop()), Entry(term=1, payload=joint))
    r.step(0.1, 0, AppendEntries(term=1, prev_log_index=0, prev_log_term=0, entries=entries))
    r.step(0.1, 0, AppendEntries(term=1, prev_log_index=2, prev_log_term=1, leader_commit=2))
    assert r.commit_index == 2 and r.quorum == JointQuorum.of(OLD, (1, 2, 3))
    now = r.next_deadline() or 1.0
    r.tick(now)
    for peer in (0, 2, 3):
        r.step(now, peer, RequestVoteResponse(term=2, vote_granted=True, prevote=True))
    for peer in (0, 2, 3):
        r.step(now, peer, RequestVoteResponse(term=2, vote_granted=True))
    assert r.role is Role.LEADER and r.log.last_index == 3  # its Noop
    for peer in (2, 3):
        ack(r, peer, 3, now)
    assert r.commit_index == 3
    assert r.log.last_index == 4 and r.log[4].payload == change((1, 2, 3))
    assert r.quorum == Majority((1, 2, 3))


def test_a_joint_election_needs_votes_from_majorities_of_both() -> None:
    r = make(node=0)
    joint = Configuration(new=(0, 3, 4), old=OLD, request=change((0, 3, 4)))
    r.step(
        0.1,
        1,
        AppendEntries(
            term=1, prev_log_index=0, prev_log_term=0, entries=(Entry(term=1, payload=joint),)
        ),
    )
    now = r.next_deadline() or 1.0
    out = r.tick(now)
    assert {d for d, _ in outgoing(out)} == {1, 2, 3, 4}
    r.step(now, 1, RequestVoteResponse(term=2, vote_granted=True, prevote=True))
    r.step(now, 2, RequestVoteResponse(term=2, vote_granted=True, prevote=True))
    assert r.role is Role.PRECANDIDATE  # all of old, none of new
    r.step(now, 3, RequestVoteResponse(term=2, vote_granted=True, prevote=True))
    assert r.role is Role.CANDIDATE


def test_leader_keeps_replicating_to_a_removed_server_until_it_holds_c_new() -> None:
    r, _ = joint_leader((0, 3, 4))
    ack(r, 1, 2)
    ack(r, 3, 2)
    ack(r, 3, 3)
    assert r.commit_index == 3 and r.peers == (3, 4)
    out = r.tick(1.0)  # a heartbeat: 1 and 2 are not members, but lack C_new
    assert sent(out, AppendEntries, dst=1) and sent(out, AppendEntries, dst=2)
    ack(r, 1, 3)  # 1 now holds C_new (and knows it is out): forgotten
    out = r.tick(1.0 + 0.05)
    assert not sent(out, AppendEntries, dst=1) and sent(out, AppendEntries, dst=2)
    assert set(r._progress) == {2, 3, 4}


def test_removed_server_cannot_bump_the_term_once_its_removal_committed() -> None:
    c_new = change((0, 1, 2))
    joint = Configuration(new=(0, 1, 2), old=(0, 1, 2, 3), request=c_new)
    entries = (Entry(term=1, payload=joint), Entry(term=1, payload=c_new))
    vote = RequestVote(term=5, last_log_index=1, last_log_term=1)
    r = make(node=1, members=(0, 1, 2, 3))
    r.step(0.1, 0, AppendEntries(term=1, prev_log_index=0, prev_log_term=0, entries=entries))
    r.step(5.0, 3, vote)  # C_new is not committed: 3 may still be a member
    assert r.term == 5
    r = make(node=1, members=(0, 1, 2, 3))
    r.step(
        0.1,
        0,
        AppendEntries(term=1, prev_log_index=0, prev_log_term=0, entries=entries, leader_commit=2),
    )
    out = r.step(5.0, 3, vote)
    assert r.term == 1 and not outgoing(out)
    assert r.counters["votes_ignored_not_member"] == 1


# ------------------------------------------------------------------ spares


def test_spare_never_campaigns_until_a_configuration_including_it_reaches_its_log() -> None:
    r = make(node=3, members=OLD)
    deadline = r.next_deadline()
    assert deadline is not None
    out = r.tick(deadline)
    assert not outgoing(out) and r.next_deadline() is None
    # It does accept the leader's entries; the joint entry makes it a voter.
    joint = Configuration(new=(0, 1, 2, 3), old=OLD, request=change((0, 1, 2, 3)))
    entries = (Entry(term=1, payload=Noop()), Entry(term=1, payload=joint))
    out = r.step(1.0, 0, AppendEntries(term=1, prev_log_index=0, prev_log_term=0, entries=entries))
    assert sent(out, AppendEntriesResponse)[0].success and r.log.last_index == 2
    deadline = r.next_deadline()
    assert deadline is not None
    out = r.tick(deadline)
    assert r.role is Role.PRECANDIDATE
    assert {d for d, m in outgoing(out) if isinstance(m, RequestVote)} == {0, 1, 2}


def test_spare_answers_install_snapshot_and_adopts_its_configuration() -> None:
    r = make(node=4, members=OLD)
    config = Configuration(new=(0, 1, 4))
    snap = InstallSnapshot(
        term=3, last_included_index=9, last_included_term=2, data=b"s", config=config
    )
    out = r.step(1.0, 0, snap)
    assert out.restore is not None and r.commit_index == 9
    assert r.quorum == Majority((0, 1, 4)) and r.peers == (0, 1)
    (record,) = [x for x in out.compact or [] if isinstance(x, SnapshotTaken)]
    assert record.config == config


# ---------------------------------------------------- truncation and recovery


def test_truncating_a_conflicting_suffix_reverts_the_configuration() -> None:
    r = make(node=1)
    joint = Configuration(new=(0, 3, 4), old=OLD, request=change((0, 3, 4)))
    entries = (Entry(term=1, payload=Noop()), Entry(term=1, payload=joint))
    r.step(
        0.1,
        0,
        AppendEntries(term=1, prev_log_index=0, prev_log_term=0, entries=entries, leader_commit=1),
    )
    assert r.quorum == JointQuorum.of(OLD, (0, 3, 4))
    # A leader of term 2 never had the joint entry: its own entry 2 replaces it.
    new = (Entry(term=2, payload=Noop()),)
    r.step(0.2, 2, AppendEntries(term=2, prev_log_index=1, prev_log_term=1, entries=new))
    assert r.log[2].term == 2
    assert r.quorum == Majority(OLD) and r.peers == (0, 2)
    assert r.counters["config_reverts"] == 1


def test_recovery_from_records_restores_the_configuration() -> None:
    joint = Configuration(new=(0, 3, 4), old=OLD, request=change((0, 3, 4)))
    entries = (Entry(term=1, payload=Noop()), Entry(term=1, payload=joint))
    records = [HardState(term=1, voted_for=0), LogAppend(index=1, entries=entries)]
    assert make(node=3, records=records).quorum == JointQuorum.of(OLD, (0, 3, 4))
    records.append(LogAppend(index=3, entries=(Entry(term=1, payload=change((0, 3, 4))),)))
    recovered = make(node=3, records=records)
    assert recovered.quorum == Majority((0, 3, 4)) and recovered.peers == (0, 4)
    assert recovered.status()["config_index"] == 3


def test_recovery_from_a_snapshot_restores_the_configuration() -> None:
    r, _ = joint_leader((0, 3, 4))
    ack(r, 1, 2)
    ack(r, 3, 2)  # joint committed, C_new appended at 3
    r.propose(1.0, put(1))  # index 4
    ack(r, 1, 4)
    ack(r, 3, 4)
    assert r.commit_index == 4
    out = r.compact(1.0, 4, b"state@4")
    assert out.compact is not None
    (record,) = [x for x in out.compact if isinstance(x, SnapshotTaken)]
    assert record.config == Configuration(new=(0, 3, 4))
    recovered = make(node=3, records=out.compact)
    assert recovered.quorum == Majority((0, 3, 4)) and recovered.log.last_index == 4
    # A snapshot taken mid-change keeps the joint configuration, C_new in the tail.
    r2, _ = joint_leader((0, 3, 4))
    ack(r2, 1, 2)
    ack(r2, 3, 2)
    out = r2.compact(1.0, 2, b"state@2")
    assert out.compact is not None
    (record,) = [x for x in out.compact if isinstance(x, SnapshotTaken)]
    assert record.config is not None and record.config.old == OLD
    assert make(node=3, records=out.compact).quorum == Majority((0, 3, 4))
    # The InstallSnapshot a lagging server gets names the configuration too.
    r2._progress[4].become_probe()
    out = r2.tick(1.0 + 0.05)
    (snap,) = sent(out, InstallSnapshot, dst=4)
    assert snap.config == record.config


def test_protocol_spec_declares_membership() -> None:
    assert PROTOCOL.membership is True and Configuration in PROTOCOL.messages


# --------------------------------------------------------------- simulator


def cluster(**kw: Any) -> Simulator:
    return membership_helpers.cluster("raft", **kw)


def raft(sim: Simulator, node: int) -> RaftReplica:
    replica = sim.replica(node)
    assert isinstance(replica, RaftReplica)
    return replica


def test_sim_added_servers_catch_up_and_vote() -> None:
    sim = cluster(seed=3)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    write(sim, 20)
    change_members(sim, (0, 1, 2, 3, 4))
    sim.run_for(0.5)
    last = raft(sim, sim.leaders()[0]).log.last_index
    for n in (3, 4):
        assert members(sim, n) == (0, 1, 2, 3, 4) and raft(sim, n).log.last_index == last
    # Two of the original three crash: 3 and 4 make the majority that elects and commits.
    (lead,) = sim.leaders()
    crashed = [lead, next(n for n in OLD if n != lead)]
    serve_without(sim, crashed, (0, 1, 2, 3, 4), prefix="after")


def test_sim_removing_the_leader_elects_a_new_leader_among_the_remaining_members() -> None:
    sim = cluster(seed=4)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    (old,) = sim.leaders()
    new = tuple(sorted({0, 1, 2, 3} - {old}))
    change_members(sim, new)
    assert sim.run_until(lambda: one_leader(sim, new), timeout=5)
    assert old not in sim.leaders() and raft(sim, old).counters["removed_step_downs"] == 1
    write(sim, 10)
    sim.run_for(2.0)  # the removed server stays quiet: no election, no new term
    term = raft(sim, sim.leaders()[0]).term
    assert raft(sim, old).role is Role.FOLLOWER and raft(sim, old).term <= term
    assert sim.leaders() and raft(sim, sim.leaders()[0]).term == term
    assert_same_applied_sequence(sim)


def test_sim_the_whole_membership_is_replaced_one_server_at_a_time() -> None:
    sim = cluster(nodes=6, seed=5)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    for step, new in enumerate([(1, 2, 3), (2, 3, 4), (3, 4, 5)]):
        write(sim, 5, prefix=f"s{step}-")
        change_members(sim, new)
    sim.run_for(0.5)
    serve_without(sim, OLD, (3, 4, 5), prefix="end")
    assert all(members(sim, n) == (3, 4, 5) for n in (3, 4, 5))


def test_sim_the_whole_membership_is_replaced_at_once_new_servers_install_a_snapshot() -> None:
    sim = cluster(nodes=6, seed=6, snapshot_every=10)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    write(sim, 30)
    change_members(sim, (3, 4, 5))
    assert all(sim.protocol_counters(n)["snapshots_installed"] >= 1 for n in (3, 4, 5))
    sim.run_for(0.5)
    serve_without(sim, OLD, (3, 4, 5), prefix="end")


def test_sim_membership_change_under_message_loss() -> None:
    network = NetworkConfig(delay=Delay.uniform(0.001, 0.003), loss=0.05)
    sim = cluster(seed=8, network=network)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    write(sim, 10)
    change_members(sim, (0, 2, 3, 4), timeout=20)
    change_members(sim, (2, 3, 4), timeout=20)
    sim.network.loss = 0.0
    assert sim.run_until(lambda: one_leader(sim, (2, 3, 4)), timeout=5)
    write(sim, 5, prefix="after")
    sim.run_for(1.0)
    assert all(members(sim, n) == (2, 3, 4) for n in (2, 3, 4))
    assert_same_applied_sequence(sim)


@pytest.mark.parametrize(
    ("seed", "options"),
    [(11, {}), (12, {}), (13, {"prevote": False, "check_quorum": False}), (14, {})],
)
def test_sim_client_traffic_during_changes_is_linearizable(seed: int, options: Any) -> None:
    sim = cluster(seed=seed, snapshot_every=25, options=options)
    assert_linearizable_through_changes(sim, seed)
