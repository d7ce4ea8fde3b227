"""Chaos on a real cluster: node processes killed and frozen while clients write.

Theory of operation
-------------------
``real_chaos_run(protocol, seed)`` starts a local cluster (one OS process
per node, loopback TCP, write-ahead logs with group commit) and runs, for
``duration`` seconds:

* ``clients`` client tasks, each issuing operations one after another:
  three in four on three shared keys, drawn as the simulated chaos runs draw
  them (``consensus.testing.chaos.chaos_command``: get, put, append,
  compare-and-set, delete; written values are unique, ``c<client>.<n>``, so
  a read names the write it saw), the rest *ledger writes*: a put of a key
  no one else writes (``w<client>.<n>``), whose acknowledgement promises
  durability;
* a nemesis that, every 0.3-1.2 s, SIGKILLs a node (the leader or any) and
  restarts it a little later, or SIGSTOPs one (the leader or any) and
  SIGCONTs it later; at most a minority is down or frozen at any moment, so
  the cluster can always make progress.

Then the nemesis stops (every node resumed or restarted), the clients finish
what they started, and the run checks two things:

1. the recorded history (``time.monotonic`` stamps from the client side) is
   linearizable (``consensus.checker``); an operation that never got an
   answer is indeterminate;
2. every acknowledged ledger write is present, with its value, on *every*
   node once each has applied the leader's commit index (read with
   ``LocalRead``, node by node).

The seed fixes the workload and the nemesis schedule; the timing of real
processes does not replay, so a failure is reported with its seed, the fault
log and the offending sub-history rather than a replay command.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from consensus.checker.history import History
from consensus.checker.linearizability import check
from consensus.commands import Put
from consensus.runtime.client import Client, connect
from consensus.runtime.cluster import OperationFailed
from consensus.runtime.launcher import LocalCluster, write_local_cluster_file
from consensus.testing.chaos import chaos_command

__all__ = ["FAULTS", "RealChaosResult", "real_chaos_run"]

#: What the nemesis may do.
FAULTS = ("kill", "kill_leader", "pause", "pause_leader")


@attrs.frozen
class RealChaosResult:
    protocol: str
    seed: int
    history: History
    ok: bool | None  # None: the checker ran out of time
    operations: int
    violations: list[Any]
    acknowledged_writes: int
    missing: dict[int, list[str]]  # node -> acknowledged ledger keys it lacks
    faults: list[tuple[float, str]]
    wall_s: float

    @property
    def passed(self) -> bool:
        return bool(self.ok) and not any(self.missing.values())


def _command(rng: random.Random, client: int, n: int) -> Any:
    value = f"c{client}.{n}"
    if rng.random() < 0.25:
        return Put(key=f"w{client}.{n}", value=value)  # a ledger write
    return chaos_command(rng, value)


class _Nemesis:
    def __init__(self, cluster: LocalCluster, rng: random.Random, faults: tuple[str, ...]):
        self.cluster = cluster
        self.rng = rng
        self.faults = faults
        self.down: set[int] = set()  # killed or frozen
        self.log: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self.minority = (len(cluster.node_ids) - 1) // 2

    def note(self, text: str) -> None:
        self.log.append((round(time.monotonic() - self.t0, 3), text))

    async def leader(self, client: Client) -> int | None:
        """The leader, as a live node reports it; for a protocol without
        leaders (Paxos), the node the clients are talking to."""
        for node in self.rng.sample(list(self.cluster.node_ids), len(self.cluster.node_ids)):
            if node in self.down:
                continue
            try:
                with trio.move_on_after(0.5):
                    leader = (await client.status(node)).get("leader")
                    if leader is not None and leader not in self.down:
                        return int(leader)
            except (ConnectionError, OSError):
                continue
        if client.leader is not None and client.leader not in self.down:
            return client.leader
        return None

    async def run(
        self, client: Client, until: float, script: tuple[tuple[float, str, float], ...] = ()
    ) -> None:
        start = time.monotonic()
        steps = list(script)
        async with trio.open_nursery() as nursery:
            while time.monotonic() < until:
                if script:
                    if not steps:
                        return
                    at, fault, outage = steps.pop(0)
                    await trio.sleep_until(
                        trio.current_time() + max(0.0, start + at - time.monotonic())
                    )
                else:
                    await trio.sleep(self.rng.uniform(0.3, 1.2))
                    fault = self.rng.choice(self.faults)
                    outage = self.rng.uniform(0.3, 1.5)
                if script:
                    target = await self._scripted_target(client, fault, until)
                    if target is None:
                        continue  # the run ended first
                else:
                    if len(self.down) >= self.minority or time.monotonic() >= until:
                        continue
                    target = await self._target(client, fault)
                    if target is None or target in self.down:
                        self.note(f"{fault}: no target")
                        continue
                self.down.add(target)
                nursery.start_soon(self._fault, fault, target, outage)

    async def _scripted_target(self, client: Client, fault: str, until: float) -> int | None:
        # A scripted fault waits, within the run, for the one before it to heal and for
        # a target: on a loaded machine a restart can outlast its slot.  None: time is up.
        while time.monotonic() < until:
            if len(self.down) < self.minority:
                target = await self._target(client, fault)
                if target is not None and target not in self.down:
                    return target
            await trio.sleep(0.05)
        return None

    async def _target(self, client: Client, fault: str) -> int | None:
        if fault.endswith("_leader"):
            return await self.leader(client)
        up = [n for n in self.cluster.node_ids if n not in self.down]
        return self.rng.choice(up) if up else None

    async def _fault(self, fault: str, node: int, outage: float) -> None:
        if fault.startswith("kill"):
            await trio.to_thread.run_sync(self.cluster.kill, node)
            self.note(f"{fault} node {node} (SIGKILL)")
            await trio.sleep(outage)
            await trio.to_thread.run_sync(self.cluster.start, node)
            self.note(f"restarted node {node}")
        else:
            self.cluster.pause(node)
            self.note(f"{fault} node {node} (SIGSTOP)")
            await trio.sleep(outage)
            self.cluster.resume(node)
            self.note(f"resumed node {node} (SIGCONT)")
        self.down.discard(node)

    def heal(self) -> None:
        for node in self.cluster.node_ids:
            self.cluster.resume(node)
            if not self.cluster.running(node):
                self.cluster.start(node)
                self.note(f"restarted node {node}")
        self.down.clear()


async def _converged(client: Client, nodes: tuple[int, ...], timeout: float) -> None:
    """Wait until one leader is known and every node applied its commit index."""
    with trio.fail_after(timeout):
        while True:
            try:
                statuses = [await client.status(n) for n in nodes]
            except (ConnectionError, OSError, trio.TooSlowError):
                await trio.sleep(0.1)
                continue
            applied = [s.get("applied", -1) for s in statuses]
            commits = [s.get("commit_index", s.get("applied", -1)) for s in statuses]
            if min(applied) >= max(commits) and len(set(applied)) == 1:
                return
            await trio.sleep(0.1)


def real_chaos_run(
    protocol: str,
    seed: int,
    *,
    duration: float = 6.0,
    clients: int = 5,
    nodes: int = 3,
    faults: tuple[str, ...] = FAULTS,
    script: tuple[tuple[float, str, float], ...] = (),
    options: dict[str, Any] | None = None,
    workdir: str | Path | None = None,
    check_timeout: float | None = 60.0,
) -> RealChaosResult:
    """One chaos run against a real local cluster (see the module docstring).

    ``script``: ``(at, fault, outage)`` steps (seconds after the clients start)
    instead of the seeded random schedule, for a fault sequence a test names;
    a step whose time comes while the fault before it still holds a node
    (a restart that outlasts its slot on a loaded machine) waits for it, and
    for a target, within the run, instead of being skipped.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="consensus-chaos-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        path = write_local_cluster_file(
            base / "cluster.toml",
            protocol,
            nodes=nodes,
            options=options,
            extra="[client]\ntimeout = 0.5\nbackoff = 0.02\nmax_attempts = 40\n",
        )
        history = History()
        rng = random.Random(f"{seed}:real-chaos")
        with LocalCluster(path, log_dir=base / "logs") as cluster:
            nemesis = _Nemesis(cluster, random.Random(f"{seed}:real-nemesis"), faults)
            acked: dict[str, str] = {}

            async def main() -> None:
                async with connect(path, history=history, seed=seed) as client:
                    await _converged(client, cluster.node_ids, 30.0)
                    until = time.monotonic() + duration

                    async def worker(i: int) -> None:
                        n = 0
                        while time.monotonic() < until:
                            n += 1
                            command = _command(rng, i, n)
                            try:
                                await client.submit(command)
                            except OperationFailed:
                                continue
                            if isinstance(command, Put) and command.key.startswith("w"):
                                acked[command.key] = command.value

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(nemesis.run, client, until, script)
                        for i in range(clients):
                            nursery.start_soon(worker, i)
                    await trio.to_thread.run_sync(nemesis.heal)
                    # A write after healing makes every leader commit its term's entries.
                    await client.put("barrier", "done")
                    await _converged(client, cluster.node_ids, 60.0)
                    keys = sorted(acked)
                    for node in cluster.node_ids:
                        _, values = await client.local_values(node, keys)
                        missing[node] = [k for k in keys if values.get(k) != acked[k]]

            missing: dict[int, list[str]] = {}
            trio.run(main)
    kv = [op for op in history if op.is_kv]
    result = check(kv, timeout=check_timeout)
    return RealChaosResult(
        protocol=protocol,
        seed=seed,
        history=history,
        ok=result.ok,
        operations=result.operations,
        violations=list(result.violations),
        acknowledged_writes=len(acked),
        missing=missing,
        faults=list(nemesis.log),
        wall_s=time.monotonic() - started,
    )
