"""Client hosts and one machine's cores and disks, in the cost model (costs on).

Theory of operation
-------------------
``Cores`` (``costs.cores`` > 0): the CPUs that every node and client host
of one machine share, as a cluster on loopback does.  ``take(last, start,
cost)`` gives work of ``cost`` CPU seconds a core from ``start`` on: the
core its owner ran on last if that one is free by then (a process keeps
its CPU while it has work), else the first core to come free, from then.
Keeping only each core's next free time, work is first come, first served.

``Disks`` (``costs.disks`` > 0): the disks the nodes of one machine share.
``sync(node, at, fsyncs)`` is when ``fsyncs`` fsyncs asked for at ``at`` end:
each first takes the lead part of ``fsync`` (which overlaps other nodes'),
then the last ``fsync_serial`` seconds on the device, once it has finished
the fsyncs before (first come, first served, in the order asked).

``ClientHosts`` (``costs.client`` > 0): a client's answer waits until its
host has handled it, ``client`` CPU seconds each.  Clients share
``client_hosts`` hosts in turn (0: each its own).  A host handles answers in
batches, as a load generator's client library does a frame of replies:
every answer that arrived while it was busy is handled together, and their
operations complete (their clients' next requests leave) when the batch
ends.  A batch of a host that was idle also pays ``wakeup``, as a node's
does: the load generator is the same kind of Trio process.  A host per
client with a CPU of its own has one operation at a time, so the simulator
charges its cost as the request leaves (it arrives ``client`` seconds later)
and this class is not involved.

Both sit beside ``consensus.sim.servers``, which owns the nodes' side.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from consensus.costs import CostConfig

if TYPE_CHECKING:
    from consensus.sim.simulator import Simulator

__all__ = ["ClientHosts", "Cores", "Disks"]

_CALL = 2  # the simulator's CALL event: (time, seq, _CALL, fn, args, None)


class Cores:
    """One machine's cores (see the theory of operation); empty: no limit."""

    __slots__ = ("free",)

    def __init__(self, cores: int) -> None:
        #: When each core is next free.
        self.free = [0.0] * cores

    def take(self, last: int, start: float, cost: float) -> tuple[int, float]:
        """``(core, start)`` of ``cost`` CPU seconds wanted from ``start`` on."""
        free = self.free
        if last < 0 or free[last] > start:
            last = min(range(len(free)), key=free.__getitem__)
            if free[last] > start:
                start = free[last]
        free[last] = start + cost
        return last, start


class Disks:
    """One machine's disks (see the theory of operation); empty: each node its own."""

    __slots__ = ("free", "lead", "serial")

    def __init__(self, costs: CostConfig) -> None:
        #: When each disk is next free.
        self.free = [0.0] * costs.disks
        self.serial = costs.fsync_serial or costs.fsync
        self.lead = costs.fsync - self.serial

    def sync(self, node: int, at: float, fsyncs: int) -> float:
        """When ``node``'s ``fsyncs`` fsyncs, asked for at ``at``, have ended."""
        free = self.free
        disk = node % len(free)
        t = at
        for _ in range(fsyncs):
            t += self.lead
            if free[disk] > t:
                t = free[disk]
            t += self.serial
            free[disk] = t
        return t


class ClientHosts:
    """The clients' hosts (see the theory of operation)."""

    def __init__(self, sim: Simulator, costs: CostConfig, cores: Cores) -> None:
        self.sim = sim
        self.cost = costs.client
        # What a host pays to wake up for a batch when it was idle, as a node does.
        self.wakeup = costs.wakeup if costs.client else 0.0
        self.hosts = costs.client_hosts
        self.cores = cores
        self._heap, self._seq = sim._heap, sim._seq
        self._queue: dict[int, list[tuple[float, tuple[Any, ...]]]] = {}
        self._busy: set[int] = set()
        self._core: dict[int, int] = {}  # the core each host ran on last
        #: CPU seconds the hosts spent.
        self.cpu = 0.0

    def answer(self, client_id: int, args: tuple[Any, ...], arrives: float) -> None:
        """An answer for client ``client_id`` reaches its host at ``arrives``; the
        simulator's ``_answer(*args)`` runs once the host has handled it."""
        hosts = self.hosts
        host = client_id % hosts if hosts else client_id
        self._queue.setdefault(host, []).append((arrives, args))
        if host not in self._busy:
            self._busy.add(host)
            heapq.heappush(
                self._heap, (arrives, next(self._seq), _CALL, self._batch, (host, True), None)
            )

    def _batch(self, host: int, woke: bool = False) -> None:
        # A host takes every answer that has arrived as one batch.
        now = self.sim.now
        queue = self._queue[host]
        ready = [args for arrives, args in queue if arrives <= now]
        self._queue[host] = [item for item in queue if item[0] > now]
        if not ready:  # the first answer is still on its way
            first = min(arrives for arrives, _ in queue)
            heapq.heappush(
                self._heap, (first, next(self._seq), _CALL, self._batch, (host, woke), None)
            )
            return
        cost = self.cost * len(ready) + (self.wakeup if woke else 0.0)
        start = now
        if self.cores.free:
            core, start = self.cores.take(self._core.get(host, -1), now, cost)
            self._core[host] = core
        self.cpu += cost
        heapq.heappush(
            self._heap, (start + cost, next(self._seq), _CALL, self._done, (host, ready), None)
        )

    def _done(self, host: int, answers: list[tuple[Any, ...]]) -> None:
        answer = self.sim._answer
        for args in answers:
            answer(*args)
        if self._queue.get(host):
            self._batch(host)  # what arrived meanwhile: the next batch, now
        else:
            self._busy.discard(host)
