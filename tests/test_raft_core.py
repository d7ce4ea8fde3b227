"""Sans-I/O tests of the Raft core: one test per rule of the paper's figure 2, and more.

No event loop and no network: each test builds replicas, hands them messages
written by hand, and checks the ``Outputs`` they return.  Names follow the
rule they check (figure 2 of the extended Raft paper, PreVote and
CheckQuorum from Ongaro's thesis).
"""

from __future__ import annotations

from typing import Any

import pytest
from codec_helpers import roundtrip_table_check
from core_helpers import build, outgoing, req, sent
from raft_helpers import ET_MAX, ET_MIN, HB, ack, append, elect, make

from consensus.codec import Codec
from consensus.commands import ChangeMembership, Get, Noop, Request
from consensus.replica import Committed, ReadReady, StateSnapshot
from protocols.raft import (
    PROTOCOL,
    AppendEntries,
    AppendEntriesResponse,
    ChangeLearners,
    Configuration,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    LogAppend,
    LogTruncate,
    RaftOptions,
    RaftReplica,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotTaken,
    TimeoutNow,
    TransferLeadership,
    create,
)
from protocols.raft.progress import ProgressState


def log_of(*terms: int) -> list[Any]:
    """Records for a log whose entry i (from 1) has term ``terms[i-1]``."""
    entries = tuple(Entry(term=t, payload=Noop()) for t in terms)
    last = max(terms, default=0)
    return [HardState(term=last, voted_for=None), LogAppend(index=1, entries=entries)]


def terms(r: RaftReplica) -> list[int]:
    return [e.term for e in r.log.entries(1)]


# ------------------------------------------------------------- RequestVote RPC


def test_receiver_rejects_request_vote_when_term_less_than_current_term() -> None:
    r = make(node=1, records=[HardState(term=5, voted_for=None)])
    out = r.step(0.0, 0, RequestVote(term=4, last_log_index=9, last_log_term=4))
    (resp,) = sent(out, RequestVoteResponse, dst=0)
    assert resp == RequestVoteResponse(term=5, vote_granted=False)
    assert r.voted_for is None


def test_receiver_grants_vote_when_voted_for_is_null_and_log_up_to_date() -> None:
    r = make(node=1, records=log_of(1, 2))
    out = r.step(1.0, 0, RequestVote(term=3, last_log_index=2, last_log_term=2))
    (resp,) = sent(out, RequestVoteResponse, dst=0)
    assert resp.vote_granted and resp.term == 3
    assert (r.term, r.voted_for) == (3, 0)


def test_receiver_grants_at_most_one_vote_per_term() -> None:
    r = make(node=1, n=5)
    out = r.step(1.0, 0, RequestVote(term=1, last_log_index=0, last_log_term=0))
    assert sent(out, RequestVoteResponse)[0].vote_granted
    out = r.step(1.0, 2, RequestVote(term=1, last_log_index=0, last_log_term=0))
    assert not sent(out, RequestVoteResponse)[0].vote_granted
    # The same candidate asking again (a retransmission) gets the same answer.
    out = r.step(1.0, 0, RequestVote(term=1, last_log_index=0, last_log_term=0))
    assert sent(out, RequestVoteResponse)[0].vote_granted


def test_receiver_rejects_vote_when_candidate_last_log_term_is_older() -> None:
    r = make(node=1, records=log_of(1, 3))
    out = r.step(1.0, 0, RequestVote(term=4, last_log_index=10, last_log_term=2))
    assert not sent(out, RequestVoteResponse)[0].vote_granted
    assert r.term == 4 and r.voted_for is None


def test_receiver_rejects_vote_when_same_last_term_but_candidate_log_shorter() -> None:
    r = make(node=1, records=log_of(1, 2, 2))
    out = r.step(1.0, 0, RequestVote(term=3, last_log_index=2, last_log_term=2))
    assert not sent(out, RequestVoteResponse)[0].vote_granted


def test_vote_is_persisted_in_the_same_outputs_before_the_response() -> None:
    r = make(node=1)
    out = r.step(1.0, 0, RequestVote(term=7, last_log_index=0, last_log_term=0))
    assert out.persist == [HardState(term=7, voted_for=0)]
    assert sent(out, RequestVoteResponse)[0].vote_granted


def test_granting_a_vote_resets_the_election_timer() -> None:
    r = make(node=1)
    r.step(0.29, 0, RequestVote(term=1, last_log_index=0, last_log_term=0))
    deadline = r.next_deadline()
    assert deadline is not None and 0.29 + ET_MIN <= deadline < 0.29 + ET_MAX


# ----------------------------------------------------------- AppendEntries RPC


def test_receiver_rejects_append_entries_when_term_less_than_current_term() -> None:
    r = make(node=1, records=[HardState(term=3, voted_for=None)])
    out = r.step(0.0, 0, append(2, 0, 0, 2))
    (resp,) = sent(out, AppendEntriesResponse, dst=0)
    assert resp.term == 3 and not resp.success
    assert r.log.last_index == 0 and r.leader_id is None


def test_receiver_rejects_append_entries_when_log_has_no_entry_at_prev_log_index() -> None:
    r = make(node=1, records=log_of(1, 1))
    out = r.step(0.0, 0, append(2, 5, 2, 2))
    (resp,) = sent(out, AppendEntriesResponse)
    assert not resp.success and resp.index == 5
    # Hint: the log is too short, so retry right after its last entry.
    assert (resp.conflict_term, resp.conflict_index) == (0, 3)
    assert terms(r) == [1, 1]


