"""Chaos runs: concurrent clients, a nemesis, and a linearizability check.

Theory of operation
-------------------
One chaos run is a pure function of (protocol, options, seed, ops): the seed
picks the cluster size, link delays and the nemesis schedule; a few closed-
loop clients issue ``ops`` random operations on a handful of keys (few keys,
so operations conflict); the nemesis injects faults while they run; then the
nemesis stops (links heal, nodes restart), clients finish, and the recorded
history is checked for linearizability.  Then the cluster runs ``SETTLE``
more virtual seconds with no clients, and the nodes' final states are
checked for acknowledged writes that no node holds and no later write
replaced (``consensus.checker.lost``): ``ChaosResult.lost``.  A run
``passed`` when its history is linearizable and it lost nothing.

``clock_drift`` (0: none) gives every node a clock running at a rate drawn
from ``1 - clock_drift .. 1 + clock_drift`` (``ClusterConfig.clock_drift``,
its own seeded draw, so the rest of a seed's run is unchanged): leases meet
drifting clocks, within the bound they assume or beyond it.

Written values are unique (``c<client>.<seq>``), so a read names the write it
saw.  An operation that never returned is indeterminate (``info``) and the
checker lets it take effect or not.  The operation mix (``MIXES``) is every
key-value command (``kv``), or only reads and writes (``registers``: ``Get``
and ``Put``, what a quorum register such as ABD promises to keep
linearizable, while a read-modify-write needs consensus).

``chaos_runs`` runs seeds ``seed, seed+1, ...`` in this process (``bench``
spreads them over worker processes: ``bench.chaos.chaos_runs(jobs=N)``);
any run is replayed exactly with ``python -m bench chaos --runs 1 --seed
<its seed>`` (``replay_command``).  ``check_chaos`` is the soak as a
conformance check: it raises ``AssertionError`` naming every failing seed,
its minimal offending sub-history, fault schedule and replay command.  Only
a checker timeout (``ok`` None, a wall-clock limit) can differ between two
runs of one seed; ``check_chaos`` counts it as a failure, and skips a plugin
that declares it lacks linearizability (an unsafe baseline, which a soak
would only confirm).
"""

from __future__ import annotations

import random
import unittest
from typing import Any, Callable, Iterator

import attrs

from consensus.checker.history import History, Operation
from consensus.checker.linearizability import check, describe_operation
from consensus.checker.lost import lost_writes
from consensus.commands import Append, CompareAndSet, Delete, Get, Put
from consensus.config import ClientConfig, ClusterConfig, Delay, NetworkConfig
from consensus.registry import get_protocol
from consensus.sim.simulator import SimClient, Simulator
from consensus.testing.nemesis import FAULTS, Nemesis

__all__ = [
    "MIXES",
    "chaos_command",
    "ChaosResult",
    "chaos_config",
    "chaos_run",
    "chaos_runs",
    "check_chaos",
    "replay_command",
]

KEYS = ("a", "b", "c")
CLIENTS = 5
#: The operation mixes: every key-value command, or reads and writes only.
MIXES = ("kv", "registers")
#: Virtual seconds the cluster runs after the clients, before its final states are read.
SETTLE = 1.0


@attrs.frozen
class ChaosResult:
    protocol: str
    seed: int
    history: History
    ok: bool | None  # None: the checker ran out of time
    operations: int
    violations: list[Any]
    faults: list[tuple[float, str, str]]
    #: Acknowledged writes no node held at the end and no later write replaced.
    lost: list[Operation] = attrs.Factory(list)

    @property
    def passed(self) -> bool:
        """Linearizable, and no acknowledged write lost."""
        return self.ok is True and not self.lost


