"""The conformance rules: what every replicated-log plugin must do, as plain functions.

Theory of operation
-------------------
Each rule is one property of a replicated log, checked on the deterministic
simulator through the plugin-neutral surface only (clients, the recorded
history, what each host applied, its state machine), never a plugin's
internals.  A rule is a callable ``rule(protocol, **options) -> None``: it
passes, raises ``AssertionError`` (its message names the rule, the plugin and
the seed, and how to replay it), or raises ``unittest.SkipTest`` when the
plugin declares it lacks a capability the rule needs (``ProtocolSpec.lacks``,
``consensus.registry.CAPABILITIES``).  pytest and unittest both report that
as a skip with the plugin's reason.

``RULES`` lists them all, in the order below; ``consensus.testing.plugin``
turns them into pytest items, and a unittest suite can call them directly::

    from consensus.testing import RULES
    for rule in RULES:
        rule("mypaxos")

Every scenario has a fixed seed (a keyword argument with its default), so a
failure replays exactly: the message says which call replays it.

Capabilities the rules consult: ``failover`` (the cluster survives the crash
or isolation of its leader; without it, scenarios pick a follower where they
would pick the leader), ``quorum`` (a majority suffices to commit), ``log``
(every node applies one sequence; every rule that compares what nodes
applied needs it) and ``linearizability`` (histories stay linearizable under
faults).  A plugin without leaders has failover trivially: its "leader" in a
scenario is node 0.  A consensus plugin lacks none of the last two; an unsafe
baseline (``ProtocolSpec.safe`` False) lacks ``linearizability`` and is
checked only for what it does promise (``determinism`` always; the log rules
when it keeps a log).
"""

from __future__ import annotations

import inspect
import random
import tempfile
import unittest
from typing import Any, Callable

from consensus.commands import Append, CompareAndSet, Get, Put
from consensus.config import ClientConfig, ClusterConfig, Delay, NetworkConfig, StorageConfig
from consensus.registry import CAPABILITIES, get_protocol
from consensus.sim.simulator import Simulator
from consensus.testing.invariants import (
    Agreement,
    applied_index,
    applied_requests,
    assert_every_acked_request_applied_everywhere,
    assert_linearizable,
    assert_prefix_agreement,
    converged,
)
from consensus.testing.workload import acked, closed_loop, finished, random_crashes, retry_late

__all__ = [
    "FAULTS",
    "RULES",
    "Rule",
    "agreement",
    "deaf_minority",
    "determinism",
    "exactly_once",
    "has",
    "lacks",
    "leader_failover",
    "linearizable_under_faults",
    "lossy_network",
    "minority_partition",
    "random_crashes_one_sequence",
    "random_faults",
    "random_faults_once",
    "recovery_from_storage",
    "whole_cluster_restart",
]


def lacks(protocol: str) -> dict[str, str]:
    """What the plugin declares it lacks: capability -> why (``ProtocolSpec.lacks``)."""
    return dict(get_protocol(protocol).lacks)


def has(protocol: str, capability: str) -> bool:
    assert capability in CAPABILITIES, capability
    return capability not in get_protocol(protocol).lacks


class Rule:
    """One conformance rule: ``rule(protocol, **options)``; see the module docstring.

    ``check`` is the scenario function itself (no capability check, no replay
    line); ``needs`` the capabilities it relies on.
    """

    def __init__(self, check: Callable[..., None], needs: tuple[str, ...] = ()) -> None:
        self.name: str = check.__name__
        self.check = check
        self.needs = needs
        self.__doc__ = check.__doc__
        self.__wrapped__ = check

    def __repr__(self) -> str:
        return f"<rule {self.name}>"

    @property
    def summary(self) -> str:
        """The first line of the rule's docstring."""
        return (self.check.__doc__ or self.name).strip().splitlines()[0]

    def missing(self, protocol: str) -> list[str]:
        """``"capability: why"`` for each capability the rule needs and the plugin lacks."""
        declared = lacks(protocol)
        return [f"{need}: {declared[need]}" for need in self.needs if need in declared]

    def __call__(self, protocol: str, **options: Any) -> None:
        missing = self.missing(protocol)
        if missing:
            raise unittest.SkipTest(f"{protocol} lacks {missing[0]}")
        try:
            self.check(protocol, **options)
        except AssertionError as exc:
            bound = inspect.signature(self.check).bind(protocol, **options)
            bound.apply_defaults()
            args = ", ".join(f"{k}={v!r}" for k, v in bound.arguments.items() if k != "protocol")
            replay = f"consensus.testing.rules.{self.name}({protocol!r}, {args})"
            raise AssertionError(
                f"rule {self.name!r} failed for {protocol!r} ({self.summary})\n"
                f"{exc}\nreplay: {replay}"
            ) from exc