def test_receiver_rejects_when_prev_log_term_mismatches_and_hints_first_index_of_that_term() -> (
    None
):
    r = make(node=1, records=log_of(1, 2, 2, 2))
    out = r.step(0.0, 0, append(3, 4, 3, 3))
    (resp,) = sent(out, AppendEntriesResponse)
    assert not resp.success
    assert (resp.conflict_term, resp.conflict_index) == (2, 2)
    assert terms(r) == [1, 2, 2, 2]  # a rejection never truncates


def test_receiver_deletes_conflicting_entry_and_all_that_follow_it() -> None:
    r = make(node=1, records=log_of(1, 2, 2, 2))
    out = r.step(0.0, 0, append(3, 1, 1, 3))
    assert terms(r) == [1, 3]
    assert out.persist[-2:] == [
        LogTruncate(after=1),
        LogAppend(index=2, entries=(Entry(term=3, payload=Noop()),)),
    ]
    assert sent(out, AppendEntriesResponse)[0] == AppendEntriesResponse(
        term=3, success=True, index=2
    )


def test_receiver_does_not_truncate_on_stale_or_duplicate_append_entries() -> None:
    r = make(node=1, records=log_of(1, 1, 1))
    # A delayed copy of an earlier, shorter AppendEntries of the same leader.
    out = r.step(0.0, 0, append(1, 0, 0, 1))
    assert terms(r) == [1, 1, 1]
    assert not any(isinstance(p, LogTruncate) for p in out.persist)
    assert sent(out, AppendEntriesResponse)[0].index == 1


def test_receiver_appends_any_new_entries_not_already_in_the_log() -> None:
    r = make(node=1, records=log_of(1))
    out = r.step(0.0, 0, append(1, 0, 0, 1, 1, 1))
    assert terms(r) == [1, 1, 1]
    assert out.persist == [LogAppend(index=2, entries=(Entry(term=1, payload=Noop()),) * 2)]


def test_receiver_sets_commit_index_to_min_of_leader_commit_and_index_of_last_new_entry() -> None:
    r = make(node=1)
    out = r.step(0.0, 0, append(1, 0, 0, 1, 1, commit=5))
    assert r.commit_index == 2
    assert out.committed == [Committed(index=i, payload=Noop()) for i in (1, 2)]
    out = r.step(0.0, 0, append(1, 2, 1, 1, commit=3))
    assert r.commit_index == 3
    assert [c.index for c in out.committed] == [3]


def test_commit_index_never_moves_backwards_on_a_stale_append_entries() -> None:
    r = make(node=1)
    r.step(0.0, 0, append(1, 0, 0, 1, 1, 1, commit=3))
    out = r.step(0.0, 0, append(1, 0, 0, 1, commit=4))
    assert r.commit_index == 3 and out.committed == []


def test_append_entries_from_current_leader_resets_election_timer_and_records_leader() -> None:
    r = make(node=1)
    r.step(0.2, 2, append(1, 0, 0))
    assert r.leader() == 2 and r.term == 1
    deadline = r.next_deadline()
    assert deadline is not None and deadline >= 0.2 + ET_MIN


# ------------------------------------------------------------------ all servers


def test_higher_term_in_any_response_converts_leader_to_follower() -> None:
    r = make()
    now, _ = elect(r)
    term = r.term
    out = r.step(now, 1, AppendEntriesResponse(term=term + 3, success=False, index=0))
    assert r.role is Role.FOLLOWER and r.term == term + 3 and r.voted_for is None
    assert out.persist[0] == HardState(term=term + 3, voted_for=None)
    assert r.counters["step_downs"] == 1


def test_committed_entries_are_emitted_exactly_once_and_in_order() -> None:
    r = make(node=1)
    seen: list[int] = []
    for prev, commit in [(0, 1), (1, 1), (2, 3), (3, 3), (4, 5)]:
        out = r.step(0.0, 0, append(1, prev, 1 if prev else 0, 1, commit=commit))
        seen.extend(c.index for c in out.committed)
    assert seen == [1, 2, 3, 4, 5]


# -------------------------------------------------------------------- followers


def test_follower_starts_election_when_timeout_elapses_without_leader() -> None:
    r = make(prevote=False)
    deadline = r.next_deadline()
    assert deadline is not None and ET_MIN <= deadline < ET_MAX
    assert not outgoing(r.tick(deadline - 1e-9))  # an early tick does nothing
    out = r.tick(deadline)
    assert r.role is Role.CANDIDATE
    assert sent(out, RequestVote) == [RequestVote(term=1, last_log_index=0, last_log_term=0)] * 2


def test_election_timeouts_are_randomized_within_min_max() -> None:
    deadlines = {make(seed=s).next_deadline() for s in range(20)}
    assert len(deadlines) == 20
    assert all(d is not None and ET_MIN <= d < ET_MAX for d in deadlines)


def test_higher_term_vote_request_does_not_reset_a_follower_election_timer() -> None:
    # Figure 2: only the leader's AppendEntries or a granted vote reset the timer.
    r = make(node=1, records=log_of(1, 1))
    deadline = r.next_deadline()
    r.step(0.1, 0, RequestVote(term=5, last_log_index=1, last_log_term=1))  # refused
    assert r.term == 5 and r.voted_for is None
    assert r.next_deadline() == deadline


# ------------------------------------------------------------------- candidates


