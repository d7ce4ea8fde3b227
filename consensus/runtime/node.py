"""Node runners: one replica per Trio nursery, over a ``Transport``.

Theory of operation
-------------------
``NodeRunner`` hosts one ``ReplicaHost`` (replica, storage, state machine,
waiting clients) on Trio's clock.  Everything that reaches the replica goes
through one *driver* task, so the replica is never entered twice at once and
inputs are handled in batches:

1. wait until there is input (a peer message, a client request) or the
   replica's next deadline;
2. take up to ``max_batch`` inputs: peer messages first (votes, heartbeats
   and acknowledgements are never starved by client work), then client
   requests; feed each to the replica and merge the ``Outputs``; tick the
   replica if its deadline has passed (a leader that was asked to flush
   "now" sends one AppendEntries for the whole batch);
3. hand the merged outputs to the host once: eager messages (a leader's
   replication) are put on the wire first, and the driver yields until the
   transport's writers have taken them (a few scheduler turns at most), so
   they travel while the disk write runs; then every record is
   written and storage is synced once (group commit), and only then are the
   other messages sent and the clients answered, so the contract's
   persist-before-send holds for the whole batch;
4. yield, so transports write what was sent and read what arrived.

With ``group_commit=False`` each input's outputs are carried out on their
own (one sync per input), for comparison.  With ``pack_proposals`` > 1 the
client requests of one batch are proposed as few packed log entries
(``ReplicaHost.accept_many``).

Overload: a node admits at most ``max_pending`` client requests that it has
not answered yet; beyond that, a new request is answered ``busy`` at once
(with the leader hint), so a client under overload always gets an answer it
can retry rather than a queue that grows without bound.

Inbound messages and requests arrive through ``deliver`` and ``submit_nowait``
(synchronous, never blocking), from a transport's reader tasks or from
``LocalNetwork``.  Replies go back through the ``reply`` callable given with
each request.

Real concurrency, so not deterministic, by nature; the deterministic path is
``open_cluster`` (``consensus.runtime.cluster``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, Callable, Protocol

import trio

from consensus.commands import Request
from consensus.host import ClientReply, ReplicaHost
from consensus.registry import ProtocolSpec
from consensus.replica import Outputs
from consensus.statemachine import StateMachine
from consensus.storage import MemoryStorage, Storage

__all__ = ["LocalNetwork", "NodeRunner", "ReplyFn", "Transport"]

log = logging.getLogger("consensus.node")

#: Scheduler turns the driver gives the transport's writers to take a batch's
#: eager messages before it writes to disk.  Trio runs a turn's tasks in either
#: order, so one turn leaves the writer behind the disk write half the time.
_WRITER_TURNS = 4

#: Called once with the answer to a submitted request.
ReplyFn = Callable[[ClientReply], None]


class Transport(Protocol):
    """How a ``NodeRunner`` exchanges messages with its peers."""

    def send(self, dst: int, message: Any) -> None:
        """Queue ``message`` for ``dst``; never blocks, may drop."""
        ...

    async def run(self, deliver: Callable[[int, Any], None]) -> None:
        """Carry messages until cancelled; hand each inbound ``(src, message)``
        to ``deliver`` (synchronous, never blocks)."""
        ...

    def unsent(self) -> bool:
        """Whether messages given to ``send`` wait for a writer task to take them
        (the driver yields until they are on their way before a disk write).
        Optional: without it the driver yields one scheduler turn."""
        ...


class NodeRunner:
    """One replica in its own nursery: a driver task over a ``Transport``.

    ``await runner.submit(request)`` returns the ``ClientReply`` of this node
    (a rejection carries ``leader_hint``; the caller retries elsewhere);
    ``submit_nowait(request, reply)`` is the callback form transports use.
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
        seed: int | str = 0,
        group_commit: bool = True,
        max_batch: int = 1024,
        max_pending: int = 20_000,
        snapshot_every: int = 0,
        pack_proposals: int = 0,
        state_machine: StateMachine | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        # Optional in a Transport: whether its writers still hold messages.
        self._unsent: Callable[[], bool] | None = getattr(transport, "unsent", None)
        self.storage = storage if storage is not None else MemoryStorage()
        self.group_commit = group_commit
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.log = logger if logger is not None else log
        self.host = ReplicaHost(
            node_id=node_id,
            spec=spec,
            members=members,
            options=options,
            seed=seed,
            storage=self.storage,
            send=transport.send,
            reply=_reply,
            snapshot_every=snapshot_every,
            record_applied=False,
            pack_proposals=pack_proposals,
            state_machine=state_machine,
        )
        self._t0 = 0.0
        self._messages: deque[tuple[int, Any]] = deque()
        self._requests: deque[tuple[Request, Any]] = deque()
        self._wake = trio.Event()
        self._started = False
        self._leader: int | None = None
        #: Runtime counters: batches, inputs, busy rejections, syncs, ...
        self.stats: dict[str, int] = {
            "batches": 0,
            "messages_in": 0,
            "requests_in": 0,
            "rejected_busy": 0,
            "ticks": 0,
            "leader_changes_seen": 0,
        }

    # -- inputs (synchronous, from transports and connections) -----------------------

    def now(self) -> float:
        """Seconds since this runner started (the replica's clock)."""
        return trio.current_time() - self._t0

    def deliver(self, src: int, message: Any) -> None:
        """A peer message arrived."""
        self._messages.append((src, message))
        self._wake.set()

    def submit_nowait(self, request: Request, reply: ReplyFn) -> None:
        """A client request arrived; ``reply(ClientReply)`` is called once with its answer
        (or never, if this node stops first: the client's timeout covers that)."""
        if len(self.host.waiting) + len(self._requests) >= self.max_pending:
            self.stats["rejected_busy"] += 1
            reply(
                ClientReply(
                    ok=False,
                    reason="busy",
                    leader_hint=self.host.replica.leader(),
                    node=self.node_id,
                )
            )
            return
        self._requests.append((request, reply))
        self._wake.set()

    async def submit(self, request: Request) -> ClientReply:
        """Submit ``request`` here and wait for this node's answer."""
        done = trio.Event()
        box: list[ClientReply] = []

        def reply(answer: ClientReply) -> None:
            box.append(answer)
            done.set()

        self.submit_nowait(request, reply)
        await done.wait()
        return box[0]

    # -- the driver ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Host the replica until cancelled."""
        self._t0 = trio.current_time()
        self.host.start(self.now())
        self._started = True
        self._note_leader()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.transport.run, self.deliver)
            task_status.started()
            await self._drive()

    async def _drive(self) -> None:
        replica = self.host.replica
        while True:
            if not self._messages and not self._requests:
                deadline = replica.next_deadline()
                if deadline is None or deadline > self.now():
                    wake = math.inf if deadline is None else self._t0 + deadline
                    with trio.move_on_at(wake):
                        await self._wake.wait()
                    self._wake = trio.Event()
            now = self.now()
            merged = self._run_batch(now)
            if merged:
                if merged.eager and merged.persist:
                    # Put the eager messages on the wire before our own disk write,
                    # so the write overlaps the round trip (contract step 0).
                    self.host.send_now(merged.eager)
                    merged.eager = None
                    await self._let_writers_run()
                self.host.handle(now, merged)
            self._after_batch()
            # Let the transport write what this batch sent and read what arrived.
            await trio.lowlevel.checkpoint()

    def _run_batch(self, now: float) -> Outputs | None:
        """Feed one batch of inputs to the replica; with group commit, the merged
        outputs for the caller to carry out (without, each input's are done)."""
        host, replica = self.host, self.host.replica
        messages, requests = self._messages, self._requests
        budget = self.max_batch
        merged = Outputs()
        group = self.group_commit
        n_msgs = n_reqs = 0
        while messages and budget:
            src, message = messages.popleft()
            out = replica.step(now, src, message)
            if group:
                merged.extend(out)
            else:
                host.handle(now, out)
            budget -= 1
            n_msgs += 1
        if requests and budget:
            if group:
                take = min(budget, len(requests))
                batch = [requests.popleft() for _ in range(take)]
                merged.extend(host.accept_many(now, batch))
                budget -= take
                n_reqs += take
            else:
                while requests and budget:
                    request, reply = requests.popleft()
                    host.handle(now, host.accept(now, request, reply))
                    budget -= 1
                    n_reqs += 1
        deadline = replica.next_deadline()
        if deadline is not None and deadline <= now:
            out = replica.tick(now)
            self.stats["ticks"] += 1
            if group:
                merged.extend(out)
            else:
                host.handle(now, out)
        if n_msgs or n_reqs:
            self.stats["batches"] += 1
            self.stats["messages_in"] += n_msgs
            self.stats["requests_in"] += n_reqs
        return merged if group and merged else None

    async def _let_writers_run(self) -> None:
        """Yield until the transport's writers took what was sent (bounded: a
        writer blocked on a full socket does not hold the driver)."""
        unsent = self._unsent
        if unsent is None:  # a transport that cannot tell: one turn
            await trio.lowlevel.checkpoint()
            return
        for _ in range(_WRITER_TURNS):
            await trio.lowlevel.checkpoint()
            if not unsent():
                return

    def _after_batch(self) -> None:
        if self._messages or self._requests:
            self._wake.set()
        self._note_leader()

    def _note_leader(self) -> None:
        leader = self.host.replica.leader()
        if leader != self._leader:
            self._leader = leader
            self.stats["leader_changes_seen"] += 1
            status = self.host.replica.status()
            term = status.get("term", status.get("ballot", "-"))
            if leader == self.node_id:
                self.log.info("became leader (term %s)", term)
            elif leader is None:
                self.log.info("no known leader (term %s)", term)
            else:
                self.log.info("following leader %s (term %s)", leader, term)

    # -- inspection ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The replica's ``status()`` plus runtime figures, JSON-able."""
        info = dict(self.host.replica.status())
        info.update(
            node=self.node_id,
            leader=self.host.replica.leader(),
            applied=self.host.sm.applied_index,
            pending=len(self.host.waiting),
            queued_messages=len(self._messages),
            queued_requests=len(self._requests),
            uptime_s=round(self.now(), 3) if self._started else 0.0,
        )
        info.update(self.stats)
        info["sent_messages"] = dict(self.host.sent)
        info["counters"] = dict(self.host.replica.counters)
        return {k: _plain(v) for k, v in info.items()}


