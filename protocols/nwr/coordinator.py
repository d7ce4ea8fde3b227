"""The coordinator: one client operation, from its read or write quorum to its answer.

Theory of operation
-------------------
Any node coordinates the requests its clients send it.  The key's replicas
are the first ``n`` nodes of its *preference list*: the ring of node ids,
starting at a position hashed from the key (CRC-32, the same on every node
and every run); the nodes after them are its fallbacks.

An operation goes through at most two phases, each asking every replica and
waiting for the first ``r`` replies (read) or ``w`` acknowledgements
(write):

* ``get``: read; the answer is the newest version's value.  Then read
  repair: ``off``; ``async`` (answer, then send the newest version to the
  replicas that replied with older ones); ``blocking`` (first a *repair*
  phase: a write of the newest version until ``w`` replicas hold it).
* ``put``: with ``clock = "timestamp"``, a write at once, versioned by this
  node's clock; with ``"version"``, a read first, then a write one version
  above the newest seen.
* ``append``, ``compare-and-set``, ``delete``: a read, the new value computed
  here, then a write.  Nothing stops two of them from reading the same value
  and both writing: a read-modify-write is not atomic without consensus.

Replicas that stay silent are asked again every ``resend``; with
``sloppy``, each is replaced once by the next unused fallback, which gets
the replica's name as a hint and counts toward the quorum.  Without a
quorum after ``timeout`` the request is rejected (``unavailable``) and the
client retries at another node, a second copy of the operation.  A version
names the request that wrote it, so a retry whose read phase finds its
first attempt's version finishes that write instead of writing again; a
retry without a read phase (a timestamped put), or whose first attempt was
already overwritten, writes again.

This node is often one of the replicas; it answers itself at once,
through ``Local``.  Invariant: an operation is answered or rejected once,
then forgotten; replies to operations no longer pending are dropped.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from typing import Any, Protocol

import attrs

from consensus.commands import Append, CompareAndSet, Delete, Get, PackedBatch, Put, Request
from consensus.replica import Outputs
from consensus.statemachine import unpack
from protocols.nwr.messages import ReadReply, ReadRequest, Version, WriteAck, WriteRequest
from protocols.nwr.options import NwrOptions
from protocols.nwr.store import newer

__all__ = ["Coordinator", "Local", "Pending", "preference_list"]


def preference_list(key: str, members: tuple[int, ...]) -> tuple[int, ...]:
    """Every member in ring order from ``key``'s position: replicas first, then fallbacks."""
    start = zlib.crc32(key.encode()) % len(members)
    return members[start:] + members[:start]


class Local(Protocol):
    """This node as a replica, for the operations it coordinates."""

    node_id: int
    counters: Counter[str]

    def local_read(self, key: str) -> tuple[str | None, Version | None]: ...

    def local_write(
        self, key: str, value: str | None, version: Version, hint: int | None, out: Outputs
    ) -> None: ...


@attrs.define
class Pending:
    """One operation in flight at its coordinator."""

    op: int
    request: Request
    key: str
    started: float
    #: "read", "write" or "repair" (blocking read repair's write-back).
    phase: str = "read"
    #: Nodes asked in this phase -> the replica each stands in for (itself, or a hint).
    asked: dict[int, int] = attrs.Factory(dict)
    replies: dict[int, tuple[str | None, Version | None]] = attrs.Factory(dict)
    acks: set[int] = attrs.Factory(set)
    #: Fallbacks not used yet (sloppy quorums).
    spare: list[int] = attrs.Factory(list)
    #: Replicas already replaced by a fallback in this phase.
    replaced: set[int] = attrs.Factory(set)
    value: str | None = None
    version: Version | None = None
    result: Any = None
    resend_at: float = 0.0