def test_candidate_increments_term_votes_for_itself_and_requests_votes() -> None:
    r = make(prevote=False, records=log_of(1, 1))
    out = r.tick(1.0)
    assert (r.role, r.term, r.voted_for) == (Role.CANDIDATE, 2, 0)
    assert out.persist == [HardState(term=2, voted_for=0)]
    assert sent(out, RequestVote, dst=2) == [RequestVote(term=2, last_log_index=2, last_log_term=1)]
    assert r.counters["elections_started"] == 1


def test_candidate_becomes_leader_on_votes_from_a_majority() -> None:
    r = make(n=5, prevote=False)
    r.tick(1.0)
    r.step(1.0, 1, RequestVoteResponse(term=1, vote_granted=True))
    assert r.role is Role.CANDIDATE
    r.step(1.0, 1, RequestVoteResponse(term=1, vote_granted=True))  # duplicate: same voter
    assert r.role is Role.CANDIDATE
    r.step(1.0, 3, RequestVoteResponse(term=1, vote_granted=True))
    assert r.role is Role.LEADER and r.leader() == 0
    assert r.counters["leader_changes"] == 1


def test_candidate_converts_to_follower_on_append_entries_from_new_leader() -> None:
    r = make(prevote=False)
    r.tick(1.0)
    r.step(1.0, 2, append(1, 0, 0))
    assert r.role is Role.FOLLOWER and r.leader() == 2 and r.term == 1


def test_candidate_starts_new_election_when_timeout_elapses() -> None:
    r = make(prevote=False)
    r.tick(1.0)
    deadline = r.next_deadline()
    assert deadline is not None
    r.tick(deadline)
    assert r.role is Role.CANDIDATE and r.term == 2


def test_candidate_gives_up_when_a_majority_refuses() -> None:
    r = make(prevote=False)
    r.tick(1.0)
    r.step(1.0, 1, RequestVoteResponse(term=1, vote_granted=False))
    r.step(1.0, 2, RequestVoteResponse(term=1, vote_granted=False))
    assert r.role is Role.FOLLOWER and r.term == 1


# ---------------------------------------------------------------------- leaders


def test_new_leader_appends_noop_of_its_term_and_sends_it_as_first_heartbeat() -> None:
    r = make(records=log_of(1, 1))
    _, out = elect(r)
    assert r.log[3] == Entry(term=2, payload=Noop())
    assert LogAppend(index=3, entries=(Entry(term=2, payload=Noop()),)) in out.persist
    for peer in (1, 2):
        (ae,) = sent(out, AppendEntries, dst=peer)
        assert (ae.prev_log_index, ae.prev_log_term, len(ae.entries)) == (2, 1, 1)


def test_idle_leader_sends_only_heartbeats_one_per_follower_per_interval() -> None:
    r = make()
    now, _ = elect(r)
    for peer in r.peers:
        ack(r, now, peer, 1)
    count = 0
    t = now
    for _ in range(40):  # two simulated seconds
        t = r.next_deadline() or t
        out = r.tick(t)
        for peer in r.peers:
            out.extend(ack(r, t, peer, 1))
        heartbeats = sent(out, AppendEntries)
        assert all(not m.entries for m in heartbeats)
        count += len(heartbeats)
    assert r.role is Role.LEADER
    assert count <= 2 * (2.0 / HB + 1)


def test_leader_persists_client_entry_before_sending_it() -> None:
    r = make()
    now, _ = elect(r)
    for peer in r.peers:
        ack(r, now, peer, 1)
    out = r.propose(now, req(1))
    assert out.persist == [LogAppend(index=2, entries=(Entry(term=1, payload=req(1)),))]
    assert not outgoing(out)  # sent on the flush, after the host persisted
    out = r.tick(now)
    for peer in r.peers:
        (ae,) = sent(out, AppendEntries, dst=peer)
        assert ae.entries == (Entry(term=1, payload=req(1)),)


def test_leader_batches_proposals_of_the_same_instant_into_one_append_entries() -> None:
    r = make()
    now, _ = elect(r)
    for peer in r.peers:
        ack(r, now, peer, 1)
    for seq in range(1, 11):
        r.propose(now, req(seq, client=seq))
    out = r.tick(now)
    for peer in r.peers:
        (ae,) = sent(out, AppendEntries, dst=peer)
        assert len(ae.entries) == 10 and ae.prev_log_index == 1


def test_leader_splits_batches_at_max_entries_per_message() -> None:
    r = make(max_entries_per_message=4)
    now, _ = elect(r)
    for peer in r.peers:
        ack(r, now, peer, 1)
    for seq in range(1, 11):
        r.propose(now, req(seq, client=seq))
    out = r.tick(now)
    assert [len(m.entries) for m in sent(out, AppendEntries, dst=1)] == [4, 4, 2]


def test_leader_pipelines_at_most_max_inflight_append_entries_per_follower() -> None:
    r = make(max_inflight=3)
    now, _ = elect(r)
    ack(r, now, 1, 1)
    ack(r, now, 2, 1)
    for seq in range(1, 6):
        r.propose(now, req(seq))
        out = r.tick(now)
        assert len(sent(out, AppendEntries, dst=1)) == (1 if seq <= 3 else 0)
    # An acknowledgement frees the window: everything not yet sent goes in one message.
    out = ack(r, now, 1, 2)
    (ae,) = sent(out, AppendEntries, dst=1)
    assert ae.prev_log_index == 4 and len(ae.entries) == 2


