"""Sans-I/O tests of the shared acceptor and the single-decree Paxos log core.

No event loop: replicas get hand-built messages (or each other's, routed by
hand through ``Wire``) and the tests check the ``Outputs``.  Test names follow
the rules of "Paxos Made Simple" (P1a, P2b, P2c, learning) and the classic
Paxos lab (Done/forgetting, hole filling).
"""

from __future__ import annotations

import random
from typing import Any

from core_helpers import Wire, b, build, req, sent

from consensus.commands import Batch, Noop
from consensus.replica import Committed, ReplicaContext
from protocols.paxos import (
    PROTOCOL,
    Accept,
    Accepted,
    Decided,
    DecisionRecord,
    Done,
    Nack,
    Paxos,
    PaxosOptions,
    Prepare,
    Promise,
)
from protocols.paxos.proposer import ACCEPTING, BACKOFF, PREPARING
from protocols.paxos_common.acceptor import (
    NOT_ACCEPTED,
    Acceptor,
    AcceptRecord,
    ForgetRecord,
    PromiseRecord,
    PValue,
)
from protocols.paxos_common.ballot import ZERO


def make(node: int = 0, n: int = 3, records: Any = (), seed: int = 0, **opts: Any) -> Paxos:
    replica = build(PROTOCOL, node, tuple(range(n)), PaxosOptions(**opts), records, seed)
    assert isinstance(replica, Paxos)
    replica.start(0.0)
    return replica


# -- the shared acceptor ------------------------------------------------------------------


def test_acceptor_promises_only_ballots_at_or_above_its_promise() -> None:
    a = Acceptor(per_slot=True)
    vote = a.prepare(b(2, 1), slot=1)
    assert vote.ok and vote.records == (PromiseRecord(ballot=b(2, 1), slot=1),)
    assert a.prepare(b(2, 1), slot=1).ok  # a retransmission: same answer, nothing to persist
    assert a.prepare(b(2, 1), slot=1).records == ()
    refused = a.prepare(b(1, 2), slot=1)
    assert not refused.ok and refused.promised == b(2, 1)
    assert a.prepare(b(1, 2), slot=2).ok  # other slots are independent instances


def test_acceptor_accepting_raises_its_promise_so_lower_ballots_are_refused() -> None:
    a = Acceptor(per_slot=True)
    assert a.accept(b(3, 0), 1, "v").ok
    assert a.promised(1) == b(3, 0)
    assert not a.prepare(b(2, 2), 1).ok
    assert not a.accept(b(2, 2), 1, "w").ok
    assert a.accepted(1) == PValue(slot=1, ballot=b(3, 0), payload="v")


def test_acceptor_value_at_names_only_the_value_accepted_at_that_exact_ballot() -> None:
    a = Acceptor(per_slot=False)
    a.accept(b(1, 0), 1, None)  # None is a payload, not "nothing accepted"
    a.accept(b(2, 1), 2, "new")
    assert a.value_at(1, b(1, 0)) is None
    assert a.value_at(1, b(2, 1)) is NOT_ACCEPTED  # accepted, but at another ballot
    assert a.value_at(2, b(2, 1)) == "new"
    assert a.value_at(3, b(2, 1)) is NOT_ACCEPTED  # nothing in that slot


def test_acceptor_refuses_accept_below_its_promise() -> None:
    a = Acceptor(per_slot=True)
    a.prepare(b(5, 1), 1)
    vote = a.accept(b(4, 0), 1, "late")
    assert not vote.ok and vote.promised == b(5, 1) and vote.records == ()
    assert a.accepted(1) is None


def test_acceptor_promise_reports_its_accepted_value() -> None:
    a = Acceptor(per_slot=True)
    a.accept(b(1, 0), 1, "v")
    assert a.prepare(b(2, 1), 1).accepted == (PValue(slot=1, ballot=b(1, 0), payload="v"),)


def test_shared_promise_acceptor_covers_every_slot() -> None:
    a = Acceptor(per_slot=False)
    a.accept(b(1, 0), 3, "x")
    vote = a.prepare_from(b(2, 1), from_slot=2)
    assert vote.ok and vote.accepted == (PValue(slot=3, ballot=b(1, 0), payload="x"),)
    for slot in (1, 3, 99):
        assert not a.accept(b(1, 0), slot, "stale").ok
    assert a.accepted(3).payload == "x"


