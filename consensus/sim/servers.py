"""Simulated nodes as servers: CPU, disk and link time, when costs are on.

Theory of operation
-------------------
``consensus.costs`` says what a node pays; this module makes the simulator
charge it.  With costs off the simulator never builds a ``Servers`` and
every node handles each input the instant it arrives.  With costs on, each
node is a single server with a queue, shaped like the real runtime's
``NodeRunner``:

* An input (a peer message, a client request, a due timer) that finds its
  node idle starts a *batch* at once; one that finds it busy waits in the
  node's queue.  When the node becomes free it takes everything waiting
  (at most ``max_batch`` inputs, peer messages first) as the next batch.
* A batch is handled as ``NodeRunner._run_batch`` handles one: each peer
  message through ``replica.step``, the client requests together through
  ``ReplicaHost.accept_many`` (which packs them when ``pack_proposals`` > 1),
  a ``tick`` if the replica's deadline has passed, their ``Outputs`` merged
  (``Outputs.extend``) and carried out by ``ReplicaHost.handle`` once: one
  storage sync for the whole batch (group commit).
* The batch's service time ``S`` is its CPU time (``CostConfig``: per
  batch, per input by type, size and entries, per record, per message
  sent, per command applied, per client answered) plus one ``fsync`` per
  storage sync it made.  The node is busy from the batch's start ``t``
  until ``t + S``.

Outputs are computed at ``t`` and *released* at ``t + S`` (a ``DONE``
event): the host persists at ``t``, but what it sends and the answers to
clients are held in the node's outbox until the batch ends, so nothing
leaves before the fsync that covers it has finished (persist-before-send
holds, and a client sees its answer when the batch that produced it ends).
If the node crashes during the batch, the held outputs are dropped (the
``DONE`` belongs to the old incarnation); what was persisted stays, which
the contract allows.  Why compute at ``t`` rather than at ``t + S``: the
replica sees the time its inputs were taken, as in the runtime, and no
other input reaches the node before ``t + S`` (it is busy), so nothing can
observe the replica's state early.

A released message leaves through the node's link: with ``bandwidth`` B
set, the link sends one message at a time, each taking ``size / B``
seconds after the previous one is out; then it travels for the network's
delay (FIFO per link, as in ``NetworkModel``).

Events, beside the simulator's ARRIVE, TIMEOUT and CALL:

* ``INPUT(dst, src, payload)`` (kind 5): a peer message arrives; dropped if
  ``dst`` is down or the link is cut at arrival, else queued.
* ``DONE(node, incarnation, held)`` (kind 6): the node's batch ends (or, with
  ``held`` None, the node is free again and inputs wait): release what the
  batch held, then start the next batch if inputs wait or a tick is due.
* ``TIMER(node, incarnation)`` (kind 7): the replica's deadline, lazy as in
  the simulator; a busy node ticks in its next batch instead.
* ``EARLY(node, incarnation, outbox)`` (kind 8): a batch that writes to
  disk sends its ``eager`` messages (``Outputs.eager``: a leader's
  replication, which promises nothing about its own records) when its CPU
  work is done, before its fsync, as ``NodeRunner`` does: the leader's own
  write overlaps the round trip.  Its other outputs wait for the fsync.

Invariant: a node has at most one pending ``DONE`` (``wake``), and while it
is busy (``free_at > now`` or ``wake``) no batch starts except from that
``DONE``.  Whatever arrives while a node is busy gets a ``DONE`` at
``free_at`` if none is pending, so nothing waits for an unrelated event.

The ``Simulator``'s harness calls (``propose``, ``snapshot``, a test
calling ``host.handle``) bypass the queue: their outputs leave at once,
through the link, as if the node were idle.

With ``costs.disks`` the nodes' fsyncs share a machine's disks (a batch's
disk time is reserved on its disk when the batch starts); with
``costs.cores`` the nodes and client hosts share one machine's cores,
and with ``costs.client`` the clients' answers wait for their hosts
(``consensus.sim.clienthosts``); cost rows are compiled per class
(``consensus.sim.costrows``); what each node did is counted per interval
of virtual time (``consensus.sim.nodestats``; ``node_stats``,
``node_bins``).
"""

