"""Multi-Paxos leadership: the disruption guard, phase 1 once for all slots, role changes.

Theory of operation
-------------------
Roles (``_become_follower`` and ``_become_leader`` reset every role field)::

    follower --timeout--> pre-phase --a quorum would promise--> candidate
        ^                     |                                       |
        |<-- a leader heard / a higher ballot / no win in a timeout --|
        |                                                  quorum of promises
        +<------- higher ballot / CheckQuorum fails / removed ------ leader

* **Phase 1 once for all slots** (Paxos Made Simple section 3; the *scout*
  of Paxos Made Moderately Complex): a candidate takes a ballot above every
  ballot it has seen and sends ``Prepare(ballot, from_slot)`` for every slot
  after its chosen prefix.  Any node can win, however far behind: the
  promises carry what it lacks (``leader.Phase1``).  It needs promises from a
  quorum of every configuration ``Configs.needed`` names, asking the members
  of a configuration its promises reveal as they appear.  A candidate that
  has not won within an election timeout starts over with a higher ballot.
* **The disruption guard** (``disruption_guard``, the counterpart of Raft's
  PreVote and CheckQuorum, thesis 9.6 and 6.2): a leader, and a node that
  heard a leader within ``election_timeout_min``, ignore ``Prepare``s; a node
  whose election timeout fires first asks ``PrePrepare`` (changing nothing:
  no promise, no record) and runs phase 1 only once a quorum of each
  configuration of the next ``alpha`` slots said it would promise.  A node
  that cannot hear the leader (deaf, partitioned, removed) therefore never
  raises a ballot that a majority still following the leader would have to
  reject, and never makes the leader step down.  A refusal carries the
  refuser's chosen prefix, so a node that fell behind (or was removed and
  does not know it) catches up from it.
* **Leases** rely on the guard: the nodes whose heartbeat answers back a
  lease promise nothing else for ``election_timeout_min`` of their own
  clocks after hearing the leader (``reads``).  In lease mode a node that
  starts (a restart forgets when it last heard a leader) waits that long
  before it promises anything.
* **Preemption**: any message with a higher ballot (``Prepare``, ``Accept``,
  ``Nack``, ``Heartbeat``) makes a leader or candidate step down; its queued
  requests and pending reads are rejected ``not_leader``.  A retransmitted
  ``Prepare`` does not extend a follower's wait for the candidate (a deaf
  candidate resending forever would otherwise keep everyone waiting).
* **Membership**: a node outside the configuration of the next slot (a
  spare, or removed) never campaigns; it still answers as an acceptor.
"""

from __future__ import annotations

from collections import deque

from consensus.quorum import Majority
from consensus.replica import NodeId, Outputs
from protocols.multipaxos.configs import Configs, ConfigState
from protocols.multipaxos.leader import Phase1, PrePhase
from protocols.multipaxos.messages import Nack, Prepare, PrePrepare, PrePromise, Promise
from protocols.multipaxos.node import _INF, CANDIDATE, FOLLOWER, LEADER
from protocols.multipaxos.replication import Replication
from protocols.paxos_common.ballot import ZERO

__all__ = ["Election"]


