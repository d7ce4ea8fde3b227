"""Conformance: the rules every replicated-log plugin must follow, on every plugin.

Theory of operation
-------------------
Each test is one rule of a replicated log, checked on the deterministic
simulator through the plugin-neutral surface only (clients, the recorded
history, what each host applied, its state machine), never a plugin's
internals.  Every test runs once per installed plugin: each name under the
``consensus.protocols`` entry-point group, so a plugin installed later is
picked up with no change here.  Plugins ``register()``ed at run time are not
installed; in this process they are other modules' test doubles (``probe``,
``stuck``), present or not depending on import order.

Two tables opt out, each with its reason:

* ``NOT_CONFORMANT``: installed on purpose but meant to fail (the broken
  variant that proves the checkers can fail).  Never run here.
* ``LACKS``: a capability a plugin does not have.  A test that needs it is
  collected for that plugin and skipped with the reason, so the report shows
  it.  An unknown plugin lacks nothing: it must pass every test.

Capabilities: ``failover`` (the cluster survives the crash or isolation of
its leader).  A plugin without leaders has failover trivially: its "leader"
in a scenario is any node.

Every scenario has a fixed seed (in its body or, for the randomized one,
printed with any failure), so a failure replays exactly.
"""

from __future__ import annotations

import random
from importlib.metadata import entry_points
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from sim_helpers import (
    Agreement,
    acked,
    applied_index,
    applied_requests,
    assert_prefix_agreement,
    closed_loop,
    converged,
    finished,
    random_crashes,
    retry_late,
)

from consensus.checker.linearizability import check
from consensus.commands import Append, CompareAndSet, Get, Put
from consensus.config import ClientConfig, ClusterConfig, Delay, NetworkConfig, StorageConfig
from consensus.registry import ENTRY_POINT_GROUP, get_protocol
from consensus.sim.simulator import Simulator

pytestmark = pytest.mark.filterwarnings("error")

#: Installed plugins that must not be held to the rules, and why.
NOT_CONFORMANT = {
    "raft-stale-reads": "broken on purpose (bench/broken.py): proves the checker can fail",
}

#: Capabilities a plugin lacks: name -> {capability: why}.
LACKS: dict[str, dict[str, str]] = {
    "sequencer": {"failover": "fixed leader, no election: cannot survive a leader crash"},
}

CAPABILITIES = ("failover",)

INSTALLED = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
CONFORMANT = [name for name in INSTALLED if name not in NOT_CONFORMANT]


def each_protocol(*needs: str) -> pytest.MarkDecorator:
    """Parametrize ``protocol`` over every conformant plugin; skip those lacking ``needs``."""
    assert set(needs) <= set(CAPABILITIES), needs
    params = []
    for name in CONFORMANT:
        lacks = LACKS.get(name, {})
        missing = [f"{need}: {lacks[need]}" for need in needs if need in lacks]
        marks = [pytest.mark.skip(reason=f"{name} lacks {missing[0]}")] if missing else []
        params.append(pytest.param(name, id=name, marks=marks))
    return pytest.mark.parametrize("protocol", params)


def has(protocol: str, capability: str) -> bool:
    return capability not in LACKS.get(protocol, {})


def cluster(protocol: str, nodes: int = 5, seed: int = 7, **kwargs: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol=protocol, nodes=nodes, seed=seed, **kwargs))


def warm_up(sim: Simulator) -> None:
    """Commit a few requests (electing a leader, if the plugin has one) and let
    every node apply them."""
    ops = closed_loop(sim, clients=2, per_client=3)
    assert sim.run_until(finished(ops, 6), timeout=10.0), "no progress on a healthy cluster"
    assert all(op.ok for op in ops)
    assert sim.run_until(converged(sim), timeout=5.0)


