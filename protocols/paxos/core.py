"""Single-decree Paxos instances, one per log slot, with no leader.

Theory of operation
-------------------
Every node is proposer, acceptor and learner for every slot.  Slot ``s`` is an
independent single-decree Paxos instance ("Paxos Made Simple" section 2):
its own promises and accepted value at each acceptor
(``protocols.paxos_common.acceptor.Acceptor(per_slot=True)``), its own proposers
(``proposer.Instance``), and chosen when a majority accepts one ballot.

* **Proposing.**  Any node takes client requests (``leader()`` is ``None``).
  It gives them the lowest slot it believes free (above what it applied, not
  decided, not touched by any proposer its acceptor has heard of) and runs
  phase 1 and phase 2 there: two round trips, 4d with one-way delay d.  If
  the slot is chosen with another value (someone else got there first), the
  requests go back to the queue and are proposed again in a later slot.
  Requests beyond ``max_in_flight`` concurrent instances wait and are batched.
* **Duels.**  Two proposers on one slot can preempt each other forever; a
  proposer that gets a ``Nack`` backs off for a random, growing delay
  (``ctx.rng``) before retrying with a higher ballot.
* **Learning.**  The proposer that sees a majority of ``Accepted`` sends
  ``Decided`` to everyone.  Each node applies decided slots strictly in slot
  order.  A slot that stays undecided below a known later slot for
  ``hole_delay`` (its proposer crashed, or the ``Decided`` was lost) is
  filled by running Paxos on it with ``Noop``: phase 1 finds any value that
  may have been chosen, so a hole filler never overrides a decision.  Only a
  slot below one known *decided* (here, or by a peer's ``done``) is a hole: a
  slot known only to be in use (a ``Prepare`` or ``Accept`` seen) has a
  proposer still deciding it, and filling it would only start a duel.
* **Forgetting** (the lab's ``Done``/``Min``).  Every message carries the
  sender's ``done`` (highest slot applied).  Once every node's ``done`` has
  passed a slot, no node will ever ask about it again, so acceptors forget it
  (``forget_below``) and refuse requests for it.  A node keeps no decided
  value once it is applied.  A crashed node's last ``done`` holds the others
  back until it returns: that is the price of not losing its instances.

Durability: acceptor records are persisted before the reply that depends on
them (same ``Outputs``); each learned decision is persisted too
(``DecisionRecord``), so a restarted node re-emits ``Committed`` from slot 1
(or from its snapshot) even for slots its peers have forgotten.

Invariants:
  applied == the highest slot handed to the host; _decided has only slots > applied
  no instance exists for a decided or applied slot
  _max_decided >= applied (the highest slot known decided, here or at a peer)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from consensus.commands import Batch, Request, RequestKey, request_key, requests_in
from consensus.quorum import Majority
from consensus.replica import Committed, NodeId, Outputs, Replica, ReplicaContext, StateSnapshot
from protocols.paxos.messages import Accept, Accepted, Decided, Done, Nack, Prepare, Promise
from protocols.paxos.options import PaxosOptions
from protocols.paxos.proposer import ACCEPTING, BACKOFF, PREPARING, Instance
from protocols.paxos.records import DecisionRecord, SnapshotRecord
from protocols.paxos_common.acceptor import Acceptor
from protocols.paxos_common.ballot import ZERO
from protocols.paxos_common.rtt import RoundTrips

__all__ = ["Paxos"]

_INF = math.inf


class Paxos(Replica):
    """One node of a leaderless log of single-decree Paxos instances."""

    supports_reads = False

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any] = ()) -> None:
        super().__init__(ctx)
        self.options = ctx.options_as(PaxosOptions)
        self.peers = ctx.peers
        self.quorum = Majority(ctx.members)
        self.acceptor = Acceptor(per_slot=True)
        #: Measured round trips (Prepare to Promise, Accept to Accepted): the timers'
        #: scale when ``adapt_timers`` (see ``protocols.paxos_common.rtt``).
        self.rtt = RoundTrips()
        self.applied = 0
        self._snapshot: tuple[int, bytes] | None = None
        # Decided but not yet applied (waiting for a lower slot).
        self._decided: dict[int, Any] = {}
        for record in records:
            self._replay(record)
        # Highest slot known decided (here, or by a peer's done): the hole-filling
        # bound.  A slot merely in use (a Prepare or Accept seen) does not raise it:
        # its proposer is still deciding it.
        self._max_decided = max(max(self._decided, default=0), self.applied)
        self._instances: dict[int, Instance] = {}
        self._queue: deque[Request] = deque()
        self._queued: set[RequestKey] = set()
        self._peer_done: dict[NodeId, int] = {p: 0 for p in self.peers}
        self._hole_at = _INF
        self._gossip_at = _INF
        self._refresh_at = _INF
        self._gossiped = -1
        self._handlers: dict[type, Callable[[float, NodeId, Any, Outputs], None]] = {
            Prepare: self._on_prepare,
            Promise: self._on_promise,
            Nack: self._on_nack,
            Accept: self._on_accept,
            Accepted: self._on_accepted,
            Decided: self._on_decided,
            Done: self._on_done,
        }

    def _replay(self, record: Any) -> None:
        if isinstance(record, SnapshotRecord):
            if self._snapshot is None or record.index > self._snapshot[0]:
                self._snapshot = (record.index, record.data)
                self.applied = record.index
                self._decided = {s: p for s, p in self._decided.items() if s > record.index}
        elif isinstance(record, DecisionRecord):
            if record.slot > self.applied:
                self._decided[record.slot] = record.payload
        elif not self.acceptor.replay(record):
            raise TypeError(f"not a paxos record: {record!r}")

    # -- the Replica interface ---------------------------------------------------------

    def start(self, now: float) -> Outputs:
        out = Outputs()
        if self._snapshot is not None:
            index, data = self._snapshot
            out.restore = StateSnapshot(index=index, data=data)
        self._gossip_at = now + self.options.done_gossip_interval
        self._refresh_at = now + self.options.done_refresh_interval
        self._settle(now, out)
        return out

    def step(self, now: float, src: NodeId, message: Any) -> Outputs:
        out = Outputs()
        handler = self._handlers.get(type(message))
        if handler is None:
            self.counters["dropped_unknown"] += 1
            return out
        self._note_done(src, message.done)
        handler(now, src, message, out)
        self._settle(now, out)
        return out

    def tick(self, now: float) -> Outputs:
        out = Outputs()
        for inst in [i for i in self._instances.values() if i.deadline <= now]:
            if inst.phase != BACKOFF:
                self.counters["timeouts"] += 1
            self._start_round(now, inst, out)
        if now >= self._hole_at:
            self._fill_holes(now, out)
        if now >= self._gossip_at:
            refresh = now >= self._refresh_at
            if refresh or self._gossiped != self.applied:
                out.broadcast(self.peers, Done(done=self.applied))
                self._gossiped = self.applied
                self._refresh_at = now + self.options.done_refresh_interval
            self._gossip_at = now + self.options.done_gossip_interval
        self._settle(now, out)
        return out

    def next_deadline(self) -> float | None:
        # The host asks after every input: comparisons instead of min().
        deadline = self._hole_at if self._hole_at < self._gossip_at else self._gossip_at
        for inst in self._instances.values():
            if inst.deadline < deadline:
                deadline = inst.deadline
        return None if deadline == _INF else deadline

    def propose(self, now: float, request: Request) -> Outputs:
        out = Outputs()
        key = request_key(request)
        if key not in self._queued and not self._running(key):
            self._queue.append(request)
            self._queued.add(key)
        self._settle(now, out)
        return out

    def leader(self) -> NodeId | None:
        return None  # no leader: any node proposes

    def compact(self, now: float, index: int, data: bytes) -> Outputs:
        """Replace the decisions up to ``index`` (all applied) with the host's snapshot."""
        out = Outputs()
        if index != self.applied or (self._snapshot and index <= self._snapshot[0]):
            # Decisions between index and applied are no longer in memory to rewrite.
            return out
        self._snapshot = (index, data)
        out.compact = [
            SnapshotRecord(index=index, data=data),
            *self.acceptor.state_records(),
            *(DecisionRecord(slot=s, payload=p) for s, p in sorted(self._decided.items())),
        ]
        return out

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "leader": None,
            "applied": self.applied,
            "max_decided": self._max_decided,
            "instances": len(self._instances),
            "queued": len(self._queue),
            "acceptor_slots": self.acceptor.slot_count(),
            "forgotten_below": self.acceptor.floor,
        }

    def slot_state_count(self) -> int:
        """Per-slot state held in memory: acceptor slots, instances, unapplied decisions."""
        return self.acceptor.slot_count() + len(self._instances) + len(self._decided)

    # -- after every input ---------------------------------------------------------------

    def _settle(self, now: float, out: Outputs) -> None:
        """Apply what is decided, forget what everyone is done with, start new work."""
        # Runs after every input; each step is skipped when its cheap guard says
        # it would do nothing.
        if self.applied + 1 in self._decided:
            self._apply(out)
        self._forget(out)
        if self._queue:
            self._launch(now, out)
        if not self._has_hole():
            self._hole_at = _INF
        elif self._hole_at == _INF:
            self._hole_at = now + self._hole_delay()

    def _has_hole(self) -> bool:
        """Is some slot below the highest decided one neither decided nor ours to finish?"""
        # Terminates after at most len(_decided) + len(_instances) + 1 steps.
        slot = self.applied + 1
        while slot <= self._max_decided:
            if slot not in self._decided and slot not in self._instances:
                return True
            slot += 1
        return False

    def _apply(self, out: Outputs) -> None:
        decided = self._decided
        start = self.applied
        slot = start + 1
        while slot in decided:
            out.committed.append(Committed(index=slot, payload=decided.pop(slot)))
            slot += 1
        self.applied = slot - 1
        if self.applied != start:
            self._hole_at = _INF  # progress: give the next gap a fresh delay

    def _forget(self, out: Outputs) -> None:
        floor = self.applied  # min(applied, every peer's done), without building arguments
        for done in self._peer_done.values():
            if done < floor:
                floor = done
        floor += 1
        if floor > self.acceptor.floor:
            before = self.acceptor.slot_count()
            out.persist.extend(self.acceptor.forget_below(floor))
            self.counters["forgotten"] += before - self.acceptor.slot_count()

    def _note_done(self, src: NodeId, done: int) -> None:
        if done > self._peer_done.get(src, 0):
            self._peer_done[src] = done
        if done > self._max_decided:
            self._max_decided = done

    # -- proposing ---------------------------------------------------------------------

    def _running(self, key: RequestKey) -> bool:
        for inst in self._instances.values():
            if inst.own is not None:
                for request in requests_in(inst.own):
                    if request_key(request) == key:
                        return True
        return False

    def _client_instances(self) -> int:
        # Asked after every input while requests queue: a list is cheaper than sum(genexpr).
        return len([i for i in self._instances.values() if i.own is not None])

    def _free_slot(self) -> int:
        """The lowest slot this node believes nobody is using."""
        slot = self.applied + 1
        acceptor = self.acceptor
        while slot in self._decided or slot in self._instances or acceptor.promised(slot) > ZERO:
            slot += 1
        return slot

    def _launch(self, now: float, out: Outputs) -> None:
        opts = self.options
        while self._queue and self._client_instances() < opts.max_in_flight:
            take = min(opts.max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(take)]
            slot = self._free_slot()
            for request in batch:
                self._queued.discard(request_key(request))
                out.place(request, slot)
            own: Any = batch[0] if take == 1 else Batch(requests=tuple(batch))
            if take > 1:
                self.counters["batched_slots"] += 1
            inst = Instance(slot=slot, own=own)
            self._instances[slot] = inst
            self._start_round(now, inst, out)

    def _requeue(self, own: Any) -> None:
        """Put a losing instance's requests back at the head of the queue."""
        for request in reversed(requests_in(own)):
            if request_key(request) not in self._queued:
                self._queue.appendleft(request)
                self._queued.add(request_key(request))
                self.counters["retried_requests"] += 1

    def _start_round(self, now: float, inst: Instance, out: Outputs) -> None:
        top = max(inst.ballot, inst.seen, self.acceptor.promised(inst.slot))
        ballot = top.next(self.node_id)
        inst.new_round(ballot, now + self._retry_timeout())
        inst.sent_at[(ballot, PREPARING)] = now
        self.counters["prepares"] += 1
        out.broadcast(self.peers, Prepare(slot=inst.slot, ballot=ballot, done=self.applied))
        vote = self.acceptor.prepare(ballot, inst.slot)
        assert vote.ok, "a fresh ballot is above this acceptor's promise"
        out.persist.extend(vote.records)
        self._promised(now, self.node_id, inst, vote.accepted[0] if vote.accepted else None, out)

    def _promised(self, now: float, src: NodeId, inst: Instance, pv: Any, out: Outputs) -> None:
        inst.add_promise(src, pv)
        if not self.quorum.is_phase1_quorum(inst.promises):
            return
        value = inst.choose_value()
        if inst.own is not None and value != inst.own:
            # Another proposer's value may be chosen here: help it, and move our
            # requests to a later slot now rather than after this slot is decided.
            self._requeue(inst.own)
            inst.own = None
        inst.phase = ACCEPTING
        inst.value = value
        inst.deadline = now + self._retry_timeout()
        inst.sent_at[(inst.ballot, ACCEPTING)] = now
        out.broadcast(
            self.peers, Accept(slot=inst.slot, ballot=inst.ballot, payload=value, done=self.applied)
        )
        vote = self.acceptor.accept(inst.ballot, inst.slot, value)
        if not vote.ok:
            return  # our own acceptor promised a higher ballot meanwhile: the round is lost
        out.persist.extend(vote.records)
        self._accepted(self.node_id, inst, out)

    def _accepted(self, src: NodeId, inst: Instance, out: Outputs) -> None:
        inst.accepts.add(src)
        if self.quorum.is_phase2_quorum(inst.accepts):
            self.counters["chosen_here"] += 1
            out.broadcast(
                self.peers, Decided(slot=inst.slot, payload=inst.value, done=self.applied)
            )
            self._learn(inst.slot, inst.value, out)

    # -- timers on the network's scale ---------------------------------------------------

    def _sample(self, now: float, inst: Instance, ballot: Any, phase: int) -> None:
        # A reply names its ballot and each ballot's phase is sent once: the round
        # trip is unambiguous, even for a reply that arrives after a retry.
        sent = inst.sent_at.get((ballot, phase))
        if sent is not None:
            self.rtt.sample(now - sent)

    def _retry_timeout(self) -> float:
        # A phase answers within a round trip: wait two estimates before a retry.
        opts = self.options
        if not opts.adapt_timers:
            return opts.retry_timeout
        return self.rtt.at_least(opts.retry_timeout, 2.0)

    def _hole_delay(self) -> float:
        # A proposer still at work needs up to two phases and a Decided.
        opts = self.options
        if not opts.adapt_timers:
            return opts.hole_delay
        return self.rtt.at_least(opts.hole_delay, 3.0)

    def _fill_holes(self, now: float, out: Outputs) -> None:
        """Run Paxos with Noop on undecided slots below the highest known slot."""
        started = 0
        slot = self.applied + 1
        while slot <= self._max_decided and started < self.options.max_hole_fills:
            if slot not in self._decided and slot not in self._instances:
                inst = Instance(slot=slot, own=None)
                self._instances[slot] = inst
                self.counters["hole_fills"] += 1
                self._start_round(now, inst, out)
                started += 1
            slot += 1
        self._hole_at = now + self._hole_delay()

    # -- learning ----------------------------------------------------------------------

    def _learn(self, slot: int, payload: Any, out: Outputs) -> None:
        if slot <= self.applied:
            return
        if slot in self._decided:
            assert self._decided[slot] == payload, f"slot {slot} decided twice"
            return
        self._decided[slot] = payload
        if slot > self._max_decided:
            self._max_decided = slot
        out.persist.append(DecisionRecord(slot=slot, payload=payload))
        inst = self._instances.pop(slot, None)
        if inst is not None and inst.own is not None and inst.own != payload:
            self._requeue(inst.own)

    # -- message handlers ----------------------------------------------------------------

    def _on_prepare(self, now: float, src: NodeId, m: Prepare, out: Outputs) -> None:
        vote = self.acceptor.prepare(m.ballot, m.slot)
        out.persist.extend(vote.records)
        if vote.ok:
            pv = vote.accepted[0] if vote.accepted else None
            out.send(src, Promise(slot=m.slot, ballot=m.ballot, accepted=pv, done=self.applied))
        else:
            out.send(src, self._nack(m.slot, m.ballot, vote.promised, vote.forgotten))

    def _nack(self, slot: int, ballot: Any, promised: Any, forgotten: bool) -> Nack:
        return Nack(
            slot=slot, ballot=ballot, promised=promised, forgotten=forgotten, done=self.applied
        )

    def _on_promise(self, now: float, src: NodeId, m: Promise, out: Outputs) -> None:
        inst = self._instances.get(m.slot)
        if inst is not None:
            self._sample(now, inst, m.ballot, PREPARING)
        if inst is None or inst.phase != PREPARING or m.ballot != inst.ballot:
            self.counters["dropped_stale"] += 1
            return
        self._promised(now, src, inst, m.accepted, out)

    def _on_nack(self, now: float, src: NodeId, m: Nack, out: Outputs) -> None:
        inst = self._instances.get(m.slot)
        if inst is None or inst.phase == BACKOFF or m.ballot != inst.ballot or m.forgotten:
            self.counters["dropped_stale"] += 1
            return
        # A duel: another proposer holds a higher ballot here.  Back off for a random,
        # growing delay so that one of us finishes both phases undisturbed.
        self.counters["duels"] += 1
        self.counters["backoffs"] += 1
        inst.seen = max(inst.seen, m.promised)
        inst.duels += 1
        opts = self.options
        base, most = opts.backoff_base, opts.backoff_max
        if opts.adapt_timers:
            # A rival needs about two round trips undisturbed to finish: back off
            # on the network's scale, not only the configured one.
            base, most = self.rtt.at_least(base, 0.5), self.rtt.at_least(most, 4.0)
        ceiling = min(most, base * 2**inst.duels)
        inst.phase = BACKOFF
        inst.deadline = now + self.ctx.rng.uniform(ceiling / 2, ceiling)

    def _on_accept(self, now: float, src: NodeId, m: Accept, out: Outputs) -> None:
        vote = self.acceptor.accept(m.ballot, m.slot, m.payload)
        out.persist.extend(vote.records)
        if vote.ok:
            out.send(src, Accepted(slot=m.slot, ballot=m.ballot, done=self.applied))
        else:
            out.send(src, self._nack(m.slot, m.ballot, vote.promised, vote.forgotten))

    def _on_accepted(self, now: float, src: NodeId, m: Accepted, out: Outputs) -> None:
        inst = self._instances.get(m.slot)
        if inst is not None:
            self._sample(now, inst, m.ballot, ACCEPTING)
        if inst is None or inst.phase != ACCEPTING or m.ballot != inst.ballot:
            self.counters["dropped_stale"] += 1
            return
        self._accepted(src, inst, out)

    def _on_decided(self, now: float, src: NodeId, m: Decided, out: Outputs) -> None:
        self._learn(m.slot, m.payload, out)

    def _on_done(self, now: float, src: NodeId, m: Done, out: Outputs) -> None:
        pass  # step() already recorded m.done