def _reply(waiter: ReplyFn, reply: ClientReply) -> None:
    waiter(reply)


def _plain(value: Any) -> Any:
    """A status value as something every codec and JSON can carry."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


# -- in-process transport ----------------------------------------------------------------


class LocalNetwork:
    """In-process transport between NodeRunners: optional constant one-way
    ``delay`` (in Trio's clock) and cuttable links (``blocked``)."""

    def __init__(self, nodes: int, delay: float = 0.0) -> None:
        self.delay = delay
        self.blocked: set[tuple[int, int]] = set()
        self._deliver: dict[int, Callable[[int, Any], None]] = {}
        self._nursery: trio.Nursery | None = None

    def endpoint(self, node_id: int) -> _LocalEndpoint:
        return _LocalEndpoint(self, node_id)

    def _send(self, src: int, dst: int, message: Any) -> None:
        if (src, dst) in self.blocked:
            return
        if self.delay and self._nursery is not None:
            self._nursery.start_soon(self._later, src, dst, message)
        else:
            self._hand_over(src, dst, message)

    def _hand_over(self, src: int, dst: int, message: Any) -> None:
        deliver = self._deliver.get(dst)
        if deliver is not None and (src, dst) not in self.blocked:
            deliver(src, message)

    async def _later(self, src: int, dst: int, message: Any) -> None:
        await trio.sleep(self.delay)
        self._hand_over(src, dst, message)

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
        self._network._send(self.node_id, dst, message)

    def unsent(self) -> bool:
        return False  # handed over (or scheduled) at once

    async def run(self, deliver: Callable[[int, Any], None]) -> None:
        self._network._deliver[self.node_id] = deliver
        try:
            await trio.sleep_forever()
        finally:
            self._network._deliver.pop(self.node_id, None)