def leader_or_any(sim: Simulator) -> int:
    """The one live node that leads, or node 0 for a plugin without leaders."""
    leaders = sim.leaders()
    assert len(leaders) <= 1, f"several leaders after warm-up: {leaders}"
    return leaders[0] if leaders else 0


def assert_every_acked_request_applied_everywhere(sim: Simulator, ops: list[Any]) -> None:
    done = acked(ops)
    for n in sim.up_nodes():
        missing = done - applied_requests(sim, n)
        assert not missing, f"node {n} never applied acknowledged requests {sorted(missing)[:5]}"


def assert_linearizable(sim: Simulator) -> None:
    result = check(sim.history, timeout=20.0)
    assert result.ok is True, [v.describe() for v in result.violations] or result


# -- the tables themselves -------------------------------------------------------------


def test_every_opt_out_names_an_installed_plugin_and_a_known_capability() -> None:
    # A renamed plugin must not silently escape its opt-out, nor keep a stale one.
    assert set(NOT_CONFORMANT) <= set(INSTALLED)
    assert set(LACKS) <= set(CONFORMANT)
    assert all(set(lacks) <= set(CAPABILITIES) for lacks in LACKS.values())
    assert CONFORMANT and all(get_protocol(name).name == name for name in CONFORMANT)


# -- agreement --------------------------------------------------------------------------


@each_protocol()
def test_every_node_applies_the_same_sequence_with_clients_at_every_node(protocol: str) -> None:
    sim = cluster(protocol, nodes=5, seed=11)
    ops = closed_loop(sim, clients=10, per_client=10, nodes=[0, 1, 2, 3, 4])
    safety = Agreement(sim)
    assert sim.run_until(lambda: safety() or finished(ops, 100)(), timeout=20.0)
    assert all(op.ok for op in ops)
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    assert len(applied_requests(sim, 0)) == 100
    assert_every_acked_request_applied_everywhere(sim, ops)
    assert_linearizable(sim)


@each_protocol()
def test_each_request_takes_effect_once_despite_retries_and_duplicate_messages(
    protocol: str,
) -> None:
    network = NetworkConfig(
        delay=Delay.uniform(0.001, 0.004), loss=0.05, duplicate=0.3, reorder=0.1
    )
    # A client timeout close to one commit's latency: many requests are retried
    # at another node while the first attempt is still in flight.
    client = ClientConfig(timeout=0.012, backoff=0.005)
    sim = cluster(protocol, nodes=5, seed=13, network=network, client=client)
    ops = closed_loop(sim, clients=5, per_client=8, own_key=True)
    assert sim.run_until(finished(ops, 40), timeout=30.0)
    assert all(op.ok for op in ops)
    assert sum(op.retries for op in ops) > 10 and sim.network.duplicated > 10
    # Late retries of answered requests (each client's first and latest) reach
    # every node after the answers did.
    sim.network.loss = sim.network.duplicate = sim.network.reorder = 0.0
    by_client: dict[int, list[Any]] = {}
    for op in ops:
        by_client.setdefault(op.client, []).append(op)
    for node in range(5):
        for mine in by_client.values():
            retry_late(sim, mine[0], node)
            retry_late(sim, mine[-1], node)
    sim.run_for(1.0)
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    for n in range(5):
        data = sim.host(n).sm.data  # type: ignore[attr-defined]
        for cid, mine in by_client.items():
            once_in_order = "".join(op.command.value for op in sorted(mine, key=lambda o: o.seq))
            assert data[f"c{cid}"] == once_in_order, f"node {n}, client {cid}"


# -- partitions and an unreliable network -------------------------------------------------