def test_leader_updates_next_index_and_match_index_on_success() -> None:
    r = make()
    now, _ = elect(r)
    ack(r, now, 1, 1)
    progress = r._progress[1]
    assert (progress.match, progress.next, progress.state) == (1, 2, ProgressState.REPLICATE)


def test_leader_probes_one_message_at_a_time_until_logs_agree() -> None:
    r = make(records=log_of(1, 1, 1))
    now, out = elect(r)
    assert len(sent(out, AppendEntries, dst=1)) == 1
    r.propose(now, req(1))
    assert not sent(r.tick(now), AppendEntries, dst=1)  # the probe is unanswered


def test_leader_decrements_next_index_and_retries_after_log_inconsistency() -> None:
    r = make(records=log_of(1, 1, 1))
    now, _ = elect(r)  # noop at 4; probes at prev_log_index 3
    # A follower without a hint (conflict_index == the rejected index) backs off by one.
    reject = AppendEntriesResponse(
        term=2, success=False, index=3, conflict_term=1, conflict_index=3
    )
    # conflict_term 1 is in our log up to 3, but never past the rejected index - 1.
    out = r.step(now, 1, reject)
    (ae,) = sent(out, AppendEntries, dst=1)
    assert ae.prev_log_index == 2 and len(ae.entries) == 2


def test_leader_uses_conflict_hint_to_skip_a_whole_term_at_once() -> None:
    # Leader log: terms 1 1 4 4 4 4 then its noop (term 5).  Follower: 1 1 2 2 2 2 2 2.
    r = make(records=log_of(1, 1, 4, 4, 4, 4))
    now, _ = elect(r)
    assert r.term == 5
    reject = AppendEntriesResponse(
        term=5, success=False, index=6, conflict_term=2, conflict_index=3
    )
    out = r.step(now, 1, reject)
    (ae,) = sent(out, AppendEntries, dst=1)
    # We have no term-2 entry: jump straight to the follower's first term-2 index.
    assert ae.prev_log_index == 2 and ae.prev_log_term == 1 and len(ae.entries) == 5
    assert r.counters["rejections_received"] == 1


def test_leader_uses_follower_last_index_hint_when_follower_log_is_short() -> None:
    r = make(records=log_of(1, 1, 1, 1, 1))
    now, _ = elect(r)
    reject = AppendEntriesResponse(
        term=2, success=False, index=5, conflict_term=0, conflict_index=2
    )
    (ae,) = sent(r.step(now, 1, reject), AppendEntries, dst=1)
    assert ae.prev_log_index == 1


def test_leader_ignores_a_stale_rejection() -> None:
    r = make(records=log_of(1, 1, 1))
    now, _ = elect(r)
    ack(r, now, 1, 4)  # follower 1 now replicates from 5
    stale = AppendEntriesResponse(term=2, success=False, index=3, conflict_term=0, conflict_index=1)
    out = r.step(now, 1, stale)
    assert not outgoing(out) and r._progress[1].match == 4
    assert r._progress[1].state is ProgressState.REPLICATE


def test_leader_falls_back_to_probing_after_a_rejection_while_replicating() -> None:
    r = make()
    now, _ = elect(r)
    ack(r, now, 1, 1)
    for seq in range(1, 4):
        r.propose(now, req(seq))
        r.tick(now)
    reject = AppendEntriesResponse(
        term=1, success=False, index=2, conflict_term=0, conflict_index=2
    )
    out = r.step(now, 1, reject)
    progress = r._progress[1]
    assert progress.state is ProgressState.PROBE
    (ae,) = sent(out, AppendEntries, dst=1)
    assert ae.prev_log_index == 1 and len(ae.entries) == 3


def test_leader_reprobes_when_an_append_is_lost_for_a_whole_heartbeat_interval() -> None:
    r = make()
    now, _ = elect(r)
    ack(r, now, 1, 1)
    ack(r, now, 2, 1)
    r.propose(now, req(1))
    r.tick(now)  # this AppendEntries is "lost"
    t1 = now + HB
    r.tick(t1)  # first heartbeat: outstanding, but maybe just slow
    assert r._progress[1].state is ProgressState.REPLICATE
    out = r.tick(t1 + HB)
    assert r._progress[1].state is ProgressState.PROBE
    (ae,) = sent(out, AppendEntries, dst=1)
    assert ae.prev_log_index == 1 and len(ae.entries) == 1
    assert r.counters["replication_stalls"] == 2


def test_leader_commits_an_entry_of_its_term_once_a_majority_matched_it() -> None:
    r = make(n=5)
    now, _ = elect(r)
    r.propose(now, req(1))
    r.tick(now)
    ack(r, now, 1, 2)
    assert r.commit_index == 0
    out = ack(r, now, 3, 2)
    assert r.commit_index == 2
    assert out.committed == [
        Committed(index=1, payload=Noop()),
        Committed(index=2, payload=req(1)),
    ]