RULES: list[Rule] = []


def rule(*needs: str) -> Callable[[Callable[..., None]], Rule]:
    """Register a scenario function as a ``Rule`` that needs capabilities ``needs``."""
    assert set(needs) <= set(CAPABILITIES), needs

    def wrap(fn: Callable[..., None]) -> Rule:
        made = Rule(fn, needs)
        RULES.append(made)
        return made

    return wrap


# -- scenario building blocks ------------------------------------------------------------


def cluster(protocol: str, nodes: int = 5, seed: int = 7, **kwargs: Any) -> Simulator:
    return Simulator(ClusterConfig(protocol=protocol, nodes=nodes, seed=seed, **kwargs))


def warm_up(sim: Simulator) -> None:
    """Commit a few requests (electing a leader, if the plugin has one) and let
    every node apply them (with a log to apply)."""
    ops = closed_loop(sim, clients=2, per_client=3)
    assert sim.run_until(finished(ops, 6), timeout=10.0), "no progress on a healthy cluster"
    assert_all_ok(ops)
    if "log" not in sim.spec.lacks:
        assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)


def leader_or_any(sim: Simulator) -> int:
    """The one live node that leads, or node 0 for a plugin without leaders."""
    leaders = sim.leaders()
    assert len(leaders) <= 1, f"several leaders after warm-up: {leaders}"
    return leaders[0] if leaders else 0


def assert_all_ok(ops: list[Any]) -> None:
    failed = [op for op in ops if not op.ok]
    assert not failed, (
        f"{len(failed)} of {len(ops)} operations did not succeed, first:"
        f" {failed[0].command!r} at node {failed[0].node}: {failed[0].status}"
    )


def unfinished(ops: list[Any], total: int, seconds: float) -> str:
    pending = total - sum(op.done for op in ops)
    return f"{pending} of {total} operations unfinished after {seconds} virtual seconds"


def not_converged(sim: Simulator) -> str:
    indexes = {n: applied_index(sim, n) for n in sim.up_nodes()}
    return f"live nodes did not converge: applied indexes {indexes}"


# -- agreement ----------------------------------------------------------------------------


@rule("log")
def agreement(protocol: str, seed: int = 11) -> None:
    """Every node applies the same sequence, with clients at every node."""
    sim = cluster(protocol, nodes=5, seed=seed)
    ops = closed_loop(sim, clients=10, per_client=10, nodes=[0, 1, 2, 3, 4])
    safety = Agreement(sim)
    done = finished(ops, 100)
    assert sim.run_until(lambda: safety() or done(), 20.0), unfinished(ops, 100, 20.0)
    assert_all_ok(ops)
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    assert len(applied_requests(sim, 0)) == 100, "node 0 did not apply all 100 requests"
    assert_every_acked_request_applied_everywhere(sim, ops)
    assert_linearizable(sim)


@rule("log")
def exactly_once(protocol: str, seed: int = 13) -> None:
    """Each request takes effect once despite retries and duplicate messages."""
    # A disorderly network: messages also overtake each other without the reorder
    # fault (no FIFO links), so commit latencies spread and clients retry.
    network = NetworkConfig(
        delay=Delay.uniform(0.001, 0.004), loss=0.05, duplicate=0.3, reorder=0.1, fifo=False
    )
    # A client timeout close to one commit's latency: many requests are retried
    # at another node while the first attempt is still in flight.
    client = ClientConfig(timeout=0.012, backoff=0.005)
    sim = cluster(protocol, nodes=5, seed=seed, network=network, client=client)
    ops = closed_loop(sim, clients=5, per_client=8, own_key=True)
    assert sim.run_until(finished(ops, 40), timeout=30.0), unfinished(ops, 40, 30.0)
    assert_all_ok(ops)
    assert sum(op.retries for op in ops) > 10 and sim.network.duplicated > 10, (
        "the scenario did not happen: too few client retries or duplicated messages"
    )
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
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    for n in range(5):
        data = sim.host(n).sm.data  # type: ignore[attr-defined]
        for cid, mine in by_client.items():
            once_in_order = "".join(op.command.value for op in sorted(mine, key=lambda o: o.seq))
            assert data[f"c{cid}"] == once_in_order, f"node {n}, client {cid}"


# -- partitions and an unreliable network -------------------------------------------------


