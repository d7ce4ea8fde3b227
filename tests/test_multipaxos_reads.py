"""Multi-Paxos reads without the log: confirmed heartbeat rounds and leader leases.

Sans-I/O rules (a read waits for a round sent after it arrived; a lease
counts from when its round was sent and lasts ``election_timeout_min`` less
the drift margin; a new leader reads at or above everything phase 1 found),
then simulated clusters whose clocks drift: within the bound a lease
assumes, an isolated old leader never serves a stale read; beyond it, the
history checker catches the stale read it serves.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from core_helpers import b, build, req, sent

from consensus.checker.linearizability import check
from consensus.commands import Get, Put, Request
from consensus.config import ClientConfig, ClusterConfig, ConfigError, Delay, NetworkConfig
from consensus.sim.simulator import Simulator
from consensus.testing.chaos import chaos_run
from protocols.multipaxos import (
    PROTOCOL,
    Heartbeat,
    HeartbeatAck,
    MultiPaxos,
    MultiPaxosOptions,
    Prepare,
    Promise,
)
from protocols.multipaxos.core import LEADER
from protocols.paxos_common.acceptor import PValue

pytestmark = pytest.mark.filterwarnings("error")


def get(seq: int, client: int = 9) -> Request:
    return Request(client_id=client, seq=seq, command=Get(key="k"))


def leader(
    n: int = 3, accepted: tuple[PValue, ...] = (), settle: bool = True, **opts: Any
) -> MultiPaxos:
    """Node 0 bootstrapped and elected at 0.001 by node 1's promise; with ``settle``
    node 1 answers its first heartbeat round at 0.002 (no round is out)."""
    r = build(PROTOCOL, 0, tuple(range(n)), MultiPaxosOptions(**opts), (), seed=0)
    r.start(0.0)
    out = r.step(0.001, 1, Promise(ballot=b(1, 0), from_slot=1, accepted=accepted))
    assert r.role == LEADER
    if settle:
        r.step(0.002, 1, HeartbeatAck(ballot=r.ballot, round=heartbeat_round(out)))
    return r  # type: ignore[no-any-return]


def heartbeat_round(out: Any) -> int:
    rounds = {m.round for m in sent(out, Heartbeat)}
    assert len(rounds) == 1, rounds
    return rounds.pop()  # type: ignore[no-any-return]


# -- options --------------------------------------------------------------------------------


def test_a_lease_lasts_the_election_timeout_less_the_drift_margin() -> None:
    opts = MultiPaxosOptions(read_mode="lease", max_clock_drift=0.01, election_timeout_min=0.2)
    assert opts.lease_duration == pytest.approx(0.2 * 0.99 / 1.01)


def test_a_lease_without_the_guard_is_a_config_error() -> None:
    config = ClusterConfig(
        protocol="multipaxos", options={"read_mode": "lease", "disruption_guard": False}
    )
    with pytest.raises(ConfigError, match="disruption_guard"):
        config.protocol_options()
    with pytest.raises(ConfigError, match="read_mode"):
        ClusterConfig(protocol="multipaxos", options={"read_mode": "stale"}).protocol_options()


# -- read_index: a confirmed round ----------------------------------------------------------


def test_a_read_at_a_follower_is_rejected_with_a_hint() -> None:
    r = build(PROTOCOL, 1, (0, 1, 2), MultiPaxosOptions(read_mode="read_index"), ())
    r.start(0.0)
    r.step(0.1, 0, Heartbeat(ballot=b(1, 0), commit_index=0, round=1))
    (rejection,) = r.read(0.1, get(1)).rejected
    assert (rejection.reason, rejection.leader_hint) == ("not_leader", 0)


def test_a_read_waits_for_a_round_sent_after_it_arrived() -> None:
    r = leader(read_mode="read_index")
    out = r.read(0.01, get(1))
    assert not out.reads
    fresh = heartbeat_round(out)  # a round for the read
    # An answer to an older round confirms nothing.
    assert not r.step(0.011, 1, HeartbeatAck(ballot=r.ballot, round=fresh - 1)).reads
    (ready,) = r.step(0.012, 1, HeartbeatAck(ballot=r.ballot, round=fresh)).reads
    assert (ready.client_id, ready.seq, ready.index) == (9, 1, 0)
    assert r.counters["confirmed_reads"] == 1


def test_reads_arriving_while_a_round_is_out_share_the_next_round() -> None:
    r = leader(read_mode="read_index")
    first = heartbeat_round(r.read(0.01, get(1)))
    assert not sent(r.read(0.011, get(1, client=10)), Heartbeat)
    assert not sent(r.read(0.012, get(1, client=11)), Heartbeat)
    out = r.step(0.013, 2, HeartbeatAck(ballot=r.ballot, round=first))
    assert [x.client_id for x in out.reads] == [9]
    second = heartbeat_round(out)  # sent at once for the two waiting reads
    out = r.step(0.014, 2, HeartbeatAck(ballot=r.ballot, round=second))
    assert [x.client_id for x in out.reads] == [10, 11]


def test_a_new_leader_reads_at_or_above_every_slot_phase1_found() -> None:
    found = (PValue(slot=3, ballot=b(1, 2), payload=req(3)),)
    r = leader(accepted=found, read_mode="read_index")
    out = r.read(0.01, get(1))
    (ready,) = r.step(0.012, 1, HeartbeatAck(ballot=r.ballot, round=heartbeat_round(out))).reads
    assert ready.index == 3  # not the chosen prefix (0): slot 3 may hold a write


def test_a_leader_that_steps_down_rejects_its_pending_reads() -> None:
    r = leader(read_mode="read_index")
    r.read(0.01, get(1))
    out = r.step(0.02, 2, Heartbeat(ballot=b(5, 2), commit_index=0))
    assert [(x.client_id, x.reason) for x in out.rejected] == [(9, "not_leader")]


# -- lease --------------------------------------------------------------------------------


def test_a_lease_serves_reads_at_once_until_it_runs_out_from_the_rounds_sending() -> None:
    r = leader(read_mode="lease", heartbeat_interval=0.15)  # round 1: sent 0.001, answered 0.002
    lease = r.options.lease_duration
    out = r.read(0.001 + lease - 0.0005, get(1))
    assert out.reads and not out.messages and r.counters["lease_reads"] == 1
    # Counted from the round's sending (0.001), not from its answer (0.002).
    out = r.read(0.001 + lease + 0.0005, get(2))
    assert not out.reads and sent(out, Heartbeat)
    (ready,) = r.step(0.3, 2, HeartbeatAck(ballot=r.ballot, round=heartbeat_round(out))).reads
    assert ready.seq == 2


def test_a_restarted_node_in_lease_mode_promises_nothing_for_an_election_timeout() -> None:
    opts = MultiPaxosOptions(read_mode="lease")
    first = build(PROTOCOL, 2, (0, 1, 2), opts, (), seed=2)
    first.start(0.0)
    out = first.step(0.1, 0, Heartbeat(ballot=b(1, 0), commit_index=0, round=1))
    assert out.persist, "backing a lease leaves a record"
    r = build(PROTOCOL, 2, (0, 1, 2), opts, out.persist, seed=2)
    r.start(5.0)  # it may have backed a lease before it restarted
    assert not r.step(5.1, 1, Prepare(ballot=b(7, 1), from_slot=1)).messages
    assert sent(r.step(5.21, 1, Prepare(ballot=b(7, 1), from_slot=1)), Promise)


# -- simulated: leases and drifting clocks --------------------------------------------------


def cut_off_old_leader(max_clock_drift: float) -> tuple[Simulator, Any]:
    """The leader's clock runs at half speed, the others' 1.5 times: a lease that
    assumes ``max_clock_drift`` of 0.01 outlives the others' patience three times.
    The leader is cut off from its peers (clients still reach it), the others
    elect a leader and write, then a client reads at the old leader."""
    options = {"read_mode": "lease", "max_clock_drift": max_clock_drift}
    options["heartbeat_interval"] = 0.02  # the slow leader still heartbeats in time
    sim = Simulator(
        ClusterConfig(
            protocol="multipaxos",
            nodes=3,
            seed=4,
            options=options,
            clock_drift=(-0.5, 0.5, 0.5),
            network=NetworkConfig(delay=Delay.constant(0.001)),
        )
    )
    first = sim.submit(Put(key="k", value="old"), node=0)
    assert sim.run_until(lambda: first.ok and sim.leaders() == [0], timeout=2.0)
    sim.run_for(0.1)
    for peer in (1, 2):
        sim.cut(0, peer)
        sim.cut(peer, 0)
    assert sim.run_until(lambda: any(n in (1, 2) for n in sim.leaders()), timeout=2.0)
    new = [n for n in sim.leaders() if n != 0][0]
    write = sim.submit(Put(key="k", value="new"), node=new)
    assert sim.run_until(lambda: write.done, timeout=1.0) and write.ok
    sim.run_for(0.001)  # strictly after the write's answer
    read = sim.submit(Get(key="k"), node=0)
    sim.run_until(lambda: read.done, timeout=5.0)
    return sim, read


def test_within_the_drift_bound_a_cut_off_leader_serves_no_stale_read() -> None:
    sim, read = cut_off_old_leader(max_clock_drift=0.5)
    assert read.ok and read.result == "new" and read.retries  # answered elsewhere
    assert check(sim.history).ok is True


def test_beyond_the_drift_bound_the_checker_catches_the_stale_read() -> None:
    sim, read = cut_off_old_leader(max_clock_drift=0.01)
    assert read.ok and read.result == "old" and not read.retries  # served from the lease
    assert check(sim.history).ok is False


def lease_race(seed: int, drift: float, max_clock_drift: float) -> bool | None:
    """A randomized race against a lease: clocks drift within ``drift``, the
    leader is cut off from its peers at a random moment, a writer keeps writing
    through the others and a reader keeps reading at the old leader.  Returns
    whether the history is linearizable."""
    rng = random.Random(f"{seed}:lease-race")
    options = {"read_mode": "lease", "max_clock_drift": max_clock_drift}
    options["heartbeat_interval"] = 0.02
    sim = Simulator(
        ClusterConfig(
            protocol="multipaxos",
            nodes=3,
            seed=seed,
            options=options,
            clock_drift=tuple(rng.uniform(-drift, drift) for _ in range(3)),
            network=NetworkConfig(delay=Delay.uniform(0.0005, 0.002)),
            client=ClientConfig(timeout=0.05, backoff=0.005),
        )
    )
    first = sim.submit(Put(key="k", value="0"))
    assert sim.run_until(lambda: first.ok, timeout=3.0)
    (old,) = sim.leaders()
    others = [n for n in range(3) if n != old]
    sim.run_for(rng.uniform(0.0, 0.1))
    for peer in others:
        sim.cut(old, peer)
        sim.cut(peer, old)
    count = 0

    def write(_: Any = None) -> None:
        nonlocal count
        count += 1
        put = Put(key="k", value=str(count))
        sim.submit(put, node=rng.choice(others), on_done=lambda op: sim.after(0.003, write))

    def read(_: Any = None) -> None:
        sim.submit(Get(key="k"), node=old, on_done=lambda op: sim.after(0.003, read))

    write()
    read()
    sim.run_for(1.0)
    sim.heal()
    sim.run_for(0.5)
    sim.finish_pending()
    return check(list(sim.history), timeout=10).ok


def test_lease_races_within_the_drift_bound_stay_linearizable() -> None:
    assert all(lease_race(seed, drift=0.2, max_clock_drift=0.2) for seed in range(15))


def test_lease_races_beyond_the_drift_bound_are_caught() -> None:
    caught = [seed for seed in range(15) if lease_race(seed, 0.5, 0.01) is False]
    assert caught and caught[0] == 0


@pytest.mark.parametrize("mode", ["lease", "read_index"])
def test_chaos_runs_with_reads_at_the_leader_stay_linearizable(mode: str) -> None:
    options = {"read_mode": mode, "max_clock_drift": 0.05}
    for seed in range(3):
        result = chaos_run("multipaxos", seed, ops=120, options=options, clock_drift=0.05)
        assert result.passed, seed