def test_leader_never_commits_earlier_term_entry_by_counting_replicas_figure_8() -> None:
    # Figure 8 (c): S1 leads term 4 (after crashing in term 2 and coming back);
    # its log holds index 2 from term 2, which S2 and S3 also hold: a majority
    # of five.  It must NOT count index 2 committed, because a server with a
    # term-3 entry at index 2 (S5) could still be elected and overwrite it (d).
    r = make(n=5, records=[*log_of(1, 2), HardState(term=3, voted_for=None)])
    now, _ = elect(r)
    assert r.term == 4 and r.log[3].term == 4  # the noop of term 4 at index 3
    ack(r, now, 1, 2)
    ack(r, now, 2, 2)
    assert r.commit_index == 0, "an old-term entry replicated on a majority is not committed"
    ack(r, now, 1, 3)
    out = ack(r, now, 2, 3)
    # (e): once an entry of its own term is on a majority, index 2 commits with it.
    assert r.commit_index == 3
    assert [c.index for c in out.committed] == [1, 2, 3]


def test_single_node_cluster_elects_itself_and_commits_alone() -> None:
    r = make(n=1)
    deadline = r.next_deadline()
    assert deadline is not None
    r.tick(deadline)
    assert r.role is Role.LEADER and r.commit_index == 1
    out = r.propose(deadline, req(1))
    assert out.committed == [Committed(index=2, payload=req(1))]


# ---------------------------------------------------------------------- clients


def test_propose_at_a_follower_is_rejected_with_the_known_leader_as_hint() -> None:
    r = make(node=1)
    out = r.propose(0.0, req(1))
    assert out.rejected[0].reason == "not_leader" and out.rejected[0].leader_hint is None
    r.step(0.0, 2, append(1, 0, 0))
    out = r.propose(0.0, req(1))
    assert out.rejected[0].leader_hint == 2
    assert r.log.last_index == 0


def test_proposal_overwritten_by_a_new_leader_is_rejected_as_overwritten() -> None:
    r = make()
    now, _ = elect(r)
    r.propose(now, req(1))
    r.propose(now, req(2, client=2))
    assert r.log.last_index == 3
    # A new leader of term 2 replaces index 2 onwards.
    out = r.step(now, 1, append(2, 1, 1, 2))
    assert r.role is Role.FOLLOWER and terms(r) == [1, 2]
    assert sorted((x.client_id, x.reason, x.leader_hint) for x in out.rejected) == [
        (1, "overwritten", 1),
        (2, "overwritten", 1),
    ]


def test_proposal_of_a_deposed_leader_that_still_commits_is_not_rejected() -> None:
    r = make()
    now, _ = elect(r)
    r.propose(now, req(1))
    # The next leader kept our entry and commits it.
    out = r.step(now, 1, append(2, 2, 1, 2, commit=3))
    assert out.rejected == []
    assert [c.payload for c in out.committed] == [Noop(), req(1), Noop()]


def test_a_retried_proposal_still_in_flight_is_not_appended_twice() -> None:
    r = make()
    now, _ = elect(r)
    r.propose(now, req(1))
    out = r.propose(now, req(1))
    assert not out and r.log.last_index == 2
    assert r.counters["duplicate_proposals"] == 1


# ---------------------------------------------------------------------- PreVote


def test_prevote_round_changes_no_term_on_either_side() -> None:
    r = make(records=[HardState(term=4, voted_for=None)])
    out = r.tick(1.0)
    assert r.role is Role.PRECANDIDATE and r.term == 4 and out.persist == []
    (pv,) = sent(out, RequestVote, dst=1)
    assert pv == RequestVote(term=5, last_log_index=0, last_log_term=0, prevote=True)
    voter = make(node=1, records=[HardState(term=4, voted_for=None)])
    answer = voter.step(1.0, 0, pv)
    assert sent(answer, RequestVoteResponse) == [
        RequestVoteResponse(term=5, vote_granted=True, prevote=True)
    ]
    assert voter.term == 4 and voter.voted_for is None and answer.persist == []
    assert r.counters["prevotes_started"] == 1


def test_precandidate_starts_a_real_election_only_with_a_quorum_of_prevotes() -> None:
    r = make(n=5)
    r.tick(1.0)
    r.step(1.0, 1, RequestVoteResponse(term=1, vote_granted=True, prevote=True))
    assert r.role is Role.PRECANDIDATE and r.term == 0
    out = r.step(1.0, 2, RequestVoteResponse(term=1, vote_granted=True, prevote=True))
    assert r.role is Role.CANDIDATE and r.term == 1
    assert sent(out, RequestVote, dst=4) == [RequestVote(term=1, last_log_index=0, last_log_term=0)]


def test_prevote_is_refused_when_the_candidate_log_is_not_up_to_date() -> None:
    voter = make(node=1, records=log_of(1, 1))
    out = voter.step(1.0, 0, RequestVote(term=2, last_log_index=1, last_log_term=1, prevote=True))
    (resp,) = sent(out, RequestVoteResponse)
    assert not resp.vote_granted and resp.term == 1


def test_precandidate_follows_a_higher_term_seen_in_a_prevote_refusal() -> None:
    r = make()
    r.tick(1.0)
    r.step(1.0, 1, RequestVoteResponse(term=7, vote_granted=False, prevote=True))
    assert r.role is Role.FOLLOWER and r.term == 7


def test_node_that_heard_from_leader_recently_ignores_higher_term_vote_requests() -> None:
    voter = make(node=1)
    voter.step(1.0, 0, append(1, 0, 0))
    for prevote in (True, False):
        request = RequestVote(term=2, last_log_index=5, last_log_term=1, prevote=prevote)
        out = voter.step(1.0 + ET_MIN / 2, 2, request)
        assert not outgoing(out) and voter.term == 1 and voter.voted_for is None
    # Once the leader has been silent for the minimum election timeout, it may vote.
    out = voter.step(1.0 + ET_MIN + 1e-9, 2, RequestVote(term=2, last_log_index=5, last_log_term=1))
    assert sent(out, RequestVoteResponse)[0].vote_granted and voter.term == 2


