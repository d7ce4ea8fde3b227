"""Sans-I/O tests of the Multi-Paxos core, named after the rule each checks.

No event loop: replicas get hand-built messages (or messages another replica
returned, routed by hand through ``Wire``) and the tests check the
``Outputs``.  Rules are from "Paxos Made Simple" (P1a, P2c, learning) and
"Paxos Made Moderately Complex" (leader, scout, commander).
"""

from __future__ import annotations

from typing import Any

from core_helpers import Wire, b, build, req, sent

from consensus.commands import Batch, Noop
from consensus.replica import Committed, Outputs
from protocols.multipaxos import (
    PROTOCOL,
    Accept,
    Accepted,
    CatchUp,
    Heartbeat,
    Learn,
    MultiPaxos,
    MultiPaxosOptions,
    Nack,
    Prepare,
    PrePrepare,
    PrePromise,
    Promise,
    SnapshotRecord,
)
from protocols.multipaxos.core import CANDIDATE, FOLLOWER, LEADER
from protocols.paxos_common.acceptor import AcceptRecord, PromiseRecord, PValue
from protocols.paxos_common.ballot import ZERO


def make(node: int = 0, n: int = 3, records: Any = (), seed: int = 0, **opts: Any) -> MultiPaxos:
    return build(PROTOCOL, node, tuple(range(n)), MultiPaxosOptions(**opts), records, seed)


def campaign(r: MultiPaxos, now: float) -> Outputs:
    """``r``'s election timeout fires at ``now``; a peer grants its pre-phase (the
    disruption guard's), so it runs phase 1.  Returns the outputs with the Prepares."""
    out = r.tick(now)
    asked = [(d, m) for d, m in out.messages if isinstance(m, PrePrepare)]
    if not asked:
        return out
    peer, pre = asked[0]
    return r.step(now, peer, PrePromise(ballot=pre.ballot, granted=True, commit_index=0))


def leader_of_three(**opts: Any) -> MultiPaxos:
    """Node 0 bootstrapped and elected with node 1's (empty) promise."""
    r = make(0, **opts)
    out = r.start(0.0)
    prepare = sent(out, Prepare, dst=1)[0]
    r.step(0.001, 1, Promise(ballot=prepare.ballot, from_slot=1, accepted=()))
    assert r.role == LEADER
    return r


# -- ballots and roles --------------------------------------------------------------------


def test_ballots_are_ordered_by_round_then_node_and_unique_per_node() -> None:
    assert b(1, 2) < b(2, 0) < b(2, 1)
    assert ZERO < b(1, 0)
    assert b(3, 1).next(0) == b(4, 0) and b(3, 1).next(0) > b(3, 1)


def test_bootstrap_node_runs_phase1_once_for_all_slots() -> None:
    r = make(0)
    out = r.start(0.0)
    prepares = sent(out, Prepare)
    assert {d for d, m in out.messages if isinstance(m, Prepare)} == {1, 2}
    assert prepares[0].from_slot == 1 and prepares[0].ballot == b(1, 0)
    assert PromiseRecord(ballot=b(1, 0), slot=None) in out.persist
    assert r.role == CANDIDATE and r.counters["phase1_runs"] == 1


def test_follower_without_heartbeat_runs_phase1_after_randomized_timeout() -> None:
    r = make(1, disruption_guard=False)
    r.start(0.0)
    deadline = r.next_deadline()
    assert deadline is not None and 0.2 <= deadline <= 0.4
    other = make(1, seed=99)
    other.start(0.0)
    assert other.next_deadline() != deadline  # drawn from ctx.rng
    assert not r.tick(deadline - 0.01).messages
    out = r.tick(deadline)
    assert r.role == CANDIDATE and len(sent(out, Prepare)) == 2


def test_heartbeat_from_leader_postpones_election() -> None:
    r = make(1)
    r.start(0.0)
    first = r.next_deadline()
    assert first is not None
    r.step(first - 0.01, 0, Heartbeat(ballot=b(1, 0), commit_index=0))
    second = r.next_deadline()
    assert second is not None and second > first
    assert r.leader() == 0


