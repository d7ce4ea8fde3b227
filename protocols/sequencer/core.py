"""A fixed-leader sequencer: the simplest replicated log, as a baseline.

Theory of operation
-------------------
Node ``min(members)`` is the leader forever.  It appends each proposal to its
log, persists it and sends it to every follower; a follower persists the
entries that extend its log contiguously and acknowledges its last index.  An
entry is committed once a majority (the leader included) stores it; the commit
index rides on the next ``Replicate`` (an empty one every ``heartbeat``).
The leader resends the unacknowledged suffix to a lagging follower on each
heartbeat, so loss and reordering only delay progress.

There is no election: if the leader is down, nothing commits.  It is not a
consensus protocol; it is the lower bound ("one round trip to a majority, no
protocol overhead") against which the real ones are compared, and the plugin
the foundation's tests use.

Invariants: ``commit <= len(log)``; followers' logs are prefixes of the
leader's log (only the leader creates entries, and followers only extend
contiguously).
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from consensus.commands import Request
from consensus.quorum import Majority
from consensus.replica import Committed, Outputs, Replica, ReplicaContext
from protocols.sequencer.messages import Ack, Replicate, Stored


@attrs.frozen(kw_only=True)
class SequencerOptions:
    heartbeat: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    max_batch: int = attrs.field(default=64, validator=attrs.validators.ge(1))


class Sequencer(Replica):
    def __init__(self, ctx: ReplicaContext, records: Sequence[Any]) -> None:
        super().__init__(ctx)
        self.options = ctx.options_as(SequencerOptions)
        self.leader_id = min(ctx.members)
        self.peers = ctx.peers
        self.quorum = Majority(ctx.members)
        self.log: list[Any] = []
        for record in records:
            if isinstance(record, Stored) and record.index == len(self.log) + 1:
                self.log.append(record.payload)
        self.commit = 0  # Invariant: commit <= len(self.log)
        self.applied = 0
        self.match: dict[int, int] = {n: 0 for n in ctx.members}
        self.match[self.node_id] = len(self.log)
        self._deadline: float | None = None
        self._early: dict[int, Any] = {}

    @property
    def is_leader(self) -> bool:
        return self.node_id == self.leader_id

    def leader(self) -> int | None:
        return self.leader_id

    def start(self, now: float) -> Outputs:
        if self.is_leader:
            self._deadline = now + self.options.heartbeat
        return Outputs()

    def next_deadline(self) -> float | None:
        return self._deadline

    def tick(self, now: float) -> Outputs:
        out = Outputs()
        if self.is_leader:
            for peer in self.peers:
                self._replicate_to(peer, out)
            self._deadline = now + self.options.heartbeat
        return out

    def propose(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        if not self.is_leader:
            out.reject(request, "not_leader", self.leader_id)
            return out
        self.log.append(request)
        index = len(self.log)
        self.match[self.node_id] = index
        out.persist.append(Stored(index=index, payload=request))
        out.place(request, index)
        message = Replicate(first=index, payloads=(request,), commit=self.commit)
        out.broadcast(self.peers, message)
        self._advance_commit(out)
        return out

    def step(self, now: float, src: int, message: Any) -> Outputs:
        out = Outputs()
        if isinstance(message, Replicate):
            self._on_replicate(src, message, out)
        elif isinstance(message, Ack):
            self._on_ack(src, message, out)
        else:
            self.counters["dropped_unknown"] += 1
        return out

    def _on_replicate(self, src: int, msg: Replicate, out: Outputs) -> None:
        if src != self.leader_id:
            self.counters["dropped_not_from_leader"] += 1
            return
        log, first, payloads = self.log, msg.first, msg.payloads
        last = len(log)
        if first <= last + 1 and not self._early:
            # The common case, a fast path: the entries extend the log contiguously.
            persist = out.persist
            for payload in payloads[last + 1 - first :]:
                last += 1
                log.append(payload)
                persist.append(Stored(index=last, payload=payload))
        else:
            # Entries past a gap wait in ``_early`` until the gap fills (reordering).
            for offset, payload in enumerate(payloads):
                index = first + offset
                if index > len(log):
                    self._early.setdefault(index, payload)
            while len(log) + 1 in self._early:
                index = len(log) + 1
                payload = self._early.pop(index)
                log.append(payload)
                out.persist.append(Stored(index=index, payload=payload))
            last = len(log)
        commit = msg.commit
        if payloads or last < commit:
            out.send(src, Ack(last=last))
        if commit > last:
            commit = last
        if commit > self.commit:
            self.commit = commit
            self._emit_committed(out)

    def _on_ack(self, src: int, msg: Ack, out: Outputs) -> None:
        if not self.is_leader or msg.last <= self.match.get(src, 0):
            return
        last = min(msg.last, len(self.log))
        self.match[src] = last
        # Raising one follower's match to at most ``commit`` cannot move the quorum
        # index past ``commit``: skip the quorum count (most acks, with 3+ nodes).
        if last > self.commit:
            self._advance_commit(out)

    def _replicate_to(self, peer: int, out: Outputs) -> None:
        first = self.match[peer] + 1
        payloads = tuple(self.log[first - 1 : first - 1 + self.options.max_batch])
        out.send(peer, Replicate(first=first, payloads=payloads, commit=self.commit))

    def _advance_commit(self, out: Outputs) -> None:
        commit = self.quorum.committed(self.match)
        if commit > self.commit:
            self.commit = commit
        self._emit_committed(out)

    def _emit_committed(self, out: Outputs) -> None:
        log, committed = self.log, out.committed
        for index in range(self.applied + 1, self.commit + 1):
            committed.append(Committed(index=index, payload=log[index - 1]))
        if self.commit > self.applied:
            self.applied = self.commit

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "leader": self.leader_id,
            "role": "leader" if self.is_leader else "follower",
            "commit_index": self.commit,
            "last_index": len(self.log),
        }
