"""The deterministic simulator: a whole cluster on virtual time in one thread.

Theory of operation
-------------------
One event queue, a heap ordered by ``(virtual time, sequence number)``, drives
every node, message, timer, client and fault.  Popping an event sets ``now``
and runs it; nothing else advances time.  Because the order of events is a
total order fixed by the heap, and every random draw (network delays and
faults, each replica's timeouts) comes from generators seeded from the config's
``seed`` and drawn in that order, a run is a pure function of (config, seed):
the same seed gives the same history, operation for operation.

This is the "equivalent of Trio's MockClock" the runtime can embed: it skips
idle time instantly and costs no scheduler round trip per message: the loop
alone moves about 250,000 messages per wall-clock second, a whole protocol
with its clients and state machines 50,000 to 130,000 on one core of the
development machine (``python -m bench speed``; sweeps run one simulation per
core).  ``consensus.runtime.cluster`` wraps it in an async API on Trio.

Events:

* ``DELIVER(dst, src, message)``: a message arrives; dropped if ``dst`` is down
  or the link is cut at arrival time.
* ``TIMER(node, incarnation)``: a replica's deadline.  Timers are lazy: one
  pending event per node at the earliest time it may be needed; a deadline
  moved later is found when the event fires and rescheduled then.
* ``ARRIVE(client, attempt, generation)``: a client's request reaches its node.
* ``TIMEOUT(client)``: a client's timeout.  Lazy too: a closed-loop client
  sends a new attempt every few milliseconds and almost every timeout would
  be stale, so a client has at most one pending timeout event.  Each attempt
  reserves the sequence number its timeout event would have had when it is
  sent; when the pending event fires for an earlier attempt, the current
  attempt's timeout is pushed with that reserved key, so timeouts fire in
  exactly the order (and at exactly the times) one event per attempt would.
* ``CALL(fn, args)``: anything else (fault schedules, client answers after a
  ``client_delay``, user callbacks from ``at``/``after``).

Every event is a 6-tuple ``(time, seq, kind, a, b, c)`` so the loop unpacks
it in one step; ``seq`` is unique, so the payload fields are never compared.

Nodes are ``0 .. nodes-1``.  A crash drops the node's host (volatile state,
waiting clients, pending timer); its storage survives; ``restart`` builds a new
host over that storage, so the replica recovers from its durable records.

For test harnesses (``consensus.testing``, a lab-style test of one plugin),
beside the simulated clients:

* ``propose(node, command)``: hand one proposal to one node, as a client
  would, and get at once whether that node took it and the log index it
  took (``ProposeResult``); the node's timers are re-armed by its host.
* ``on_apply(callback)``: ``callback(node, index, payload)`` for every entry
  every node applies, across crashes and restarts.
* ``reconnect(node)``, ``network.rule(...)``: undo one node's cuts; faults
  for some message types and directions only.
* ``snapshot(node)``: a service-driven snapshot, beside ``snapshot_every``.
* ``message_bytes()``: bytes per message type, with ``wire = "bytes"`` or
  ``count_bytes``.

Costs (``ClusterConfig.costs``, ``consensus.costs``): with every cost zero
(the default) the loop above runs as it always did.  With costs on, each
node is a server with a queue that handles what waits as one batch and
pays CPU, fsync and link time for it; ``_run`` hands the loop to
``consensus.sim.servers``, whose events (INPUT, DONE, its TIMER) replace
DELIVER and TIMER.  ``node_stats()`` and ``node_intervals()`` report each
node's CPU and fsync time, queue and link use.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from consensus.checker.history import INFO, OK, History, Operation
from consensus.commands import Request
from consensus.config import ClusterConfig, ConfigError, load_cluster_config
from consensus.host import ApplyHook, ClientReply, ProposeResult, ReplicaHost
from consensus.sim.clients import Attempt, RetryPolicy
from consensus.sim.network import NetworkModel
from consensus.sim.servers import Servers
from consensus.sim.trace import MessageTrace
from consensus.storage import MemoryStorage, Storage

__all__ = ["SimClient", "Simulator"]

_DELIVER, _TIMER, _CALL, _ARRIVE, _TIMEOUT = 0, 1, 2, 3, 4
_INF = float("inf")


class SimClient:
    """A client with a session: one operation outstanding at a time."""

    def __init__(self, sim: Simulator, client_id: int) -> None:
        self.sim = sim
        self.client_id = client_id
        self.seq = 0
        self.outstanding: Attempt | None = None
        #: The node that answered this client last (a real client's cached leader).
        self.preferred: int | None = None
        # The latest attempt's timeout: (time, reserved seq, attempt, generation).
        self._deadline: tuple[float, int, Attempt, int] | None = None
        # The key (time, seq) of this client's one pending TIMEOUT event, if any.
        self._timer: tuple[float, int] | None = None

    def submit(
        self,
        command: Any,
        node: int | None = None,
        on_done: Callable[[Operation], None] | None = None,
    ) -> Operation:
        return self.sim._client_submit(self, command, node, on_done)


class _Node:
    __slots__ = ("id", "host", "storage", "incarnation", "timer_at")

    def __init__(self, node_id: int, storage: Storage) -> None:
        self.id = node_id
        self.host: ReplicaHost | None = None
        self.storage = storage
        self.incarnation = 0
        self.timer_at = _INF


class Simulator:
    """A simulated cluster, built from a ``ClusterConfig`` (object, dict or TOML path)."""

    def __init__(
        self,
        config: ClusterConfig | dict[str, Any] | str | Path,
        *,
        record_applied: bool = True,
        stats_interval: float = 0.1,
        trace: bool = False,
    ) -> None:
        """``stats_interval``: the width of ``node_intervals()``'s time bins (costs on);
        ``trace``: record every message, client operation and role change
        (``trace()``, ``consensus.sim.trace``; off, it costs nothing)."""
        self.config = load_cluster_config(config)
        if self.config.network.kind != "sim":
            raise ConfigError(
                f"network.kind: {self.config.network.kind!r} runs real node processes, not a"
                " simulation; run it with bench (python -m bench run --tcp)"
            )
        self.spec = self.config.protocol_spec()
        self.options = self.config.protocol_options()
        self.seed = self.config.seed
        self.record_applied = record_applied
        self.now = 0.0
        self.events_processed = 0
        self.messages_delivered = 0
        self.history = History()
        self.node_ids = tuple(range(self.config.nodes))
        self.members = self.config.initial_members
        if self.members != self.node_ids and not self.spec.membership:
            raise ConfigError(
                f"members: protocol {self.spec.name!r} does not support membership changes,"
                " so every node must be a member"
            )
        self.network = NetworkModel(
            self.config.network, self.node_ids, random.Random(f"{self.seed}:network")
        )
        self._heap: list[tuple[Any, ...]] = []
        self._seq = itertools.count()
        self._client_ids = itertools.count(1)
        self._op_ids = itertools.count()
        self._policy = RetryPolicy(self.node_ids, self.config.client)
        self._rotation = itertools.cycle(self.members)
        self._on_done: dict[int, tuple[SimClient, Callable[[Operation], None] | None]] = {}
        self._retired_sent: Counter[str] = Counter()
        self._retired_bytes: Counter[str] = Counter()
        self._retired_counters: dict[int, Counter[str]] = {n: Counter() for n in self.node_ids}
        self._apply_hooks: list[ApplyHook] = []
        self._codec: Any = None
        config = self.config
        costs = config.costs.enabled
        wal = config.storage.kind == "wal"
        if config.wire == "bytes" or config.count_bytes or wal or costs or trace:
            from consensus.codec import Codec

            self._codec = Codec.for_protocol(self.spec)
        #: The message trace, or None with tracing off (``consensus.sim.trace``).
        self._tracer = MessageTrace(self._codec.encode) if trace else None
        self._nodes = [_Node(i, self._make_storage(i)) for i in self.node_ids]
        #: The cost model at work, or None with costs off.
        self._servers = Servers(self, stats_interval) if costs else None
        # A client's CPU per operation (costs on): with a host and a core of its own
        # it has one operation at a time, so it is paid as the request leaves (no
        # event); hosts shared by clients queue their answers (consensus.sim.clienthosts).
        costs_config = config.costs
        own_host = not costs_config.client_hosts and not costs_config.cores
        self._client_send = costs_config.client if own_host else 0.0
        self._client_cost = 0.0 if own_host else costs_config.client
        for node in self._nodes:
            self._start(node)

    # -- construction -----------------------------------------------------------------

    def _make_storage(self, node_id: int) -> Storage:
        cfg = self.config.storage
        if cfg.kind == "memory":
            return MemoryStorage()
        from consensus.wal import DurableStorage

        path = Path(cfg.directory) / f"node-{node_id}.wal"
        return DurableStorage(path, self._codec, fsync=cfg.fsync)

    def _start(self, node: _Node) -> None:
        node_id = node.id
        send: Callable[[int, Any], None]
        reply: Callable[[Any, ClientReply], None]
        tracer = self._tracer
        if self._servers is None:
            send, reply = self._sender(node_id), self._on_reply
            # The host re-arms this node's timer after every input it is given.
            wake = functools.partial(self._reschedule, node)
            if tracer is not None:
                send = self._traced_sender(node_id)
                wake = functools.partial(self._traced_wake, node)
        else:
            send, reply = self._servers.attach(node)
            wake = functools.partial(self._servers.rearm, node)
        node.host = ReplicaHost(
            node_id=node_id,
            spec=self.spec,
            members=self.members,
            options=self.options,
            seed=self.seed,
            storage=node.storage,
            send=send,
            reply=reply,
            incarnation=node.incarnation,
            snapshot_every=self.config.snapshot_every,
            record_applied=self.record_applied,
            wake=wake,
            on_apply=self._dispatch_apply if self._apply_hooks else None,
            clock_rate=1.0 + self._drift(node_id),
            pack_proposals=self.config.pack_proposals,
            state_machine=self.config.state_machine(),
        )
        node.timer_at = _INF
        if tracer is not None and node.incarnation:
            tracer.event("restart", self.now, node_id)
        node.host.start(self.now)
        if tracer is not None and node.host is not None:
            tracer.role(self.now, node_id, node.host.replica)

    def _drift(self, node_id: int) -> float:
        drift = self.config.clock_drift
        return drift[node_id] if node_id < len(drift) else 0.0

    def _sender(self, src: int) -> Callable[[int, Any], None]:
        heap, seq, sim, net = self._heap, self._seq, self, self.network
        arrivals = net.arrivals
        blocked = net.blocked  # mutated in place, never replaced
        fifo = net.fifo
        link = net.link_last[src]  # this node's outgoing links, mutated in place
        push = heapq.heappush
        # Two closures, so the common case (objects, not measured) pays no per-message
        # test for encoding; their routing lines are the same: keep them in step.
        if self.config.wire == "objects" and not self.config.count_bytes:

            def send(dst: int, message: Any) -> None:
                if net.clean and not blocked:
                    # A healthy network: one copy, one delay draw (what arrivals() would
                    # do), without building a list or a link tuple per message.
                    arrival = sim.now + net._sample(src, dst)
                    if fifo:
                        if arrival < link[dst]:
                            arrival = link[dst]
                        link[dst] = arrival
                    push(heap, (arrival, next(seq), _DELIVER, dst, src, message))
                    return
                for arrival in arrivals(src, dst, message, sim.now):
                    push(heap, (arrival, next(seq), _DELIVER, dst, src, message))

            return send

        # Every message is encoded: to travel as bytes, or only to be measured.
        encode = self._codec.encode
        on_wire = self.config.wire == "bytes"
        host_of = self._nodes_host
        # A broadcast sends one message object to every peer: encode it once.
        last: list[Any] = [None, b""]

        def send_encoded(dst: int, message: Any) -> None:
            if message is last[0]:
                data = last[1]
            else:
                data = encode(message)
                last[0], last[1] = message, data
            host = host_of(src)
            if host is not None:
                host.sent_bytes[type(message).__name__] += len(data)
            payload = data if on_wire else message
            if net.clean and not blocked:
                arrival = sim.now + net._sample(src, dst)
                if fifo:
                    if arrival < link[dst]:
                        arrival = link[dst]
                    link[dst] = arrival
                push(heap, (arrival, next(seq), _DELIVER, dst, src, payload))
                return
            for arrival in arrivals(src, dst, message, sim.now):
                push(heap, (arrival, next(seq), _DELIVER, dst, src, payload))

        return send_encoded

    def _nodes_host(self, node_id: int) -> ReplicaHost | None:
        return self._nodes[node_id].host

    # -- tracing (consensus.sim.trace): other senders, so untraced runs pay nothing ----

    def _traced_sender(self, src: int) -> Callable[[int, Any], None]:
        heap, seq, sim, net = self._heap, self._seq, self, self.network
        tracer = self._tracer
        assert tracer is not None
        encode = self._codec.encode
        on_wire = self.config.wire == "bytes"
        counted = on_wire or self.config.count_bytes
        deliver = self._traced_deliver

        def send(dst: int, message: Any) -> None:
            size = tracer.size(message)
            host = self._nodes[src].host
            if counted and host is not None:
                host.sent_bytes[type(message).__name__] += size
            payload = encode(message) if on_wire else message
            for row, arrival in tracer.sent(sim.now, src, dst, message, size, net):
                heapq.heappush(
                    heap, (arrival, next(seq), _CALL, deliver, (dst, src, payload, row), None)
                )

        return send

    def _traced_deliver(self, dst: int, src: int, payload: Any, row: list[Any]) -> None:
        # The DELIVER branch of _run, for a traced message (a CALL event).
        tracer = self._tracer
        assert tracer is not None
        node = self._nodes[dst]
        host = node.host
        if host is None:
            tracer.dropped(row, "down")
            return
        if (src, dst) in self.network.blocked:
            tracer.dropped(row, "partition")
            return
        message = self._codec.decode(payload) if self.config.wire == "bytes" else payload
        self.messages_delivered += 1
        host.handle(self.now, host.replica.step(self.now, src, message))
        self._traced_wake(node)

    def _traced_wake(self, node: _Node) -> None:
        host = node.host
        if host is not None:
            assert self._tracer is not None
            self._tracer.role(self.now, node.id, host.replica)
        self._reschedule(node)

    def trace(self) -> Any:
        """The message trace as a pandas DataFrame (``consensus.sim.trace``):
        one row per message, client invocation and completion, role change,
        crash and restart.  Needs ``Simulator(..., trace=True)``."""
        if self._tracer is None:
            raise RuntimeError("tracing is off: build the simulator with trace=True")
        return self._tracer.frame()

    # -- the event loop -------------------------------------------------------------

    def _push(self, time: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        heapq.heappush(self._heap, (time, next(self._seq), kind, a, b, c))

    def _reschedule(self, node: _Node) -> None:
        # Keep in step with the copy inlined in _run's DELIVER branch.
        host = node.host
        if host is None:
            return
        deadline = host.replica.next_deadline()
        if deadline is None:
            return
        if deadline < self.now:
            deadline = self.now
        if deadline < node.timer_at:
            node.timer_at = deadline
            heapq.heappush(
                self._heap, (deadline, next(self._seq), _TIMER, node.id, node.incarnation, None)
            )

    def _run(self, end: float, stop: Callable[[], bool] | None = None) -> bool:
        """Process events up to time ``end``; return True if ``stop()`` became true."""
        if self._servers is not None:
            return self._servers.run(end, stop)
        # The hottest loop of the project: names are bound to locals, the event
        # kinds are literals, and message delivery (most events) comes first
        # with _reschedule inlined.
        heap, pop, push, seq = self._heap, heapq.heappop, heapq.heappush, self._seq
        nodes = self._nodes
        blocked = self.network.blocked  # the same set object for the whole run
        decode = self._codec.decode if self.config.wire == "bytes" else None
        reschedule = self._reschedule
        processed = delivered = 0
        try:
            while heap:
                event = pop(heap)
                time, key, kind, a, b, c = event
                if time > end:
                    push(heap, event)  # not yet: put it back (same key, same order)
                    break
                self.now = time
                processed += 1
                if kind == 0:  # _DELIVER(dst=a, src=b, message=c)
                    node = nodes[a]
                    host = node.host
                    if host is not None and not (blocked and (b, a) in blocked):
                        if decode is not None:
                            c = decode(c)
                        delivered += 1
                        host.handle(time, host.replica.step(time, b, c))
                        # reschedule(node), inlined
                        host = node.host  # a client callback may have crashed the node
                        if host is not None:
                            deadline = host.replica.next_deadline()
                            if deadline is not None:
                                if deadline < time:
                                    deadline = time
                                if deadline < node.timer_at:
                                    node.timer_at = deadline
                                    push(heap, (deadline, next(seq), 1, a, node.incarnation, None))
                elif kind == 1:  # _TIMER(node=a, incarnation=b)
                    node = nodes[a]
                    if b != node.incarnation or time != node.timer_at:
                        continue  # stale: superseded by an earlier timer, or a crash
                    node.timer_at = _INF
                    host = node.host
                    if host is None:
                        continue
                    deadline = host.replica.next_deadline()
                    if deadline is not None and deadline <= time:
                        host.tick(time)  # the host's wake re-arms the timer
                    else:
                        reschedule(node)
                elif kind == 3:  # _ARRIVE(client=a, attempt=b, generation=c)
                    self._arrive(a, b, c)
                elif kind == 4:  # _TIMEOUT(client=a)
                    self._client_timer(a, time, key)
                else:  # _CALL(fn=a, args=b)
                    a(*b)
                if stop is not None and stop():
                    return True
            if self.now < end != _INF:
                self.now = end
            return stop is not None and stop()
        finally:
            self.events_processed += processed
            self.messages_delivered += delivered

    def run_for(self, seconds: float) -> None:
        """Advance virtual time by ``seconds``, processing every event on the way."""
        self._run(self.now + seconds)

    def run_until(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Run until ``predicate()`` holds (True) or ``timeout`` virtual seconds pass (False)."""
        if predicate():
            return True
        return self._run(self.now + timeout, predicate)

    def run_until_time(self, time: float) -> None:
        self._run(time)

    def at(self, time: float, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` at virtual ``time`` (fault schedules, workloads)."""
        self._push(max(time, self.now), _CALL, fn, args)

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def next_event_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # -- nodes ------------------------------------------------------------------------

    def host(self, node_id: int) -> ReplicaHost:
        host = self._nodes[node_id].host
        if host is None:
            raise LookupError(f"node {node_id} is down")
        return host

    def replica(self, node_id: int) -> Any:
        """Node ``node_id``'s live replica, or None while it is down."""
        host = self._nodes[node_id].host
        return None if host is None else host.replica

    def is_up(self, node_id: int) -> bool:
        return self._nodes[node_id].host is not None

    def up_nodes(self) -> list[int]:
        return [n.id for n in self._nodes if n.host is not None]

    def storage(self, node_id: int) -> Storage:
        return self._nodes[node_id].storage

    def leaders(self) -> list[int]:
        """Live nodes that believe they are the leader."""
        return [n.id for n in self._nodes if n.host is not None and n.host.replica.leader() == n.id]

    def applied(self, node_id: int) -> list[tuple[int, Any]]:
        """(index, payload) applied by the node's current incarnation, in order."""
        return list(self.host(node_id).applied)

    def incarnation(self, node_id: int) -> int:
        """How often the node has crashed: 0 for its first life, +1 at every crash."""
        return self._nodes[node_id].incarnation

    def on_apply(self, callback: ApplyHook) -> Callable[[], None]:
        """Call ``callback(node, index, payload)`` for every entry any node applies
        from now on; returns a function that unsubscribes it.

        Each node reports its entries in index order, as its state machine
        applies them (when a client's answer is due, the subscriber hears of
        the entry first).  Across a crash and restart: a restarted node
        starts with an empty state machine and applies again, from index 1,
        or from a snapshot it restores, which is reported as a
        ``StateSnapshot`` payload at the snapshot's index (the entries it
        covers are not reported one by one).  So a subscriber sees a node's
        entries again after each restart, and an index lower than the last
        one it saw from that node means that node restarted
        (``incarnation(node)`` tells which life it is in).  Entries applied
        before subscribing are not replayed; ``applied(node)`` has them.
        """
        self._apply_hooks.append(callback)
        self._set_apply_hooks()

        def unsubscribe() -> None:
            if callback in self._apply_hooks:
                self._apply_hooks.remove(callback)
                self._set_apply_hooks()

        return unsubscribe

    def _set_apply_hooks(self) -> None:
        hook = self._dispatch_apply if self._apply_hooks else None
        for node in self._nodes:
            if node.host is not None:
                node.host.on_apply = hook

    def _dispatch_apply(self, node: int, index: int, payload: Any) -> None:
        for callback in list(self._apply_hooks):
            callback(node, index, payload)

    def snapshot(self, node_id: int, index: int | None = None) -> int:
        """Make the node snapshot its state machine now and compact its log.

        The snapshot covers the node's applied index (``index``, if given,
        must be that index; a state machine can only snapshot where it
        stands).  The replica gets it through ``compact``, as with
        ``snapshot_every``.  Returns the index covered (0: nothing applied
        yet, nothing done).
        """
        return self.host(node_id).snapshot(self.now, index)

    def crash(self, node_id: int) -> None:
        """Stop the node: volatile state is lost, storage survives."""
        node = self._nodes[node_id]
        if node.host is None:
            return
        self._retired_sent.update(node.host.sent)
        self._retired_bytes.update(node.host.sent_bytes)
        self._retired_counters[node_id].update(node.host.replica.counters)
        node.host = None
        node.incarnation += 1
        node.timer_at = _INF
        if self._servers is not None:
            self._servers.crashed(node_id)
        if self._tracer is not None:
            self._tracer.crashed(self.now, node_id)

    def restart(self, node_id: int) -> None:
        """Start a crashed node again from its storage."""
        node = self._nodes[node_id]
        if node.host is not None:
            return
        self._start(node)

    # -- network faults ---------------------------------------------------------------

    def partition(self, *groups: Iterable[int]) -> None:
        self.network.partition(*groups)

    def heal(self) -> None:
        self.network.heal()

    def cut(self, src: int, dst: int) -> None:
        self.network.cut(src, dst)

    def isolate(self, node_id: int) -> None:
        self.network.isolate(node_id)

    def reconnect(self, node_id: int) -> None:
        """Restore every link to and from one node; other cuts stay (see ``NetworkModel``)."""
        self.network.reconnect(node_id)

    # -- clients ------------------------------------------------------------------------

    def client(self) -> SimClient:
        return SimClient(self, next(self._client_ids))

    def propose(
        self,
        node: int,
        command: Any,
        on_reply: Callable[[ClientReply], None] | None = None,
    ) -> ProposeResult:
        """Propose ``command`` at ``node`` now; answer at once where it went.

        ``command`` is a command (sent as request 1 of a fresh client id) or a
        ``Request`` (its ``(client_id, seq)`` kept: a retry).  The result says
        whether the node took it, and the log index it was given when the
        plugin reports one (``ProposeResult``); a crashed node gives
        ``accepted=False, reason="down"``.  The node's timers are re-armed,
        so the proposal goes out without waiting for another event.  The
        node's later answer (applied, or rejected as overwritten) goes to
        ``on_reply`` if given; proposing the same request at the same node
        again hands the answer to the later call's ``on_reply``, as a
        client's retry would.  Unlike ``submit``, nothing is recorded in
        ``history`` and nobody retries: it is one raw proposal.
        """
        if node not in self.node_ids:
            raise ValueError(f"no node {node}; nodes are {list(self.node_ids)}")
        if isinstance(command, Request):
            request = command
        else:
            request = Request(client_id=next(self._client_ids), seq=1, command=command)
        host = self._nodes[node].host
        if host is None:
            return ProposeResult(node=node, request=request, accepted=False, reason="down")
        return host.propose(self.now, request, on_reply if on_reply is not None else _ignore)

    def submit(
        self,
        command: Any,
        node: int | None = None,
        on_done: Callable[[Operation], None] | None = None,
    ) -> Operation:
        """Submit ``command`` from a new client; returns the recorded operation."""
        return self.client().submit(command, node, on_done)

    def _client_submit(
        self,
        client: SimClient,
        command: Any,
        node: int | None,
        on_done: Callable[[Operation], None] | None,
    ) -> Operation:
        if client.outstanding is not None:
            raise RuntimeError(f"client {client.client_id} already has an operation outstanding")
        if node is None:
            node = client.preferred if client.preferred is not None else next(self._rotation)
        elif node not in self.node_ids:
            raise ValueError(f"no node {node}; nodes are {list(self.node_ids)}")
        client.seq += 1
        op = Operation(
            op_id=next(self._op_ids),
            client=client.client_id,
            seq=client.seq,
            command=command,
            node=node,
            invoke=self.now,
        )
        self.history.record(op)
        if self._tracer is not None:
            self._tracer.event("invoke", self.now, node, f"{op.client}:{op.seq}")
        attempt = Attempt(op=op, node=node)
        client.outstanding = attempt
        self._on_done[op.op_id] = (client, on_done)
        self._send_attempt(client, attempt, 0.0)
        return op

    def _send_attempt(self, client: SimClient, attempt: Attempt, delay: float) -> None:
        now, heap, seq, generation = self.now, self._heap, self._seq, attempt.generation
        arrive = now + delay + self.network.client_delay + self._client_send
        heapq.heappush(heap, (arrive, next(seq), _ARRIVE, client, attempt, generation))
        # The timeout's key is reserved now, its event pushed lazily (see the theory
        # of operation): usually the client already has an earlier one pending.
        when = now + (delay + self.config.client.timeout)
        key = next(seq)
        client._deadline = (when, key, attempt, generation)
        timer = client._timer
        if timer is None or (when, key) < timer:
            client._timer = (when, key)
            heapq.heappush(heap, (when, key, _TIMEOUT, client, None, None))

    def _client_timer(self, client: SimClient, time: float, key: int) -> None:
        if client._timer != (time, key):
            return  # superseded by an earlier pending timer
        client._timer = None
        deadline = client._deadline
        if deadline is None:
            return
        when, reserved, attempt, generation = deadline
        if reserved == key:
            client._deadline = None
            self._timeout(client, attempt, generation)
        else:
            # A later attempt's timeout (its key is larger than this one's).
            client._timer = (when, reserved)
            heapq.heappush(self._heap, (when, reserved, _TIMEOUT, client, None, None))

    def _arrive(self, client: SimClient, attempt: Attempt, generation: int) -> None:
        if attempt.generation != generation or attempt.op.done:
            return
        node = self._nodes[attempt.node]
        if node.host is None:
            return  # the node is down: the client times out
        op = attempt.op
        request = Request(client_id=op.client, seq=op.seq, command=op.command)
        if self._servers is not None:
            self._servers.request(node, request, (client, attempt, generation), self.now)
            return
        node.host.submit(self.now, request, (client, attempt, generation))

    def _on_reply(self, waiter: Any, reply: ClientReply) -> None:
        if type(waiter) is not tuple:
            waiter(reply)  # a raw proposal's on_reply (``propose``)
            return
        client, attempt, generation = waiter
        delay = self.network.client_delay
        if self._client_cost:  # the client's host handles the answer (costs on)
            assert self._servers is not None
            args = (client, attempt, generation, reply)
            self._servers.client_answer(client.client_id, args, self.now + delay)
        elif delay:
            args = (client, attempt, generation, reply)
            self._push(self.now + delay, _CALL, self._answer, args)
        else:
            self._answer(client, attempt, generation, reply)

    def _answer(
        self, client: SimClient, attempt: Attempt, generation: int, reply: ClientReply
    ) -> None:
        if attempt.generation != generation or attempt.op.done:
            return
        if reply.ok:
            self._finish(client, attempt, OK, reply.result)
            return
        if reply.reason == "session_expired":
            # Whether an earlier attempt took effect cannot be known: final, unknown.
            self._finish(client, attempt, INFO, None)
            return
        decision = self._policy.after_rejection(attempt, reply.leader_hint)
        if decision is None:
            self._finish(client, attempt, INFO, None)
            return
        node, backoff = decision
        redirect = reply.leader_hint is not None and node == reply.leader_hint
        self._retry(client, attempt, node, backoff, redirect)

    def _timeout(self, client: SimClient, attempt: Attempt, generation: int) -> None:
        if attempt.generation != generation or attempt.op.done:
            return
        node = self._policy.after_timeout(attempt)
        if node is None:
            self._finish(client, attempt, INFO, None)
            return
        self._retry(client, attempt, node, 0.0, False)

    def _retry(
        self, client: SimClient, attempt: Attempt, node: int, delay: float, redirect: bool
    ) -> None:
        attempt.generation += 1
        attempt.attempts += 1
        attempt.redirects = attempt.redirects + 1 if redirect else 0
        attempt.node = node
        attempt.op.retries += 1
        self._send_attempt(client, attempt, delay)

    def _finish(self, client: SimClient, attempt: Attempt, status: str, result: Any) -> None:
        op = attempt.op
        op.status = status
        op.result = result
        if status != INFO:
            op.complete = self.now
        attempt.generation += 1
        client.outstanding = None
        client._deadline = None  # its pending timer, if any, will find nothing to do
        if status == OK:
            client.preferred = attempt.node
        if self._tracer is not None:
            self._tracer.event("complete", self.now, attempt.node, f"{op.client}:{op.seq}", status)
        _, callback = self._on_done.pop(op.op_id, (client, None))
        if callback is not None:
            callback(op)

    def finish_pending(self) -> None:
        """Mark every operation still outstanding as indeterminate (end of a run)."""
        for op in self.history:
            if not op.done:
                op.status = INFO
        self._on_done.clear()

    # -- statistics -----------------------------------------------------------------

    def message_counts(self) -> Counter[str]:
        """Messages sent by type since the start, over every node and incarnation."""
        total = Counter(self._retired_sent)
        for node in self._nodes:
            if node.host is not None:
                total.update(node.host.sent)
        return total

    def protocol_counters(self, node_id: int) -> Counter[str]:
        """A node's protocol counters (``Replica.counters``) over all its incarnations."""
        total = Counter(self._retired_counters[node_id])
        host = self._nodes[node_id].host
        if host is not None:
            total.update(host.replica.counters)
        return total

    def node_stats(self) -> list[dict[str, Any]]:
        """Per node since the start, with costs on (else empty): CPU and fsync
        seconds, batches, inputs, seconds inputs waited in the queue, the
        longest queue, fsyncs, records, bytes and link seconds sent
        (``consensus.sim.servers``)."""
        return [] if self._servers is None else self._servers.node_stats()

    def node_intervals(self) -> list[dict[str, Any]]:
        """``node_stats`` per ``stats_interval`` of virtual time (costs on, else empty)."""
        return [] if self._servers is None else self._servers.node_bins()

    def message_bytes(self) -> Counter[str]:
        """Bytes sent by type, as the codec encodes them, over every node and incarnation.

        Counted when ``wire = "bytes"`` or ``count_bytes`` is set; otherwise
        (plain ``wire = "objects"``) nothing is encoded and this is empty.
        """
        total = Counter(self._retired_bytes)
        for node in self._nodes:
            if node.host is not None:
                total.update(node.host.sent_bytes)
        return total


def _ignore(reply: ClientReply) -> None:
    pass  # the answer to a raw proposal nobody asked to hear