def test_majority_of_promises_makes_a_leader() -> None:
    r = leader_of_three()
    assert r.leader() == 0 and r.counters["leader_changes"] == 1


# -- acceptor rules (P1a, P2b) ------------------------------------------------------------


def test_promise_is_persisted_in_the_same_outputs_as_the_reply() -> None:
    r = make(1)
    r.start(0.0)
    out = r.step(0.0, 0, Prepare(ballot=b(1, 0), from_slot=1))
    assert out.persist == [PromiseRecord(ballot=b(1, 0), slot=None)]
    assert sent(out, Promise, dst=0) == [Promise(ballot=b(1, 0), from_slot=1, accepted=())]


def test_acceptor_nacks_a_prepare_below_its_promise() -> None:
    r = make(1)
    r.start(0.0)
    r.step(0.0, 2, Prepare(ballot=b(2, 2), from_slot=1))
    out = r.step(0.0, 0, Prepare(ballot=b(1, 0), from_slot=1))
    assert sent(out, Nack) == [Nack(ballot=b(1, 0), promised=b(2, 2))]
    assert not out.persist


def test_promise_reports_accepted_values_from_from_slot() -> None:
    r = make(1)
    r.start(0.0)
    payloads = (req(1), req(2), req(3))
    r.step(0.0, 0, Accept(ballot=b(1, 0), slot=1, payloads=payloads, commit_index=0))
    out = r.step(1.0, 2, Prepare(ballot=b(2, 2), from_slot=2))
    (promise,) = sent(out, Promise)
    assert promise.accepted == (
        PValue(slot=2, ballot=b(1, 0), payload=req(2)),
        PValue(slot=3, ballot=b(1, 0), payload=req(3)),
    )


def test_accepted_is_persisted_before_acknowledged() -> None:
    r = make(1)
    r.start(0.0)
    out = r.step(0.0, 0, Accept(ballot=b(1, 0), slot=1, payloads=(req(1),), commit_index=0))
    assert out.persist == [AcceptRecord(slot=1, ballot=b(1, 0), payload=req(1))]
    assert sent(out, Accepted) == [Accepted(ballot=b(1, 0), slot=1, count=1)]


def test_late_accept_from_an_old_ballot_is_refused_and_changes_nothing() -> None:
    r = make(1)
    r.start(0.0)
    r.step(0.0, 0, Accept(ballot=b(1, 0), slot=1, payloads=(req(1),), commit_index=0))
    r.step(0.1, 2, Prepare(ballot=b(2, 2), from_slot=1))
    r.step(0.1, 2, Accept(ballot=b(2, 2), slot=1, payloads=(req(1),), commit_index=0))
    out = r.step(0.2, 0, Accept(ballot=b(1, 0), slot=1, payloads=(Noop(),), commit_index=0))
    assert sent(out, Nack) == [Nack(ballot=b(1, 0), promised=b(2, 2))]
    assert not out.persist
    assert r.acceptor.accepted(1) == PValue(slot=1, ballot=b(2, 2), payload=req(1))


def test_acceptor_restarted_between_phases_keeps_its_promise() -> None:
    r = make(1)
    r.start(0.0)
    records: list[Any] = []
    records += r.step(0.0, 0, Prepare(ballot=b(1, 0), from_slot=1)).persist
    records += r.step(0.0, 2, Prepare(ballot=b(2, 2), from_slot=1)).persist
    # Node 1 crashes after promising ballot 2.2 and comes back from its records.
    again = make(1, records=records)
    again.start(1.0)
    out = again.step(1.0, 0, Accept(ballot=b(1, 0), slot=1, payloads=(req(1),), commit_index=0))
    assert sent(out, Nack) == [Nack(ballot=b(1, 0), promised=b(2, 2))]
    assert again.acceptor.accepted(1) is None


# -- phase 1 recovery (P2c) ----------------------------------------------------------------


