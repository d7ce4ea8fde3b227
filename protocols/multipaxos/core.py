"""Multi-Paxos replica: leader election by ballots, phase 1 once, phase 2 per slot.

Theory of operation
-------------------
Every node is an acceptor (``protocols.paxos_common.acceptor``, one promise for all
slots), a learner (``learner.ChosenLog``) and a would-be leader
(``leader.Phase1``).  Roles:

* **follower**: accepts the leader's ``Accept``s, learns what is chosen from
  the commit index piggybacked on ``Accept`` and ``Heartbeat``, and asks the
  leader (``CatchUp``) for chosen values it cannot infer.  Client requests
  are rejected with ``not_leader`` and a hint.  If no leader is heard for a
  random election timeout (drawn from ``ctx.rng``) it asks whether a quorum
  would follow it (the disruption guard's pre-phase), then becomes a
  candidate.
* **candidate**: runs phase 1 with a ballot above every ballot it has seen,
  for all slots from its first unchosen slot.  *Any* node can win, however
  far behind it is: the promises carry every accepted value it is missing
  (this is where Multi-Paxos differs from Raft, which only lets an
  up-to-date node win).  Requests that arrive meanwhile wait.
* **leader**: re-proposes the highest-ballot value of each slot the promises
  reported and fills holes with ``Noop`` (``Phase1.plan``), then gives each
  client request (or ``Batch``) the next slot and sends ``Accept`` to all;
  a quorum of ``Accepted`` chooses it: one round trip.  Reads are proposed
  too, or answered by the leader after a confirmed heartbeat round or under
  a lease (``read_mode``).

The layers (``node``: shared state; ``replication``: phase 2 and learning;
``election``: the guard, phase 1, role changes; ``reads``: rounds, leases)
each explain their part; this module is the ``Replica`` interface and the
dispatch.  Membership changes go through the log and take effect ``alpha``
slots after they are chosen (``configs``).

Durability: only acceptor state and snapshots are persisted (records are
returned with every vote and go out in the same ``Outputs`` as the reply, so
they are durable before it is sent).  Chosen state is volatile: after a
restart the node re-emits ``Committed`` from slot 1 (or from its snapshot)
as it relearns.

Invariants (see also the modules above):
  role == LEADER   => ballot == acceptor.promised_all and every InFlight slot > commit_index
  role == FOLLOWER => no InFlight slots, no backlog, no pending reads, an empty queue
  Committed entries leave in slot order, each once (ChosenLog.drain)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from consensus.commands import ChangeMembership, Request, request_key
from consensus.replica import NodeId, Outputs, ReplicaContext, StateSnapshot
from protocols.multipaxos.configs import ConfigState
from protocols.multipaxos.messages import (
    Accept,
    Accepted,
    CatchUp,
    Heartbeat,
    HeartbeatAck,
    Learn,
    Nack,
    Prepare,
    PrePrepare,
    PrePromise,
    Promise,
)
from protocols.multipaxos.node import _INF, CANDIDATE, FOLLOWER, LEADER
from protocols.multipaxos.reads import Reads
from protocols.multipaxos.records import SnapshotRecord

__all__ = ["CANDIDATE", "FOLLOWER", "LEADER", "MultiPaxos"]


class MultiPaxos(Reads):
    """One Multi-Paxos node; build it with ``MultiPaxos(ctx, recovered_records)``."""

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any] = ()) -> None:
        super().__init__(ctx, records)
        self._handlers: dict[type, Callable[[float, NodeId, Any, Outputs], None]] = {
            Prepare: self._on_prepare,
            Promise: self._on_promise,
            Nack: self._on_nack,
            Accept: self._on_accept,
            Accepted: self._on_accepted,
            Heartbeat: self._on_heartbeat,
            HeartbeatAck: self._on_heartbeat_ack,
            CatchUp: self._on_catchup,
            Learn: self._on_learn,
            PrePrepare: self._on_preprepare,
            PrePromise: self._on_prepromise,
        }

    # -- the Replica interface ---------------------------------------------------------

    def start(self, now: float) -> Outputs:
        out = Outputs()
        if self.log.snapshot_index:
            out.restore = StateSnapshot(index=self.log.snapshot_index, data=self.log.snapshot_data)
        bootstrap = self.options.bootstrap and not self._recovered
        if bootstrap and self.node_id == min(self.ctx.members):
            self._start_phase1(now, out)
        else:
            if self.options.read_mode == "lease" and self._recovered:
                # We may have backed a lease before this restart, and forgot when:
                # promise nothing for as long as it could still run.  (Backing one
                # leaves a record, so a node that starts with none never did.)
                self._heard_leader_at = now
            self._reset_election(now)
        return out

    def step(self, now: float, src: NodeId, message: Any) -> Outputs:
        out = Outputs()
        handler = self._handlers.get(type(message))
        if handler is None:
            self.counters["dropped_unknown"] += 1
        else:
            handler(now, src, message, out)
        return out

    def tick(self, now: float) -> Outputs:
        out = Outputs()
        if self.role == FOLLOWER:
            if now >= self._election_at:
                self._election_due(now, out)
        elif self.role == CANDIDATE:
            p1 = self._phase1
            assert p1 is not None
            if now >= self._election_at:
                self._election_due(now, out)
            elif now >= p1.resend_at:
                missing = sorted(p1.asked - p1.promised)
                out.broadcast(missing, Prepare(ballot=self.ballot, from_slot=p1.from_slot))
                p1.resend_at = now + self.options.retransmit_timeout
        else:
            if now >= self._heartbeat_at:
                self._send_heartbeat(now, out)
            if now >= self._retransmit_at:
                self._retransmit(now, out)
            if now >= self._quorum_check_at and self.role == LEADER:
                self._check_quorum(now, out)
        return out

    def next_deadline(self) -> float | None:
        if self.role == FOLLOWER:
            deadline = self._election_at
        elif self.role == CANDIDATE:
            assert self._phase1 is not None
            deadline = min(self._phase1.resend_at, self._election_at)
        else:
            # min() of three, spelled out: the host asks after every input.
            deadline = self._heartbeat_at
            if self._retransmit_at < deadline:
                deadline = self._retransmit_at
            if self._quorum_check_at < deadline:
                deadline = self._quorum_check_at
        return None if deadline == _INF else deadline

    def propose(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        key = request_key(request)
        if self.role == FOLLOWER:
            out.reject(request, "not_leader", self._leader)
            return out
        if key in self._proposed or key in self._queued:
            # A client retry of a request already on its way (in its slot, if it has one).
            slot = self._proposed.get(key)
            if slot is not None:
                out.place(request, slot)
            return out
        command = request.command
        if type(command) is ChangeMembership:
            if not command.members:
                out.reject(request, "invalid", self.leader())
                return out
            if self.role == LEADER and self._change_pending():
                # One change at a time: the next once this one is in force.
                self.counters["membership_busy"] += 1
                out.reject(request, "busy", self.node_id)
                return out
        self._queue.append(request)
        self._queued.add(key)
        if self.role == LEADER:
            self._flush_queue(now, out)
        return out

    def leader(self) -> NodeId | None:
        return self.node_id if self.role == LEADER else self._leader

    def compact(self, now: float, index: int, data: bytes) -> Outputs:
        """Truncate slots up to ``index`` into the host's snapshot."""
        out = Outputs()
        if index <= self.log.snapshot_index:
            return out
        config: ConfigState | None = self.configs.state_at(index)
        if config == ConfigState(index=index, members=self.ctx.members):
            config = None  # the initial members, never changed: what recovery assumes
        self.log.compact(index, data, config)
        self.configs.compact(index)
        self.acceptor.forget_below(index + 1)
        out.compact = [
            SnapshotRecord(index=index, data=data, config=config),
            *self.acceptor.state_records(),
        ]
        return out

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "role": self.role,
            "ballot": str(self.ballot),
            "promised": str(self.acceptor.promised_all),
            "leader": self.leader(),
            "commit_index": self.log.commit_index,
            "chosen_index": self.log.max_slot,
            "snapshot_index": self.log.snapshot_index,
            "in_flight": len(self._inflight),
            "queued": len(self._queue),
            "members": sorted(self.configs.config_for(self.log.commit_index + 1).members),
            "read_mode": self.options.read_mode,
            "lease_until": self._lease_until if self._lease_until > -_INF else None,
        }