def test_acceptor_replay_and_state_records_rebuild_the_same_state() -> None:
    a = Acceptor(per_slot=True)
    records: list[Any] = []
    records += a.prepare(b(1, 0), 1).records
    records += a.accept(b(1, 0), 1, "v").records
    records += a.prepare(b(4, 2), 2).records
    records += a.accept(b(2, 1), 3, "w").records
    records += a.forget_below(2)
    for source in (records, a.state_records()):
        again = Acceptor.recover(source, per_slot=True)
        assert again.floor == 2 and again.accepted(1) is None
        assert again.promised(2) == b(4, 2) and again.accepted(3) == a.accepted(3)
        assert again.promised(3) == b(2, 1)


def test_acceptor_refuses_requests_for_forgotten_slots() -> None:
    a = Acceptor(per_slot=True)
    a.accept(b(1, 0), 1, "v")
    assert a.forget_below(2) == (ForgetRecord(below=2),)
    assert a.slot_count() == 0
    assert a.prepare(b(9, 1), 1).forgotten and not a.prepare(b(9, 1), 1).ok
    assert a.accept(b(9, 1), 1, "w").forgotten


# -- proposing ------------------------------------------------------------------------------


def test_any_node_proposes_there_is_no_leader() -> None:
    r = make(2)
    assert r.leader() is None
    out = r.propose(0.0, req(1))
    assert [(d, m.slot, m.ballot) for d, m in out.messages] == [(0, 1, b(1, 2)), (1, 1, b(1, 2))]
    assert PromiseRecord(ballot=b(1, 2), slot=1) in out.persist  # its own promise, durable first


def test_majority_of_promises_without_values_proposes_own_request() -> None:
    r = make(0)
    r.propose(0.0, req(1))
    out = r.step(0.002, 1, Promise(slot=1, ballot=b(1, 0), accepted=None, done=0))
    assert sent(out, Accept) == [
        Accept(slot=1, ballot=b(1, 0), payload=req(1), done=0) for _ in (1, 2)
    ]
    assert AcceptRecord(slot=1, ballot=b(1, 0), payload=req(1)) in out.persist


def test_proposer_adopts_the_highest_ballot_accepted_value_and_retries_its_own_later() -> None:
    r = make(0, n=5)
    r.propose(0.0, req(1, client=9))
    low = PValue(slot=1, ballot=b(1, 3), payload=req(1, client=3))
    high = PValue(slot=1, ballot=b(2, 4), payload=req(1, client=4))
    r.step(0.0, 1, Promise(slot=1, ballot=b(1, 0), accepted=low, done=0))
    # Our ballot 1.0 is below 2.4; take a fresh round that outbids it.
    r.step(0.0, 2, Nack(slot=1, ballot=b(1, 0), promised=b(2, 4), forgotten=False, done=0))
    out = r.tick(1.0)
    (prepare, *_) = sent(out, Prepare)
    assert prepare.ballot > b(2, 4)
    r.step(1.0, 1, Promise(slot=1, ballot=prepare.ballot, accepted=low, done=0))
    out = r.step(1.0, 2, Promise(slot=1, ballot=prepare.ballot, accepted=high, done=0))
    accepts = sent(out, Accept)
    assert {m.payload for m in accepts if m.slot == 1} == {req(1, client=4)}
    # Our own request moved to slot 2 at once.
    assert {m.slot for m in sent(out, Prepare)} == {2}
    assert r.counters["retried_requests"] == 1


def test_value_once_chosen_is_never_changed_by_a_later_proposer() -> None:
    nodes = [make(i) for i in range(3)]
    wire = Wire(nodes)
    wire.take(0, nodes[0].propose(0.0, req(1, client=0)))
    # Node 0 gets slot 1 chosen with {0, 1}; node 2 hears nothing, nobody hears Decided.
    wire.deliver(0.0, keep=lambda s, d, m: {s, d} == {0, 1} and not isinstance(m, Decided))
    assert wire.payloads(0) == [req(1, client=0)]
    wire.drop()
    # Node 2 proposes in slot 1 (it believes it free) with a higher ballot, meeting node 1.
    wire.take(2, nodes[2].propose(1.0, req(1, client=2)))
    wire.deliver(1.0, keep=lambda s, d, m: {s, d} == {1, 2})
    assert wire.payloads(2)[0] == req(1, client=0)
    assert nodes[1].acceptor.accepted(1).payload == req(1, client=0)
    # And node 2's own request was decided in a later slot.
    assert wire.payloads(2) == [req(1, client=0), req(1, client=2)]


