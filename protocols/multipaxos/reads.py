"""Multi-Paxos reads without the log: heartbeat rounds, confirmed reads and leader leases.

Theory of operation
-------------------
``read_mode = "log"`` proposes a ``Get`` like a write (one slot, one round
trip, a record on every node).  The other two modes answer it at the leader
(``ReadReady``: the host serves it from its state machine once it applied
``index``), from ``index = max(chosen prefix, read floor)`` where the *read
floor* is the highest slot phase 1 found: every slot a previous leader may
have chosen (and acknowledged) is at or below it.

Every heartbeat of a leader is a numbered *round*; an answer names its round
(``HeartbeatAck.round``).  A round is *confirmed* once, for every
configuration of the next ``alpha`` slots, a quorum of its members answered
it or a later round (the leader counts itself for its latest round).

* ``read_index`` (Raft thesis 6.4, with a round in place of ReadIndex's
  heartbeat): a read waits for a round sent after it arrived to be
  confirmed: at that round's sending no other leader could have chosen
  anything.  One round is in flight at a time; reads that arrive meanwhile
  share the next one, sent as soon as it is confirmed.
* ``lease``: the answers to a confirmed round sent at ``t`` (leader's clock)
  back a lease until ``t + lease_duration``.  Each answering node refuses to
  promise another ballot for ``election_timeout_min`` of its own clock after
  hearing the leader (the disruption guard: ``election``), and a new leader
  needs a quorum of every configuration of the current window (``configs``),
  so no other leader exists, or chooses anything, before the lease ends if
  every clock runs within ``max_clock_drift`` of real time:
  ``lease_duration = election_timeout_min * (1 - d) / (1 + d)``, counted
  from when the round was *sent*.  A read under a valid lease is answered at
  once; otherwise it waits for a confirmed round as in ``read_index``.  A
  lease leader heartbeats every ``heartbeat_interval`` even when busy.

A lease is tied to the window it was computed for: once the chosen prefix
brings another configuration into the window, it is recomputed from the
answers for that window (a new member's quorum may not have answered yet:
no lease until it does).  A leader that steps down rejects its pending
reads (``not_leader``) and forgets its rounds.

Invariants:
  _confirmed <= _round; every pending read needs a round > _confirmed
  _lease_until == -inf unless role == LEADER
"""

from __future__ import annotations

from consensus.commands import Request
from consensus.replica import NodeId, Outputs, ReadReady
from protocols.multipaxos.election import Election
from protocols.multipaxos.messages import Heartbeat, HeartbeatAck
from protocols.multipaxos.node import _INF, LEADER

__all__ = ["Reads"]


class Reads(Election):
    """Heartbeat rounds, confirmed reads and leases (see the module docstring)."""

    def read(self, now: float, request: Request) -> Outputs:
        """A ``Get`` at this node: answered by the leader without the log."""
        out = Outputs()
        if self.role != LEADER:
            out.reject(request, "not_leader", self._leader)
            return out
        index = max(self.log.commit_index, self._read_floor)
        if self.options.read_mode == "lease" and self._lease_holds(now):
            self.counters["lease_reads"] += 1
            out.reads.append(ReadReady(client_id=request.client_id, seq=request.seq, index=index))
            return out
        self.counters["confirmed_reads"] += 1
        self._reads.append((self._round + 1, request, index))
        if self._confirmed >= self._round:
            self._send_heartbeat(now, out)  # no round in flight: this one confirms the read
        return out

    def _send_heartbeat(self, now: float, out: Outputs) -> None:
        """A new round: a heartbeat to everyone this leader talks to."""
        self._round += 1
        self._round_sent[self._round] = now
        self._acked[self.node_id] = self._round
        # Rounds too old to back a lease are forgotten (rounds are sent in order).
        cutoff = now - 2 * self.options.election_timeout_max
        sent = self._round_sent
        for old in [r for r, t in sent.items() if t < cutoff]:
            del sent[old]
        message = Heartbeat(
            ballot=self.ballot, commit_index=self.log.commit_index, round=self._round
        )
        out.broadcast(self._audience(), message)
        self._heartbeat_at = now + self.options.heartbeat_interval
        self._confirm(now, out)  # a leader that alone is a quorum confirms its own round

    def _on_heartbeat_ack(self, now: float, src: NodeId, m: HeartbeatAck, out: Outputs) -> None:
        if self.role != LEADER or m.ballot != self.ballot:
            self.counters["dropped_stale"] += 1
            return
        self._heard[src] = now
        if m.round > self._acked.get(src, 0):
            self._acked[src] = m.round
            self._confirm(now, out)

    def _confirmed_round(self) -> int:
        """The latest round a quorum of every configuration of the window answered."""
        acked = self._acked
        return min(quorum.committed(acked) for quorum in self._window())

    def _confirm(self, now: float, out: Outputs) -> None:
        confirmed = self._confirmed_round()
        if confirmed <= self._confirmed:
            return
        self._confirmed = confirmed
        if self.options.read_mode == "lease":
            self._renew_lease(confirmed)
        if self._reads:
            still = []
            for need, request, index in self._reads:
                if need <= confirmed:
                    out.reads.append(
                        ReadReady(client_id=request.client_id, seq=request.seq, index=index)
                    )
                else:
                    still.append((need, request, index))
            self._reads = still
            if still and self._confirmed >= self._round:
                self._send_heartbeat(now, out)  # the reads that arrived meanwhile

    def _renew_lease(self, confirmed: int) -> None:
        sent = self._round_sent.get(confirmed)
        until = -_INF if sent is None else sent + self.options.lease_duration
        window = self._window()
        if window != self._lease_window:
            self._lease_window = window
            self._lease_until = until
        elif until > self._lease_until:
            self._lease_until = until

    def _lease_holds(self, now: float) -> bool:
        if self._window() != self._lease_window:
            # Another configuration entered the window: only its quorum's answers count.
            self._renew_lease(self._confirmed_round())
        return now < self._lease_until

    def _reads_lost(self, out: Outputs) -> None:
        for _, request, _ in self._reads:
            out.reject(request, "not_leader", None)
        self._reads = []
        self._round = self._confirmed = 0
        self._round_sent.clear()
        self._acked.clear()
        self._lease_until = -_INF
        self._lease_window = []
