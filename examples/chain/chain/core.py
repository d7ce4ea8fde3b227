"""Chain replication on a fixed chain: the replica.

Theory of operation
-------------------
The members, in id order, form a chain: the first is the *head*, the last
the *tail* (van Renesse & Schneider, "Chain Replication for Supporting High
Throughput and Availability", OSDI 2004, section 2).

* **Updates** enter at the head.  It appends the request to its log,
  persists it and forwards it to its successor; every node does the same
  with what its predecessor forwards, so an update flows down the chain.
* **Commit** happens at the tail: an entry the tail stores is committed
  (every node stores it by then).  The tail acknowledges to its
  predecessor, and the acknowledgement flows back up the chain (section 3's
  acks), each node learning that its entries up to ``committed`` are
  committed and applying them.  The head answers the client after applying.
* **Queries** go to the tail, which answers from its state: everything it
  applied is committed, and every update answered was applied there first,
  so reads are linearizable without a round of messages.
* **Loss and restarts**: every node but the tail probes its successor every
  ``heartbeat`` while the successor may be missing entries or it does not yet
  know everything committed; the reply (an ``Ack``) carries both.  A node
  restarts from its stored entries (the tail: all of them are committed).

Not implemented: the paper's *master*, which removes a failed node and
splices the chain (section 3).  The chain is fixed, so a write needs every
node up and connected: the plugin declares it lacks ``failover`` and
``quorum`` (``ProtocolSpec.lacks``), and the conformance kit skips the rules
that need them.

Invariants: a node's log is a prefix of its predecessor's (only the head
creates entries, and every node only extends its log contiguously with what
its predecessor sent); ``applied <= commit <= len(log)``; at the tail
``commit == len(log)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from chain.messages import Ack, Forward, Stored
from consensus import Committed, Outputs, ReadReady, Replica, ReplicaContext, Request


@attrs.frozen(kw_only=True)
class ChainOptions:
    heartbeat: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    max_batch: int = attrs.field(default=64, validator=attrs.validators.ge(1))


class ChainReplica(Replica):
    """One node of the chain; build it with ``ChainReplica(ctx, recovered_records)``."""

    supports_reads = True

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any] = ()) -> None:
        super().__init__(ctx)
        self.options = ctx.options_as(ChainOptions)
        chain = ctx.members  # sorted: the chain's order
        position = chain.index(self.node_id)
        self.head, self.tail = chain[0], chain[-1]
        self.predecessor = chain[position - 1] if position > 0 else None
        self.successor = chain[position + 1] if position + 1 < len(chain) else None
        self.log: list[Any] = []
        for record in records:
            if isinstance(record, Stored) and record.index == len(self.log) + 1:
                self.log.append(record.payload)
        # Invariant: applied <= commit <= len(log); the tail commits what it stores.
        self.commit = len(self.log) if self.is_tail else 0
        self.applied = 0
        #: How many entries the successor acknowledged storing.
        self.succ_stored = 0
        self._deadline: float | None = None

    @property
    def is_head(self) -> bool:
        return self.node_id == self.head

    @property
    def is_tail(self) -> bool:
        return self.node_id == self.tail

    def leader(self) -> int | None:
        return self.head  # where updates go

    # -- inputs ------------------------------------------------------------------------

    def start(self, now: float) -> Outputs:
        out = Outputs()
        self._emit_committed(out)  # the tail re-applies its log; others learn from acks
        if self.successor is not None:
            self._deadline = now + self.options.heartbeat
        return out

    def next_deadline(self) -> float | None:
        return self._deadline

    def tick(self, now: float) -> Outputs:
        out = Outputs()
        if self.successor is not None:
            if self.succ_stored < len(self.log) or self.commit < len(self.log):
                self._forward(self.succ_stored + 1, out)  # resend, or probe for an Ack
            self._deadline = now + self.options.heartbeat
        return out

    def propose(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        if not self.is_head:
            out.reject(request, "not_leader", self.head)
            return out
        index = self._append([request], out)
        out.place(request, index)
        if self.successor is not None:
            out.send(self.successor, Forward(first=index, payloads=(request,)))
        else:
            self._commit_to(index, out)  # a chain of one
        return out

    def read(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        if not self.is_tail:
            out.reject(request, "not_tail", self.tail)
            return out
        out.reads.append(ReadReady(client_id=request.client_id, seq=request.seq, index=self.commit))
        return out

    def step(self, now: float, src: int, message: Any) -> Outputs:
        out = Outputs()
        if isinstance(message, Forward) and src == self.predecessor:
            self._on_forward(message, out)
        elif isinstance(message, Ack) and src == self.successor:
            self._on_ack(message, out)
        elif isinstance(message, (Forward, Ack)):
            self.counters["dropped_not_neighbour"] += 1
        else:
            self.counters["dropped_unknown"] += 1
        return out

    # -- down the chain ----------------------------------------------------------------

    def _on_forward(self, m: Forward, out: Outputs) -> None:
        last = len(self.log)
        if m.first > last + 1:
            self.counters["dropped_gaps"] += 1  # overtaken by a later message: resent later
        else:
            new = list(m.payloads[last + 1 - m.first :])
            if new:
                first = self._append(new, out)
                if self.successor is not None:
                    out.send(self.successor, Forward(first=first, payloads=tuple(new)))
        if self.is_tail:
            self._commit_to(len(self.log), out)
        assert self.predecessor is not None
        out.send(self.predecessor, Ack(stored=len(self.log), committed=self.commit))

    def _append(self, payloads: list[Any], out: Outputs) -> int:
        """Append and persist ``payloads``; the index of the first."""
        first = len(self.log) + 1
        for offset, payload in enumerate(payloads):
            self.log.append(payload)
            out.persist.append(Stored(index=first + offset, payload=payload))
        return first

    def _forward(self, first: int, out: Outputs) -> None:
        assert self.successor is not None
        payloads = tuple(self.log[first - 1 : first - 1 + self.options.max_batch])
        out.send(self.successor, Forward(first=first, payloads=payloads))

    # -- back up the chain -------------------------------------------------------------

    def _on_ack(self, m: Ack, out: Outputs) -> None:
        if m.stored > self.succ_stored:
            self.succ_stored = min(m.stored, len(self.log))
        before = self.commit
        self._commit_to(min(m.committed, len(self.log)), out)
        if self.commit > before and self.predecessor is not None:
            out.send(self.predecessor, Ack(stored=len(self.log), committed=self.commit))

    def _commit_to(self, index: int, out: Outputs) -> None:
        if index > self.commit:
            self.commit = index
            self._emit_committed(out)

    def _emit_committed(self, out: Outputs) -> None:
        for index in range(self.applied + 1, self.commit + 1):
            out.committed.append(Committed(index=index, payload=self.log[index - 1]))
        self.applied = max(self.applied, self.commit)

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "leader": self.head,
            "role": "head" if self.is_head else "tail" if self.is_tail else "middle",
            "commit_index": self.commit,
            "last_index": len(self.log),
        }