@rule("quorum", "log")
def minority_partition(protocol: str, seed: int = 23) -> None:
    """A minority partition cannot commit while the majority can."""
    sim = cluster(protocol, nodes=5, seed=seed)
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
    assert sim.run_until(lambda: minority_applies_nothing() or done(), 15.0), unfinished(
        ops, 30, 15
    )
    assert_all_ok(ops)
    sim.run_until(minority_applies_nothing, timeout=0.5)  # the majority's followers catch up
    for n in majority:
        assert acked(ops) <= applied_requests(sim, n), f"majority node {n} is missing requests"
    sim.heal()
    every = ops + at_minority
    assert sim.run_until(lambda: all(op.done for op in every) and converged(sim)(), 15.0), (
        f"after healing: {unfinished(every, len(every), 15)}; {not_converged(sim)}"
    )
    assert_all_ok(at_minority)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, every)
    assert_linearizable(sim)


@rule("quorum", "log")
def deaf_minority(protocol: str, seed: int = 19) -> None:
    """A deaf minority neither stops progress nor applies until it hears again."""
    sim = cluster(protocol, nodes=5, seed=seed)
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
    assert sim.run_until(lambda: deaf_apply_nothing() or done(), 10.0), unfinished(ops, 60, 10)
    assert_all_ok(ops)
    sim.heal()
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops)


@rule("log")
def lossy_network(protocol: str, seed: int = 29) -> None:
    """Loss, duplication and reordering still converge."""
    network = NetworkConfig(
        delay=Delay.uniform(0.001, 0.003), loss=0.1, duplicate=0.05, reorder=0.2
    )
    sim = cluster(protocol, nodes=5, seed=seed, network=network)
    safety = Agreement(sim)
    ops = closed_loop(sim, clients=6, per_client=15)
    done = finished(ops, 90)
    assert sim.run_until(lambda: safety() or done(), 30.0), unfinished(ops, 90, 30.0)
    assert_all_ok(ops)
    assert sim.network.dropped > 0 and sim.network.duplicated > 0, "no loss or duplication"
    sim.network.loss = sim.network.duplicate = sim.network.reorder = 0.0
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops)
    assert_linearizable(sim)


# -- crashes and recovery ------------------------------------------------------------------