@each_protocol()
def test_a_minority_partition_cannot_commit_while_the_majority_can(protocol: str) -> None:
    sim = cluster(protocol, nodes=5, seed=23)
    warm_up(sim)
    leader = leader_or_any(sim)
    # The hardest split a plugin survives: its leader cut off with the minority
    # if it can fail over; otherwise the minority is two followers.
    others = [n for n in range(5) if n != leader]
    minority = [leader, others[0]] if has(protocol, "failover") else others[-2:]
    majority = [n for n in range(5) if n not in minority]
    frozen = {n: applied_index(sim, n) for n in range(5)}

    def minority_applies_nothing() -> bool:
        for n in minority:
            assert applied_index(sim, n) == frozen[n], f"minority node {n} applied an entry"
        return False

    sim.partition(minority, majority)
    at_minority = [sim.submit(Put(key="m", value=str(n)), node=n) for n in minority]
    ops = closed_loop(sim, clients=3, per_client=10, nodes=majority)
    done = finished(ops, 30)
    assert sim.run_until(lambda: minority_applies_nothing() or done(), timeout=15.0)
    assert all(op.ok for op in ops)
    sim.run_until(minority_applies_nothing, timeout=0.5)  # the majority's followers catch up
    for n in majority:
        assert acked(ops) <= applied_requests(sim, n), f"majority node {n} is missing requests"
    sim.heal()
    every = ops + at_minority
    assert sim.run_until(lambda: all(op.done for op in every) and converged(sim)(), 15.0)
    assert all(op.ok for op in at_minority)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, every)
    assert_linearizable(sim)


@each_protocol()
def test_a_deaf_minority_neither_stops_progress_nor_applies_until_it_hears_again(
    protocol: str,
) -> None:
    sim = cluster(protocol, nodes=5, seed=19)
    warm_up(sim)
    leader = leader_or_any(sim)
    deaf = [n for n in range(5) if n != leader][-2:]
    hearing = [n for n in range(5) if n not in deaf]
    frozen = {n: applied_index(sim, n) for n in deaf}

    def deaf_apply_nothing() -> bool:
        for n in deaf:
            assert applied_index(sim, n) == frozen[n], f"deaf node {n} applied an entry"
        return False

    for dst in deaf:  # they still send; nothing reaches them
        for src in range(5):
            if src != dst:
                sim.cut(src, dst)
    ops = closed_loop(sim, clients=4, per_client=15, nodes=hearing)
    done = finished(ops, 60)
    assert sim.run_until(lambda: deaf_apply_nothing() or done(), timeout=10.0)
    assert all(op.ok for op in ops)
    sim.heal()
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops)


@each_protocol()
def test_loss_duplication_and_reordering_still_converge(protocol: str) -> None:
    network = NetworkConfig(
        delay=Delay.uniform(0.001, 0.003), loss=0.1, duplicate=0.05, reorder=0.2
    )
    sim = cluster(protocol, nodes=5, seed=29, network=network)
    safety = Agreement(sim)
    ops = closed_loop(sim, clients=6, per_client=15)
    assert sim.run_until(lambda: safety() or finished(ops, 90)(), timeout=30.0)
    assert all(op.ok for op in ops)
    assert sim.network.dropped > 0 and sim.network.duplicated > 0
    sim.network.loss = sim.network.duplicate = sim.network.reorder = 0.0
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops)
    assert_linearizable(sim)


# -- crashes and recovery ------------------------------------------------------------------


@each_protocol()
def test_restarted_minority_nodes_recover_from_storage_and_catch_up(
    protocol: str, tmp_path: Any
) -> None:
    # A write-ahead log on disk: the plugin's records really are encoded,
    # written and decoded again by the restarted nodes.
    storage = StorageConfig(kind="wal", directory=str(tmp_path), fsync="never")
    sim = cluster(protocol, nodes=5, seed=37, storage=storage)
    warm_up(sim)
    leader = leader_or_any(sim)
    victims = [n for n in range(5) if n != leader][-2:]  # a whole minority
    survivors = [n for n in range(5) if n not in victims]
    before = closed_loop(sim, clients=2, per_client=10)
    assert sim.run_until(finished(before, 20), timeout=10.0)
    assert sim.run_until(converged(sim), timeout=5.0)
    applied_before = {n: sim.applied(n) for n in victims}
    for n in victims:
        assert sim.storage(n).load()  # type: ignore[attr-defined]
        sim.crash(n)
    during = closed_loop(sim, clients=3, per_client=10, nodes=survivors)
    assert sim.run_until(finished(during, 30), timeout=10.0)
    assert all(op.ok for op in before + during)
    for n in victims:
        sim.restart(n)
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    for n in victims:
        # The new incarnation applies what its first one did, then what it missed.
        assert sim.applied(n)[: len(applied_before[n])] == applied_before[n]
    assert_every_acked_request_applied_everywhere(sim, before + during)