def test_competing_proposers_decide_one_value_per_slot() -> None:
    nodes = [make(i, seed=i) for i in range(3)]
    wire = Wire(nodes)
    for i, r in enumerate(nodes):
        wire.take(i, r.propose(0.0, req(1, client=i)))
    now = 0.0
    for _ in range(200):
        wire.deliver(now)
        if all(len(wire.committed[i]) == 3 for i in range(3)):
            break
        now = min(d for r in nodes if (d := r.next_deadline()) is not None)
        for i, r in enumerate(nodes):
            deadline = r.next_deadline()
            if deadline is not None and deadline <= now:
                wire.take(i, r.tick(now))
    assert wire.payloads(0) == wire.payloads(1) == wire.payloads(2)
    assert sorted(p.client_id for p in wire.payloads(0)) == [0, 1, 2]
    assert sum(r.counters["duels"] for r in nodes) >= 1


def test_acceptor_restarted_between_phases_still_refuses_the_lower_ballot() -> None:
    acceptor = make(1)
    records: list[Any] = []
    records += acceptor.step(0.0, 0, Prepare(slot=1, ballot=b(1, 0), done=0)).persist
    records += acceptor.step(0.0, 2, Prepare(slot=1, ballot=b(2, 2), done=0)).persist
    again = make(1, records=records)
    out = again.step(1.0, 0, Accept(slot=1, ballot=b(1, 0), payload=req(1), done=0))
    assert sent(out, Nack) == [
        Nack(slot=1, ballot=b(1, 0), promised=b(2, 2), forgotten=False, done=0)
    ]


def test_old_ballot_accept_arriving_late_does_not_change_the_accepted_value() -> None:
    r = make(1)
    r.step(0.0, 2, Prepare(slot=1, ballot=b(2, 2), done=0))
    r.step(0.0, 2, Accept(slot=1, ballot=b(2, 2), payload=req(1, client=2), done=0))
    out = r.step(0.5, 0, Accept(slot=1, ballot=b(1, 0), payload=req(1, client=0), done=0))
    assert sent(out, Nack) and not out.persist
    assert r.acceptor.accepted(1) == PValue(slot=1, ballot=b(2, 2), payload=req(1, client=2))


def test_majority_accepted_broadcasts_decided_and_commits() -> None:
    r = make(0)
    r.propose(0.0, req(1))
    r.step(0.002, 1, Promise(slot=1, ballot=b(1, 0), accepted=None, done=0))
    out = r.step(0.004, 1, Accepted(slot=1, ballot=b(1, 0), done=0))
    assert sent(out, Decided) == [Decided(slot=1, payload=req(1), done=0) for _ in (1, 2)]
    assert out.committed == [Committed(index=1, payload=req(1))]
    assert DecisionRecord(slot=1, payload=req(1)) in out.persist


def test_out_of_order_decisions_are_applied_in_slot_order_once() -> None:
    r = make(0)
    out3 = r.step(0.0, 1, Decided(slot=3, payload=req(3), done=0))
    out2 = r.step(0.0, 1, Decided(slot=2, payload=req(2), done=0))
    assert not out3.committed and not out2.committed
    out1 = r.step(0.0, 2, Decided(slot=1, payload=req(1), done=0))
    assert [c.index for c in out1.committed] == [1, 2, 3]
    assert not r.step(0.0, 2, Decided(slot=2, payload=req(2), done=0)).committed


def test_proposer_skips_slots_other_proposers_are_using() -> None:
    r = make(0)
    r.step(0.0, 1, Prepare(slot=1, ballot=b(1, 1), done=0))
    out = r.propose(0.0, req(1))
    assert {m.slot for m in sent(out, Prepare)} == {2}


