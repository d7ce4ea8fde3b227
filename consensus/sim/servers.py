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

With ``costs.cores`` the nodes and client hosts share one machine's cores:
a batch runs on the core its node ran on last if that is free (a process
keeps its CPU while it has work), else on the first core to come free,
from then; its node is busy from the batch's start, so what waits for a
core waits in the node's queue too.  A client host's answers likewise.

Statistics (``node_stats``, ``node_bins``), per node and per
``stats_interval`` of virtual time: CPU, fsync and core-waiting seconds
(split at interval boundaries, so a long batch counts in every interval
it spans),
batches, inputs, fsyncs and records (in the interval the batch started
in), the queue's area (the integral of its length over time, split
exactly at interval boundaries: divided by the interval, the mean queue
length), the longest queue a batch found, bytes and link seconds sent (in
the interval the message left in).
"""

from __future__ import annotations

import heapq
from collections import deque
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable

import attrs

from consensus.commands import Batch, PackedBatch, Request
from consensus.costs import CostRow
from consensus.replica import Outputs
from consensus.schema import ConfigError

if TYPE_CHECKING:
    from consensus.sim.simulator import Simulator, _Node

__all__ = ["Servers", "entry_counter", "requests_carried"]

_CALL, _INPUT, _DONE, _TIMER, _EARLY = 2, 5, 6, 7, 8
_size = itemgetter(2)  # of an outbox item (dst, payload, size, message)
_INF = float("inf")

# What is counted per node and interval, in this order (queue_max: the largest).
STAT_FIELDS = (
    "cpu_s",
    "fsync_s",
    "batches",
    "inputs",
    "queue_area",
    "fsyncs",
    "records",
    "bytes_sent",
    "link_s",
    "queue_max",
    "core_wait_s",
)
_CPU, _FSYNC, _BATCHES, _INPUTS, _AREA, _FSYNCS, _RECORDS, _BYTES, _LINK, _QMAX, _WAIT = range(11)


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
        "bins",
        "row_bin",
        "row",
        "core",
    )

    def __init__(self) -> None:
        self.messages: deque[tuple[int, Any, float]] = deque()
        self.requests: deque[tuple[Request, Any, float]] = deque()
        self.free_at = 0.0
        self.wake = False  # a DONE event is pending at free_at
        self.outbox: list[tuple[int, Any, int, Any]] = []
        self.replies: list[tuple[Any, Any]] = []
        self.collecting = False  # inside a batch: outputs are held
        self.link_free = 0.0
        #: interval number -> counts in STAT_FIELDS order
        self.bins: dict[int, list[float]] = {}
        # The latest interval's counts, cached (most batches fall in the same one).
        self.row_bin = -1
        self.row: list[float] = []
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
        self._per_interval = 1.0 / stats_interval
        self.delivered = 0
        protocol = sim.spec.name
        # class -> (base, per_byte, per_entry, entry counter): what a message received,
        # a record persisted or a message sent costs (see consensus.costs).
        default: Row = (costs.message, costs.message_per_byte, 0.0, _none)
        self._default = default
        self._rows = _compile(sim.spec.messages, default, lambda n: costs.input_row(protocol, n))
        request = costs.input_row(protocol, "request")
        self.request_cost = costs.request if request is None else request.base
        tick = costs.input_row(protocol, "tick")
        self.tick_cost = costs.tick if tick is None else tick.base
        record_default: Row = (costs.record, 0.0, 0.0, _none)
        self._record_default = record_default
        self._records = _compile(
            sim.spec.records, record_default, lambda n: costs.record_row(protocol, n)
        )
        self._record_bytes = any(r[1] for r in self._records.values())
        # Whether persisting costs anything but its fsync (else skip the records loop).
        self._record_costs = any(any(r[:3]) for r in (record_default, *self._records.values()))
        send_default: Row = (costs.send, costs.send_per_byte, 0.0, _none)
        self._send_default = send_default
        self._sends = _compile(
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
        self._packing = config.pack_proposals > 1
        self._client = costs.client
        self._apply = costs.apply
        self._send = costs.send
        self._send_per_byte = costs.send_per_byte
        self._reply = costs.reply
        self._fsync = costs.fsync
        self.servers = [_Server() for _ in sim.node_ids]
        # Client hosts (costs.client): answers waiting, hosts busy; CPU seconds spent.
        self._client_queue: dict[int, list[tuple[float, tuple[Any, ...]]]] = {}
        self._client_busy: set[int] = set()
        self.client_cpu = 0.0
        # One machine's cores (costs.cores): when each is next free; empty: no limit.
        self._core_free: list[float] = [0.0] * costs.cores
        self._client_core: dict[int, int] = {}  # the core each client host ran on last
        self._nodes = sim._nodes
        self._blocked = sim.network.blocked  # mutated in place, never replaced
        self._heap, self._seq = sim._heap, sim._seq

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
            host_of = self.sim._nodes_host
            last: list[Any] = [None, b""]  # a broadcast encodes its message once

            def send(dst: int, message: Any) -> None:
                if message is last[0]:
                    data = last[1]
                else:
                    data = encode(message)
                    last[0], last[1] = message, data
                size = len(data)
                host = host_of(src)
                if host is not None:
                    host.sent_bytes[type(message).__name__] += size
                payload = data if on_wire else ((message, size) if pairs else message)
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

    def _take_core(self, last: int, start: float, cost: float) -> tuple[int, float]:
        """A core for ``cost`` seconds of CPU from ``start`` on: the one its owner ran
        on last if free by then (busy work stays on its core), else the first free."""
        free = self._core_free
        if last < 0 or free[last] > start:
            last = min(range(len(free)), key=free.__getitem__)
            if free[last] > start:
                start = free[last]
        free[last] = start + cost
        return last, start

    def client_answer(self, client_id: int, args: tuple[Any, ...], arrives: float) -> None:
        """An answer for client ``client_id`` reaches its host at ``arrives``; the
        simulator's ``_answer(*args)`` runs once the host has handled it.

        A host handles answers in batches, as a load generator's client library
        does a frame of replies: everything that arrived while it was busy is
        handled together, ``costs.client`` each, and completes (its client's next
        request leaves) when the batch ends."""
        hosts = self.costs.client_hosts
        if not hosts and not self._core_free:
            # A host per client, with a core of its own: one answer at a time, at once.
            heapq.heappush(
                self._heap,
                (arrives + self._client, next(self._seq), _CALL, self.sim._answer, args, None),
            )
            self.client_cpu += self._client
            return
        host = client_id % hosts if hosts else client_id
        queue = self._client_queue.setdefault(host, [])
        queue.append((arrives, args))
        if host not in self._client_busy:
            self._client_busy.add(host)
            heapq.heappush(
                self._heap, (arrives, next(self._seq), _CALL, self._client_batch, (host,), None)
            )

    def _client_batch(self, host: int) -> None:
        # A client host takes every answer that has arrived as one batch.
        now = self.sim.now
        queue = self._client_queue[host]
        ready = [args for arrives, args in queue if arrives <= now]
        self._client_queue[host] = [item for item in queue if item[0] > now]
        if not ready:  # the first answer is still on its way
            first = min(arrives for arrives, _ in queue)
            heapq.heappush(
                self._heap, (first, next(self._seq), _CALL, self._client_batch, (host,), None)
            )
            return
        cost = self.costs.client * len(ready)
        start = now
        if self._core_free:  # one machine's cores (costs.cores)
            core, start = self._take_core(self._client_core.get(host, -1), now, cost)
            self._client_core[host] = core
        self.client_cpu += cost
        heapq.heappush(
            self._heap,
            (start + cost, next(self._seq), _CALL, self._client_done, (host, ready), None),
        )

    def _client_done(self, host: int, answers: list[tuple[Any, ...]]) -> None:
        answer = self.sim._answer
        for args in answers:
            answer(*args)
        if self._client_queue.get(host):
            self._client_batch(host)  # what arrived meanwhile: the next batch, now
        else:
            self._client_busy.discard(host)

    def crashed(self, node_id: int) -> None:
        self.servers[node_id].reset(self.sim.now)

    # -- the link -----------------------------------------------------------------------

    def _transmit(self, src: int, dst: int, payload: Any, size: int, message: Any) -> None:
        # One message, outside a batch (a harness call, a restart).
        self._release(src, [(dst, payload, size, message)], self.sim.now)

    def _release(self, src: int, outbox: list[tuple[int, Any, int, Any]], now: float) -> None:
        """Send what a batch held, in order, through ``src``'s link."""
        sim = self.sim
        net = sim.network
        heap, seq, push = sim._heap, sim._seq, heapq.heappush
        bandwidth = self.bandwidth
        server = self.servers[src]
        link_free = server.link_free
        link_time = 0.0
        sent = 0
        clean = net.clean and not net.blocked
        sample, fifo, last = net._sample, net.fifo, net.link_last[src]
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
            row = self._row(server, now)
            row[_BYTES] += sent
            row[_LINK] += link_time

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
        if incarnation != node.incarnation or node.host is None:
            return  # the node crashed meanwhile: what the batch held is lost
        server = self.servers[node_id]
        server.wake = False
        if held is not None:
            outbox, replies = held
            if outbox:
                self._release(node_id, outbox, now)
            on_reply = self.sim._on_reply
            for waiter, answer in replies:
                on_reply(waiter, answer)
            if node.host is None:
                return  # an answer's callback crashed the node
        if server.messages or server.requests:
            self._serve(node, server, now)
            return
        deadline = node.host.replica.next_deadline()
        if deadline is not None and deadline <= now:
            self._serve(node, server, now)
        else:
            self.arm(node, deadline)

    def _wake_at(self, node: _Node, server: _Server) -> None:
        server.wake = True
        heapq.heappush(
            self.sim._heap,
            (server.free_at, next(self.sim._seq), _DONE, node.id, node.incarnation, None),
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
        if deadline < self.sim.now:
            deadline = self.sim.now
        if deadline < node.timer_at:
            node.timer_at = deadline
            heapq.heappush(
                self.sim._heap,
                (deadline, next(self.sim._seq), _TIMER, node.id, node.incarnation, None),
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
        cost = self._batch + self._wakeup if woke else self._batch
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
            items = []
            for _ in range(take):
                request, waiter, arrived = requests.popleft()
                if arrived != now:
                    waited.append(arrived)
                items.append((request, waiter))
            cost += self.request_cost * take
            taken += take
            if self._packing and take > 1:
                results = [host.accept_many(now, items)]
            else:  # accept_many without packing, without its merging of every result
                results = [host.accept(now, request, waiter) for request, waiter in items]
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
            self._waited(server, waited, now)

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
        cost = self._batch + self._wakeup + base + per_byte * size
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
        writes = out.persist or out.compact is not None
        early: list[tuple[int, Any, int, Any]] = []
        early_cpu = 0.0
        if out.eager and writes:
            # As the runtime does: eager messages go out before the node's own disk
            # write, which overlaps their round trip (the replica contract's step 0).
            out = _merged(out)
            host.send_now(out.eager)
            out.eager = None
            early, server.outbox = server.outbox, []
            cost += self._outbox_cost(early)
            early_cpu = cost
        if self._record_costs and writes:
            cost += self._records_cost(out)
        if self._apply and out.committed:
            cost += self._apply * _commands(out.committed)
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
            server.core, start = self._take_core(server.core, now, cost)
        end = start + cost + disk
        server.free_at = end
        b = int(now * self._per_interval)
        row = server.row if b == server.row_bin else self._bin(server, b)
        if end < (b + 1) * self.interval:
            row[_CPU] += cost
            row[_FSYNC] += disk
            row[_WAIT] += start - now
        else:  # a batch that runs into the next interval: split its time
            self._spread(server, _WAIT, now, start)
            self._spread(server, _CPU, start, start + cost)
            self._spread(server, _FSYNC, start + cost, end)
        row[_BATCHES] += 1
        row[_INPUTS] += taken
        row[_FSYNCS] += fsyncs
        row[_RECORDS] += stats.records_written - records
        if queued > row[_QMAX]:
            row[_QMAX] = queued
        if early:
            if end > start + early_cpu:
                heapq.heappush(
                    self._heap,
                    (start + early_cpu, next(self._seq), _EARLY, node.id, node.incarnation, early),
                )
            else:
                outbox[:0] = early
        if outbox or replies:
            server.outbox, server.replies = [], []
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

    def _row(self, server: _Server, t: float) -> list[float]:
        # The counts of the interval holding time t.
        b = int(t * self._per_interval)
        return server.row if b == server.row_bin else self._bin(server, b)

    @staticmethod
    def _bin(server: _Server, b: int) -> list[float]:
        row = server.bins.get(b)
        if row is None:
            row = server.bins[b] = [0.0] * len(STAT_FIELDS)
        if b >= server.row_bin:
            server.row_bin, server.row = b, row
        return row

    def _spread(self, server: _Server, field: int, start: float, end: float) -> None:
        # Add the time from start to end to field, interval by interval.
        per, width = self._per_interval, self.interval
        first, last = int(start * per), int(end * per)
        if first == last:
            self._bin(server, first)[field] += end - start
            return
        self._bin(server, first)[field] += (first + 1) * width - start
        for b in range(first + 1, last):
            self._bin(server, b)[field] += width
        self._bin(server, last)[field] += end - last * width

    def _waited(self, server: _Server, arrivals: list[float], now: float) -> None:
        # Each input's wait [arrived, now) adds to the queue's area, interval by interval.
        per, width = self._per_interval, self.interval
        last = int(now * per)
        row = self._bin(server, last)
        for arrived in arrivals:
            first = int(arrived * per)
            if first == last:
                row[_AREA] += now - arrived
                continue
            self._bin(server, first)[_AREA] += (first + 1) * width - arrived
            for b in range(first + 1, last):
                self._bin(server, b)[_AREA] += width
            row[_AREA] += now - last * width

    def node_bins(self) -> list[dict[str, Any]]:
        """Counts per node and ``stats_interval`` (see the theory of operation), one
        row per interval with anything counted; inputs still queued count up to now."""
        now = self.sim.now
        rows = []
        for node_id, server in enumerate(self.servers):
            queued = [t for _, _, t in server.messages] + [t for _, _, t in server.requests]
            bins = {b: list(row) for b, row in server.bins.items()}
            if queued:
                # Count the waits so far without changing the live counts.
                live, server.bins = server.bins, bins
                try:
                    self._waited(server, queued, now)
                finally:
                    server.bins = live
            for b in sorted(bins):
                if not any(bins[b]):
                    continue
                row: dict[str, Any] = {"node": node_id, "time": b * self.interval}
                row.update(zip(STAT_FIELDS, bins[b], strict=True))
                rows.append(row)
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


Row = tuple[float, float, float, Callable[[Any], int]]


def _none(message: Any) -> int:
    return 0  # the entry counter of a row without a per-entry cost


def _compile(
    classes: tuple[type, ...], default: Row, lookup: Callable[[str], CostRow | None]
) -> dict[type, Row]:
    """Each class's cost row as a tuple, with its entry counter (see consensus.costs)."""
    rows: dict[type, Row] = {}
    for cls in classes:
        row = lookup(cls.__name__)
        if row is None:
            rows[cls] = default
        else:
            count = entry_counter(cls, row.entries) if row.per_entry else _none
            rows[cls] = (row.base, row.per_byte, row.per_entry, count)
    return rows


def entry_counter(cls: type, entries: str) -> Callable[[Any], int]:
    """What ``per_entry`` counts in a ``cls``: a field's length (or integer value),
    or with ``"requests"`` the client requests it carries as objects."""
    names = set(attrs.fields_dict(cls)) if attrs.has(cls) else set()
    if entries != "requests":
        if names and entries not in names:
            raise ConfigError(f"costs: {cls.__name__} has no field {entries!r} to count")

        def field(message: Any) -> int:
            value = getattr(message, entries)
            return value if type(value) is int else len(value)

        return field
    fields = [name for name in ("entries", "payloads", "accepted", "payload") if name in names]

    def requests(message: Any) -> int:
        n = 0
        for name in fields:
            value = getattr(message, name)
            if type(value) is tuple:  # entries, payloads, pvalues
                for item in value:
                    n += _requests_of(getattr(item, "payload", item))
            elif value is not None:  # one payload, or one pvalue
                n += _requests_of(getattr(value, "payload", value))
        return n

    return requests


def requests_carried(message: Any) -> int:
    """The client requests ``message`` (or a record) carries as objects."""
    return entry_counter(type(message), "requests")(message)


def _requests_of(payload: Any) -> int:
    kind = type(payload)
    if kind is Request:
        return 1
    if kind is Batch:
        return len(payload.requests)
    return 0


def _commands(committed: list[Any]) -> int:
    """Client commands in committed entries (a packed entry of k requests counts k)."""
    n = 0
    for entry in committed:
        payload = entry.payload
        kind = type(payload)
        if kind is Request:
            command = payload.command
            n += command.count if type(command) is PackedBatch else 1
        elif kind is Batch:
            for request in payload.requests:
                command = request.command
                n += command.count if type(command) is PackedBatch else 1
    return n