def test_new_leader_reproposes_highest_ballot_value_and_fills_holes_with_noop() -> None:
    r = make(0, n=5)
    out = r.start(0.0)
    ballot = sent(out, Prepare)[0].ballot
    low = PValue(slot=1, ballot=b(1, 3), payload=req(1, client=3))
    high = PValue(slot=1, ballot=b(2, 4), payload=req(1, client=4))
    far = PValue(slot=3, ballot=b(1, 3), payload=req(3, client=3))
    r.step(0.0, 1, Promise(ballot=ballot, from_slot=1, accepted=(low, far)))
    assert r.role == CANDIDATE
    out = r.step(0.0, 2, Promise(ballot=ballot, from_slot=1, accepted=(high,)))
    assert r.role == LEADER
    (accept,) = sent(out, Accept, dst=1)
    assert accept.slot == 1
    assert accept.payloads == (req(1, client=4), Noop(), req(3, client=3))
    assert r.counters["reproposed"] == 3


def test_chosen_value_is_never_changed_by_a_later_leader() -> None:
    # Leader 0 gets req(1) chosen in slot 1 with acceptors {0, 1}; node 2 saw nothing.
    nodes = [make(i) for i in range(3)]
    wire = Wire(nodes)
    wire.take(0, nodes[0].start(0.0))
    for i in (1, 2):
        wire.take(i, nodes[i].start(0.0))
    wire.deliver(0.0)
    assert nodes[0].role == LEADER
    wire.take(0, nodes[0].propose(0.01, req(1)))
    wire.drop(lambda s, d, m: d == 2)
    wire.deliver(0.01)
    assert [c.payload for c in wire.committed[0]] == [req(1)]
    # Node 2, which never accepted slot 1, wins a higher ballot with node 1's promise
    # and the old leader cut off.  It must re-propose req(1), not fill slot 1 with Noop.
    wire.take(2, nodes[2].tick(5.0))
    wire.drop(lambda s, d, m: d == 0 or s == 0)
    wire.deliver(5.0)
    assert nodes[2].role == LEADER
    assert nodes[2].acceptor.accepted(1).payload == req(1)
    assert [c.payload for c in wire.committed[2]] == [req(1)]


def test_competing_candidates_cannot_choose_different_values() -> None:
    nodes = [make(i) for i in range(3)]
    wire = Wire(nodes)
    for r in nodes:
        wire.take(r.node_id, r.start(0.0))
    wire.drop(lambda s, d, m: True)
    # Nodes 1 and 2 both time out; each gets one promise before the other interferes.
    wire.take(1, nodes[1].tick(1.0))
    wire.take(2, nodes[2].tick(1.0))
    wire.deliver(1.0, keep=lambda s, d, m: (s, d) in {(1, 0), (0, 1)})
    assert nodes[1].role == LEADER
    wire.take(1, nodes[1].propose(1.0, req(1, client=1)))
    wire.deliver(1.0, keep=lambda s, d, m: (s, d) in {(1, 0), (0, 1)})
    assert [c.payload for c in wire.committed[1]] == [req(1, client=1)]
    # Node 2's prepare (a higher ballot) now reaches everyone; it recovers slot 1.
    wire.deliver(1.1)
    wire.take(2, nodes[2].propose(1.1, req(1, client=2)))
    wire.deliver(1.1)
    for r in nodes:
        assert r.acceptor.accepted(1).payload == req(1, client=1)
    assert [c.payload for c in wire.committed[2]][:1] == [req(1, client=1)]


def test_leader_behind_catches_up_from_promises_unlike_raft() -> None:
    # A node that restarted with nothing can win phase 1 and learn the whole log.
    r = make(2)
    r.start(0.0)
    out = campaign(r, 1.0)
    ballot = sent(out, Prepare)[0].ballot
    history = tuple(PValue(slot=s, ballot=b(1, 0), payload=req(s)) for s in range(1, 6))
    out = r.step(1.0, 1, Promise(ballot=ballot, from_slot=1, accepted=history))
    assert r.role == LEADER
    (accept,) = sent(out, Accept, dst=1)
    assert accept.payloads == tuple(req(s) for s in range(1, 6))
    out = r.step(1.001, 1, Accepted(ballot=ballot, slot=1, count=5))
    assert [c.index for c in out.committed] == [1, 2, 3, 4, 5]


