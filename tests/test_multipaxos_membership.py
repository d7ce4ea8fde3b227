"""Multi-Paxos membership changes through the log, in force ``alpha`` slots later.

Three layers: ``Configs`` alone (which configuration decides which slot,
duplicates, what a candidate must hear from, snapshots of it); the rules at
one replica, sans-I/O (the alpha window bounds what a leader proposes, a
change has a slot of its own and pads the window, one change at a time, a
spare never campaigns, a removed leader steps down, a retried old change
never reverts a later one); then seeded simulator runs on 5- or 6-node
clusters whose first configuration is a subset.
"""

from __future__ import annotations

from typing import Any

import membership_helpers
import pytest
from core_helpers import b, build, req, sent
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

from consensus.commands import ChangeMembership, Noop, Request
from consensus.config import Delay, NetworkConfig
from consensus.sim.simulator import Simulator
from protocols.multipaxos import (
    PROTOCOL,
    Accept,
    Accepted,
    Configs,
    ConfigState,
    Heartbeat,
    MultiPaxos,
    MultiPaxosOptions,
    Promise,
)
from protocols.multipaxos.core import FOLLOWER, LEADER
from protocols.paxos_common.acceptor import PValue

pytestmark = pytest.mark.filterwarnings("error")


def change(members: tuple[int, ...], seq: int = 1, client: int = 7) -> Request:
    return Request(client_id=client, seq=seq, command=ChangeMembership(members=members))


# -- Configs ----------------------------------------------------------------------------------


def test_a_change_chosen_in_slot_s_decides_slots_from_s_plus_alpha() -> None:
    configs = Configs(OLD, alpha=3)
    assert configs.note(5, change((1, 2, 3)))
    assert configs.config_for(7).members == frozenset(OLD)
    assert configs.config_for(8).members == frozenset({1, 2, 3})
    assert [q.members for q in configs.window(5)] == [frozenset(OLD), frozenset({1, 2, 3})]
    assert [q.members for q in configs.window(7)] == [frozenset({1, 2, 3})]


def test_a_retried_change_never_takes_effect_twice() -> None:
    configs = Configs(OLD, alpha=1)
    assert configs.note(1, change((0, 1, 2, 3), seq=4, client=7))
    assert configs.note(2, change((1, 2, 3), seq=1, client=8))
    # Client 7's retry of seq 4, and an older request of it, chosen later: ignored.
    assert not configs.note(3, change((0, 1, 2, 3), seq=4, client=7))
    assert not configs.note(4, change((0, 1, 2, 3), seq=2, client=7))
    assert configs.config_for(10).members == frozenset({1, 2, 3})
    assert configs.note(5, change((0, 1, 2), seq=5, client=7))  # its next one counts


def test_a_candidate_needs_every_configuration_its_promises_reveal() -> None:
    configs = Configs(OLD, alpha=2)
    plan = [(1, Noop()), (2, change((2, 3, 4))), (3, Noop())]
    needed = configs.needed(1, plan, top=3)
    assert [q.members for q in needed] == [frozenset(OLD), frozenset({2, 3, 4})]
    assert [q.members for q in configs.needed(1, plan[:1], top=1)] == [frozenset(OLD)]


def test_a_snapshot_carries_the_configurations_still_taking_effect() -> None:
    configs = Configs(OLD, alpha=4)
    configs.note(3, change((0, 1, 2, 3), client=7))
    configs.note(9, change((1, 2, 3), client=8))
    state = configs.state_at(10)
    assert state.members == (0, 1, 2, 3) and [c.slot for c in state.changes] == [9]
    again = Configs.from_state(state, alpha=4)
    for slot in (11, 12, 13, 14, 20):
        assert again.config_for(slot) == configs.config_for(slot)
    assert again.is_duplicate(7, 1) and again.is_duplicate(8, 1)


# -- one replica, sans-I/O --------------------------------------------------------------------