def test_leader_with_check_quorum_is_not_deposed_by_a_vote_request() -> None:
    r = make()
    now, _ = elect(r)
    out = r.step(now, 2, RequestVote(term=9, last_log_index=9, last_log_term=9))
    assert r.role is Role.LEADER and r.term == 1 and not outgoing(out)


# -------------------------------------------------------------------- ReadIndex


def getreq(seq: int, client: int = 9) -> Request:
    return Request(client_id=client, seq=seq, command=Get(key="k"))


def test_read_at_a_follower_is_rejected_with_the_leader_hint() -> None:
    r = make(node=1)
    r.step(0.0, 2, append(1, 0, 0))
    out = r.read(0.0, getreq(1))
    assert [(x.reason, x.leader_hint) for x in out.rejected] == [("not_leader", 2)]


def test_read_index_is_served_only_after_a_quorum_confirms_leadership_after_arrival() -> None:
    r = make()
    now, _ = elect(r)
    for peer in r.peers:
        ack(r, now, peer, 1)
    assert r.commit_index == 1
    out = r.read(now, getreq(1))
    assert not out.reads and not outgoing(out)  # the round goes out on the flush
    out = r.tick(now)
    rounds = {m.read_round for m in sent(out, AppendEntries)}
    assert rounds == {1} and len(sent(out, AppendEntries)) == 2
    # An answer to a message sent before the read arrived does not confirm it.
    stale = AppendEntriesResponse(term=1, success=True, index=1, read_round=0)
    assert not r.step(now, 1, stale).reads
    out = r.step(now, 1, AppendEntriesResponse(term=1, success=True, index=1, read_round=1))
    assert out.reads == [ReadReady(client_id=9, seq=1, index=1)]
    assert r.counters["read_rounds"] == 1


def test_reads_arriving_in_the_same_instant_share_one_confirmation_round() -> None:
    r = make()
    now, _ = elect(r)
    for seq in range(1, 6):
        r.read(now, getreq(seq))
    out = r.tick(now)
    assert len(sent(out, AppendEntries)) == 2
    out = r.step(now, 2, AppendEntriesResponse(term=1, success=True, index=1, read_round=1))
    assert [x.seq for x in out.reads] == [1, 2, 3, 4, 5]


def test_read_before_the_new_leader_noop_commits_waits_for_the_noop_index() -> None:
    r = make(records=log_of(1, 1))
    now, _ = elect(r)  # noop at index 3, commit index still 0
    r.read(now, getreq(1))
    r.tick(now)
    out = r.step(now, 1, AppendEntriesResponse(term=2, success=False, index=2, read_round=1))
    assert out.reads == [ReadReady(client_id=9, seq=1, index=3)]


def test_unconfirmed_reads_are_rejected_when_the_leader_steps_down() -> None:
    r = make()
    now, _ = elect(r)
    r.read(now, getreq(1))
    r.tick(now)
    out = r.step(now, 2, append(2, 0, 0))
    assert r.role is Role.FOLLOWER and not out.reads
    assert [(x.seq, x.reason, x.leader_hint) for x in out.rejected] == [(1, "not_leader", 2)]


def test_single_node_read_is_ready_at_once() -> None:
    r = make(n=1)
    deadline = r.next_deadline()
    assert deadline is not None
    r.tick(deadline)
    assert r.read(deadline, getreq(1)).reads == [ReadReady(client_id=9, seq=1, index=1)]


# ------------------------------------------------------------------ CheckQuorum


def test_leader_steps_down_when_no_quorum_heard_within_election_timeout() -> None:
    r = make()
    now, _ = elect(r)
    t = now
    while t < now + 2 * ET_MAX and r.role is Role.LEADER:
        t = r.next_deadline() or t
        r.tick(t)
    assert r.role is Role.FOLLOWER and r.leader() is None and r.term == 1
    assert r.counters["step_downs"] == 1
    assert now + ET_MAX <= t <= now + 2 * ET_MAX


def test_leader_stays_while_a_quorum_answers() -> None:
    r = make()
    now, _ = elect(r)
    t = now
    while t < now + 5.0:
        t = r.next_deadline() or t
        r.tick(t)
        ack(r, t, 2, 1)  # only one follower of two answers: still a quorum of three
    assert r.role is Role.LEADER


def test_without_check_quorum_an_isolated_leader_stays_leader() -> None:
    r = make(check_quorum=False)
    now, _ = elect(r)
    t = now
    while t < now + 2.0:
        t = r.next_deadline() or t
        r.tick(t)
    assert r.role is Role.LEADER


# -------------------------------------------------------------------- snapshots


def leader_with_log(count: int, **opts: Any) -> tuple[RaftReplica, float]:
    """A leader of term 1 whose log holds its noop and ``count`` requests, all committed."""
    r = make(**opts)
    now, _ = elect(r)
    for seq in range(1, count + 1):
        r.propose(now, req(seq))
    r.tick(now)
    ack(r, now, 2, count + 1)
    assert r.commit_index == count + 1
    return r, now


