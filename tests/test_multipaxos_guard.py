"""The Multi-Paxos disruption guard: the counterpart of Raft's PreVote and CheckQuorum.

Sans-I/O rules first (a node that hears a leader promises nothing new; a
would-be leader asks ``PrePrepare`` before it raises any ballot), then the
scenario of the issue on the simulator: followers that cannot hear the
leader depose it over and over without the guard, never with it.  Every
simulated scenario has a fixed seed.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_helpers import b, build, req, sent

from consensus.checker.linearizability import check
from consensus.config import ClusterConfig
from consensus.sim.simulator import Simulator
from consensus.testing.workload import closed_loop, finished
from protocols.multipaxos import (
    PROTOCOL,
    Accept,
    CatchUp,
    Heartbeat,
    MultiPaxos,
    MultiPaxosOptions,
    Prepare,
    PrePrepare,
    PrePromise,
    Promise,
)
from protocols.multipaxos.core import CANDIDATE, FOLLOWER, LEADER

pytestmark = pytest.mark.filterwarnings("error")


def make(node: int = 1, **opts: Any) -> MultiPaxos:
    r = build(PROTOCOL, node, (0, 1, 2), MultiPaxosOptions(**opts), (), seed=node)
    r.start(0.0)
    return r  # type: ignore[no-any-return]


def leader_of_three(**opts: Any) -> MultiPaxos:
    r = make(0, **opts)
    prepare = Prepare(ballot=b(1, 0), from_slot=1)
    r.step(0.001, 1, Promise(ballot=prepare.ballot, from_slot=1, accepted=()))
    assert r.role == LEADER
    return r


# -- the rules, sans-I/O ----------------------------------------------------------------------


def test_a_timed_out_follower_asks_first_and_promises_nothing() -> None:
    r = make(1)
    deadline = r.next_deadline()
    assert deadline is not None
    out = r.tick(deadline)
    (ask,) = {m for m in sent(out, PrePrepare)}
    assert {d for d, m in out.messages if m is ask} == {0, 2}
    assert r.role == FOLLOWER and not out.persist and not sent(out, Prepare)
    assert r.acceptor.promised_all == b(0, -1) and r.counters["pre_phases"] == 1


def test_a_pre_phase_granted_by_a_quorum_starts_phase1() -> None:
    r = make(1)
    out = r.tick(r.next_deadline() or 0.0)
    (ask,) = sent(out, PrePrepare, dst=0)
    out = r.step(0.5, 0, PrePromise(ballot=ask.ballot, granted=True, commit_index=0))
    assert r.role == CANDIDATE and r.ballot == ask.ballot
    assert sent(out, Prepare) and r.counters["phase1_runs"] == 1


def test_a_refused_pre_phase_changes_no_ballot_and_asks_again_later() -> None:
    r = make(1)
    first = r.next_deadline() or 0.0
    out = r.tick(first)
    (ask,) = sent(out, PrePrepare, dst=0)
    for peer in (0, 2):
        r.step(first, peer, PrePromise(ballot=ask.ballot, granted=False, commit_index=0))
    assert r.role == FOLLOWER and r.ballot == b(0, -1)
    again = r.next_deadline()
    assert again is not None and again > first
    assert sent(r.tick(again), PrePrepare)


def test_a_node_that_heard_the_leader_refuses_prepare_and_pre_prepare() -> None:
    r = make(1)
    r.step(1.0, 0, Heartbeat(ballot=b(1, 0), commit_index=0))
    out = r.step(1.1, 2, Prepare(ballot=b(2, 2), from_slot=1))
    assert not out.messages and not out.persist and r.leader() == 0
    out = r.step(1.1, 2, PrePrepare(ballot=b(2, 2), commit_index=0))
    assert sent(out, PrePromise) == [PrePromise(ballot=b(2, 2), granted=False, commit_index=0)]
    assert r.counters["prepares_refused"] == 1
    # Once election_timeout_min has passed without the leader, it promises.
    out = r.step(1.21, 2, Prepare(ballot=b(2, 2), from_slot=1))
    assert sent(out, Promise)


def test_a_leader_refuses_a_higher_ballot_prepare_with_the_guard() -> None:
    r = leader_of_three()
    out = r.step(1.0, 2, Prepare(ballot=b(9, 2), from_slot=1))
    assert r.role == LEADER and not out.messages and not out.persist
    # A higher ballot in an Accept is a leader that won phase 1: it preempts.
    r.step(1.0, 2, Accept(ballot=b(9, 2), slot=1, payloads=(req(1),), commit_index=0))
    assert r.role == FOLLOWER


def test_a_refusal_from_a_node_further_ahead_makes_the_asker_catch_up() -> None:
    r = make(1)
    out = r.tick(r.next_deadline() or 0.0)
    (ask,) = sent(out, PrePrepare, dst=0)
    out = r.step(0.5, 0, PrePromise(ballot=ask.ballot, granted=False, commit_index=40))
    assert sent(out, CatchUp, dst=0)[0].from_slot == 1


def test_a_candidate_that_does_not_win_in_a_timeout_starts_over() -> None:
    r = make(1, disruption_guard=False)
    r.tick(r.next_deadline() or 0.0)
    assert r.role == CANDIDATE
    first = r.ballot
    t = r.next_deadline() or 0.0
    while r.ballot == first:  # Prepares resent meanwhile, then a new ballot
        t = r.next_deadline() or 0.0
        r.tick(t)
    assert r.role == CANDIDATE and r.ballot > first and r.counters["phase1_restarts"] == 1


def test_a_retransmitted_prepare_does_not_postpone_a_follower() -> None:
    r = make(1, disruption_guard=False)
    r.step(0.0, 2, Prepare(ballot=b(2, 2), from_slot=1))
    deadline = r.next_deadline()
    r.step(0.1, 2, Prepare(ballot=b(2, 2), from_slot=1))  # the candidate resends
    assert r.next_deadline() == deadline


# -- the scenario of the issue ------------------------------------------------------------


def deaf_followers(guard: bool, nodes: int, deaf: int) -> tuple[int, list[Any], Simulator]:
    """``deaf`` followers hear nothing (they still send) while clients write at the others."""
    options = {"disruption_guard": guard}
    sim = Simulator(ClusterConfig(protocol="multipaxos", nodes=nodes, seed=19, options=options))
    warm = closed_loop(sim, clients=2, per_client=3)
    assert sim.run_until(finished(warm, 6), timeout=5.0)
    leader = sim.leaders()[0]
    cut = [n for n in range(nodes) if n != leader][-deaf:]
    for dst in cut:
        for src in range(nodes):
            if src != dst:
                sim.cut(src, dst)
    before = sum(sim.replica(n).counters["leader_changes"] for n in range(nodes))
    hearing = [n for n in range(nodes) if n not in cut]
    ops = closed_loop(sim, clients=4, per_client=200, nodes=hearing)
    sim.run_until(finished(ops, 800), timeout=3.4)
    changes = sum(sim.replica(n).counters["leader_changes"] for n in range(nodes)) - before
    return changes, ops, sim


@pytest.mark.parametrize(("nodes", "deaf"), [(3, 1), (5, 2)])
def test_deaf_followers_never_depose_the_leader_with_the_guard(nodes: int, deaf: int) -> None:
    changes, ops, sim = deaf_followers(True, nodes, deaf)
    assert changes == 0
    assert len(ops) == 800 and all(op.ok for op in ops)
    latencies = sorted(op.complete - op.invoke for op in ops)
    assert latencies[int(0.99 * len(latencies))] < 0.05  # no election stalls
    assert check(sim.history).ok is True


def test_without_the_guard_deaf_followers_churn_leaders() -> None:
    changes, ops, _ = deaf_followers(False, 3, 1)
    assert changes >= 3
    latencies = sorted(op.complete - op.invoke for op in ops if op.ok)
    assert latencies[int(0.99 * len(latencies))] > 0.1  # clients wait out elections