@rule("quorum", "log")
def recovery_from_storage(protocol: str, seed: int = 37, directory: str | None = None) -> None:
    """Restarted minority nodes recover from their write-ahead logs and catch up."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="consensus-kit-") as tmp:
            recovery_from_storage.check(protocol, seed, tmp)
        return
    # A write-ahead log on disk: the plugin's records really are encoded,
    # written and decoded again by the restarted nodes.
    storage = StorageConfig(kind="wal", directory=directory, fsync="never")
    sim = cluster(protocol, nodes=5, seed=seed, storage=storage)
    warm_up(sim)
    leader = leader_or_any(sim)
    victims = [n for n in range(5) if n != leader][-2:]  # a whole minority
    survivors = [n for n in range(5) if n not in victims]
    before = closed_loop(sim, clients=2, per_client=10)
    assert sim.run_until(finished(before, 20), timeout=10.0), unfinished(before, 20, 10.0)
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    applied_before = {n: sim.applied(n) for n in victims}
    for n in victims:
        assert sim.storage(n).load(), f"node {n} stored nothing"  # type: ignore[attr-defined]
        sim.crash(n)
    during = closed_loop(sim, clients=3, per_client=10, nodes=survivors)
    assert sim.run_until(finished(during, 30), timeout=10.0), unfinished(during, 30, 10.0)
    assert_all_ok(before + during)
    for n in victims:
        sim.restart(n)
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    for n in victims:
        # The new incarnation applies what its first one did, then what it missed.
        assert sim.applied(n)[: len(applied_before[n])] == applied_before[n]
    assert_every_acked_request_applied_everywhere(sim, before + during)


@rule("log")
def whole_cluster_restart(protocol: str, seed: int = 41) -> None:
    """A whole-cluster restart loses no acknowledged request."""
    sim = cluster(protocol, nodes=3, seed=seed)
    ops = closed_loop(sim, clients=3, per_client=10)
    assert sim.run_until(finished(ops, 30), timeout=10.0), unfinished(ops, 30, 10.0)
    assert_all_ok(ops)
    for n in range(3):
        sim.crash(n)
    for n in range(3):
        sim.restart(n)
    after = closed_loop(sim, clients=1, per_client=3)
    assert sim.run_until(finished(after, 3), timeout=10.0), unfinished(after, 3, 10.0)
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops + after)
    assert_linearizable(sim)


@rule("failover", "quorum", "log")
def leader_failover(protocol: str, seed: int = 43) -> None:
    """The majority survives a leader crash and loses no acknowledged request."""
    sim = cluster(protocol, nodes=5, seed=seed)
    warm_up(sim)
    ops = closed_loop(sim, clients=4, per_client=10)
    sim.run_for(0.05)  # requests in flight when the leader dies
    old = leader_or_any(sim)
    sim.crash(old)
    assert sim.run_until(finished(ops, 40), timeout=15.0), unfinished(ops, 40, 15.0)
    more = closed_loop(sim, clients=4, per_client=10)
    assert sim.run_until(finished(more, 40), timeout=15.0), unfinished(more, 40, 15.0)
    assert_all_ok(ops + more)
    assert old not in sim.leaders(), f"crashed leader {old} still counted as a leader"
    sim.restart(old)
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    assert_every_acked_request_applied_everywhere(sim, ops + more)
    assert_linearizable(sim)


@rule("quorum", "log")
def random_crashes_one_sequence(protocol: str, seed: int = 31) -> None:
    """Hundreds of slots under random crashes apply one sequence."""
    sim = cluster(
        protocol, nodes=5, seed=seed, network=NetworkConfig(delay=Delay.uniform(0.001, 0.004))
    )
    safety = Agreement(sim)
    ops = closed_loop(sim, clients=8, per_client=30)
    random_crashes(sim, random.Random(seed), 30, max_down=2, watch=safety)
    done = finished(ops, 240)
    assert sim.run_until(lambda: safety() or done(), 30.0), unfinished(ops, 240, 30.0)
    assert sim.run_until(converged(sim), timeout=5.0), not_converged(sim)
    assert_prefix_agreement(sim)
    assert len(acked(ops)) >= 200 and applied_index(sim, 0) >= 200, (
        f"too little progress: {len(acked(ops))} of 240 acknowledged"
    )
    assert_every_acked_request_applied_everywhere(sim, ops)


# -- randomized faults, safety checked after every event ------------------------------------

#: The faults of ``random_faults``' schedules.
FAULTS = ("crash", "restart", "partition", "isolate", "heal")
#: The losses it draws from.
LOSSES = (0.0, 0.05, 0.2)


def random_faults_once(
    protocol: str, seed: int, loss: float, schedule: list[tuple[str, int, float]]
) -> None:
    """One randomized scenario: ``schedule`` lists ``(fault, node, wait)``.

    Clients run while the faults of the schedule are applied one after the
    other, each after ``wait`` virtual seconds; then the network heals, every
    node restarts, and every operation must finish with the nodes agreeing.
    Agreement is checked after every event.  A hypothesis strategy can drive
    it (tests/test_conformance.py in this repository does, and shrinks).
    """
    replay = f"protocol={protocol!r} seed={seed} loss={loss} schedule={schedule}"
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
        assert sim.run_until(lambda: safety() or converged(sim)(), timeout=5.0), not_converged(sim)
        assert_prefix_agreement(sim)
        assert_every_acked_request_applied_everywhere(sim, ops)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nreplay: {replay}") from exc


@rule("log")
def random_faults(protocol: str, seed: int = 0, examples: int = 12) -> None:
    """Random crashes, partitions and loss keep agreement (``examples`` seeded schedules)."""
    for example in range(examples):
        rng = random.Random(f"{seed}:random-faults:{example}")
        schedule = [
            (rng.choice(FAULTS), rng.randint(0, 4), rng.uniform(0.02, 0.3))
            for _ in range(rng.randint(0, 8))
        ]
        random_faults_once(protocol, rng.randint(0, 10_000), rng.choice(LOSSES), schedule)


# -- determinism and linearizability ---------------------------------------------------------


def faulty_run(protocol: str, seed: int, per_client: int = 30) -> Simulator:
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


@rule()
def determinism(protocol: str, seed: int = 5) -> None:
    """The same seed gives the identical history (and another seed does not)."""
    first, again, other = (faulty_run(protocol, s, per_client=8) for s in (seed, seed, seed + 1))
    assert first.history.fingerprint() == again.history.fingerprint(), "one seed, two histories"
    assert [first.applied(n) for n in range(5)] == [again.applied(n) for n in range(5)], (
        "one seed, two applied sequences"
    )
    assert first.message_counts() == again.message_counts(), "one seed, two message counts"
    assert first.history.fingerprint() != other.history.fingerprint(), "the seed changes nothing"


@rule("linearizability")
def linearizable_under_faults(protocol: str, seed: int = 52) -> None:
    """The recorded history is linearizable under faults."""
    sim = faulty_run(protocol, seed=seed)
    assert sum(op.retries for op in sim.history) > 0, "the faults never made a client retry"
    ok = sum(op.ok for op in sim.history)
    assert ok >= 100, f"too little progress under faults: {ok} of 150 operations ok"
    assert_linearizable(sim)