from __future__ import annotations

import heapq
from collections import deque
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable

from consensus.commands import Request
from consensus.replica import Outputs
from consensus.sim.clienthosts import ClientHosts, Cores, Disks
from consensus.sim.costrows import Row, commands_in, compile_rows, no_entries
from consensus.sim.nodestats import (
    BATCHES,
    BYTES,
    CPU,
    FSYNC,
    FSYNCS,
    INPUTS,
    LINK,
    QMAX,
    RECORDS,
    STAT_FIELDS,
    WAIT,
    NodeStats,
)

if TYPE_CHECKING:
    from consensus.sim.simulator import Simulator, _Node

__all__ = ["Servers"]

_CALL, _INPUT, _DONE, _TIMER, _EARLY = 2, 5, 6, 7, 8
_size = itemgetter(2)  # of an outbox item (dst, payload, size, message)
_INF = float("inf")


class _Server:
    """One node's queue, held outputs and statistics (these survive crashes)."""

    __slots__ = (
        "messages",
        "requests",
        "free_at",
        "wake",
        "outbox",
        "replies",
        "collecting",
        "link_free",
        "stats",
        "core",
    )

    def __init__(self, interval: float) -> None:
        self.messages: deque[tuple[int, Any, float]] = deque()
        self.requests: deque[tuple[Request, Any, float]] = deque()
        self.free_at = 0.0
        self.wake = False  # a DONE event is pending at free_at
        self.outbox: list[tuple[int, Any, int, Any]] = []
        self.replies: list[tuple[Any, Any]] = []
        self.collecting = False  # inside a batch: outputs are held
        self.link_free = 0.0
        self.stats = NodeStats(interval)
        self.core = -1  # the core this node ran on last (costs.cores)

    def reset(self, now: float) -> None:
        """A crash: the queue and held outputs are lost."""
        self.messages.clear()
        self.requests.clear()
        self.outbox = []
        self.replies = []
        self.collecting = False
        self.wake = False
        self.free_at = now