def test_compaction_rewrites_storage_as_hard_state_snapshot_and_log_tail() -> None:
    r, now = leader_with_log(5)
    r.propose(now, req(6))  # index 7, not committed
    out = r.compact(now, 4, b"state@4")
    assert out.compact == [
        HardState(term=1, voted_for=0),
        SnapshotTaken(index=4, term=1, data=b"state@4"),
        LogAppend(index=5, entries=tuple(r.log.entries(5))),
    ]
    assert (r.log.snapshot_index, r.log.first_index, r.log.last_index) == (4, 5, 7)


def test_recovery_from_a_snapshot_restores_state_machine_and_commit_index() -> None:
    r, now = leader_with_log(5)
    records = r.compact(now, 6, b"state@6").compact
    assert records is not None
    again = make(records=records)
    assert again.commit_index == 6 and again.log.snapshot_index == 6
    ctx = again.ctx
    fresh = create(ctx, records)
    assert fresh.start(0.0).restore == StateSnapshot(index=6, data=b"state@6")


def test_leader_sends_install_snapshot_when_follower_needs_compacted_entries() -> None:
    r, now = leader_with_log(5)
    r.compact(now, 6, b"state@6")
    deadline = r.next_deadline()
    assert deadline is not None
    out = r.tick(deadline)  # the heartbeat re-probes follower 1 from index 1: compacted
    assert sent(out, InstallSnapshot, dst=1) == [
        InstallSnapshot(term=1, last_included_index=6, last_included_term=1, data=b"state@6")
    ]
    assert r._progress[1].state is ProgressState.SNAPSHOT
    r.propose(now, req(9))
    assert not sent(r.tick(now), AppendEntries, dst=1)  # nothing else until answered
    out = r.step(now, 1, InstallSnapshotResponse(term=1, index=6))
    (ae,) = sent(out, AppendEntries, dst=1)
    assert ae.prev_log_index == 6 and len(ae.entries) == 1
    assert r._progress[1].match == 6


def test_unanswered_snapshot_is_resent_after_a_few_heartbeats() -> None:
    r, now = leader_with_log(5)
    r.compact(now, 6, b"state@6")
    snapshots: list[int] = []
    t, heartbeats = now, 0
    while heartbeats < 9:
        t = r.next_deadline() or t
        out = r.tick(t)
        if not sent(out, AppendEntries, dst=2):
            continue  # a CheckQuorum tick
        heartbeats += 1
        ack(r, t, 2, 6)
        if sent(out, InstallSnapshot, dst=1):
            snapshots.append(heartbeats)
        else:
            assert sent(out, AppendEntries, dst=1)  # heartbeats keep its timer quiet
    assert snapshots == [1, 5, 9]


def test_follower_installing_a_snapshot_discards_a_conflicting_log() -> None:
    # Figure 13 step 7: the log does not hold the snapshot's last entry.
    r = make(node=1, records=log_of(1, 1, 2, 2))
    out = r.step(
        0.0, 0, InstallSnapshot(term=3, last_included_index=3, last_included_term=3, data=b"s")
    )
    assert (r.log.snapshot_index, r.log.last_index, r.commit_index) == (3, 3, 3)
    assert out.restore == StateSnapshot(index=3, data=b"s")
    assert out.compact == [
        HardState(term=3, voted_for=None),
        SnapshotTaken(index=3, term=3, data=b"s"),
    ]
    assert sent(out, InstallSnapshotResponse) == [InstallSnapshotResponse(term=3, index=3)]
    out = r.step(0.0, 0, append(3, 3, 3, 3, commit=4))
    assert out.committed == [Committed(index=4, payload=Noop())]


def test_follower_keeps_log_entries_following_a_snapshot_it_already_holds() -> None:
    # Figure 13 step 6: the log holds the snapshot's last entry with the same term.
    r = make(node=1, records=log_of(1, 1, 1, 1))
    r.step(0.0, 0, InstallSnapshot(term=1, last_included_index=2, last_included_term=1, data=b"s"))
    assert (r.log.snapshot_index, r.log.last_index, r.commit_index) == (2, 4, 2)


def test_follower_answers_a_snapshot_not_newer_than_its_commit_index_without_change() -> None:
    r = make(node=1)
    r.step(0.0, 0, append(1, 0, 0, 1, 1, 1, commit=3))
    out = r.step(
        0.0, 0, InstallSnapshot(term=1, last_included_index=2, last_included_term=1, data=b"s")
    )
    assert out.restore is None and out.compact is None and r.log.snapshot_index == 0
    assert sent(out, InstallSnapshotResponse) == [InstallSnapshotResponse(term=1, index=3)]


# --------------------------------------------------------------------- recovery


def test_create_replays_records_to_rebuild_term_vote_and_log() -> None:
    records = [
        HardState(term=1, voted_for=None),
        LogAppend(index=1, entries=(Entry(term=1, payload=Noop()),) * 3),
        HardState(term=2, voted_for=2),
        LogTruncate(after=1),
        LogAppend(index=2, entries=(Entry(term=2, payload=req(1)),)),
    ]
    r = make(node=1, records=records)
    assert (r.term, r.voted_for, terms(r)) == (2, 2, [1, 2])
    assert r.commit_index == 0  # volatile: re-learned from the leader


def test_restarted_replica_reemits_committed_entries_from_index_one() -> None:
    r = make(node=1)
    records: list[Any] = []
    records.extend(r.step(0.0, 0, append(1, 0, 0, 1, 1, commit=2)).persist)
    again = make(node=1, records=records)
    out = again.step(1.0, 0, append(1, 2, 1, commit=2))
    assert [c.index for c in out.committed] == [1, 2]