def chaos_config(
    protocol: str,
    seed: int,
    options: dict[str, Any] | None = None,
    snapshot_every: int = 0,
    clock_drift: float = 0.0,
) -> ClusterConfig:
    """The cluster of run ``seed``: size and link delays drawn from the seed, and
    with ``clock_drift`` each node's clock drift, uniform in ``[-clock_drift, clock_drift]``."""
    rng = random.Random(f"{seed}:chaos-cluster")
    nodes = rng.choice((3, 3, 5))
    low = rng.uniform(0.0002, 0.002)
    drift_rng = random.Random(f"{seed}:chaos-drift")
    drift = tuple(drift_rng.uniform(-clock_drift, clock_drift) for _ in range(nodes))
    return ClusterConfig(
        protocol=protocol,
        nodes=nodes,
        seed=seed,
        options=dict(options or {}),
        network=NetworkConfig(delay=Delay.uniform(low, low * rng.uniform(1.5, 4))),
        client=ClientConfig(timeout=0.25, backoff=0.02, max_attempts=12),
        snapshot_every=snapshot_every,
        clock_drift=drift if clock_drift else (),
    )


def chaos_command(rng: random.Random, value: str, clients: int = CLIENTS, mix: str = "kv") -> Any:
    """One random operation on the few shared ``KEYS`` (so operations conflict);
    ``value`` is what a write writes (unique per operation, so a read names
    the write it saw).  The real-process nemesis (``bench.realchaos``) draws
    its operations here too.  ``mix``: one of ``MIXES``."""
    key = rng.choice(KEYS)
    draw = rng.random()
    if mix == "registers":
        return Get(key=key) if draw < 0.5 else Put(key=key, value=value)
    if draw < 0.4:
        return Get(key=key)
    if draw < 0.6:
        return Put(key=key, value=value)
    if draw < 0.75:
        return Append(key=key, value=value)
    if draw < 0.95:
        expected = rng.choice((None, f"c{rng.randint(1, clients)}.{rng.randint(1, 10)}"))
        return CompareAndSet(key=key, expected=expected, new=value)
    return Delete(key=key)


def _command(rng: random.Random, client: SimClient, mix: str) -> Any:
    return chaos_command(rng, f"c{client.client_id}.{client.seq + 1}", mix=mix)


def chaos_run(
    protocol: str,
    seed: int,
    *,
    ops: int = 200,
    options: dict[str, Any] | None = None,
    snapshot_every: int = 0,
    faults: tuple[str, ...] = FAULTS,
    duration: float = 5.0,
    check_timeout: float | None = 30.0,
    mix: str = "kv",
    clock_drift: float = 0.0,
) -> ChaosResult:
    """One seeded chaos run, checked.

    Clients think between operations so that ``ops`` operations spread over
    about ``duration`` virtual seconds, the time the nemesis has to work.
    ``mix``: the operations, one of ``MIXES``.  ``clock_drift``: see ``chaos_config``.
    """
    if mix not in MIXES:
        raise ValueError(f"mix: {mix!r} is not one of {', '.join(MIXES)}")
    config = chaos_config(protocol, seed, options, snapshot_every, clock_drift)
    sim = Simulator(config, record_applied=False)
    rng = random.Random(f"{seed}:chaos-workload")
    nemesis = Nemesis(sim, random.Random(f"{seed}:nemesis"), faults=faults)
    issued = finished = 0
    think = 2 * duration * CLIENTS / max(ops, 1)  # uniform(0, think): mean duration*CLIENTS/ops

    def issue(client: SimClient) -> None:
        nonlocal issued
        if issued >= ops:
            return
        issued += 1
        sim.after(
            rng.uniform(0, think),
            lambda: client.submit(_command(rng, client, mix), on_done=lambda op: done(client)),
        )

    def done(client: SimClient) -> None:
        nonlocal finished
        finished += 1
        issue(client)

    for _ in range(CLIENTS):
        issue(sim.client())
    nemesis.start(at=0.1)
    # Faults while the clients work (bounded), then a healthy period to finish.
    sim.run_until(lambda: issued >= ops, timeout=120.0)
    nemesis.stop()
    # Every client operation ends (ok, or unknown after its retries); counting
    # completions keeps this check O(1) per event.
    sim.run_until(lambda: finished >= ops, timeout=30.0)
    sim.finish_pending()
    kv = [op for op in sim.history if op.is_kv]
    result = check(kv, timeout=check_timeout)
    # The history is complete; let followers catch up before reading final states.
    sim.run_for(SETTLE)
    states = {n: getattr(sim.host(n).sm, "data", {}) for n in sim.up_nodes()}
    return ChaosResult(
        protocol=protocol,
        seed=seed,
        history=sim.history,
        ok=result.ok,
        operations=result.operations,
        violations=list(result.violations),
        faults=list(nemesis.log),
        lost=lost_writes(kv, states),
    )