# -- phase 2 and learning ---------------------------------------------------------------


def test_steady_state_command_needs_one_round_trip() -> None:
    r = leader_of_three()
    out = r.propose(1.0, req(1))
    (accept,) = sent(out, Accept, dst=1)
    assert accept.slot == 1 and accept.payloads == (req(1),)
    assert not out.committed
    out = r.step(1.002, 1, Accepted(ballot=accept.ballot, slot=1, count=1))
    assert out.committed == [Committed(index=1, payload=req(1))]


def test_out_of_order_chosen_slots_are_committed_in_slot_order() -> None:
    r = leader_of_three()
    for seq in (1, 2, 3):
        r.propose(1.0, req(seq))
    ballot = r.ballot
    out3 = r.step(1.0, 1, Accepted(ballot=ballot, slot=3, count=1))
    out2 = r.step(1.0, 1, Accepted(ballot=ballot, slot=2, count=1))
    assert not out3.committed and not out2.committed
    out1 = r.step(1.0, 1, Accepted(ballot=ballot, slot=1, count=1))
    assert [c.index for c in out1.committed] == [1, 2, 3]
    again = r.step(1.0, 2, Accepted(ballot=ballot, slot=1, count=3))
    assert not again.committed  # exactly once


def test_follower_learns_commit_index_piggybacked_on_the_next_accept() -> None:
    r = make(1)
    r.start(0.0)
    r.step(0.0, 0, Accept(ballot=b(1, 0), slot=1, payloads=(req(1),), commit_index=0))
    out = r.step(0.0, 0, Accept(ballot=b(1, 0), slot=2, payloads=(req(2),), commit_index=1))
    assert out.committed == [Committed(index=1, payload=req(1))]
    out = r.step(0.1, 0, Heartbeat(ballot=b(1, 0), commit_index=2))
    assert out.committed == [Committed(index=2, payload=req(2))]


def test_follower_asks_for_chosen_values_it_accepted_at_another_ballot() -> None:
    r = make(1)
    r.start(0.0)
    r.step(0.0, 0, Accept(ballot=b(1, 0), slot=1, payloads=(Noop(),), commit_index=0))
    # A new leader (ballot 2.2) chose slot 1 without us; our value may differ.
    r.step(0.1, 2, Prepare(ballot=b(2, 2), from_slot=1))
    out = r.step(0.2, 2, Heartbeat(ballot=b(2, 2), commit_index=1))
    assert not out.committed
    assert sent(out, CatchUp, dst=2) == [CatchUp(ballot=b(2, 2), from_slot=1)]
    out = r.step(0.2, 2, Learn(ballot=b(2, 2), slot=1, payloads=(req(7),), commit_index=1))
    assert out.committed == [Committed(index=1, payload=req(7))]


def test_leader_answers_catchup_from_its_chosen_log() -> None:
    r = leader_of_three()
    for seq in (1, 2):
        r.propose(1.0, req(seq))
    r.step(1.0, 1, Accepted(ballot=r.ballot, slot=1, count=2))
    out = r.step(1.1, 2, CatchUp(ballot=r.ballot, from_slot=1))
    (learn,) = sent(out, Learn, dst=2)
    assert learn.slot == 1 and learn.payloads == (req(1), req(2)) and learn.commit_index == 2


def test_unacknowledged_accepts_are_retransmitted() -> None:
    r = leader_of_three(retransmit_timeout=0.1)
    r.propose(1.0, req(1))
    r.step(1.0, 1, Accepted(ballot=r.ballot, slot=1, count=1))  # chosen, node 2 silent
    r.propose(1.0, req(2))
    deadline = r.next_deadline()
    assert deadline is not None and deadline <= 1.1
    out = r.tick(1.1)
    resent = sent(out, Accept)
    assert {m.slot for m in resent} == {2} and r.counters["retransmits"] == 1