class Servers:
    """The cost model at work in one simulator (see the theory of operation)."""

    def __init__(self, sim: Simulator, stats_interval: float) -> None:
        self.sim = sim
        config = sim.config
        costs = config.costs
        self.costs = costs
        self.max_batch = config.max_batch
        self.interval = stats_interval
        self.delivered = 0
        protocol = sim.spec.name
        # class -> (base, per_byte, per_entry, entry counter): what a message received,
        # a record persisted or a message sent costs (see consensus.costs).
        default: Row = (costs.message, costs.message_per_byte, 0.0, no_entries)
        self._default = default
        self._rows = compile_rows(
            sim.spec.messages, default, lambda n: costs.input_row(protocol, n)
        )
        request = costs.input_row(protocol, "request")
        self.request_cost = costs.request if request is None else request.base
        propose = costs.input_row(protocol, "propose")
        self.propose_cost = costs.propose if propose is None else propose.base
        tick = costs.input_row(protocol, "tick")
        self.tick_cost = costs.tick if tick is None else tick.base
        record_default: Row = (costs.record, 0.0, 0.0, no_entries)
        self._record_default = record_default
        self._records = compile_rows(
            sim.spec.records, record_default, lambda n: costs.record_row(protocol, n)
        )
        self._record_bytes = any(r[1] for r in self._records.values())
        # Whether persisting costs anything but its fsync (else skip the records loop).
        self._record_costs = any(any(r[:3]) for r in (record_default, *self._records.values()))
        # Every record type costs the same fixed amount: no loop over the records.
        flat = {r[:3] for r in (record_default, *self._records.values())}
        self._record_flat = (
            next(iter(flat))[0] if len(flat) == 1 and not any(next(iter(flat))[1:]) else 0.0
        )
        send_default: Row = (costs.send, costs.send_per_byte, 0.0, no_entries)
        self._send_default = send_default
        self._sends = compile_rows(
            sim.spec.messages, send_default, lambda n: costs.send_row(protocol, n)
        )
        # Without rows of their own, a batch's sends cost send + send_per_byte x bytes.
        self._send_rows = any(row != send_default for row in self._sends.values())
        #: Whether message sizes are needed (a per-byte cost or a bandwidth).
        self.sized = bool(
            costs.message_per_byte
            or costs.send_per_byte
            or costs.bandwidth
            or any(r[1] for r in (*self._rows.values(), *self._sends.values()))
        )
        self.bandwidth = costs.bandwidth
        self.on_wire = config.wire == "bytes"
        # Objects carry their size with them when sizes are needed.
        self.pairs = self.sized and not self.on_wire
        self.encode_sends = self.on_wire or config.count_bytes or self.sized
        self._decode = sim._codec.decode if self.on_wire else None
        self._batch, self._wakeup = costs.batch, costs.wakeup
        self._woke = costs.batch + costs.wakeup  # the first terms of an idle node's batch
        self._packing = config.pack_proposals > 1
        self._apply = costs.apply
        self._send = costs.send
        self._send_per_byte = costs.send_per_byte
        self._reply = costs.reply
        self._fsync = costs.fsync
        self.servers = [_Server(stats_interval) for _ in sim.node_ids]
        self.cores = Cores(costs.cores)
        self._core_free = self.cores.free  # empty: no limit (consensus.sim.clienthosts)
        self.disks = Disks(costs)
        self._disks_shared = bool(self.disks.free)  # else each node has a disk of its own
        self.clients = ClientHosts(sim, costs, self.cores)
        self.client_answer = self.clients.answer
        self._nodes = sim._nodes
        self._net = sim.network
        self._blocked = sim.network.blocked  # mutated in place, never replaced
        self._link_last = sim.network.link_last  # likewise
        self._on_reply = sim._on_reply
        self._heap, self._seq = sim._heap, sim._seq
        self._tracer = sim._tracer
        if self._tracer is not None:  # tracing: other methods, none on the untraced path
            self._release = self._traced_release  # type: ignore[method-assign]
            self._untraced_close = self._close
            self._close = self._traced_close  # type: ignore[method-assign,assignment]

    # -- a node's host ----------------------------------------------------------------

    def attach(self, node: _Node) -> tuple[Callable[[int, Any], None], Callable[[Any, Any], None]]:
        """The ``send`` and ``reply`` of a (re)started node's host."""
        src = node.id
        server = self.servers[src]
        server.reset(self.sim.now)
        transmit = self._transmit
        on_reply = self.sim._on_reply
        outbox_of = server  # outbox and replies are replaced per batch: read them each time

        if self.encode_sends:
            encode = self.sim._codec.encode
            on_wire, pairs = self.on_wire, self.pairs
            # A broadcast encodes its message once: [message, payload, size].
            last: list[Any] = [None, b"", 0]

            def send(dst: int, message: Any) -> None:
                if message is last[0]:
                    payload, size = last[1], last[2]
                else:
                    data = encode(message)
                    size = len(data)
                    payload = data if on_wire else ((message, size) if pairs else message)
                    last[0], last[1], last[2] = message, payload, size
                host = node.host
                if host is not None:
                    host.sent_bytes[type(message).__name__] += size
                if outbox_of.collecting:
                    outbox_of.outbox.append((dst, payload, size, message))
                else:
                    transmit(src, dst, payload, size, message)

        else:

            def send(dst: int, message: Any) -> None:
                if outbox_of.collecting:
                    outbox_of.outbox.append((dst, message, 0, message))
                else:
                    transmit(src, dst, message, 0, message)

        def reply(waiter: Any, answer: Any) -> None:
            if outbox_of.collecting:
                outbox_of.replies.append((waiter, answer))
            else:
                on_reply(waiter, answer)

        return send, reply

    def crashed(self, node_id: int) -> None:
        self.servers[node_id].reset(self.sim.now)

    # -- the link -----------------------------------------------------------------------

    def _transmit(self, src: int, dst: int, payload: Any, size: int, message: Any) -> None:
        # One message, outside a batch (a harness call, a restart).
        self._release(src, [(dst, payload, size, message)], self.sim.now)

    def _release(self, src: int, outbox: list[tuple[int, Any, int, Any]], now: float) -> None:
        """Send what a batch held, in order, through ``src``'s link."""
        net = self._net
        heap, seq, push = self._heap, self._seq, heapq.heappush
        bandwidth = self.bandwidth
        server = self.servers[src]
        link_free = server.link_free
        link_time = 0.0
        sent = 0
        clean = net.clean and not net.blocked
        sample, fifo, last = net._sample, net.fifo, self._link_last[src]
        for dst, payload, size, message in outbox:
            t = now
            if bandwidth:
                took = size / bandwidth
                t = (link_free if link_free > t else t) + took
                link_free = t
                link_time += took
            sent += size
            if clean:
                arrival = t + sample(src, dst)
                if fifo:
                    if arrival < last[dst]:
                        arrival = last[dst]
                    last[dst] = arrival
                push(heap, (arrival, next(seq), _INPUT, dst, src, payload))
            else:
                for arrival in net.arrivals(src, dst, message, t):
                    push(heap, (arrival, next(seq), _INPUT, dst, src, payload))
        server.link_free = link_free
        if sent:
            row = server.stats.row_at(now)
            row[BYTES] += sent
            row[LINK] += link_time

    # -- tracing (consensus.sim.trace) --------------------------------------------------

    def _traced_release(
        self, src: int, outbox: list[tuple[int, Any, int, Any]], now: float
    ) -> None:
        # _release, recording each message as it leaves (after the link's time).  A
        # copy rather than a test per message in _release, so untraced runs pay
        # nothing: keep the link arithmetic of the two in step.
        tracer = self._tracer
        assert tracer is not None
        sim = self.sim
        net = sim.network
        heap, seq, push = sim._heap, sim._seq, heapq.heappush
        bandwidth = self.bandwidth
        server = self.servers[src]
        link_free = server.link_free
        link_time = 0.0
        sent = 0
        deliver = self._traced_input
        for dst, payload, size, message in outbox:
            t = now
            if bandwidth:
                took = size / bandwidth
                t = (link_free if link_free > t else t) + took
                link_free = t
                link_time += took
            sent += size
            for row, arrival in tracer.sent(t, src, dst, message, size, net):
                args = (dst, src, payload, row, arrival)
                push(heap, (arrival, next(seq), _CALL, deliver, args, None))
        server.link_free = link_free
        if sent:
            row = server.stats.row_at(now)
            row[BYTES] += sent
            row[LINK] += link_time

    def _traced_input(self, dst: int, src: int, payload: Any, row: list[Any], now: float) -> None:
        # INPUT for a traced message (a CALL event): note a drop, then queue it.
        tracer = self._tracer
        assert tracer is not None
        if self._nodes[dst].host is None:
            tracer.dropped(row, "down")
        elif (src, dst) in self._blocked:
            tracer.dropped(row, "partition")
        else:
            self.message(dst, src, payload, now)

    def _traced_close(self, node: _Node, server: _Server, out: Outputs, *rest: Any) -> None:
        # _close, then the node's role as its batch left it (rest: cost, now, taken, queued).
        self._untraced_close(node, server, out, *rest)
        now = rest[1]
        if node.host is not None and self._tracer is not None:
            self._tracer.role(now, node.id, node.host.replica)

    # -- events -------------------------------------------------------------------------

    def message(self, dst: int, src: int, payload: Any, now: float) -> None:
        """INPUT: a peer message arrives at ``dst``."""
        node = self._nodes[dst]
        if node.host is None:
            return
        blocked = self._blocked
        if blocked and (src, dst) in blocked:
            return
        server = self.servers[dst]
        if server.wake or server.free_at > now:
            server.messages.append((src, payload, now))
            if not server.wake:
                self._wake_at(node, server)
            return
        if server.messages or server.requests:  # left over from a batch (max_batch)
            server.messages.append((src, payload, now))
            self._serve(node, server, now, True)
            return
        self._serve_message(node, server, src, payload, now)

    def request(self, node: _Node, request: Request, waiter: Any, now: float) -> None:
        """A client request reaches ``node`` (which is up)."""
        server = self.servers[node.id]
        server.requests.append((request, waiter, now))
        if server.wake or server.free_at > now:
            if not server.wake:
                self._wake_at(node, server)
            return
        self._serve(node, server, now, True)

    def timer(self, node_id: int, incarnation: int, now: float) -> None:
        """TIMER: the replica's deadline (lazy: see the simulator)."""
        node = self._nodes[node_id]
        if incarnation != node.incarnation or now != node.timer_at:
            return  # stale: superseded by an earlier timer, or a crash
        node.timer_at = _INF
        host = node.host
        if host is None:
            return
        server = self.servers[node_id]
        if server.wake or server.free_at > now:
            if not server.wake:
                self._wake_at(node, server)  # tick in the next batch
            return
        deadline = host.replica.next_deadline()
        if deadline is not None and deadline <= now:
            self._serve(node, server, now, True)
        else:
            self.arm(node, deadline)

    def done(self, node_id: int, incarnation: int, held: Any, now: float) -> None:
        """DONE: a batch ends (its outputs leave), or a busy node is free again."""
        node = self._nodes[node_id]
        host = node.host
        if incarnation != node.incarnation or host is None:
            return  # the node crashed meanwhile: what the batch held is lost
        server = self.servers[node_id]
        server.wake = False
        if held is not None:
            outbox, replies = held
            if outbox:
                self._release(node_id, outbox, now)
            if replies:
                on_reply = self._on_reply
                for waiter, answer in replies:
                    on_reply(waiter, answer)
                host = node.host
                if host is None:
                    return  # an answer's callback crashed the node
        if server.messages or server.requests:
            self._serve(node, server, now)
            return
        deadline = host.replica.next_deadline()
        if deadline is not None and deadline <= now:
            self._serve(node, server, now)
        else:
            self.arm(node, deadline)

    def _wake_at(self, node: _Node, server: _Server) -> None:
        server.wake = True
        heapq.heappush(
            self._heap, (server.free_at, next(self._seq), _DONE, node.id, node.incarnation, None)
        )

    def rearm(self, node: _Node) -> None:
        """The host's ``wake``: re-arm after a harness call (``propose``, ``snapshot``)."""
        if node.host is not None:
            self.arm(node, node.host.replica.next_deadline())

    def arm(self, node: _Node, deadline: float | None) -> None:
        """Re-arm the node's lazy timer for ``deadline`` (not before the node is free)."""
        if deadline is None:
            return
        free_at = self.servers[node.id].free_at
        if deadline < free_at:
            deadline = free_at
        now = self.sim.now
        if deadline < now:
            deadline = now
        if deadline < node.timer_at:
            node.timer_at = deadline
            heapq.heappush(
                self._heap, (deadline, next(self._seq), _TIMER, node.id, node.incarnation, None)
            )

    # -- a batch ------------------------------------------------------------------------

    def _serve(self, node: _Node, server: _Server, now: float, woke: bool = False) -> None:
        """Take the waiting inputs as one batch at ``now`` (see the theory of operation);
        ``woke``: the node was idle (it pays ``costs.wakeup`` first)."""
        host = node.host
        assert host is not None
        replica = host.replica
        messages, requests = server.messages, server.requests
        queued = len(messages) + len(requests)
        budget = self.max_batch
        cost = self._woke if woke else self._batch
        waited: list[float] = []  # arrival times of inputs that waited
        taken = 0
        out: Outputs | None = None
        merged = False
        rows, default = self._rows, self._default
        decode = self._decode
        pairs = self.pairs
        server.collecting = True
        while messages and budget:
            src, payload, arrived = messages.popleft()
            if arrived != now:
                waited.append(arrived)
            if decode is not None:
                size = len(payload)
                message = decode(payload)
            elif pairs:
                message, size = payload
            else:
                message, size = payload, 0
            base, per_byte, per_entry, count = rows.get(type(message), default)
            cost += base + per_byte * size
            if per_entry:
                cost += per_entry * count(message)
            result = replica.step(now, src, message)
            if out is None:
                out = result
            elif result:  # most acknowledgements change nothing: skip the merge
                if not merged:
                    out, merged = _merged(out), True
                out.extend(result)
            budget -= 1
            taken += 1
        self.delivered += taken
        if requests and budget:
            take = min(budget, len(requests))
            cost += self.request_cost * take
            taken += take
            proposals = host.proposals
            if self._packing and take > 1:
                items = []
                for _ in range(take):
                    request, waiter, arrived = requests.popleft()
                    if arrived != now:
                        waited.append(arrived)
                    items.append((request, waiter))
                results = [host.accept_many(now, items)]
            else:  # accept_many without packing, without its merging of every result
                accept = host.accept
                results = []
                for _ in range(take):
                    request, waiter, arrived = requests.popleft()
                    if arrived != now:
                        waited.append(arrived)
                    results.append(accept(now, request, waiter))
            cost += self.propose_cost * (host.proposals - proposals)
            for result in results:
                if out is None:
                    out = result
                elif result:
                    if not merged:
                        out, merged = _merged(out), True
                    out.extend(result)
        deadline = replica.next_deadline()
        if deadline is not None and deadline <= now:
            cost += self.tick_cost
            result = replica.tick(now)
            if out is None:
                out = result
            else:
                if not merged:
                    out = _merged(out)
                out.extend(result)
        if out is None:  # woken with nothing to do
            server.collecting = False
            self.arm(node, deadline)
            return
        self._close(node, server, out, cost, now, taken, queued)
        if waited:
            server.stats.waited(waited, now)

    def _serve_message(
        self, node: _Node, server: _Server, src: int, payload: Any, now: float
    ) -> None:
        # _serve for the commonest batch: one message at an idle node, nothing queued.
        host = node.host
        replica = host.replica  # type: ignore[union-attr]
        decode = self._decode
        if decode is not None:
            size = len(payload)
            message = decode(payload)
        elif self.pairs:
            message, size = payload
        else:
            message, size = payload, 0
        base, per_byte, per_entry, count = self._rows.get(type(message), self._default)
        cost = self._woke + base + per_byte * size
        if per_entry:
            cost += per_entry * count(message)
        self.delivered += 1
        server.collecting = True
        out = replica.step(now, src, message)
        deadline = replica.next_deadline()
        if deadline is not None and deadline <= now:
            cost += self.tick_cost
            out = _merged(out)
            out.extend(replica.tick(now))
        self._close(node, server, out, cost, now, 1, 1)

    def _close(
        self,
        node: _Node,
        server: _Server,
        out: Outputs,
        cost: float,
        now: float,
        taken: int,
        queued: int,
    ) -> None:
        # Carry out a batch's merged outputs, charge them, hold what leaves at its end.
        host = node.host
        assert host is not None
        stats = host.storage.stats
        syncs, records = stats.syncs, stats.records_written
        early: list[tuple[int, Any, int, Any]] | None = None
        early_cpu = 0.0
        if out.persist or out.compact is not None:
            if out.eager:
                # As the runtime does: eager messages go out before the node's own disk
                # write, which overlaps their round trip (the replica contract's step 0).
                out = _merged(out)
                eager, out.eager = out.eager, None
                host.send_now(eager or [])
                early, server.outbox = server.outbox, []
                cost += self._outbox_cost(early)
                early_cpu = cost
            if self._record_costs:
                if self._record_flat:  # one cost per record, whatever its type
                    cost += self._record_flat * (len(out.persist) + len(out.compact or ()))
                else:
                    cost += self._records_cost(out)
        if self._apply and out.committed:
            cost += self._apply * commands_in(out.committed)
        host.handle(now, out)
        server.collecting = False
        outbox, replies = server.outbox, server.replies
        if outbox:
            cost += self._outbox_cost(outbox)
        if replies:
            cost += self._reply * len(replies)
        fsyncs = stats.syncs - syncs
        disk = self._fsync * fsyncs
        start = now
        if self._core_free and cost:  # one machine's cores: wait for the first free one
            server.core, start = self.cores.take(server.core, now, cost)
        if fsyncs and self._disks_shared:  # one machine's disk: wait for the device
            disk = self.disks.sync(node.id, start + cost, fsyncs) - (start + cost)
        end = start + cost + disk
        server.free_at = end
        # The node's statistics (nodestats); a zero is not added (x + 0.0 is x).
        counts = server.stats
        b = int(now * counts.per)
        row = counts.row if b == counts.row_bin else counts.bin(b)
        if end < (b + 1) * counts.interval:
            row[CPU] += cost
            if fsyncs:
                row[FSYNC] += disk
            if start != now:
                row[WAIT] += start - now
        else:  # a batch that runs into the next interval: split its time
            counts.spread(WAIT, now, start)
            counts.spread(CPU, start, start + cost)
            counts.spread(FSYNC, start + cost, end)
        row[BATCHES] += 1
        row[INPUTS] += taken
        if fsyncs:
            row[FSYNCS] += fsyncs
        written = stats.records_written - records
        if written:
            row[RECORDS] += written
        if queued > row[QMAX]:
            row[QMAX] = queued
        if early:
            if end > start + early_cpu:
                heapq.heappush(
                    self._heap,
                    (start + early_cpu, next(self._seq), _EARLY, node.id, node.incarnation, early),
                )
            else:
                outbox[:0] = early
        if outbox or replies:
            # Only a list that holds something is replaced: an empty one the DONE
            # also holds stays empty, as no batch starts before that DONE (and
            # outside a batch nothing is held).
            if outbox:
                server.outbox = []
            if replies:
                server.replies = []
            if end > now:
                server.wake = True
                heapq.heappush(
                    self._heap,
                    (end, next(self._seq), _DONE, node.id, node.incarnation, (outbox, replies)),
                )
                return
            self.done_now(node, outbox, replies)
            return
        if server.messages or server.requests:  # more than max_batch were waiting
            self._wake_at(node, server)
            return
        self.arm(node, host.replica.next_deadline())

    def done_now(self, node: _Node, outbox: list[Any], replies: list[Any]) -> None:
        # A batch that cost nothing: release at once (no DONE event).
        if outbox:
            self._release(node.id, outbox, self.sim.now)
        on_reply = self.sim._on_reply
        for waiter, answer in replies:
            on_reply(waiter, answer)
        host = node.host
        if host is None:
            return
        server = self.servers[node.id]
        if server.messages or server.requests:
            self._wake_at(node, server)  # at free_at, which is now: after this event
            return
        self.arm(node, host.replica.next_deadline())

    def _outbox_cost(self, outbox: list[tuple[int, Any, int, Any]]) -> float:
        if self._send_rows:
            return self._sends_cost(outbox)
        cost = self._send * len(outbox)
        if self._send_per_byte:
            cost += self._send_per_byte * sum(map(_size, outbox))
        return cost

    def early(self, node_id: int, incarnation: int, outbox: Any, now: float) -> None:
        """EARLY: a batch's eager messages leave, before its disk write ends."""
        node = self._nodes[node_id]
        if incarnation == node.incarnation and node.host is not None:
            self._release(node_id, outbox, now)

    def _sends_cost(self, outbox: list[tuple[int, Any, int, Any]]) -> float:
        # Each copy of a broadcast pays its row (its frame is written once per peer).
        cost = 0.0
        rows, default = self._sends, self._send_default
        for _, _, size, message in outbox:
            base, per_byte, per_entry, count = rows.get(type(message), default)
            cost += base + per_byte * size
            if per_entry:
                cost += per_entry * count(message)
        return cost

    def _records_cost(self, out: Outputs) -> float:
        cost = 0.0
        records, default = self._records, self._record_default
        encode = self.sim._codec.encode if self._record_bytes else None
        for group in (out.compact or (), out.persist):
            for record in group:
                base, per_byte, per_entry, count = records.get(type(record), default)
                cost += base
                if per_byte and encode is not None:
                    cost += per_byte * len(encode(record))
                if per_entry:
                    cost += per_entry * count(record)
        return cost

    # -- statistics -----------------------------------------------------------------------

    @property
    def client_cpu(self) -> float:
        """CPU seconds the clients' hosts spent (``costs.client``)."""
        return self.clients.cpu

    def node_bins(self) -> list[dict[str, Any]]:
        """Counts per node and ``stats_interval`` (``consensus.sim.nodestats``), one
        row per interval with anything counted; inputs still queued count up to now."""
        now = self.sim.now
        rows = []
        for node_id, server in enumerate(self.servers):
            queued = [t for _, _, t in server.messages] + [t for _, _, t in server.requests]
            rows.extend(server.stats.rows(node_id, queued, now))
        return rows

    def node_stats(self) -> list[dict[str, Any]]:
        """Totals per node since the start (``queue_max``: the longest queue)."""
        totals = {n: dict.fromkeys(STAT_FIELDS, 0.0) for n in range(len(self.servers))}
        for row in self.node_bins():
            total = totals[row["node"]]
            for name in STAT_FIELDS:
                if name == "queue_max":
                    total[name] = max(total[name], row[name])
                else:
                    total[name] += row[name]
        return [{"node": n, **totals[n]} for n in sorted(totals)]

    # -- the event loop -------------------------------------------------------------------

    def run(self, end: float, stop: Callable[[], bool] | None) -> bool:
        """``Simulator._run`` with costs on: the same loop over this module's events."""
        sim = self.sim
        heap, pop, push = sim._heap, heapq.heappop, heapq.heappush
        message, done, timer, early = self.message, self.done, self.timer, self.early
        arrive, client_timer = sim._arrive, sim._client_timer
        processed = 0
        try:
            while heap:
                event = pop(heap)
                time, key, kind, a, b, c = event
                if time > end:
                    push(heap, event)  # not yet: put it back (same key, same order)
                    break
                sim.now = time
                processed += 1
                if kind == 5:  # _INPUT(dst=a, src=b, payload=c)
                    message(a, b, c, time)
                elif kind == 6:  # _DONE(node=a, incarnation=b, held=c)
                    done(a, b, c, time)
                elif kind == 7:  # _TIMER(node=a, incarnation=b)
                    timer(a, b, time)
                elif kind == 8:  # _EARLY(node=a, incarnation=b, outbox=c)
                    early(a, b, c, time)
                elif kind == 3:  # _ARRIVE(client=a, attempt=b, generation=c)
                    arrive(a, b, c)
                elif kind == 4:  # _TIMEOUT(client=a)
                    client_timer(a, time, key)
                else:  # _CALL(fn=a, args=b)
                    a(*b)
                if stop is not None and stop():
                    return True
            if sim.now < end != _INF:
                sim.now = end
            return stop is not None and stop()
        finally:
            sim.events_processed += processed
            sim.messages_delivered += self.delivered
            self.delivered = 0


def _merged(first: Outputs) -> Outputs:
    # A fresh Outputs to merge into: a replica's own Outputs is never mutated.
    merged = Outputs()
    merged.extend(first)
    return merged
