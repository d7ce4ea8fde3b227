"""primary-backup: the core by hand, the monitor's decisions, then whole clusters.

Layers, cheapest first: the replica fed hand-built messages (commit rules of
each mode, log matching, fencing, resync, confirmed reads); the monitor's
decision alone; simulated clusters for the behaviours the issue names (sync
stops with one backup down, failover, an async failover losing an
acknowledged write, a deposed primary's stale read).  What each
configuration loses under the nemesis is in test_baselines_chaos.py.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from codec_helpers import roundtrip_table_check
from core_helpers import build, req, sent

from consensus.checker.linearizability import check
from consensus.checker.lost import lost_writes
from consensus.codec import Codec
from consensus.commands import Get, Put, Request
from consensus.config import ClusterConfig
from consensus.replica import Outputs, ReadReady
from consensus.sim.simulator import Simulator
from consensus.statemachine import KVStore
from protocols.primarybackup import PROTOCOL, Monitor, PrimaryBackupOptions, unsafe
from protocols.primarybackup.messages import (
    Ack,
    ConfirmRead,
    Entry,
    Nack,
    Ping,
    Pong,
    ReadConfirmed,
    Refuse,
    Replicate,
    Stored,
    Truncated,
    View,
    ViewChanged,
)

V1 = View(epoch=1, primary=0, backups=(1, 2))


def options(**kw: Any) -> PrimaryBackupOptions:
    return PrimaryBackupOptions(**kw)


def primary(**kw: Any) -> Any:
    replica = build(PROTOCOL, node=0, options=options(**kw))
    replica.start(0.0)
    return replica


def committed(out: Outputs) -> list[int]:
    return [c.index for c in out.committed]


# -- the primary's commit rule, by mode ------------------------------------------------------


def test_sync_commits_once_every_backup_holds_the_entry() -> None:
    p = primary(mode="sync")
    out = p.propose(0.0, req(1))
    assert [m.entries for m in sent(out, Replicate)] == [(Entry(epoch=1, payload=req(1)),)] * 2
    assert committed(out) == [] and committed(p.step(0.0, 1, Ack(epoch=1, last=1))) == []
    assert committed(p.step(0.0, 2, Ack(epoch=1, last=1))) == [1]


def test_semi_sync_commits_with_acks_backups() -> None:
    p = primary(mode="semi-sync", acks=1)
    p.propose(0.0, req(1))
    assert committed(p.step(0.0, 2, Ack(epoch=1, last=1))) == [1]


def test_async_commits_at_once_from_its_own_disk() -> None:
    p = primary(mode="async")
    out = p.propose(0.0, req(1))
    assert out.persist == [Stored(index=1, epoch=1, payload=req(1))] and committed(out) == [1]


def test_a_backup_refuses_nothing_but_redirects_clients_to_the_primary() -> None:
    backup = build(PROTOCOL, node=1)
    backup.start(0.0)
    out = backup.propose(0.0, req(1))
    assert [(r.reason, r.leader_hint) for r in out.rejected] == [("not_leader", 0)]


# -- the follower's side: log matching, fencing, resync -------------------------------------


def replicate(
    first: int, *entries: Entry, prev_epoch: int = 0, commit: int = 0, last: int = 0
) -> Replicate:
    last = last or first - 1 + len(entries)
    return Replicate(
        view=V1, first=first, prev_epoch=prev_epoch, entries=entries, commit=commit, last=last
    )


def test_a_follower_appends_what_matches_and_applies_up_to_the_primarys_commit() -> None:
    f = build(PROTOCOL, node=1)
    out = f.step(0.0, 0, replicate(1, Entry(epoch=1, payload=req(1)), commit=1))
    assert sent(out, Ack) == [Ack(epoch=1, last=1)] and committed(out) == [1]


def test_a_gap_or_an_epoch_mismatch_is_answered_with_where_to_resend_from() -> None:
    f = build(PROTOCOL, node=1)
    assert sent(f.step(0.0, 0, replicate(3, Entry(epoch=1, payload=req(3)))), Nack) == [
        Nack(epoch=1, hint=1)
    ]
    f.step(0.0, 0, replicate(1, Entry(epoch=1, payload=req(1)), Entry(epoch=1, payload=req(2))))
    mismatch = replicate(3, Entry(epoch=2, payload=req(3)), prev_epoch=2)
    assert sent(f.step(0.0, 0, mismatch), Nack) == [Nack(epoch=1, hint=1)]  # back over epoch 1


def test_a_conflicting_suffix_is_truncated_and_applied_entries_resync_the_state() -> None:
    # Unfenced, so the follower takes a second primary's log as it comes.
    f = build(PROTOCOL, node=1, options=options(failover="monitor"))
    old = [Entry(epoch=1, payload=req(i)) for i in (1, 2)]
    f.step(0.0, 0, replicate(1, *old, commit=2))  # applied 1 and 2
    mine = Request(client_id=2, seq=1, command=Put(key="k", value="new"))
    out = f.step(0.0, 2, replicate(2, Entry(epoch=2, payload=mine), prev_epoch=1, commit=1))
    assert Truncated(after=1) in out.persist
    assert out.restore is not None and out.restore.index == 1
    store = KVStore()
    store.restore(out.restore.index, out.restore.data)
    assert store.data == {"k": "1"}  # the state as of the entry it kept
    assert f.counters["resyncs"] == 1 and [e.payload for e in f.log] == [req(1), mine]


def test_fenced_a_follower_refuses_an_older_epoch_and_the_refusal_deposes_the_sender() -> None:
    f = build(PROTOCOL, node=1)
    v2 = View(epoch=2, primary=2, backups=(1,))
    f.step(0.0, 0, Ping(view=v2))
    out = f.step(0.0, 0, replicate(1, Entry(epoch=1, payload=req(1))))
    assert sent(out, Refuse) == [Refuse(view=v2)] and not f.log
    p = primary()
    out = p.step(0.0, 1, Refuse(view=v2))
    assert not p.is_primary and ViewChanged(view=v2) in out.persist


def test_unfenced_a_follower_takes_entries_from_a_deposed_primary() -> None:
    f = build(PROTOCOL, node=1, options=options(failover="monitor"))
    f.step(0.0, 2, Ping(view=View(epoch=2, primary=2, backups=(1,))))
    out = f.step(0.0, 0, replicate(1, Entry(epoch=1, payload=req(1))))
    assert sent(out, Ack) == [Ack(epoch=2, last=1)] and len(f.log) == 1


# -- reads ---------------------------------------------------------------------------------


def get(seq: int) -> Request:
    return Request(client_id=9, seq=seq, command=Get(key="k"))


def test_local_reads_are_answered_at_once_and_confirmed_reads_after_every_backup() -> None:
    assert primary().read(0.0, get(1)).reads == [ReadReady(client_id=9, seq=1, index=0)]
    p = primary(reads="confirmed")
    out = p.read(0.0, get(1))
    assert not out.reads and sent(out, ConfirmRead) == [ConfirmRead(view=V1, round=1)] * 2
    assert not p.step(0.0, 1, ReadConfirmed(epoch=1, round=1)).reads
    assert p.step(0.0, 2, ReadConfirmed(epoch=1, round=1)).reads == [
        ReadReady(client_id=9, seq=1, index=0)
    ]


def test_a_primary_that_steps_down_rejects_the_reads_it_was_confirming() -> None:
    p = primary(reads="confirmed")
    p.read(0.0, get(1))
    out = p.step(0.0, 1, Refuse(view=View(epoch=2, primary=1, backups=(2,))))
    assert [(r.seq, r.reason, r.leader_hint) for r in out.rejected] == [(1, "not_leader", 1)]


# -- the monitor -----------------------------------------------------------------------------


def monitor(promotion: str = "most-up-to-date") -> Monitor:
    m = Monitor(members=(0, 1, 2), promotion=promotion, timeout=0.3, rng=random.Random(0))
    m.start(0.0)
    return m


def pong(last_index: int, acknowledged: int = 0, last_epoch: int = 1) -> Pong:
    return Pong(epoch=1, last_epoch=last_epoch, last_index=last_index, acknowledged=acknowledged)


def test_the_monitor_promotes_the_backup_with_the_furthest_log_once_the_view_is_acknowledged():
    m = monitor()
    v2 = View(epoch=2, primary=0, backups=(1, 2))
    m.pong(0.1, 0, pong(5, acknowledged=1))  # the primary never acknowledged view 2
    m.pong(0.5, 1, pong(3))
    m.pong(0.5, 2, pong(5))
    assert m.decide(0.5, v2) is None  # silent primary, but a backup may lack its log
    m.pong(0.1, 0, pong(5, acknowledged=2))
    assert m.decide(0.5, v2) == View(epoch=3, primary=2, backups=(1,))
    # The first view starts with empty logs: it needs no acknowledgement.
    assert m.decide(0.5, V1) == View(epoch=2, primary=2, backups=(1,))


def test_any_promotes_at_once_whoever_answers_and_a_returning_node_rejoins() -> None:
    m = monitor("any")
    m.pong(0.5, 1, pong(0))  # a backup whose log is empty
    m.pong(0.5, 2, pong(0))
    new = m.decide(0.5, V1)
    assert new is not None and new.epoch == 2 and new.primary in (1, 2) and 0 not in new.backups
    m.pong(0.6, 0, pong(9))
    assert m.decide(0.6, new) == View(epoch=3, primary=new.primary, backups=(0, *new.backups))


def test_unsafe_names_what_each_configuration_loses() -> None:
    assert unsafe(options(reads="confirmed")) == ()
    assert unsafe(options(failover="none", mode="async")) == ()
    assert len(unsafe(options(mode="async", failover="monitor", promotion="any"))) == 4


# -- whole clusters -----------------------------------------------------------------------------


def cluster(seed: int = 1, nodes: int = 3, **opts: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol="primary-backup", nodes=nodes, seed=seed, options=opts))


def submit(sim: Simulator, command: Any, node: int | None = None, timeout: float = 2.0) -> Any:
    op = sim.submit(command, node=node)
    sim.run_until(lambda: op.done, timeout=timeout)
    return op


def test_sync_stops_while_one_backup_is_down_and_resumes_when_it_is_back() -> None:
    sim = cluster()
    assert submit(sim, Put(key="x", value="1")).ok
    sim.crash(1)  # a backup, not the primary: the monitor never replaces it
    op = sim.submit(Put(key="x", value="2"))
    sim.run_for(2.0)
    assert not op.done
    sim.restart(1)
    assert sim.run_until(lambda: op.done, timeout=2.0) and op.ok


def test_a_crashed_primary_is_replaced_and_rejoins_as_a_backup_losing_nothing() -> None:
    sim = cluster()
    assert submit(sim, Put(key="x", value="1")).ok
    sim.crash(0)
    assert submit(sim, Put(key="x", value="2")).ok
    [new] = sim.leaders()
    sim.restart(0)
    sim.run_for(1.0)
    assert new != 0 and 0 in sim.replica(new).view.backups
    assert [sim.host(n).sm.data for n in range(3)] == [{"x": "2"}] * 3


def test_an_async_failover_loses_an_acknowledged_write() -> None:
    sim = cluster(mode="async")
    assert submit(sim, Put(key="x", value="1")).ok
    sim.run_for(0.2)
    sim.cut(0, 1)  # the primary's replication stops reaching the backups
    sim.cut(0, 2)
    assert submit(sim, Put(key="x", value="2")).ok  # acknowledged from its own disk
    sim.crash(0)
    sim.heal()
    sim.run_for(1.0)
    sim.restart(0)  # back as a backup: it resyncs to the new primary's log
    sim.run_for(1.0)
    assert [sim.host(n).sm.data for n in range(3)] == [{"x": "1"}] * 3
    lost = lost_writes(sim.history, {n: sim.host(n).sm.data for n in range(3)})
    assert [op.command.value for op in lost] == ["2"]
    assert sim.protocol_counters(0)["resyncs"] == 1


def test_without_fencing_a_deposed_primary_acknowledges_writes_that_are_lost() -> None:
    # Five nodes, the monitor on node 4.  The primary loses its link to the
    # monitor only: the monitor promotes another node while the old primary,
    # still reaching the other backups and its clients, goes on serving.
    for failover, split_brain in (("monitor", True), ("monitor-fenced", False)):
        sim = cluster(nodes=5, mode="semi-sync", failover=failover)
        assert submit(sim, Put(key="x", value="0"), node=0).ok
        sim.cut(0, 4)
        sim.cut(4, 0)
        sim.run_for(1.0)
        assert 0 in sim.leaders() if split_brain else sim.leaders() != [0]
        [new] = [n for n in sim.leaders() if n != 0]
        old_side = submit(sim, Put(key="a", value="acknowledged by the old primary"), node=0)
        new_side = submit(sim, Put(key="b", value="acknowledged by the new primary"), node=new)
        assert old_side.ok and new_side.ok
        assert (old_side.retries == 0) is split_brain  # fenced: redirected to the new primary
        sim.heal()
        sim.run_for(1.0)  # the monitor reaches the old primary: it steps down and resyncs
        assert sim.leaders() == [new]
        states = {n: sim.host(n).sm.data for n in sim.node_ids}
        lost = lost_writes(sim.history, states)
        assert [op.command.key for op in lost] == (["a"] if split_brain else [])


def test_a_deposed_primary_serves_a_stale_read_unless_reads_are_confirmed() -> None:
    for reads, stale in (("local", True), ("confirmed", False)):
        sim = cluster(reads=reads)
        assert submit(sim, Put(key="x", value="1"), node=0).ok
        sim.isolate(0)  # the monitor (node 2) promotes 1; node 0 keeps its clients
        sim.run_for(1.0)
        assert submit(sim, Put(key="x", value="2"), node=1).ok
        sim.run_for(0.01)  # the read starts after the write completed, not at that instant
        read = submit(sim, Get(key="x"), node=0, timeout=0.3)
        assert (read.ok and read.result == "1") is stale
        assert check(sim.history).ok is not stale


def test_every_message_and_record_round_trips() -> None:
    entry = Entry(epoch=2, payload=req(1))
    roundtrip_table_check(
        Codec.for_protocol(PROTOCOL),
        [
            V1,
            entry,
            Replicate(view=V1, first=3, prev_epoch=1, entries=(entry,), commit=2, last=3),
            Ack(epoch=1, last=3),
            Nack(epoch=1, hint=2),
            Refuse(view=V1),
            ConfirmRead(view=V1, round=4),
            ReadConfirmed(epoch=1, round=4),
            Ping(view=V1),
            Pong(epoch=1, last_epoch=1, last_index=3, acknowledged=1),
            Stored(index=1, epoch=2, payload=req(1)),
            Truncated(after=0),
            ViewChanged(view=V1),
        ],
    )


@pytest.mark.parametrize("bad", [{"mode": "fast"}, {"acks": 0}, {"failover_timeout": 0.01}])
def test_options_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PrimaryBackupOptions(**bad)