def test_pipeline_limit_queues_and_then_batches_requests() -> None:
    r = leader_of_three(max_in_flight=2, max_batch=8)
    outs = [r.propose(1.0, req(seq, client=seq)) for seq in range(1, 6)]
    assert [len(sent(o, Accept, dst=1)) for o in outs] == [1, 1, 0, 0, 0]
    out = r.step(1.0, 1, Accepted(ballot=r.ballot, slot=1, count=1))
    (accept,) = sent(out, Accept, dst=1)
    assert accept.slot == 3
    assert accept.payloads == (Batch(requests=tuple(req(s, client=s) for s in (3, 4, 5))),)


def test_commands_are_sent_several_slots_per_accept_after_recovery() -> None:
    r = make(0, max_slots_per_message=2)
    out = r.start(0.0)
    ballot = sent(out, Prepare)[0].ballot
    history = tuple(PValue(slot=s, ballot=b(1, 1), payload=req(s)) for s in range(1, 6))
    out = r.step(0.0, 1, Promise(ballot=ballot, from_slot=1, accepted=history))
    assert [(m.slot, len(m.payloads)) for m in sent(out, Accept, dst=1)] == [(1, 2), (3, 2), (5, 1)]


# -- preemption and rejections -------------------------------------------------------------


def test_follower_rejects_proposals_with_a_leader_hint() -> None:
    r = make(1)
    r.start(0.0)
    r.step(0.0, 0, Heartbeat(ballot=b(1, 0), commit_index=0))
    out = r.propose(0.1, req(1))
    (rejection,) = out.rejected
    assert rejection.reason == "not_leader" and rejection.leader_hint == 0


def test_preempted_leader_steps_down_and_rejects_queued_requests() -> None:
    r = leader_of_three(max_in_flight=1)
    r.propose(1.0, req(1, client=1))
    r.propose(1.0, req(1, client=2))  # queued behind the pipeline limit
    out = r.step(1.1, 1, Nack(ballot=r.ballot, promised=b(5, 2)))
    assert r.role == FOLLOWER and r.counters["preemptions"] == 1
    assert [(x.client_id, x.reason) for x in out.rejected] == [(2, "not_leader")]
    assert r.propose(1.2, req(2, client=3)).rejected[0].reason == "not_leader"


def test_leader_seeing_a_higher_ballot_prepare_steps_down() -> None:
    r = leader_of_three(disruption_guard=False)
    out = r.step(1.0, 2, Prepare(ballot=b(9, 2), from_slot=1))
    assert r.role == FOLLOWER and sent(out, Promise, dst=2)


def test_request_whose_slot_another_leader_filled_is_rejected_as_overwritten() -> None:
    r = leader_of_three()
    r.propose(1.0, req(1))  # slot 1, never acknowledged
    r.step(1.1, 2, Prepare(ballot=b(5, 2), from_slot=1))  # deposed
    out = r.step(1.2, 2, Heartbeat(ballot=b(5, 2), commit_index=1))
    assert sent(out, CatchUp, dst=2)
    out = r.step(1.2, 2, Learn(ballot=b(5, 2), slot=1, payloads=(Noop(),), commit_index=1))
    assert out.committed == [Committed(index=1, payload=Noop())]
    (rejection,) = out.rejected
    assert (rejection.client_id, rejection.seq, rejection.reason) == (1, 1, "overwritten")


def test_leader_that_loses_contact_with_a_majority_steps_down() -> None:
    r = leader_of_three(check_quorum=True, election_timeout_max=0.4)
    deadline = r.next_deadline()
    t = 0.0
    while r.role == LEADER and t < 2.0:
        deadline = r.next_deadline()
        assert deadline is not None
        t = deadline
        r.tick(t)
    assert r.role == FOLLOWER and r.counters["quorum_lost"] == 1 and t <= 1.0


# -- durability and snapshots ----------------------------------------------------------------


def test_restart_replays_acceptor_records_and_relearns_from_slot_1() -> None:
    r = make(1)
    r.start(0.0)
    records: list[Any] = []
    for seq in (1, 2):
        out = r.step(0.0, 0, Accept(ballot=b(1, 0), slot=seq, payloads=(req(seq),), commit_index=0))
        records += out.persist
    again = make(1, records=records)
    assert not again.start(1.0).committed  # chosen state is volatile
    assert again.acceptor.accepted(2) == PValue(slot=2, ballot=b(1, 0), payload=req(2))
    out = again.step(1.0, 0, Heartbeat(ballot=b(1, 0), commit_index=2))
    assert [c.index for c in out.committed] == [1, 2]


