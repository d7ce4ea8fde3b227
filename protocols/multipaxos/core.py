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
  random election timeout (drawn from ``ctx.rng``) it becomes a candidate.
* **candidate**: runs phase 1 with a ballot above every ballot it has seen,
  for all slots from its first unchosen slot.  *Any* node can win, however
  far behind it is: the promises carry every accepted value it is missing
  (this is where Multi-Paxos differs from Raft, which only lets an
  up-to-date node win).  Requests that arrive meanwhile wait.
* **leader**: re-proposes the highest-ballot value of each slot the promises
  reported and fills holes with ``Noop`` (``Phase1.plan``), then gives each
  client request (or ``Batch``) the next slot and sends ``Accept`` to all;
  a majority of ``Accepted`` chooses it: one round trip.  Up to
  ``max_in_flight`` slots are pipelined; the backlog is batched.
  ``Accept``s not acknowledged within ``retransmit_timeout`` are resent.

Any message showing a higher ballot (a ``Prepare``, an ``Accept``, a
``Nack``) preempts a candidate or leader: it steps down to follower and its
queued requests are rejected with ``not_leader``.  If a slot this node
proposed a request in is later chosen with another value (a new leader filled
it), the request is rejected as ``overwritten`` so its client retries.

Durability: only acceptor state is persisted (its records are returned with
every vote and go out in the same ``Outputs`` as the reply, so they are
durable before it is sent).  Chosen state is volatile: after a restart the
node re-emits ``Committed`` from slot 1 (or from its snapshot) as it relearns.

Invariants (see also the modules above):
  role == LEADER   => ballot == acceptor.promised_all and every InFlight slot > commit_index
  role == FOLLOWER => no InFlight slots and an empty queue
  Committed entries leave in slot order, each once (ChosenLog.drain)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from consensus.commands import Batch, Request, RequestKey, request_key, requests_in
from consensus.quorum import Majority
from consensus.replica import NodeId, Outputs, Replica, ReplicaContext, StateSnapshot
from protocols.multipaxos.leader import InFlight, Phase1, runs
from protocols.multipaxos.learner import ChosenLog
from protocols.multipaxos.messages import (
    Accept,
    Accepted,
    CatchUp,
    Heartbeat,
    HeartbeatAck,
    Learn,
    Nack,
    Prepare,
    Promise,
)
from protocols.multipaxos.options import MultiPaxosOptions
from protocols.multipaxos.records import SnapshotRecord
from protocols.paxos_common.acceptor import NOT_ACCEPTED, Acceptor
from protocols.paxos_common.ballot import ZERO, Ballot

__all__ = ["CANDIDATE", "FOLLOWER", "LEADER", "MultiPaxos"]

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"
_INF = math.inf