@each_protocol()
def test_a_whole_cluster_restart_loses_no_acknowledged_request(protocol: str) -> None:
    sim = cluster(protocol, nodes=3, seed=41)
    ops = closed_loop(sim, clients=3, per_client=10)
    assert sim.run_until(finished(ops, 30), timeout=10.0)
    assert all(op.ok for op in ops)
    for n in range(3):
        sim.crash(n)
    for n in range(3):
        sim.restart(n)
    after = closed_loop(sim, clients=1, per_client=3)
    assert sim.run_until(finished(after, 3), timeout=10.0)
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops + after)
    assert_linearizable(sim)


@each_protocol("failover")
def test_the_majority_survives_a_leader_crash_and_loses_no_acknowledged_request(
    protocol: str,
) -> None:
    sim = cluster(protocol, nodes=5, seed=43)
    warm_up(sim)
    ops = closed_loop(sim, clients=4, per_client=10)
    sim.run_for(0.05)  # requests in flight when the leader dies
    old = leader_or_any(sim)
    sim.crash(old)
    assert sim.run_until(finished(ops, 40), timeout=15.0)
    more = closed_loop(sim, clients=4, per_client=10)
    assert sim.run_until(finished(more, 40), timeout=15.0)
    assert all(op.ok for op in ops + more)
    assert old not in sim.leaders()
    sim.restart(old)
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops + more)
    assert_linearizable(sim)


@each_protocol()
def test_hundreds_of_slots_under_random_crashes_apply_one_sequence(protocol: str) -> None:
    sim = cluster(
        protocol, nodes=5, seed=31, network=NetworkConfig(delay=Delay.uniform(0.001, 0.004))
    )
    safety = Agreement(sim)
    ops = closed_loop(sim, clients=8, per_client=30)
    random_crashes(sim, random.Random(31), 30, max_down=2, watch=safety)
    assert sim.run_until(lambda: safety() or finished(ops, 240)(), timeout=30.0)
    assert sim.run_until(converged(sim), timeout=5.0)
    assert_prefix_agreement(sim)
    assert len(acked(ops)) >= 200 and applied_index(sim, 0) >= 200
    assert_every_acked_request_applied_everywhere(sim, ops)


# -- randomized faults, safety checked after every event ------------------------------------


FAULTS = ("crash", "restart", "partition", "isolate", "heal")


@each_protocol()
@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    schedule=st.lists(
        st.tuples(st.sampled_from(FAULTS), st.integers(0, 4), st.floats(0.02, 0.3)), max_size=8
    ),
)
def test_random_crashes_and_partitions_keep_agreement(
    protocol: str, seed: int, loss: float, schedule: list[tuple[str, int, float]]
) -> None:
    replay = f"protocol={protocol!r} seed={seed} loss={loss} schedule={schedule}"
    note(replay)
    network = NetworkConfig(delay=Delay.uniform(0.001, 0.004), loss=loss, reorder=0.1)
    sim = cluster(protocol, nodes=5, seed=seed, network=network)
    safety = Agreement(sim)
    ops = closed_loop(sim, clients=4, per_client=8)
    try:
        for fault, node, wait in schedule:
            sim.run_until(safety, timeout=wait)
            if fault == "crash" and len(sim.up_nodes()) > 3:
                sim.crash(node)
            elif fault == "restart":
                sim.restart(node)
            elif fault == "partition":
                pair = [node, (node + 1) % 5]
                sim.partition(pair, [n for n in range(5) if n not in pair])
            elif fault == "isolate":
                sim.isolate(node)
            else:
                sim.heal()
        sim.heal()
        for node in range(5):
            sim.restart(node)
        done = finished(ops, 32)
        assert sim.run_until(lambda: safety() or done(), timeout=30.0), "stuck after healing"
        sim.network.loss = 0.0
        assert sim.run_until(lambda: safety() or converged(sim)(), timeout=5.0)
        assert_prefix_agreement(sim)
        assert_every_acked_request_applied_everywhere(sim, ops)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nreplay: {replay}") from exc


