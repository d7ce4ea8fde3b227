"""Multi-Paxos phase 2 and learning: the leader's slots, followers' acceptance and catch-up.

Theory of operation
-------------------
A leader gives each client request (or ``Batch``) the next slot and sends
``Accept`` to every node it talks to; a quorum of the slot's configuration
answering ``Accepted`` chooses it: one round trip ("Paxos Made Moderately
Complex": the *commander*).  Up to ``max_in_flight`` client slots are
pipelined and the backlog is batched; ``Accept``s not acknowledged within
``retransmit_timeout`` are resent.  The leader's own acceptance counts only
once its record is durable (``synced``): its ``Accept``s leave eagerly, so
its disk write overlaps the round trip.

The alpha window (``configs``): slot ``t`` is proposed only once every slot
up to ``t - alpha`` is chosen, so its configuration is settled.  What waits
for the window: phase 1's re-proposals past it (``_backlog``), a membership
change's padding (``Noop`` up to the slot where it takes effect, proposed at
once so a change is in force one round trip after it is chosen), client
requests.  A ``ChangeMembership`` gets a slot of its own, one at a time.

Followers accept from the leader whose ballot they promised, learn what is
chosen from the commit index piggybacked on ``Accept`` and ``Heartbeat``
(a slot accepted *at the leader's ballot* holds the chosen value), and ask
(``CatchUp``) for values they cannot infer; any node answers with what it
knows chosen (``Learn``, a snapshot first when the slots were truncated).
Every ``Accept`` and ``Heartbeat`` from the leader also marks it heard
(``_heard_leader_at``: the disruption guard, and the lease a follower grants).

If a slot this node proposed a request in is chosen with another value (a
new leader filled it), the request is rejected as ``overwritten`` so its
client retries; the state machine's sessions make the retry safe.

Invariants:
  every InFlight slot is > commit_index and <= commit_index + alpha when proposed
  _backlog holds ascending slots, all below _next_slot
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from consensus.commands import Batch, ChangeMembership, Noop, request_key, requests_in
from consensus.replica import NodeId, Outputs, StateSnapshot
from protocols.multipaxos.leader import InFlight, runs
from protocols.multipaxos.messages import (
    Accept,
    Accepted,
    CatchUp,
    Heartbeat,
    HeartbeatAck,
    Learn,
    Nack,
)
from protocols.multipaxos.node import _INF, FOLLOWER, LEADER, NodeState
from protocols.multipaxos.records import SnapshotRecord
from protocols.paxos_common.acceptor import NOT_ACCEPTED
from protocols.paxos_common.ballot import ZERO, Ballot

__all__ = ["Replication"]


class Replication(NodeState):
    """The leader's phase 2 and every node's learning (see the module docstring)."""

    # -- leader: phase 2 ------------------------------------------------------------------

    def _flush_queue(self, now: float, out: Outputs) -> None:
        """Propose what the alpha window allows: phase 1's backlog, a membership
        change's padding, then queued requests (a backlog of them batched)."""
        if self.role != LEADER:
            return
        limit = self.log.commit_index + self.options.alpha  # highest slot proposable now
        items: list[tuple[int, Any]] = []
        backlog = self._backlog
        while backlog and backlog[0][0] <= limit:
            items.append(backlog.popleft())
        if backlog:
            self._propose(now, items, out)
            return  # the backlog's slots come first; _next_slot is beyond them
        pad_to = min(self._pad_target(), limit)
        while self._next_slot <= pad_to:
            items.append((self._next_slot, Noop()))
            self._next_slot += 1
        queue = self._queue
        if queue:
            room = min(
                self.options.max_in_flight - len(self._inflight) - len(items),
                limit - self._next_slot + 1,
            )
            if room > 0:
                self._take_requests(room, items, out)
        self._propose(now, items, out)

    def _take_requests(self, room: int, items: list[tuple[int, Any]], out: Outputs) -> None:
        max_batch = self.options.max_batch
        queue, queued, proposed = self._queue, self._queued, self._proposed
        placed = out.placed if out.placed is not None else []  # Outputs.place, inlined
        taken = 0
        batched = False
        while queue and taken < room:
            if type(queue[0].command) is ChangeMembership:
                request = queue.popleft()
                queued.discard(request_key(request))
                if self._change_pending():
                    self.counters["membership_busy"] += 1
                    out.reject(request, "busy", self.node_id)
                    continue
                self._change_slot = self._next_slot
                batch = [request]
            else:
                batch = []
                while queue and len(batch) < max_batch:
                    if type(queue[0].command) is ChangeMembership:
                        break  # a change takes a slot of its own
                    batch.append(queue.popleft())
            slot = self._next_slot
            self._next_slot += 1
            taken += 1
            for request in batch:
                key = request_key(request)
                queued.discard(key)
                proposed[key] = slot
                placed.append((key[0], key[1], slot))
            self._by_slot[slot] = batch
            items.append((slot, batch[0] if len(batch) == 1 else Batch(requests=tuple(batch))))
            batched = batched or len(batch) > 1
        if taken > 1 or batched:
            self.counters["batched_slots"] += taken
        if placed:
            out.placed = placed

    def _change_pending(self) -> bool:
        """A membership change is proposed and not yet in force for the next slot."""
        commit = self.log.commit_index
        if self._change_slot > commit:
            return True
        last = self.configs.last_change_slot()
        return bool(last) and commit + 1 < last + self.options.alpha

    def _pad_target(self) -> int:
        """The slot before the latest membership change takes effect (0: nothing to pad)."""
        last = max(self.configs.last_change_slot(), self._change_slot)
        return last + self.options.alpha - 1 if last else 0

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
        config_for = self.configs.config_for
        for slot, payload in items:
            inflight[slot] = InFlight(payload=payload, quorum=config_for(slot), sent_at=now)
            vote = accept(ballot, slot, payload)
            assert vote.ok, "a leader's own acceptor never promised a higher ballot"
            persist.extend(vote.records)
            # Our own accept counts once it is durable (``synced``); the Accepts go
            # out eagerly meanwhile, so our write overlaps the round trip.
            awaiting.append(slot)
        self._send_accepts(self._audience(), [s for s, _ in items], out, eager=True)
        if self.options.read_mode != "lease":  # a lease renews on heartbeats only
            self._heartbeat_at = now + self.options.heartbeat_interval
        self._retransmit_at = min(self._retransmit_at, now + self.options.retransmit_timeout)
        for slot, _ in items:
            self._check_chosen(slot, out)
        if self.log.ready():
            self._committed(now, out)

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
            self._committed(now, out)
        return out if out else None

    def _committed(self, now: float, out: Outputs) -> None:
        """Deliver the chosen prefix; at a leader, the window may have opened."""
        self._drain(out)
        if self.role == LEADER:
            if self._change_slot and self.log.commit_index >= self._change_slot:
                self._change_slot = 0
            if not self._is_member() and not self._change_pending():
                self._step_down_removed(now, out)
            elif self._queue or self._backlog or self._next_slot <= self._pad_target():
                self._flush_queue(now, out)

    def _step_down_removed(self, now: float, out: Outputs) -> None:
        # The configuration in force no longer includes us: tell the others the
        # chosen prefix now rather than a heartbeat later, then step down.
        self.counters["removed_step_downs"] += 1
        hb = Heartbeat(ballot=self.ballot, commit_index=self.log.commit_index)
        out.broadcast(self._audience(), hb)
        self._become_follower(now, out)

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
        if flight is not None and flight.quorum.is_phase2_quorum(flight.acks):
            self._choose(slot, flight.payload, out)

    def _retransmit(self, now: float, out: Outputs) -> None:
        timeout = self.options.retransmit_timeout
        overdue = sorted(s for s, f in self._inflight.items() if f.sent_at + timeout <= now)
        for peer in self._audience():
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
        heard = self._heard
        for peer in self._audience():
            # A node new to the configuration counts as heard for its first round.
            heard.setdefault(peer, now)
        recent = [self.node_id, *(p for p, t in heard.items() if t >= now - window)]
        if all(q.is_phase2_quorum(recent) for q in self._window()):
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
        self._drain(out)
        if gap:
            self._catch_up(now, ballot.node, ballot, out)

    def _catch_up(self, now: float, node: NodeId, ballot: Ballot, out: Outputs) -> None:
        """Ask ``node`` for the chosen values after our prefix (rate limited)."""
        if now >= self._catchup_at:
            self.counters["catchups"] += 1
            self._catchup_at = now + self.options.retransmit_timeout
            out.send(node, CatchUp(ballot=ballot, from_slot=self.log.commit_index + 1))

    def _install_snapshot(self, index: int, data: bytes, config: Any, out: Outputs) -> None:
        if not self.log.install(index, data, config):
            return
        self._install_configs(index, config)
        self.counters["snapshots_installed"] += 1
        out.restore = StateSnapshot(index=index, data=data)
        out.persist.append(SnapshotRecord(index=index, data=data, config=config))
        out.persist.extend(self.acceptor.forget_below(index + 1))
        for slot in [s for s in self._by_slot if s <= index]:
            for request in self._by_slot.pop(slot):
                self._proposed.pop(request_key(request), None)  # unknown fate: the client times out
        self._drain(out)

    # -- message handlers -----------------------------------------------------------------

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
        self._heard_leader_at = now
        self._pre = None
        self._reset_election(now)

    def _on_accepted(self, now: float, src: NodeId, m: Accepted, out: Outputs) -> None:
        # ``is`` first: the answer usually carries our own Ballot object back, and
        # attrs' == costs two Python calls.
        if self.role != LEADER or (m.ballot is not self.ballot and m.ballot != self.ballot):
            self.counters["dropped_stale"] += 1
            return
        self._heard[src] = now
        inflight = self._inflight
        for slot in range(m.slot, m.slot + m.count):
            flight = inflight.get(slot)
            if flight is not None:
                acks = flight.acks
                acks.add(src)
                if flight.quorum.is_phase2_quorum(acks):  # _check_chosen, inlined
                    self._choose(slot, flight.payload, out)
        if self.log.ready():
            self._committed(now, out)
        elif self._queue:
            self._flush_queue(now, out)

    def _on_heartbeat(self, now: float, src: NodeId, m: Heartbeat, out: Outputs) -> None:
        self._observe(m.ballot, now, out)
        if m.ballot < self.acceptor.promised_all:
            out.send(src, Nack(ballot=m.ballot, promised=self.acceptor.promised_all))
            return
        if self.role == LEADER:
            return  # our own ballot: a removed leader's farewell cannot come back to us
        if m.ballot > self.acceptor.promised_all and self.options.read_mode == "lease":
            # Backing a lease leaves a record: a node that restarts with records waits
            # out any lease it may have backed (``start``); one without never backed any.
            out.persist.extend(self.acceptor.prepare_from(m.ballot, self.log.max_slot + 1).records)
        self._follow(now, m.ballot)
        out.send(src, HeartbeatAck(ballot=m.ballot, round=m.round))
        self._learn_commit(now, m.ballot, m.commit_index, out)

    def _on_catchup(self, now: float, src: NodeId, m: CatchUp, out: Outputs) -> None:
        # Chosen values are facts: any node may serve the ones it knows.
        log = self.log
        limit = self.options.max_slots_per_message
        snap_index, snap_data, snap_config, first = 0, b"", None, m.from_slot
        if m.from_slot <= log.snapshot_index:
            snap_index, snap_data, snap_config = (
                log.snapshot_index,
                log.snapshot_data,
                log.snapshot_config,
            )
            first = log.snapshot_index + 1
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
                snapshot_config=snap_config,
            ),
        )

    def _on_learn(self, now: float, src: NodeId, m: Learn, out: Outputs) -> None:
        before = self.log.commit_index
        if m.snapshot_index:
            self._install_snapshot(m.snapshot_index, m.snapshot_data, m.snapshot_config, out)
        for i, payload in enumerate(m.payloads):
            self._choose(m.slot + i, payload, out)
        self._drain(out)
        if before < self.log.commit_index < m.commit_index:
            # More to fetch: ask for the next page at once.
            out.send(src, CatchUp(ballot=m.ballot, from_slot=self.log.commit_index + 1))