class Coordinator:
    """The operations this node coordinates (see the theory of operation)."""

    def __init__(
        self, local: Local, members: tuple[int, ...], options: NwrOptions, rng: random.Random
    ) -> None:
        self.local = local
        self.node_id = local.node_id
        self.members = members
        self.options = options
        self.n = min(options.n, len(members))
        #: This node's clock is off by this much (``clock = "timestamp"``).
        self.offset = rng.uniform(-options.clock_skew, options.clock_skew)
        # Operation ids unique across incarnations: a seeded nonce, then a counter.
        self._next_op = (rng.getrandbits(30) << 31) + 1
        self.ops: dict[int, Pending] = {}
        self.counters = local.counters

    # -- starting ----------------------------------------------------------------------

    def begin(self, now: float, request: Request, out: Outputs) -> None:
        command = request.command
        if isinstance(command, PackedBatch):  # a host's batch: each request on its own
            for inner in unpack(command):
                self.begin(now, inner, out)
            return
        if not isinstance(command, (Get, Put, Append, CompareAndSet, Delete)):
            out.reject(request, "unsupported")
            return
        op = self._next_op
        self._next_op += 1
        order = preference_list(command.key, self.members)
        p = Pending(op=op, request=request, key=command.key, started=now)
        self.ops[op] = p
        replicas = order[: self.n]
        if isinstance(command, Put) and self.options.clock == "timestamp":
            p.value, p.result = command.value, None
            p.version = self._version(now, None, request)
            self._phase(now, p, "write", replicas, out)
        else:
            self._phase(now, p, "read", replicas, out)

    def _version(self, now: float, seen: Version | None, request: Request) -> Version:
        # The request's identity breaks ties and makes a retry recognizable.
        if self.options.clock == "timestamp":
            return (now + self.offset, request.client_id, request.seq)
        return ((seen[0] if seen is not None else 0.0) + 1.0, request.client_id, request.seq)

    def _phase(self, now: float, p: Pending, phase: str, nodes: Any, out: Outputs) -> None:
        p.phase, p.asked, p.replaced = phase, {n: n for n in nodes}, set()
        p.spare = list(preference_list(p.key, self.members)[self.n :])
        p.resend_at = now + self.options.resend
        for node in nodes:
            if node != self.node_id:
                out.send(node, self._request(p, node))
        if self.node_id in p.asked:  # this node is a replica: its own answer, at once
            self._ask_self(now, p, self.node_id, out)

    def _request(self, p: Pending, node: int) -> Any:
        if p.phase == "read":
            return ReadRequest(op=p.op, key=p.key)
        assert p.version is not None
        hint = p.asked[node]
        return WriteRequest(
            op=p.op,
            key=p.key,
            value=p.value,
            version=p.version,
            hint=None if hint == node else hint,
        )

    def _ask_self(self, now: float, p: Pending, intended: int, out: Outputs) -> None:
        if p.phase == "read":
            self._replied(now, p, self.node_id, self.local.local_read(p.key), out)
        else:
            assert p.version is not None
            hint = None if intended == self.node_id else intended
            self.local.local_write(p.key, p.value, p.version, hint, out)
            self._acked(now, p, self.node_id, out)

    # -- replies ------------------------------------------------------------------------

    def on_read_reply(self, now: float, src: int, m: ReadReply, out: Outputs) -> None:
        p = self.ops.get(m.op)
        if p is not None and p.phase == "read" and src in p.asked:
            self._replied(now, p, src, (m.value, m.version), out)

    def on_write_ack(self, now: float, src: int, m: WriteAck, out: Outputs) -> None:
        p = self.ops.get(m.op)
        if p is not None and p.phase != "read" and src in p.asked:
            self._acked(now, p, src, out)

    def _replied(
        self,
        now: float,
        p: Pending,
        src: int,
        reply: tuple[str | None, Version | None],
        out: Outputs,
    ) -> None:
        p.replies[src] = reply
        if len(p.replies) == self.options.r:
            self._after_read(now, p, out)

    def _acked(self, now: float, p: Pending, src: int, out: Outputs) -> None:
        p.acks.add(src)
        if len(p.acks) >= self.options.w:
            self._answer(p, out)

    def _after_read(self, now: float, p: Pending, out: Outputs) -> None:
        newest: tuple[str | None, Version | None] = (None, None)
        for reply in p.replies.values():
            if newer(reply[1], newest[1]):
                newest = reply
        value, version = newest
        command = p.request.command
        if isinstance(command, Get):
            p.result = value
            self._repair(now, p, newest, out)
            return
        if isinstance(command, (Put, Append)):
            p.value = command.value if isinstance(command, Put) else (value or "") + command.value
            p.result = None
        elif isinstance(command, CompareAndSet):
            p.result = value == command.expected
            p.value = command.new
        elif isinstance(command, Delete):
            p.result = value is not None
            p.value = None
        mine = (p.request.client_id, p.request.seq)
        earlier = [r for r in p.replies.values() if r[1] is not None and r[1][1:] == mine]
        if earlier:
            # An earlier attempt of this very request was written (a client retry):
            # finish that write instead of writing the request a second time.
            self.counters["retries_recognized"] += 1
            p.result = None if isinstance(command, (Put, Append)) else True
            p.value, p.version = earlier[0]
            self._phase(now, p, "repair", preference_list(p.key, self.members)[: self.n], out)
            return
        if p.result is False:  # a compare-and-set that failed, a delete of nothing
            self._repair(now, p, newest, out)
            return
        p.version = self._version(now, version, p.request)
        replicas = preference_list(p.key, self.members)[: self.n]
        self._phase(now, p, "write", replicas, out)

    def _repair(
        self, now: float, p: Pending, newest: tuple[str | None, Version | None], out: Outputs
    ) -> None:
        """Read repair (see the theory of operation), then the answer."""
        value, version = newest
        mode = self.options.read_repair
        stale = [n for n, reply in p.replies.items() if newer(version, reply[1])]
        if mode == "off" or version is None or not stale:
            self._answer(p, out)
            return
        self.counters["read_repairs"] += 1
        if mode == "async":
            self._answer(p, out)
            for node in stale:
                hint = p.asked[node]
                if node == self.node_id:
                    self.local.local_write(p.key, value, version, None, out)
                else:
                    write = WriteRequest(
                        op=0,
                        key=p.key,
                        value=value,
                        version=version,
                        hint=None if hint == node else hint,
                    )
                    out.send(node, write)
            return
        # Blocking: the replicas that already hold the newest version count toward w.
        holders = {n for n in p.replies if n not in stale}
        p.value, p.version = value, version
        self._phase(now, p, "repair", stale, out)
        p.asked.update({n: n for n in holders})
        p.acks |= holders
        if len(p.acks) >= self.options.w and p.op in self.ops:
            self._answer(p, out)
        elif p.op in self.ops:
            # Not enough replied replicas: ask the replicas that did not reply too.
            rest = [n for n in preference_list(p.key, self.members)[: self.n] if n not in p.asked]
            for node in rest:
                p.asked[node] = node
                if node != self.node_id:
                    out.send(node, self._request(p, node))

    def _answer(self, p: Pending, out: Outputs) -> None:
        if self.ops.pop(p.op, None) is not None:
            out.answer(p.request, p.result)

    # -- time ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if not self.ops:
            return None
        timeout = self.options.timeout
        return min(min(p.resend_at, p.started + timeout) for p in self.ops.values())

    def tick(self, now: float, out: Outputs) -> None:
        for p in list(self.ops.values()):
            if now >= p.started + self.options.timeout:
                del self.ops[p.op]
                self.counters["timeouts"] += 1
                out.reject(p.request, "unavailable")
            elif now >= p.resend_at:
                self._resend(now, p, out)

    def _resend(self, now: float, p: Pending, out: Outputs) -> None:
        answered = p.replies if p.phase == "read" else p.acks
        silent = [n for n in p.asked if n not in answered]
        if self.options.sloppy:
            for node in silent:
                intended = p.asked[node]
                if intended in p.replaced or not p.spare:
                    continue
                p.replaced.add(intended)
                fallback = p.spare.pop(0)
                self.counters["fallbacks"] += 1
                p.asked[fallback] = intended
                if fallback == self.node_id:
                    self._ask_self(now, p, intended, out)
                else:
                    out.send(fallback, self._request(p, fallback))
                if p.op not in self.ops:
                    return
        for node in silent:
            out.send(node, self._request(p, node))
        p.resend_at = now + self.options.resend
