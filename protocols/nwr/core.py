"""NWR: leaderless quorum replication (Dynamo-style), as a sans-I/O plugin.

Theory of operation
-------------------
There is no leader and no log.  Every node plays two roles:

* **replica** of the keys whose preference list starts with it or reaches
  it within ``n`` nodes: it keeps the newest version of each (``store``),
  answers ``ReadRequest`` with it, stores a ``WriteRequest`` if it is newer
  (last writer wins) and acknowledges it either way, once durable; a write
  carrying a hint is held for another replica and handed off later;
* **coordinator** of the requests its clients send it (``coordinator``): a
  read quorum of ``r`` replies, a write quorum of ``w`` acknowledgements.

With ``w + r > n`` every read quorum overlaps every write quorum of the same
key, so a read that starts after a write completed meets at least one
replica holding it.  That alone is not linearizability: a read may see a
write still in progress that a later read misses (unless reads write back,
``read_repair = "blocking"``), clock skew reorders writes
(``clock = "timestamp"``), a sloppy quorum writes where reads do not look,
and a compare-and-set is a read and a separate write.

How it meets the framework's contract: requests are answered by the
coordinator itself, with the value its quorum returned
(``Outputs.answer``), not by applying a replicated log, so the host's
session table never sees them (a retried write is written again, with a new
version).  Each node still reports its own replica data to its host's state
machine, as a private sequence of entries (``Committed``, from a session of
its own, ``-(node_id + 1)``): every time a key's newest version changes
here, a ``Put`` of the new value (or a ``Delete`` for a tombstone).  So
``Simulator.host(n).sm.data`` is node ``n``'s replica data, as for every
other plugin, and the end-of-run durability check reads it the same way.
These entries are this node's alone: indexes differ between nodes, and
nothing is agreed.

Durable: the store's records (``Stored``, ``Hinted``, ``HintDone``).  Volatile:
operations in flight (a crash drops them; their clients time out).
"""

from __future__ import annotations

from typing import Any, Sequence

from consensus.commands import Delete, Put, Request
from consensus.config import ConfigError
from consensus.replica import Committed, Outputs, Replica, ReplicaContext
from protocols.nwr.coordinator import Coordinator
from protocols.nwr.messages import (
    Handoff,
    HandoffAck,
    HintDone,
    Hinted,
    ReadReply,
    ReadRequest,
    Stored,
    Version,
    WriteAck,
    WriteRequest,
)
from protocols.nwr.options import NwrOptions
from protocols.nwr.store import Store

__all__ = ["NwrReplica"]


class NwrReplica(Replica):
    """One node of nwr: a replica of the keys that map to it, and the coordinator
    of its clients' requests (see the theory of operation)."""

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any]) -> None:
        super().__init__(ctx)
        self.options = ctx.options_as(NwrOptions)
        if self.options.n > len(ctx.members):
            raise ConfigError(
                f"options.n: {self.options.n} replicas per key, but the cluster has"
                f" {len(ctx.members)} nodes"
            )
        self.store = Store(records)
        self.coordinator = Coordinator(self, ctx.members, self.options, ctx.rng)
        # This node's replica data as entries for its own state machine (see above).
        self._session = -(self.node_id + 1)
        self._mirrored = 0
        self._handoff_at: float | None = None

    def leader(self) -> int | None:
        return None

    # -- inputs ------------------------------------------------------------------------

    def start(self, now: float) -> Outputs:
        out = Outputs()
        for key in sorted(self.store.data):
            self._mirror(key, out)
        self._arm_handoff(now)
        return out

    def next_deadline(self) -> float | None:
        ops = self.coordinator.next_deadline()
        handoff = self._handoff_at if self.store.hints else None
        if ops is None:
            return handoff
        return ops if handoff is None else min(ops, handoff)

    def tick(self, now: float) -> Outputs:
        out = Outputs()
        self.coordinator.tick(now, out)
        if self.store.hints and self._handoff_at is not None and now >= self._handoff_at:
            for target, held in self.store.hints.items():
                for key, (value, version) in held.items():
                    out.send(target, Handoff(key=key, value=value, version=version))
            self._handoff_at = now + self.options.handoff_interval
        return out

    def propose(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        self.coordinator.begin(now, request, out)
        return out

    def step(self, now: float, src: int, message: Any) -> Outputs:
        out = Outputs()
        if isinstance(message, ReadRequest):
            value, version = self.local_read(message.key)
            out.send(src, ReadReply(op=message.op, key=message.key, value=value, version=version))
        elif isinstance(message, ReadReply):
            self.coordinator.on_read_reply(now, src, message, out)
        elif isinstance(message, WriteRequest):
            self.local_write(message.key, message.value, message.version, message.hint, out)
            if message.op:
                out.send(src, WriteAck(op=message.op))
            if message.hint is not None and message.hint != self.node_id:
                self._arm_handoff(now)
        elif isinstance(message, WriteAck):
            self.coordinator.on_write_ack(now, src, message, out)
        elif isinstance(message, Handoff):
            self.local_write(message.key, message.value, message.version, None, out)
            out.send(src, HandoffAck(key=message.key, version=message.version))
        elif isinstance(message, HandoffAck):
            if self.store.handed_off(src, message.key, message.version):
                self.counters["handoffs"] += 1
                out.persist.append(HintDone(target=src, key=message.key, version=message.version))
        else:
            self.counters["dropped_unknown"] += 1
        return out

    # -- this node as a replica ------------------------------------------------------------

    def local_read(self, key: str) -> tuple[str | None, Version | None]:
        return self.store.read(key)

    def local_write(
        self, key: str, value: str | None, version: Version, hint: int | None, out: Outputs
    ) -> None:
        """Store a write here (or hold it for ``hint``), persisting what changed."""
        if hint is not None and hint != self.node_id:
            if self.store.hint(hint, key, value, version):
                self.counters["hints_stored"] += 1
                out.persist.append(Hinted(target=hint, key=key, value=value, version=version))
            return
        if self.store.write(key, value, version):
            out.persist.append(Stored(key=key, value=value, version=version))
            self._mirror(key, out)
        else:
            self.counters["writes_older_ignored"] += 1  # last writer wins: dropped silently

    def _mirror(self, key: str, out: Outputs) -> None:
        value = self.store.data[key][0]
        command: Any = Delete(key=key) if value is None else Put(key=key, value=value)
        self._mirrored += 1
        request = Request(client_id=self._session, seq=self._mirrored, command=command)
        out.committed.append(Committed(index=self._mirrored, payload=request))

    def _arm_handoff(self, now: float) -> None:
        if self._handoff_at is None or self._handoff_at <= now:
            self._handoff_at = now + self.options.handoff_interval

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "leader": None,
            "keys": len(self.store.data),
            "hints": sum(len(held) for held in self.store.hints.values()),
            "pending": len(self.coordinator.ops),
        }