def test_losing_a_slot_to_another_value_retries_the_request_in_a_later_slot() -> None:
    r = make(0)
    r.propose(0.0, req(1))
    out = r.step(0.001, 1, Decided(slot=1, payload=req(9, client=9), done=0))
    assert out.committed == [Committed(index=1, payload=req(9, client=9))]
    assert {m.slot for m in sent(out, Prepare)} == {2}
    assert r.counters["retried_requests"] == 1


def test_duelling_proposer_backs_off_for_randomized_growing_delays() -> None:
    r = make(0, backoff_base=0.01, backoff_max=10.0, done_gossip_interval=100.0)
    r.propose(0.0, req(1))
    waits = []
    now = 0.0
    for i in range(5):
        inst = r._instances[1]
        r.step(
            now,
            1,
            Nack(slot=1, ballot=inst.ballot, promised=b(10 * (i + 1), 1), forgotten=False, done=0),
        )
        assert inst.phase == BACKOFF
        deadline = r.next_deadline()
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
        out = r.tick(now)
        assert sent(out, Prepare)[0].ballot > b(10 * (i + 1), 1)
    assert r.counters["duels"] == 5 and r.counters["backoffs"] == 5
    assert all(0.01 * 2**i / 2 <= w <= 0.01 * 2**i for i, w in enumerate(waits, start=1))
    assert waits[-1] > 4 * waits[0]


def test_silent_round_is_retried_with_a_higher_ballot() -> None:
    r = make(0, retry_timeout=0.1, done_gossip_interval=100.0)
    r.propose(0.0, req(1))
    assert r.next_deadline() == 0.1
    out = r.tick(0.1)
    assert sent(out, Prepare)[0].ballot == b(2, 0) and r.counters["timeouts"] == 1


def test_requests_beyond_the_instance_limit_wait_and_are_batched() -> None:
    r = make(0, max_in_flight=1, max_batch=8)
    for seq in range(1, 5):
        r.propose(0.0, req(seq, client=seq))
    assert len(r._instances) == 1
    r.step(0.0, 1, Promise(slot=1, ballot=b(1, 0), accepted=None, done=0))
    out = r.step(0.0, 1, Accepted(slot=1, ballot=b(1, 0), done=0))
    (prepare, *_) = sent(out, Prepare)
    assert prepare.slot == 2
    assert r._instances[2].own == Batch(requests=tuple(req(s, client=s) for s in (2, 3, 4)))


# -- holes and forgetting ---------------------------------------------------------------------


def test_hole_below_a_decided_slot_is_filled_with_noop_after_a_delay() -> None:
    r = make(0, hole_delay=0.05)
    r.step(0.0, 1, Decided(slot=2, payload=req(2), done=0))
    assert r.next_deadline() == 0.05
    out = r.tick(0.05)
    assert {m.slot for m in sent(out, Prepare)} == {1}
    out = r.step(0.06, 1, Promise(slot=1, ballot=b(1, 0), accepted=None, done=0))
    assert {m.payload for m in sent(out, Accept)} == {Noop()}
    out = r.step(0.07, 1, Accepted(slot=1, ballot=b(1, 0), done=0))
    assert [c.payload for c in out.committed] == [Noop(), req(2)]
    assert r.counters["hole_fills"] == 1


def test_a_slot_known_only_to_be_in_use_is_never_filled() -> None:
    # Another proposer is still deciding slot 1: filling it would start a duel.
    r = make(0, hole_delay=0.05, done_gossip_interval=100.0)
    r.step(0.0, 1, Prepare(slot=1, ballot=b(1, 1), done=0))
    r.step(0.01, 1, Accept(slot=1, ballot=b(1, 1), payload=req(1, client=2), done=0))
    assert r.next_deadline() == 100.0
    assert not sent(r.tick(1.0), Prepare) and r.counters["hole_fills"] == 0


def test_a_slot_a_peer_reported_decided_is_filled() -> None:
    # A peer's done says slot 1 is decided there; this node missed the Decided.
    r = make(0, hole_delay=0.05, done_gossip_interval=100.0)
    r.step(0.0, 1, Prepare(slot=1, ballot=b(1, 1), done=0))
    r.step(0.0, 2, Done(done=1))
    assert r.next_deadline() == 0.05
    assert {m.slot for m in sent(r.tick(0.05), Prepare)} == {1}