def make(node: int = 0, members: tuple[int, ...] = OLD, **opts: Any) -> MultiPaxos:
    r = build(PROTOCOL, node, members, MultiPaxosOptions(**opts), (), seed=node)
    r.start(0.0)
    return r  # type: ignore[no-any-return]


def elected(**opts: Any) -> MultiPaxos:
    r = make(0, **opts)
    r.step(0.001, 1, Promise(ballot=b(1, 0), from_slot=1, accepted=()))
    assert r.role == LEADER
    return r


def accept_all(r: MultiPaxos, now: float = 0.01) -> Any:
    """Node 1 acknowledges every slot in flight: they are chosen."""
    slots = sorted(r._inflight)
    return r.step(now, 1, Accepted(ballot=r.ballot, slot=slots[0], count=len(slots)))


def test_a_leader_proposes_a_slot_only_once_the_slot_alpha_before_is_chosen() -> None:
    r = elected(alpha=2, max_batch=1)
    out = r.propose(0.002, req(1))
    r.propose(0.002, req(2))
    r.propose(0.002, req(3))
    assert sorted(r._inflight) == [1, 2] and len(r._queue) == 1
    assert [m.slot for m in sent(out, Accept, dst=1)] == [1]
    out = r.step(0.01, 1, Accepted(ballot=r.ballot, slot=1, count=1))
    assert sorted(r._inflight) == [2, 3] and [m.slot for m in sent(out, Accept, dst=1)] == [3]


def test_a_change_takes_a_slot_alone_pads_the_window_and_then_is_in_force() -> None:
    r = elected(alpha=4)
    r.propose(0.002, req(1))
    out = r.propose(0.002, change((0, 1, 2, 3)))
    (accept,) = sent(out, Accept, dst=1)
    assert accept.payloads == (change((0, 1, 2, 3)),) and accept.slot == 2
    out = accept_all(r)
    # Chosen in slot 2, in force from slot 6: Noops fill 3..5 at once, sent to node 3 too.
    pads = sent(out, Accept, dst=3)
    assert [p for m in pads for p in m.payloads] == [Noop(), Noop(), Noop()]
    assert r.status()["members"] == [0, 1, 2]
    out = accept_all(r, 0.02)
    assert r.status()["members"] == [0, 1, 2, 3] and r.log.commit_index == 5
    # Slot 6 needs 3 of the 4 members now.
    r.propose(0.03, req(2))
    r.step(0.04, 1, Accepted(ballot=r.ballot, slot=6, count=1))
    assert r.log.commit_index == 5
    r.step(0.04, 3, Accepted(ballot=r.ballot, slot=6, count=1))
    assert r.log.commit_index == 6


def test_a_second_change_before_the_first_is_in_force_is_busy() -> None:
    r = elected(alpha=4)
    r.propose(0.002, change((0, 1, 2, 3)))
    out = r.propose(0.002, change((0, 1, 2, 3, 4), client=8))
    assert [(x.client_id, x.reason) for x in out.rejected] == [(8, "busy")]
    assert r.propose(0.002, change((), client=9)).rejected[0].reason == "invalid"


def test_a_spare_never_campaigns() -> None:
    spare = make(3, members=OLD)
    deadline = spare.next_deadline()
    assert deadline is not None
    out = spare.tick(deadline)
    assert spare.role == FOLLOWER and not out.messages and spare.counters["not_member"] == 1


def test_a_leader_outside_the_configuration_in_force_steps_down() -> None:
    r = elected(alpha=2)
    r.propose(0.002, change((1, 2, 3)))
    accept_all(r)  # the change, chosen in slot 1; slot 2 padded
    assert r.role == LEADER  # slot 2 still belongs to the old configuration
    out = accept_all(r, 0.03)
    assert r.role == FOLLOWER and r.counters["removed_step_downs"] == 1
    assert {d for d, m in out.messages if isinstance(m, Heartbeat)} == {1, 2, 3}


