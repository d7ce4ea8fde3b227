"""A simulated cluster driven from Trio: ``open_cluster``.

Theory of operation
-------------------
``open_cluster(config)``: a whole simulated cluster inside the caller's Trio
run.  One driver task advances the deterministic ``Simulator`` in step with
Trio's clock; user tasks ``await cluster.submit(...)``, ``await
node.submit(...)``, sleep, crash nodes and cut links.  Under
``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``) virtual time skips idle periods; under the real clock the
simulation runs in real time.  To stay deterministic despite Trio's
randomized scheduling, the driver waits until every task is blocked
(``wait_all_tasks_blocked``) before acting at an instant; submissions made at
one instant are admitted in client-id order; user actions at time *t* happen
before simulated events at *t*; and between user deadlines the driver runs
simulated events in one synchronous burst (no Trio sleep per message), ending
the burst early when a user task's operation completes.  Clients created
with ``cluster.client()`` in one task have deterministic ids, so concurrent
tasks each using their own client give the same history for the same seed.

``NodeRunner`` (``consensus.runtime.node``): one replica hosted in its own
nursery over a real ``Transport``; not deterministic, by nature.
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import trio
import trio.testing

from consensus.checker.history import History, Operation
from consensus.config import ClusterConfig
from consensus.sim.simulator import SimClient, Simulator

__all__ = [
    "Cluster",
    "ClusterClient",
    "NodeHandle",
    "OperationFailed",
    "open_cluster",
]


class OperationFailed(RuntimeError):
    """An operation's outcome is unknown: every retry timed out or was rejected.

    Raised by simulated clusters and by the client of real ones; ``operation``
    is the recorded operation, ``reason`` what the last attempt met."""

    def __init__(self, op: Operation, reason: str = "") -> None:
        why = reason or f"status {op.status}"
        super().__init__(
            f"{type(op.command).__name__} by client {op.client} did not complete"
            f" after {op.retries + 1} attempts ({why})"
        )
        self.operation = op
        self.reason = reason


def _outcome(op: Operation) -> Any:
    if not op.ok:
        raise OperationFailed(op)
    return op.result


class ClusterClient:
    """A client session of a simulated cluster: one request outstanding at a time."""

    def __init__(self, cluster: Cluster, sim_client: SimClient) -> None:
        self._cluster = cluster
        self._client = sim_client
        self._lock = trio.Lock()

    @property
    def client_id(self) -> int:
        return self._client.client_id

    async def submit(self, command: Any, node: int | None = None) -> Any:
        """Submit ``command`` and return its result once applied.

        Raises ``OperationFailed`` if the outcome stays unknown after every retry.
        """
        async with self._lock:
            op = await self._cluster._submit(self._client, command, node)
        return _outcome(op)


class NodeHandle:
    """One node of a simulated cluster."""

    def __init__(self, cluster: Cluster, node_id: int) -> None:
        self._cluster = cluster
        self.node_id = node_id

    async def submit(self, command: Any) -> Any:
        """Submit ``command`` at this node (a fresh client); follows redirects."""
        return await self._cluster.client().submit(command, node=self.node_id)

    @property
    def replica(self) -> Any:
        return self._cluster.sim.replica(self.node_id)

    @property
    def is_up(self) -> bool:
        return self._cluster.sim.is_up(self.node_id)

    def crash(self) -> None:
        self._cluster.crash(self.node_id)

    def restart(self) -> None:
        self._cluster.restart(self.node_id)


class Cluster:
    """A simulated cluster driven from Trio; build it with ``open_cluster``."""

    # The longest stretch of simulated time one burst may cover before the
    # driver yields to Trio (keeps cancellation and the real clock responsive).
    MAX_BURST = 1.0
    # How long after a user task's deadline the driver wakes (Trio seconds).
    TIE_BREAK = 1e-9
    SNAP = 5e-9

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._t0 = trio.current_time()
        self._virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        self._pending: list[tuple[int, int, SimClient, Any, int | None, trio.Event, list]] = []
        self._calls = 0
        self._to_wake: list[trio.Event] = []
        self._poke = trio.Event()

    # -- user API ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Simulated seconds since the cluster started."""
        return self.sim.now

    @property
    def history(self) -> History:
        return self.sim.history

    @property
    def nodes(self) -> tuple[int, ...]:
        return self.sim.node_ids

    def node(self, node_id: int) -> NodeHandle:
        if node_id not in self.sim.node_ids:
            raise ValueError(f"no node {node_id}; nodes are {list(self.sim.node_ids)}")
        return NodeHandle(self, node_id)

    def client(self) -> ClusterClient:
        """A new client session (ids are assigned in creation order)."""
        return ClusterClient(self, self.sim.client())

    async def submit(self, command: Any, node: int | None = None) -> Any:
        """Submit ``command`` from a fresh client and return its result."""
        return await self.client().submit(command, node=node)

    def leaders(self) -> list[int]:
        return self.sim.leaders()

    async def wait_for_leader(self, timeout: float = 10.0) -> int:
        """Wait (in cluster time) until exactly one live node claims leadership."""
        with trio.fail_after(timeout):
            while len(self.sim.leaders()) != 1:
                await trio.sleep(0.01)
        return self.sim.leaders()[0]

    def crash(self, node_id: int) -> None:
        self._sync_time()
        self.sim.crash(node_id)

    def restart(self, node_id: int) -> None:
        self._sync_time()
        self.sim.restart(node_id)
        self._poke.set()

    def partition(self, *groups: Any) -> None:
        self.sim.partition(*groups)

    def heal(self) -> None:
        self.sim.heal()

    def cut(self, src: int, dst: int) -> None:
        self.sim.cut(src, dst)

    def isolate(self, node_id: int) -> None:
        self.sim.isolate(node_id)

    # -- driver ---------------------------------------------------------------------

    def _trio_sim_time(self) -> float:
        return trio.current_time() - self._t0

    def _sync_time(self) -> None:
        # Actions from user tasks happen at the current Trio instant.  Trio's
        # clock carries an offset whose float noise differs from run to run,
        # so instants are snapped to whole nanoseconds, and an instant within
        # a few nanoseconds of the simulation's is the simulation's own.
        trio_now = self._trio_sim_time()
        if trio_now > self.sim.now + self.SNAP:
            self.sim.now = round(trio_now, 9)

    async def _submit(self, client: SimClient, command: Any, node: int | None) -> Operation:
        done = trio.Event()
        box: list[Operation] = []
        self._calls += 1
        self._pending.append((client.client_id, self._calls, client, command, node, done, box))
        self._poke.set()
        await done.wait()
        return box[0]

    def _admit(self) -> None:
        pending, self._pending = self._pending, []
        pending.sort(key=lambda p: (p[0], p[1]))
        for _, _, client, command, node, done, box in pending:

            def finished(op: Operation, done: trio.Event = done, box: list = box) -> None:
                box.append(op)
                self._to_wake.append(done)

            client.submit(command, node, on_done=finished)

    async def _drive(self) -> None:
        sim = self.sim
        while True:
            # Let every user task finish what it does at this instant.
            await trio.testing.wait_all_tasks_blocked()
            self._sync_time()
            self._admit()
            now = self._trio_sim_time()
            wake_at = math.inf  # Trio time at which the driver must look again
            if self._virtual:
                next_user = trio.current_time() + (
                    trio.lowlevel.current_statistics().seconds_to_next_deadline
                )
                if next_user - self._t0 <= now + self.MAX_BURST:
                    # Run events strictly before the user's deadline, then wake
                    # just after it: user actions at t precede events at t.
                    end = math.nextafter(next_user - self._t0, -math.inf)
                    wake_at = next_user + self.TIE_BREAK
                else:
                    end = now + self.MAX_BURST
                    wake_at = self._t0 + end
            else:
                end = now
            sim._run(end, stop=self._has_woken)
            self._poke = trio.Event()
            if self._to_wake:
                # Bring Trio's clock to the instant the operations completed
                # before their tasks observe anything.
                await trio.sleep_until(max(trio.current_time(), self._t0 + sim.now))
                woken, self._to_wake = self._to_wake, []
                for event in woken:
                    event.set()
                continue
            if self._pending:
                continue
            nxt = sim.next_event_time()
            if not self._virtual:
                wake_at = self._t0 + nxt if nxt is not None else math.inf
            elif nxt is None and math.isinf(wake_at):
                wake_at = math.inf
            with trio.move_on_at(wake_at):
                await self._poke.wait()

    def _has_woken(self) -> bool:
        return bool(self._to_wake)


@asynccontextmanager
async def open_cluster(
    config: ClusterConfig | dict[str, Any] | str | Path,
    *,
    record_applied: bool = True,
) -> AsyncIterator[Cluster]:
    """Run a simulated cluster for the duration of the ``async with`` block.

    ``config`` is a ``ClusterConfig``, a mapping, or a TOML path::

        async with open_cluster({"protocol": "raft", "nodes": 3, "seed": 1}) as cluster:
            await cluster.submit(Put(key="x", value="1"))
            assert await cluster.submit(Get(key="x")) == "1"
    """
    sim = Simulator(config, record_applied=record_applied)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(sim)
        nursery.start_soon(cluster._drive)
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()