def test_timers_scale_with_measured_round_trips() -> None:
    r = make(0, retry_timeout=0.1, hole_delay=0.05, done_gossip_interval=100.0)
    r.propose(0.0, req(1))
    assert r.next_deadline() == 0.1  # no sample yet: the configured floor
    # The promise arrives 0.3 s later, after the retry: still a sample (it names its ballot).
    r.tick(0.1)
    r.step(0.3, 1, Promise(slot=1, ballot=b(1, 0), accepted=None, done=0))
    assert r.rtt.srtt == 0.3
    out = r.propose(0.3, req(2, client=2))
    (prepare,) = sent(out, Prepare, dst=1)
    assert r._instances[prepare.slot].deadline == 0.3 + 2 * (0.3 + 4 * 0.15)


def test_without_adapt_timers_the_configured_delays_stand() -> None:
    r = make(0, retry_timeout=0.1, adapt_timers=False, done_gossip_interval=100.0)
    r.propose(0.0, req(1))
    r.tick(0.1)
    r.step(0.3, 1, Promise(slot=1, ballot=b(1, 0), accepted=None, done=0))
    out = r.propose(0.3, req(2, client=2))
    (prepare,) = sent(out, Prepare, dst=1)
    assert r._instances[prepare.slot].deadline == 0.3 + 0.1


def test_hole_filler_recovers_a_possibly_chosen_value_instead_of_noop() -> None:
    r = make(0)
    r.step(0.0, 1, Decided(slot=2, payload=req(2), done=0))
    r.tick(1.0)
    pv = PValue(slot=1, ballot=b(1, 2), payload=req(1, client=2))
    out = r.step(1.0, 1, Promise(slot=1, ballot=b(1, 0), accepted=pv, done=0))
    assert {m.payload for m in sent(out, Accept)} == {req(1, client=2)}


def test_instances_every_node_is_done_with_are_forgotten() -> None:
    r = make(0)
    for slot in range(1, 11):
        r.step(0.0, 1, Prepare(slot=slot, ballot=b(1, 1), done=0))
        r.step(0.0, 1, Accept(slot=slot, ballot=b(1, 1), payload=req(slot), done=0))
        r.step(0.0, 1, Decided(slot=slot, payload=req(slot), done=0))
    assert r.applied == 10 and r.slot_state_count() == 10
    r.step(0.1, 1, Done(done=10))
    assert r.slot_state_count() == 10  # node 2 may still need them
    out = r.step(0.1, 2, Done(done=6))
    assert ForgetRecord(below=7) in out.persist
    assert r.slot_state_count() == 4 and r.acceptor.floor == 7
    # A stale request for a forgotten slot is refused, never answered from empty state.
    out = r.step(0.2, 2, Prepare(slot=3, ballot=b(9, 2), done=6))
    (nack,) = sent(out, Nack)
    assert nack.forgotten
    r.step(0.3, 2, Done(done=10))
    assert r.slot_state_count() == 0


def test_done_is_piggybacked_and_gossiped_when_idle() -> None:
    r = make(0, done_gossip_interval=0.05)
    r.step(0.0, 1, Decided(slot=1, payload=req(1), done=0))
    out = r.propose(0.01, req(2))
    assert all(m.done == 1 for m in sent(out, Prepare))
    out = r.tick(0.05)
    assert sent(out, Done) == [Done(done=1), Done(done=1)]
    assert not sent(r.tick(0.1), Done)  # unchanged: nothing new to say


def test_restart_replays_decisions_and_reemits_from_slot_1() -> None:
    r = make(0)
    records: list[Any] = []
    for slot in (1, 2, 3):
        records += r.step(0.0, 1, Decided(slot=slot, payload=req(slot), done=0)).persist
    ctx = ReplicaContext(node_id=0, members=(0, 1, 2), options=PaxosOptions(), rng=random.Random(1))
    again = Paxos(ctx, records)
    out = again.start(1.0)
    assert [c.index for c in out.committed] == [1, 2, 3] and again.applied == 3


def test_phases_follow_prepare_then_accept() -> None:
    r = make(0)
    r.propose(0.0, req(1))
    inst = r._instances[1]
    assert inst.phase == PREPARING
    r.step(0.0, 1, Promise(slot=1, ballot=b(1, 0), accepted=None, done=0))
    assert inst.phase == ACCEPTING and inst.value == req(1)
    assert ZERO < inst.ballot