def test_compaction_keeps_acceptor_state_above_the_snapshot() -> None:
    r = leader_of_three()
    for seq in (1, 2, 3):
        r.propose(1.0, req(seq))
    r.step(1.0, 1, Accepted(ballot=r.ballot, slot=1, count=2))
    out = r.compact(1.1, 2, b"snap@2")
    assert out.compact is not None and out.compact[0] == SnapshotRecord(index=2, data=b"snap@2")
    assert {x.slot for x in out.compact if isinstance(x, AcceptRecord)} == {3}
    assert r.acceptor.accepted(1) is None and r.acceptor.floor == 3
    # A restarted copy starts from the snapshot.
    again = make(0, records=out.compact)
    assert again.start(2.0).restore is not None and again.log.commit_index == 2


def test_promise_carries_the_snapshot_when_slots_were_truncated() -> None:
    r = leader_of_three(disruption_guard=False)  # it promises while leading
    for seq in (1, 2):
        r.propose(1.0, req(seq))
    r.step(1.0, 1, Accepted(ballot=r.ballot, slot=1, count=2))
    r.compact(1.1, 2, b"snap@2")
    out = r.step(1.2, 2, Prepare(ballot=b(7, 2), from_slot=1))
    (promise,) = sent(out, Promise)
    assert (promise.snapshot_index, promise.snapshot_data) == (2, b"snap@2")
    # The candidate installs it and proposes nothing below it.
    cand = make(2)
    cand.start(0.0)
    out = campaign(cand, 1.0)
    ballot = sent(out, Prepare)[0].ballot
    out = cand.step(
        1.0,
        0,
        Promise(ballot=ballot, from_slot=1, accepted=(), snapshot_index=2, snapshot_data=b"s"),
    )
    assert cand.role == LEADER and out.restore is not None and out.restore.index == 2
    assert not sent(out, Accept) and cand.log.commit_index == 2


def test_accept_below_the_snapshot_is_not_acknowledged() -> None:
    r = make(1)
    r.start(0.0)
    r.step(0.0, 0, Accept(ballot=b(1, 0), slot=1, payloads=(req(1), req(2)), commit_index=2))
    r.compact(0.1, 2, b"s")
    out = r.step(0.2, 0, Accept(ballot=b(1, 0), slot=2, payloads=(req(2), req(3)), commit_index=2))
    assert sent(out, Accepted) == [Accepted(ballot=b(1, 0), slot=3, count=1)]


def test_a_leaders_accepts_go_out_eagerly_and_its_own_counts_once_durable() -> None:
    r = build(PROTOCOL, 0, (0, 1, 2), MultiPaxosOptions(), (), 0, host_syncs=False)
    out = r.start(0.0)
    prepare = sent(out, Prepare, dst=1)[0]
    r.synced(0.0)
    r.step(0.001, 1, Promise(ballot=prepare.ballot, from_slot=1, accepted=()))
    assert r.role == LEADER
    out = r.propose(1.0, req(1))
    assert {d for d, m in out.eager or () if isinstance(m, Accept)} == {1, 2}
    assert any(isinstance(rec, AcceptRecord) for rec in out.persist)
    (accept,) = sent(out, Accept, dst=1)
    # A follower accepted, but our own accept is not yet durable: not chosen.
    out = r.step(1.002, 1, Accepted(ballot=accept.ballot, slot=1, count=1))
    assert not out.committed
    out = r.synced(1.003)
    assert out is not None and out.committed == [Committed(index=1, payload=req(1))]
    assert r.synced(1.004) is None
    # The follower's own acknowledgement is not eager: it promises durability.
    follower = make(1)
    answer = follower.step(1.0, 0, accept)
    assert not answer.eager and sent(answer, Accepted)