def test_a_retried_old_change_chosen_after_a_later_one_does_not_revert_it() -> None:
    r = make(1, alpha=1)
    ballot = b(1, 0)
    log = [change((0, 1, 2, 3), client=7), change((1, 2, 3), client=8), change((0, 1, 2, 3))]
    r.step(0.1, 0, Accept(ballot=ballot, slot=1, payloads=tuple(log), commit_index=3))
    assert r.log.commit_index == 3
    assert r.status()["members"] == [1, 2, 3]


def test_a_candidate_asks_the_members_of_a_configuration_its_promises_reveal() -> None:
    r = make(0, alpha=1)
    reported = (PValue(slot=1, ballot=b(1, 1), payload=change((0, 3, 4))),)
    r.step(0.01, 1, Promise(ballot=b(1, 0), from_slot=1, accepted=reported))
    # Slot 2 onward belongs to {0, 3, 4}: a quorum of it must promise too.
    assert r.role != LEADER
    r.step(0.02, 3, Promise(ballot=b(1, 0), from_slot=1, accepted=()))
    assert r.role == LEADER


# -- simulated clusters -----------------------------------------------------------------------


def cluster(**kw: Any) -> Simulator:
    return membership_helpers.cluster("multipaxos", **kw)


def test_sim_added_nodes_catch_up_and_vote() -> None:
    sim = cluster(seed=3)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    write(sim, 20)
    change_members(sim, (0, 1, 2, 3, 4))
    sim.run_for(0.5)
    for n in (3, 4):
        assert members(sim, n) == (0, 1, 2, 3, 4)
    (lead,) = sim.leaders()
    crashed = [lead, next(n for n in OLD if n != lead)]  # 3 and 4 now make the majority
    serve_without(sim, crashed, (0, 1, 2, 3, 4), prefix="after")


def test_sim_a_removed_leader_steps_down_and_stays_quiet() -> None:
    sim = cluster(seed=4)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    (old,) = sim.leaders()
    new = tuple(sorted({0, 1, 2, 3} - {old}))
    change_members(sim, new)
    assert sim.run_until(lambda: one_leader(sim, new), timeout=5)
    assert sim.protocol_counters(old)["removed_step_downs"] == 1
    write(sim, 10)
    sim.run_for(2.0)  # the removed node learns it is out: no phase 1, no new ballot
    (lead,) = sim.leaders()
    ballot = sim.replica(lead).ballot
    sim.run_for(2.0)
    assert sim.leaders() == [lead] and sim.replica(lead).ballot == ballot
    assert sim.protocol_counters(old)["phase1_runs"] <= 1
    assert_same_applied_sequence(sim)


def test_sim_the_whole_membership_is_replaced_at_once_new_nodes_install_a_snapshot() -> None:
    sim = cluster(nodes=6, seed=6, snapshot_every=10)
    assert sim.run_until(lambda: one_leader(sim, OLD), timeout=5)
    write(sim, 30)
    change_members(sim, (3, 4, 5))
    sim.run_for(0.5)
    assert all(sim.protocol_counters(n)["snapshots_installed"] >= 1 for n in (3, 4, 5))
    serve_without(sim, OLD, (3, 4, 5), prefix="end")
    assert all(members(sim, n) == (3, 4, 5) for n in (3, 4, 5))


@pytest.mark.parametrize(
    ("seed", "options"),
    [(11, {}), (12, {"alpha": 3}), (13, {"disruption_guard": False}), (14, {"alpha": 1})],
)
def test_sim_client_traffic_during_changes_is_linearizable(seed: int, options: Any) -> None:
    network = NetworkConfig(delay=Delay.uniform(0.001, 0.003), loss=0.02)
    sim = cluster(seed=seed, snapshot_every=25, options=options, network=network)
    assert_linearizable_through_changes(sim, seed)


def test_codec_round_trips_the_configuration_state() -> None:
    from consensus.codec import Codec

    codec = Codec.for_protocol(PROTOCOL)
    configs = Configs(OLD, alpha=4)
    configs.note(3, change((0, 1, 2, 3)))
    state = configs.state_at(4)
    assert isinstance(state, ConfigState)
    assert codec.decode(codec.encode(state)) == state