class MultiPaxos(Replica):
    """One Multi-Paxos node; build it with ``MultiPaxos(ctx, recovered_records)``."""

    supports_reads = False

    def __init__(self, ctx: ReplicaContext, records: Sequence[Any] = ()) -> None:
        super().__init__(ctx)
        self.options = ctx.options_as(MultiPaxosOptions)
        self.members = ctx.members
        self.peers = ctx.peers
        self.quorum = Majority(ctx.members)
        self._random = ctx.rng.random
        self.acceptor = Acceptor(per_slot=False)
        self.log = ChosenLog()
        self._recovered = bool(records)
        for record in records:
            if isinstance(record, SnapshotRecord):
                self.log.install(record.index, record.data)
            elif not self.acceptor.replay(record):
                raise TypeError(f"not a multipaxos record: {record!r}")

        self.role = FOLLOWER
        #: This node's ballot as candidate or leader (ZERO if it never ran).
        self.ballot: Ballot = ZERO
        # The highest ballot seen in any message or promise.
        self._seen: Ballot = self.acceptor.promised_all
        self._leader: NodeId | None = None
        self._election_at = _INF
        self._phase1: Phase1 | None = None
        # Leader only.  Invariant: every key is >= the slot after commit_index.
        self._inflight: dict[int, InFlight] = {}
        # Slots this leader accepted whose records are not known durable yet.
        self._awaiting_sync: list[int] = []
        self._next_slot = 1
        self._heartbeat_at = _INF
        self._retransmit_at = _INF
        self._quorum_check_at = _INF
        self._heard: dict[NodeId, float] = {}
        # Requests waiting for a slot (leader: pipeline full; candidate: not yet elected).
        self._queue: deque[Request] = deque()
        self._queued: set[RequestKey] = set()
        # Requests this node proposed, until their slot is known chosen.
        self._proposed: dict[RequestKey, int] = {}
        self._by_slot: dict[int, list[Request]] = {}
        # Followers ask for missing chosen values at most once per retransmit_timeout.
        self._catchup_at = 0.0

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
        }

    # -- the Replica interface ---------------------------------------------------------

    def start(self, now: float) -> Outputs:
        out = Outputs()
        if self.log.snapshot_index:
            out.restore = StateSnapshot(index=self.log.snapshot_index, data=self.log.snapshot_data)
        bootstrap = self.options.bootstrap and not self._recovered
        if bootstrap and self.node_id == min(self.members):
            self._start_phase1(now, out)
        else:
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
                self._start_phase1(now, out)
        elif self.role == CANDIDATE:
            p1 = self._phase1
            assert p1 is not None
            if now >= p1.resend_at:
                missing = [p for p in self.peers if p not in p1.promised]
                out.broadcast(missing, Prepare(ballot=self.ballot, from_slot=p1.from_slot))
                p1.resend_at = now + self.options.retransmit_timeout
        else:
            if now >= self._heartbeat_at:
                hb = Heartbeat(ballot=self.ballot, commit_index=self.log.commit_index)
                out.broadcast(self.peers, hb)
                self._heartbeat_at = now + self.options.heartbeat_interval
            if now >= self._retransmit_at:
                self._retransmit(now, out)
            if now >= self._quorum_check_at:
                self._check_quorum(now, out)
        return out

    def next_deadline(self) -> float | None:
        if self.role == FOLLOWER:
            deadline = self._election_at
        elif self.role == CANDIDATE:
            assert self._phase1 is not None
            deadline = self._phase1.resend_at
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
        self.log.compact(index, data)
        self.acceptor.forget_below(index + 1)
        out.compact = [SnapshotRecord(index=index, data=data), *self.acceptor.state_records()]
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
        }

    # -- role changes -------------------------------------------------------------------

    def _reset_election(self, now: float) -> None:
        # Runs on every Accept and Heartbeat a follower gets: rng.uniform(lo, hi)
        # written out (lo + (hi - lo) * random(), the same draw, one call fewer).
        opts = self.options
        lo = opts.election_timeout_min
        self._election_at = now + (lo + (opts.election_timeout_max - lo) * self._random())

    def _set_leader(self, node: NodeId | None) -> None:
        if node is not None and node != self._leader:
            self.counters["leaders_seen"] += 1
            if node == self.node_id:
                self.counters["leader_changes"] += 1  # the shared meaning: I became leader
        self._leader = node

    def _observe(self, ballot: Ballot, now: float, out: Outputs) -> None:
        """Note a ballot seen in a message; a higher one preempts a candidate or leader."""
        # ``is`` first: in the steady state, the very ballot object seen last.
        if ballot is not self._seen and ballot > self._seen:
            self._seen = ballot
        if self.role != FOLLOWER and ballot > self.ballot:
            self.counters["preemptions"] += 1
            self._become_follower(now, out)

    def _become_follower(self, now: float, out: Outputs) -> None:
        self.role = FOLLOWER
        self._phase1 = None
        self._inflight.clear()  # their requests stay in _proposed until their slots are chosen
        self._heartbeat_at = self._retransmit_at = self._quorum_check_at = _INF
        self._set_leader(None)
        for request in self._queue:
            out.reject(request, "not_leader", None)
        self._queue.clear()
        self._queued.clear()
        self._reset_election(now)

    def _start_phase1(self, now: float, out: Outputs) -> None:
        # Any node may run phase 1, however far behind: it catches up from the promises.
        top = max(self._seen, self.ballot, self.acceptor.promised_all)
        ballot = top.next(self.node_id)
        self.role = CANDIDATE
        self.ballot = self._seen = ballot
        self._set_leader(None)
        self._election_at = _INF
        self.counters["phase1_runs"] += 1
        self.counters["elections_started"] += 1
        from_slot = self.log.commit_index + 1
        p1 = Phase1(
            ballot=ballot, from_slot=from_slot, resend_at=now + self.options.retransmit_timeout
        )
        self._phase1 = p1
        out.broadcast(self.peers, Prepare(ballot=ballot, from_slot=from_slot))
        vote = self.acceptor.prepare_from(ballot, from_slot)
        assert vote.ok, "a fresh ballot is above everything this acceptor promised"
        out.persist.extend(vote.records)
        p1.add(self.node_id, vote.accepted)
        self._maybe_win(now, out)

    def _maybe_win(self, now: float, out: Outputs) -> None:
        p1 = self._phase1
        if p1 is not None and self.quorum.is_phase1_quorum(p1.promised):
            self._become_leader(now, out)

    def _become_leader(self, now: float, out: Outputs) -> None:
        p1 = self._phase1
        assert p1 is not None and p1.ballot == self.ballot
        if p1.snapshot_index:
            self._install_snapshot(p1.snapshot_index, p1.snapshot_data, out)
        plan = p1.plan(self.log.is_chosen)
        self.role = LEADER
        self._phase1 = None
        self._set_leader(self.node_id)
        self._next_slot = max(p1.max_slot, self.log.max_slot) + 1
        self._heard = {p: now for p in self.peers}
        self._quorum_check_at = (
            now + self.options.election_timeout_max if self.options.check_quorum else _INF
        )
        out.broadcast(self.peers, Heartbeat(ballot=self.ballot, commit_index=self.log.commit_index))
        self._heartbeat_at = now + self.options.heartbeat_interval
        self.counters["reproposed"] += len(plan)
        self._propose(now, plan, out)
        self._flush_queue(now, out)

    # -- leader: phase 2 ------------------------------------------------------------------

    def _flush_queue(self, now: float, out: Outputs) -> None:
        """Give queued requests slots while the pipeline has room, batching a backlog."""
        if self.role != LEADER or not self._queue:
            return
        max_batch = self.options.max_batch
        queue, queued, proposed = self._queue, self._queued, self._proposed
        room = self.options.max_in_flight - len(self._inflight)
        items: list[tuple[int, Any]] = []
        placed = out.placed if out.placed is not None else []  # Outputs.place, inlined
        while queue and len(items) < room:
            take = min(max_batch, len(queue))
            batch = [queue.popleft() for _ in range(take)]
            slot = self._next_slot
            self._next_slot += 1
            for request in batch:
                key = request_key(request)
                queued.discard(key)
                proposed[key] = slot
                placed.append((key[0], key[1], slot))
            self._by_slot[slot] = batch
            payload: Any = batch[0] if take == 1 else Batch(requests=tuple(batch))
            items.append((slot, payload))
        if placed:
            out.placed = placed
        if len(items) > 1 or (items and isinstance(items[0][1], Batch)):
            self.counters["batched_slots"] += len(items)
        self._propose(now, items, out)

    def _propose(self, now: float, items: list[tuple[int, Any]], out: Outputs) -> None:
        """Phase 2a for ``items`` (ascending slots) at this leader's ballot."""
        if not items:
            return
        ballot, inflight, accept, persist, awaiting = (
            self.ballot,
            self._inflight,
            self.acceptor.accept,
            out.persist,
            self._awaiting_sync,
        )
        for slot, payload in items:
            flight = InFlight(payload=payload, sent_at=now)
            inflight[slot] = flight
            vote = accept(ballot, slot, payload)
            assert vote.ok, "a leader's own acceptor never promised a higher ballot"
            persist.extend(vote.records)
            # Our own accept counts once it is durable (``synced``); the Accepts go
            # out eagerly meanwhile, so our write overlaps the round trip.
            awaiting.append(slot)
        self._send_accepts(self.peers, [s for s, _ in items], out, eager=True)
        self._heartbeat_at = now + self.options.heartbeat_interval
        self._retransmit_at = min(self._retransmit_at, now + self.options.retransmit_timeout)
        for slot, _ in items:
            self._check_chosen(slot, out)
        if self.log.ready():
            out.committed.extend(self.log.drain())

    def synced(self, now: float) -> Outputs | None:
        """Our accepts so far are durable: they count toward the quorums now."""
        slots = self._awaiting_sync
        if not slots:
            return None
        self._awaiting_sync = []
        out = Outputs()
        inflight = self._inflight
        for slot in slots:
            flight = inflight.get(slot)
            if flight is not None:
                flight.acks.add(self.node_id)
                self._check_chosen(slot, out)
        if self.log.ready():
            out.committed.extend(self.log.drain())
        return out if out else None

    def _send_accepts(
        self, dsts: Sequence[NodeId], slots: list[int], out: Outputs, eager: bool = False
    ) -> None:
        limit = self.options.max_slots_per_message
        commit = self.log.commit_index
        inflight = self._inflight
        spans: Iterable[tuple[int, int]]
        if slots[-1] - slots[0] + 1 == len(slots):
            spans = ((slots[0], len(slots)),)  # one run of consecutive slots, the usual case
        else:
            spans = runs(slots)
        for first, count in spans:
            for lo in range(first, first + count, limit):
                hi = min(first + count, lo + limit)
                payloads = tuple([inflight[s].payload for s in range(lo, hi)])
                message = Accept(
                    ballot=self.ballot, slot=lo, payloads=payloads, commit_index=commit
                )
                if eager:
                    for dst in dsts:
                        out.send_eager(dst, message)
                else:
                    out.broadcast(dsts, message)

    def _check_chosen(self, slot: int, out: Outputs) -> None:
        flight = self._inflight.get(slot)
        if flight is not None and self.quorum.is_phase2_quorum(flight.acks):
            self._choose(slot, flight.payload, out)

    def _retransmit(self, now: float, out: Outputs) -> None:
        timeout = self.options.retransmit_timeout
        overdue = sorted(s for s, f in self._inflight.items() if f.sent_at + timeout <= now)
        for peer in self.peers:
            missing = [s for s in overdue if peer not in self._inflight[s].acks]
            if missing:
                self._send_accepts((peer,), missing, out)
        for slot in overdue:
            self._inflight[slot].sent_at = now
        self.counters["retransmits"] += len(overdue)
        earliest = min((f.sent_at for f in self._inflight.values()), default=_INF)
        self._retransmit_at = earliest + timeout

    def _check_quorum(self, now: float, out: Outputs) -> None:
        window = self.options.election_timeout_max
        recent = [self.node_id, *(p for p, t in self._heard.items() if t >= now - window)]
        if self.quorum.is_phase2_quorum(recent):
            self._quorum_check_at = now + window
        else:
            self.counters["quorum_lost"] += 1
            self._become_follower(now, out)

    # -- learning -----------------------------------------------------------------------

    def _choose(self, slot: int, payload: Any, out: Outputs) -> None:
        """``payload`` is chosen in ``slot``; settle this node's own requests there."""
        if not self.log.choose(slot, payload):
            return
        self._inflight.pop(slot, None)
        mine = self._by_slot.pop(slot, None)
        if not mine:
            return
        if len(mine) == 1 and mine[0] is payload:
            # The common case, a fast path: our one request chosen where we put it.
            key = request_key(payload)
            if self._proposed.get(key) == slot:
                del self._proposed[key]
            return
        chosen = {request_key(r) for r in requests_in(payload)}
        for request in mine:
            key = request_key(request)
            if self._proposed.get(key) != slot:
                continue
            del self._proposed[key]
            if key not in chosen:
                self.counters["overwritten"] += 1
                out.reject(request, "overwritten", self.leader())

    def _learn_commit(self, now: float, ballot: Ballot, commit: int, out: Outputs) -> None:
        """Leader ``ballot`` says slots up to ``commit`` are chosen; infer what we can.

        A slot this acceptor accepted *at that same ballot* holds the chosen value
        (a leader proposes one value per slot per ballot).  Any other slot
        needs the value from the leader.
        """
        log = self.log
        if commit <= log.commit_index:
            return
        hi = min(commit, log.commit_index + 4 * self.options.max_slots_per_message)
        gap = hi < commit
        is_chosen, value_at = log.is_chosen, self.acceptor.value_at
        for slot in range(log.commit_index + 1, hi + 1):
            if is_chosen(slot):
                continue
            payload = value_at(slot, ballot)
            if payload is NOT_ACCEPTED:
                gap = True
            else:
                self._choose(slot, payload, out)
        out.committed.extend(log.drain())
        if gap and now >= self._catchup_at:
            self.counters["catchups"] += 1
            self._catchup_at = now + self.options.retransmit_timeout
            out.send(ballot.node, CatchUp(ballot=ballot, from_slot=log.commit_index + 1))

    def _install_snapshot(self, index: int, data: bytes, out: Outputs) -> None:
        if not self.log.install(index, data):
            return
        self.counters["snapshots_installed"] += 1
        out.restore = StateSnapshot(index=index, data=data)
        out.persist.append(SnapshotRecord(index=index, data=data))
        out.persist.extend(self.acceptor.forget_below(index + 1))
        for slot in [s for s in self._by_slot if s <= index]:
            for request in self._by_slot.pop(slot):
                self._proposed.pop(request_key(request), None)  # unknown fate: the client times out
        out.committed.extend(self.log.drain())

    # -- message handlers -----------------------------------------------------------------

    def _on_prepare(self, now: float, src: NodeId, m: Prepare, out: Outputs) -> None:
        self._observe(m.ballot, now, out)
        vote = self.acceptor.prepare_from(m.ballot, m.from_slot)
        out.persist.extend(vote.records)
        if not vote.ok:
            out.send(src, Nack(ballot=m.ballot, promised=vote.promised))
            return
        snap_index, snap_data = (
            (self.log.snapshot_index, self.log.snapshot_data) if vote.forgotten else (0, b"")
        )
        out.send(
            src,
            Promise(
                ballot=m.ballot,
                from_slot=m.from_slot,
                accepted=vote.accepted,
                snapshot_index=snap_index,
                snapshot_data=snap_data,
            ),
        )
        if self.role == FOLLOWER:
            # Give the candidate time to finish phase 1 before competing with it.
            self._set_leader(None)
            self._reset_election(now)

    def _on_promise(self, now: float, src: NodeId, m: Promise, out: Outputs) -> None:
        p1 = self._phase1
        if self.role != CANDIDATE or p1 is None or m.ballot != self.ballot:
            self.counters["dropped_stale"] += 1
            return
        p1.add(src, m.accepted, m.snapshot_index, m.snapshot_data)
        self._maybe_win(now, out)

    def _on_nack(self, now: float, src: NodeId, m: Nack, out: Outputs) -> None:
        if m.ballot != self.ballot or self.role == FOLLOWER:
            self.counters["dropped_stale"] += 1
        self._observe(m.promised, now, out)

    def _on_accept(self, now: float, src: NodeId, m: Accept, out: Outputs) -> None:
        ballot, acceptor = m.ballot, self.acceptor
        self._observe(ballot, now, out)
        if ballot is not acceptor.promised_all and ballot < acceptor.promised_all:
            out.send(src, Nack(ballot=ballot, promised=acceptor.promised_all))
            return
        accept, persist, slot = acceptor.accept, out.persist, m.slot
        for payload in m.payloads:
            vote = accept(ballot, slot, payload)
            assert vote.ok or vote.forgotten
            persist.extend(vote.records)
            slot += 1
        # Slots below the floor are chosen and truncated: never acknowledge them (an
        # acknowledgement without the value could help a stale ballot "choose" another).
        first = max(m.slot, acceptor.floor)
        count = slot - first
        if count > 0:
            out.send(src, Accepted(ballot=ballot, slot=first, count=count))
        self._follow(now, ballot)
        if m.commit_index > self.log.applied:
            self._learn_commit(now, ballot, m.commit_index, out)

    def _follow(self, now: float, ballot: Ballot) -> None:
        assert self.role == FOLLOWER, "a higher ballot's message preempted us in _observe"
        if ballot.node != self._leader:
            self._set_leader(ballot.node)
        self._reset_election(now)

    def _on_accepted(self, now: float, src: NodeId, m: Accepted, out: Outputs) -> None:
        # ``is`` first: the answer usually carries our own Ballot object back, and
        # attrs' == costs two Python calls.
        if self.role != LEADER or (m.ballot is not self.ballot and m.ballot != self.ballot):
            self.counters["dropped_stale"] += 1
            return
        self._heard[src] = now
        inflight, is_quorum = self._inflight, self.quorum.is_phase2_quorum
        for slot in range(m.slot, m.slot + m.count):
            flight = inflight.get(slot)
            if flight is not None:
                acks = flight.acks
                acks.add(src)
                if is_quorum(acks):  # _check_chosen, inlined
                    self._choose(slot, flight.payload, out)
        if self.log.ready():
            out.committed.extend(self.log.drain())
        if self._queue:
            self._flush_queue(now, out)

    def _on_heartbeat(self, now: float, src: NodeId, m: Heartbeat, out: Outputs) -> None:
        self._observe(m.ballot, now, out)
        if m.ballot < self.acceptor.promised_all:
            out.send(src, Nack(ballot=m.ballot, promised=self.acceptor.promised_all))
            return
        self._follow(now, m.ballot)
        out.send(src, HeartbeatAck(ballot=m.ballot))
        self._learn_commit(now, m.ballot, m.commit_index, out)

    def _on_heartbeat_ack(self, now: float, src: NodeId, m: HeartbeatAck, out: Outputs) -> None:
        if self.role == LEADER and m.ballot == self.ballot:
            self._heard[src] = now
        else:
            self.counters["dropped_stale"] += 1

    def _on_catchup(self, now: float, src: NodeId, m: CatchUp, out: Outputs) -> None:
        # Chosen values are facts: any node may serve the ones it knows.
        log = self.log
        limit = self.options.max_slots_per_message
        snap_index, snap_data, first = 0, b"", m.from_slot
        if m.from_slot <= log.snapshot_index:
            snap_index, snap_data, first = (
                log.snapshot_index,
                log.snapshot_data,
                log.snapshot_index + 1,
            )
        payloads = tuple(log.entries(first, limit))
        if not payloads and not snap_index:
            return
        out.send(
            src,
            Learn(
                ballot=self.ballot if self.role == LEADER else ZERO,
                slot=first,
                payloads=payloads,
                commit_index=log.commit_index,
                snapshot_index=snap_index,
                snapshot_data=snap_data,
            ),
        )

    def _on_learn(self, now: float, src: NodeId, m: Learn, out: Outputs) -> None:
        before = self.log.commit_index
        if m.snapshot_index:
            self._install_snapshot(m.snapshot_index, m.snapshot_data, out)
        for i, payload in enumerate(m.payloads):
            self._choose(m.slot + i, payload, out)
        out.committed.extend(self.log.drain())
        if before < self.log.commit_index < m.commit_index:
            # More to fetch: ask for the next page at once.
            out.send(src, CatchUp(ballot=m.ballot, from_slot=self.log.commit_index + 1))
