"""Node runners: one replica per Trio nursery, over a ``Transport``.

Theory of operation
-------------------
``NodeRunner`` hosts one ``ReplicaHost`` in its own nursery with an inbound
message task, a timer task and a client-request task.  It talks to its peers
through a ``Transport``: ``LocalNetwork`` (in-process channels, for tests and
notebooks) or the TCP transport (one OS process per node).  Real concurrency,
so not deterministic, by nature; the deterministic path is ``open_cluster``.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import trio

from consensus.commands import Request
from consensus.host import ClientReply, ReplicaHost
from consensus.registry import ProtocolSpec
from consensus.storage import MemoryStorage, Storage

__all__ = ["LocalNetwork", "NodeRunner", "Transport"]


class Transport(Protocol):
    """How a ``NodeRunner`` exchanges messages with its peers."""

    def send(self, dst: int, message: Any) -> None:
        """Queue ``message`` for ``dst``; never blocks, may drop."""
        ...

    async def receive(self) -> tuple[int, Any]:
        """The next ``(src, message)`` for this node."""
        ...


class LocalNetwork:
    """In-process transport between NodeRunners: unbounded channels, optional
    constant one-way ``delay`` (in Trio's clock), and cuttable links."""

    def __init__(self, nodes: int, delay: float = 0.0) -> None:
        self.delay = delay
        self.blocked: set[tuple[int, int]] = set()
        self._channels = [trio.open_memory_channel[tuple[int, Any]](math.inf) for _ in range(nodes)]
        self._nursery: trio.Nursery | None = None

    def endpoint(self, node_id: int) -> _LocalEndpoint:
        return _LocalEndpoint(self, node_id)

    def _deliver(self, src: int, dst: int, message: Any) -> None:
        if (src, dst) in self.blocked:
            return
        if self.delay and self._nursery is not None:
            self._nursery.start_soon(self._later, src, dst, message)
        else:
            self._channels[dst][0].send_nowait((src, message))

    async def _later(self, src: int, dst: int, message: Any) -> None:
        await trio.sleep(self.delay)
        if (src, dst) not in self.blocked:
            self._channels[dst][0].send_nowait((src, message))

    async def run(self) -> None:
        """Carry delayed messages; run it in a nursery while nodes talk."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await trio.sleep_forever()


class _LocalEndpoint:
    def __init__(self, network: LocalNetwork, node_id: int) -> None:
        self._network = network
        self.node_id = node_id

    def send(self, dst: int, message: Any) -> None:
        self._network._deliver(self.node_id, dst, message)

    async def receive(self) -> tuple[int, Any]:
        return await self._network._channels[self.node_id][1].receive()


class NodeRunner:
    """One replica in its own nursery: inbound, timer and client-request tasks.

    ``await runner.submit(request)`` returns the ``ClientReply`` of this node
    (a rejection carries ``leader_hint``; the caller retries elsewhere).
    """

    def __init__(
        self,
        *,
        node_id: int,
        spec: ProtocolSpec,
        members: tuple[int, ...],
        options: Any,
        transport: Transport,
        storage: Storage | None = None,
        seed: int = 0,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.storage = storage if storage is not None else MemoryStorage()
        self.host = ReplicaHost(
            node_id=node_id,
            spec=spec,
            members=members,
            options=options,
            seed=seed,
            storage=self.storage,
            send=transport.send,
            reply=self._reply,
        )
        self._t0 = 0.0
        self._timer_changed = trio.Event()
        self._requests_send, self._requests = trio.open_memory_channel[
            tuple[Request, trio.Event, list]
        ](math.inf)

    def _now(self) -> float:
        return trio.current_time() - self._t0

    def _reply(self, waiter: tuple[trio.Event, list], reply: ClientReply) -> None:
        event, box = waiter
        box.append(reply)
        event.set()

    def _after_input(self) -> None:
        self._timer_changed.set()

    async def run(self) -> None:
        """Host the replica until cancelled."""
        self._t0 = trio.current_time()
        self.host.start(self._now())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._inbound)
            nursery.start_soon(self._timers)
            nursery.start_soon(self._clients)

    async def _inbound(self) -> None:
        while True:
            src, message = await self.transport.receive()
            self.host.step(self._now(), src, message)
            self._after_input()

    async def _timers(self) -> None:
        while True:
            self._timer_changed = trio.Event()
            deadline = self.host.replica.next_deadline()
            if deadline is not None and deadline <= self._now():
                self.host.tick(self._now())
                continue
            wake = math.inf if deadline is None else self._t0 + deadline
            with trio.move_on_at(wake):
                await self._timer_changed.wait()

    async def _clients(self) -> None:
        async for request, event, box in self._requests:
            self.host.submit(self._now(), request, (event, box))
            self._after_input()

    async def submit(self, request: Request) -> ClientReply:
        event, box = trio.Event(), []
        self._requests_send.send_nowait((request, event, box))
        await event.wait()
        return box[0]