# -- determinism and linearizability ---------------------------------------------------------


def _faulty_run(protocol: str, seed: int, per_client: int = 30) -> Simulator:
    """``5 * per_client`` operations on three keys while the network loses, duplicates and
    reorders, one node is cut off for a while, and another crashes and restarts.

    The node cut off is the leader (any node, without leaders), or a follower
    for a plugin without failover.  Four clients mix reads, writes, appends and
    compare-and-set; a fifth only reads, every 30 ms, always asking first the
    node that is cut off.
    """
    network = NetworkConfig(delay=Delay.uniform(0.001, 0.004))
    client = ClientConfig(timeout=0.25, backoff=0.02)
    sim = cluster(protocol, nodes=5, seed=seed, network=network, client=client)
    rng = random.Random(f"{seed}:workload")
    warm_up(sim)
    sim.network.loss, sim.network.duplicate, sim.network.reorder = 0.05, 0.05, 0.1
    leader = leader_or_any(sim)
    victim = leader if has(protocol, "failover") else max(n for n in range(5) if n != leader)
    ops: list[Any] = []

    def run(client: Any, remaining: int, reader: bool) -> None:
        if not remaining:
            return
        key, value = rng.choice("abc"), f"{client.client_id}.{remaining}"
        command = rng.choice(
            [
                Get(key=key),
                Put(key=key, value=value),
                Append(key=key, value=value + ","),
                CompareAndSet(key=key, expected=rng.choice([None, value]), new=value),
            ]
        )
        if reader:  # paced, so its reads span the time the victim is cut off
            then = lambda _op: sim.after(0.03, run, client, remaining - 1, reader)  # noqa: E731
            ops.append(client.submit(Get(key=key), node=victim, on_done=then))
        else:
            ops.append(
                client.submit(command, on_done=lambda _op: run(client, remaining - 1, False))
            )

    for i, c in enumerate([sim.client() for _ in range(5)]):
        run(c, per_client, reader=i == 0)
    sim.run_for(0.1)
    sim.isolate(victim)
    sim.run_for(0.8)
    sim.heal()
    sim.crash((victim + 1) % 5)
    sim.run_for(0.4)
    sim.restart((victim + 1) % 5)
    assert sim.run_until(
        lambda: len(ops) == 5 * per_client and all(op.done for op in ops), timeout=60.0
    )
    return sim


@each_protocol()
def test_the_same_seed_gives_the_identical_history(protocol: str) -> None:
    first, again, other = (_faulty_run(protocol, s, per_client=8) for s in (5, 5, 6))
    assert first.history.fingerprint() == again.history.fingerprint()
    assert [first.applied(n) for n in range(5)] == [again.applied(n) for n in range(5)]
    assert first.message_counts() == again.message_counts()
    assert first.history.fingerprint() != other.history.fingerprint()


@each_protocol()
def test_the_recorded_history_is_linearizable_under_faults(protocol: str) -> None:
    sim = _faulty_run(protocol, seed=52)
    assert sum(op.retries for op in sim.history) > 0
    assert sum(op.ok for op in sim.history) >= 100
    assert_linearizable(sim)