def chaos_runs(
    protocol: str,
    runs: int,
    seed: int = 0,
    *,
    progress: Callable[[ChaosResult], None] | None = None,
    **kwargs: Any,
) -> Iterator[ChaosResult]:
    """Runs for seeds ``seed .. seed + runs - 1``, in order, in this process.

    ``progress(result)`` fires as each run finishes; ``kwargs`` go to
    ``chaos_run``.
    """
    for s in range(seed, seed + runs):
        result = chaos_run(protocol, s, **kwargs)
        if progress is not None:
            progress(result)
        yield result


def describe_failure(result: ChaosResult, ops: int, **replay: Any) -> str:
    """A failed run as text: seed, violations, fault schedule, replay command."""
    lines = [f"seed {result.seed} ({result.protocol}):"]
    if result.ok is None:
        lines.append("check inconclusive (the checker timed out)")
    lines.extend(v.describe() for v in result.violations)
    if result.lost:
        lines.append(
            f"{len(result.lost)} acknowledged writes lost (no node holds them at the end,"
            " and no later write replaced them):"
        )
        lines.extend("  " + describe_operation(op) for op in result.lost[:5])
        if len(result.lost) > 5:
            lines.append(f"  ... and {len(result.lost) - 5} more")
    faults = "; ".join(f"{t:.3f} {name} {detail}".strip() for t, name, detail in result.faults)
    lines.append(f"faults: {faults}")
    lines.append("replay: " + replay_command(result.protocol, result.seed, ops, **replay))
    return "\n".join(lines)


def check_chaos(
    protocol: str,
    runs: int = 10,
    seed: int = 0,
    *,
    ops: int = 150,
    options: dict[str, Any] | None = None,
    snapshot_every: int = 0,
) -> int:
    """``runs`` seeded chaos runs; every history must be linearizable and no
    acknowledged write lost.

    Returns the number of operations checked; raises ``AssertionError``
    describing every failing seed (see ``describe_failure``), and
    ``unittest.SkipTest`` for a plugin that lacks linearizability.
    """
    unsafe = get_protocol(protocol).lacks.get("linearizability")
    if unsafe:
        raise unittest.SkipTest(f"{protocol} lacks linearizability: {unsafe}")
    failures, checked = [], 0
    for result in chaos_runs(
        protocol, runs, seed, ops=ops, options=options, snapshot_every=snapshot_every
    ):
        checked += result.operations
        if not result.passed:
            failures.append(
                describe_failure(result, ops, options=options, snapshot_every=snapshot_every)
            )
    assert not failures, (
        f"{len(failures)} of {runs} chaos runs of {protocol!r} failed:\n" + "\n\n".join(failures)
    )
    return checked


def replay_command(
    protocol: str,
    seed: int,
    ops: int,
    options: dict[str, Any] | None = None,
    snapshot_every: int = 0,
    mix: str = "kv",
    clock_drift: float = 0.0,
) -> str:
    parts = [f"python -m bench chaos --protocol {protocol} --runs 1 --seed {seed} --ops {ops}"]
    for key, value in sorted((options or {}).items()):
        parts.append(f"--option {key}={str(value).lower() if isinstance(value, bool) else value}")
    if snapshot_every:
        parts.append(f"--snapshot-every {snapshot_every}")
    if mix != "kv":
        parts.append(f"--mix {mix}")
    if clock_drift:
        parts.append(f"--clock-drift {clock_drift}")
    return " ".join(parts)