def test_durable_records_never_include_the_commit_index() -> None:
    r = make(node=1)
    out = r.step(0.0, 0, append(1, 0, 0, 1, commit=1))
    assert {type(p) for p in out.persist} <= {HardState, LogAppend, LogTruncate}


def test_protocol_spec_exports_messages_records_and_options() -> None:
    assert PROTOCOL.name == "raft" and PROTOCOL.options is RaftOptions
    assert RequestVote in PROTOCOL.messages and LogAppend in PROTOCOL.records
    assert isinstance(PROTOCOL.create(make().ctx, []), RaftReplica)


@pytest.mark.parametrize(
    "bad",
    [
        {"election_timeout_min": 0.3, "election_timeout_max": 0.2},  # min == max is allowed
        {"heartbeat_interval": 0.2},
        {"max_inflight": 0},
        {"max_entries_per_message": 0},
        {"election_timeout_min": -1.0},
    ],
)
def test_options_reject_invalid_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RaftOptions(**bad)


def test_every_raft_message_and_record_round_trips_through_the_codec() -> None:
    entries = (Entry(term=1, payload=Noop()), Entry(term=2, payload=req(7)))
    change = Request(client_id=4, seq=1, command=ChangeMembership(members=(0, 3)))
    roundtrip_table_check(
        Codec.for_protocol(PROTOCOL),
        [
            *entries,
            RequestVote(term=3, last_log_index=9, last_log_term=2, prevote=True),
            RequestVoteResponse(term=3, vote_granted=False, prevote=True),
            AppendEntries(
                term=3,
                prev_log_index=4,
                prev_log_term=2,
                entries=entries,
                leader_commit=4,
                read_round=5,
            ),
            AppendEntriesResponse(
                term=3, success=False, index=4, conflict_term=2, conflict_index=3, read_round=5
            ),
            InstallSnapshot(term=3, last_included_index=9, last_included_term=2, data=b"\x00s"),
            InstallSnapshotResponse(term=3, index=9),
            HardState(term=3, voted_for=None),
            HardState(term=3, voted_for=2),
            LogAppend(index=5, entries=entries),
            LogTruncate(after=4),
            SnapshotTaken(index=9, term=2, data=b"snap"),
            # Membership changes: a joint configuration entry, and configurations in
            # snapshots (records and InstallSnapshot).
            Entry(term=2, payload=Configuration(new=(0, 3), old=(0, 1, 2), request=change)),
            Configuration(new=(0, 1, 2)),
            SnapshotTaken(index=9, term=2, data=b"snap", config=Configuration(new=(1, 2, 3))),
            InstallSnapshot(
                term=3,
                last_included_index=9,
                last_included_term=2,
                data=b"s",
                config=Configuration(new=(0, 3), old=(0, 1, 2), request=change),
            ),
            # Learners, leadership transfer, follower reads, admin requests.
            Configuration(new=(0, 1, 2), learners=(3, 4), request=change),
            RequestVote(term=4, last_log_index=9, last_log_term=3, transfer=True),
            TimeoutNow(term=3),
            ReadIndex(term=3, reads=((7, 2),)),
            ReadIndex(term=3, reads=((7, 2), (8, 1), (2**40, 0))),
            ReadIndex(term=3, reads=()),
            ReadIndexResponse(term=3, reads=((7, 2), (8, 1)), index=9, success=True),
            ReadIndexResponse(term=3, reads=((7, 2),), index=0, success=False),
            TransferLeadership(target=2),
            ChangeLearners(learners=(3,)),
            ChangeLearners(learners=()),
        ],
    )


def test_raft_package_imports_no_io_clock_or_global_random() -> None:
    import ast
    from pathlib import Path

    import protocols.raft

    forbidden = {"trio", "socket", "time", "random", "asyncio", "threading"}
    for path in Path(protocols.raft.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & forbidden, f"{path.name} imports {names & forbidden}"


# -- eager replication: the leader's write overlaps the round trip (contract step 0) ----------


def test_a_leaders_appends_go_out_eagerly_and_a_followers_acknowledgement_does_not() -> None:
    r = make()
    now, _ = elect(r)
    ack(r, now, 1, 1)
    ack(r, now, 2, 1)
    r.propose(now, req(1))
    out = r.tick(now)
    assert [type(m) for _, m in out.eager or ()] == [AppendEntries, AppendEntries]
    assert not out.messages  # nothing waits for the leader's own write
    follower = make(node=1)
    answer = follower.step(now, 0, append(1, 0, 0, 1))
    assert not answer.eager  # its acknowledgement promises durability: after the write
    assert [type(m) for _, m in answer.messages] == [AppendEntriesResponse]


def test_a_leaders_own_copy_counts_only_once_the_host_says_it_is_durable() -> None:
    r = build(PROTOCOL, 0, (0, 1, 2), RaftOptions(), (), 0, host_syncs=False)
    r.start(0.0)
    now, _ = elect(r)
    r.synced(now)  # the no-op's record is durable
    ack(r, now, 1, 1)
    ack(r, now, 2, 1)
    r.propose(now, req(1))
    r.tick(now)
    ack(r, now, 1, 2)  # one follower holds entry 2; our own write is not done yet
    assert r.commit_index == 1
    out = r.synced(now)
    assert r.commit_index == 2 and out is not None
    assert out.committed == [Committed(index=2, payload=req(1))]
    assert r.synced(now) is None  # nothing new: nothing to do