class Election(Replication):
    """Pre-phase, phase 1 and the role changes (see the module docstring)."""

    def _send_heartbeat(self, now: float, out: Outputs) -> None:
        raise NotImplementedError

    # -- role changes -------------------------------------------------------------------

    def _become_follower(self, now: float, out: Outputs) -> None:
        self.role = FOLLOWER
        self._phase1 = None
        self._pre = None
        self._inflight.clear()  # their requests stay in _proposed until their slots are chosen
        self._backlog.clear()
        self._change_slot = 0
        self._heartbeat_at = self._retransmit_at = self._quorum_check_at = _INF
        self._set_leader(None)
        for request in self._queue:
            out.reject(request, "not_leader", None)
        self._queue.clear()
        self._queued.clear()
        self._reads_lost(out)
        self._reset_election(now)

    def _election_due(self, now: float, out: Outputs) -> None:
        """The election timer fired (a follower heard no leader; a candidate did not win)."""
        if self.role == CANDIDATE:
            self.counters["phase1_restarts"] += 1
            self._become_follower(now, out)
        if not self._is_member():
            # A spare, or removed: it never campaigns (it still answers as an acceptor),
            # and sends no client to a leader it no longer hears.
            self.counters["not_member"] += 1
            self._set_leader(None)
            self._reset_election(now)
        elif self.options.disruption_guard:
            self._start_prephase(now, out)
        else:
            self._start_phase1(now, out)

    def _targets(self) -> tuple[NodeId, ...]:
        # The members of the configurations of the next alpha slots, but us.
        members: set[NodeId] = set()
        for quorum in self._window():
            members |= quorum.members
        members.discard(self.node_id)
        return tuple(sorted(members))

    def _start_prephase(self, now: float, out: Outputs) -> None:
        top = max(self._seen, self.ballot, self.acceptor.promised_all)
        pre = PrePhase(ballot=top.next(self.node_id))
        self._pre = pre
        self._set_leader(None)  # we heard none for a timeout: stop sending clients to it
        self.counters["pre_phases"] += 1
        self._reset_election(now)  # no quorum would promise by then: ask again
        if not self._guarding(now):
            pre.granted.add(self.node_id)
        message = PrePrepare(ballot=pre.ballot, commit_index=self.log.commit_index)
        out.broadcast(self._targets(), message)
        self._maybe_prephase_won(now, out)

    def _maybe_prephase_won(self, now: float, out: Outputs) -> None:
        pre = self._pre
        if pre is not None and all(q.is_phase1_quorum(pre.granted) for q in self._window()):
            self._pre = None
            self._start_phase1(now, out)

    def _start_phase1(self, now: float, out: Outputs) -> None:
        # Any node may run phase 1, however far behind: it catches up from the promises.
        top = max(self._seen, self.ballot, self.acceptor.promised_all)
        ballot = top.next(self.node_id)
        self.role = CANDIDATE
        self.ballot = self._seen = ballot
        self._pre = None
        self._set_leader(None)
        self._reset_election(now)  # not won by then: start over with a higher ballot
        self.counters["phase1_runs"] += 1
        self.counters["elections_started"] += 1
        from_slot = self.log.commit_index + 1
        p1 = Phase1(
            ballot=ballot, from_slot=from_slot, resend_at=now + self.options.retransmit_timeout
        )
        self._phase1 = p1
        targets = self._targets()
        p1.asked.update(targets)
        out.broadcast(targets, Prepare(ballot=ballot, from_slot=from_slot))
        vote = self.acceptor.prepare_from(ballot, from_slot)
        assert vote.ok, "a fresh ballot is above everything this acceptor promised"
        out.persist.extend(vote.records)
        p1.add(self.node_id, vote.accepted)
        self._maybe_win(now, out)

    def _needed(self, p1: Phase1) -> list[Majority]:
        """The configurations whose quorums must promise (``Configs.needed``)."""
        configs, start = self.configs, p1.from_slot
        if p1.snapshot_index >= start:
            # A promiser truncated slots we lack: its snapshot's configurations apply.
            state = p1.snapshot_config or ConfigState(
                index=p1.snapshot_index, members=self.ctx.members
            )
            configs = Configs.from_state(state, self.options.alpha)
            start = p1.snapshot_index + 1
        plan = [(s, pv.payload) for s, pv in sorted(p1.best.items()) if s >= start]
        return configs.needed(start, plan, max(p1.max_slot, start - 1))

    def _maybe_win(self, now: float, out: Outputs) -> None:
        p1 = self._phase1
        if p1 is None:
            return
        needed = self._needed(p1)
        missing: set[NodeId] = set()
        for quorum in needed:
            missing |= quorum.members
        missing -= p1.asked
        missing.discard(self.node_id)
        if missing:
            # The promises revealed a configuration with nodes we have not asked.
            p1.asked |= missing
            out.broadcast(sorted(missing), Prepare(ballot=p1.ballot, from_slot=p1.from_slot))
        if all(q.is_phase1_quorum(p1.promised) for q in needed):
            self._become_leader(now, out)

    def _become_leader(self, now: float, out: Outputs) -> None:
        p1 = self._phase1
        assert p1 is not None and p1.ballot == self.ballot
        if p1.snapshot_index:
            self._install_snapshot(p1.snapshot_index, p1.snapshot_data, p1.snapshot_config, out)
        plan = p1.plan(self.log.is_chosen)
        self.role = LEADER
        self._phase1 = None
        self._election_at = _INF
        self._set_leader(self.node_id)
        self._next_slot = max(p1.max_slot, self.log.max_slot) + 1
        # Reads must see every slot a previous leader may have chosen: all below here.
        self._read_floor = self._next_slot - 1
        self._heard = {p: now for p in self._audience()}
        self._quorum_check_at = (
            now + self.options.election_timeout_max if self.options.check_quorum else _INF
        )
        self._send_heartbeat(now, out)
        self.counters["reproposed"] += len(plan)
        self._backlog = deque(plan)
        self._flush_queue(now, out)

    # -- message handlers -----------------------------------------------------------------

    def _on_preprepare(self, now: float, src: NodeId, m: PrePrepare, out: Outputs) -> None:
        granted = not self._guarding(now) and m.ballot > self.acceptor.promised_all
        if not granted:
            self.counters["pre_prepares_refused"] += 1
        reply = PrePromise(ballot=m.ballot, granted=granted, commit_index=self.log.commit_index)
        out.send(src, reply)

    def _on_prepromise(self, now: float, src: NodeId, m: PrePromise, out: Outputs) -> None:
        if not m.granted and m.commit_index > self.log.commit_index:
            self._catch_up(now, src, ZERO, out)  # we fell behind (perhaps removed)
        pre = self._pre
        if self.role != FOLLOWER or pre is None or m.ballot != pre.ballot:
            self.counters["dropped_stale"] += 1
            return
        if m.granted:
            pre.granted.add(src)
            self._maybe_prephase_won(now, out)

    def _on_prepare(self, now: float, src: NodeId, m: Prepare, out: Outputs) -> None:
        if self._guarding(now):
            # A leader, or a node that hears one, promises nothing new (the guard).
            self.counters["prepares_refused"] += 1
            return
        before = self.acceptor.promised_all
        self._observe(m.ballot, now, out)
        vote = self.acceptor.prepare_from(m.ballot, m.from_slot)
        out.persist.extend(vote.records)
        if not vote.ok:
            out.send(src, Nack(ballot=m.ballot, promised=vote.promised))
            return
        log = self.log
        snapshot = vote.forgotten
        out.send(
            src,
            Promise(
                ballot=m.ballot,
                from_slot=m.from_slot,
                accepted=vote.accepted,
                snapshot_index=log.snapshot_index if snapshot else 0,
                snapshot_data=log.snapshot_data if snapshot else b"",
                snapshot_config=log.snapshot_config if snapshot else None,
            ),
        )
        if self.role == FOLLOWER and m.ballot > before:
            # Give the new candidate time to finish phase 1 before competing with it.
            self._set_leader(None)
            self._pre = None
            self._reset_election(now)

    def _on_promise(self, now: float, src: NodeId, m: Promise, out: Outputs) -> None:
        p1 = self._phase1
        if self.role != CANDIDATE or p1 is None or m.ballot != self.ballot:
            self.counters["dropped_stale"] += 1
            return
        p1.add(src, m.accepted, m.snapshot_index, m.snapshot_data, m.snapshot_config)
        self._maybe_win(now, out)

    def _on_nack(self, now: float, src: NodeId, m: Nack, out: Outputs) -> None:
        if m.ballot != self.ballot or self.role == FOLLOWER:
            self.counters["dropped_stale"] += 1
        self._observe(m.promised, now, out)
